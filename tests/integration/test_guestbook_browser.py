"""The guestbook page as a browser user meets it (issue 22), in headless Chromium against a real
three-node database with failover (test_guestbook's GuestbookSite): no console error on load,
the limits shown before posting, a blank name refused in the form's words, contrast computed
from the page's own styles, a right-to-left message posted with focus back in the message box
and the post announced, the list's load error clearing by itself when the network is back, and
a post made while the primary is dead retried by the page until it is stored, exactly once.
Screenshots at 1280 and 390 px are kept under $FULCRUM_ARTIFACTS (or the temp dir)."""
import json
import os
import time
import unittest

from browser import Browser, chromium_binary
from harness import needs, wait_until
from test_dashboard import artifact_dir
from test_db import missing_requirement, processes_mentioning
from test_guestbook import GuestbookSite

# The WCAG 2 contrast ratio of an element's color (text) or border against the first opaque
# background behind it, from getComputedStyle.
CONTRAST_JS = """
(() => {
  const rgb = (s) => s.match(/[\\d.]+/g).map(Number);
  const lum = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const behind = (e) => {
    for (; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] === 1) { return c; }
    }
    return [255, 255, 255];
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const out = {};
  for (const sel of ["#author", "#text"]) {
    const e = document.querySelector(sel);
    out["border " + sel] = ratio(rgb(getComputedStyle(e).borderTopColor), behind(e.parentElement));
  }
  for (const sel of ["label", "#author", "#count", "#status", "#error", "#load-error", "#post",
                     "li.message .meta time", "li.message .text", "footer", "h2"]) {
    const e = document.querySelector(sel);
    out["text " + sel] = ratio(rgb(getComputedStyle(e).color), behind(e));
  }
  return out;
})()
"""

def console_errors(browser):
    errors = []
    for event in browser._events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"].get("text", "") + " " + params["entry"].get("url", ""))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            errors.append(json.dumps(params.get("args")))
        elif method == "Runtime.exceptionThrown":
            errors.append(json.dumps(params)[:500])
    return errors


def fill_and_post(browser, author, text):
    browser.evaluate("(() => { document.querySelector('#author').value = %s;"
                     " const t = document.querySelector('#text'); t.value = %s;"
                     " t.dispatchEvent(new Event('input')); document.querySelector('#post').click(); return true; })()"
                     % (json.dumps(author), json.dumps(text)))


def texts_in_list(text):
    return ("Array.from(document.querySelectorAll('#messages li.message .text'))"
            f".filter(e => e.textContent === {json.dumps(text)}).length")


@needs(missing_requirement() or (None if chromium_binary() else "chromium is not installed"))
class GuestbookBrowserTest(unittest.TestCase):
    def setUp(self):
        self.site = GuestbookSite(failover=True)
        self.addCleanup(self.site.cleanup)
        self.primary, self.replicas = self.site.start(self)
        self.browser = Browser(width=1280, height=900)
        self.addCleanup(self.browser.close)

    def test_page(self):
        try:
            self.scenario()
        except Exception as e:
            self.browser.screenshot(os.path.join(artifact_dir(), "guestbook-failed.png"))
            raise AssertionError(f"{e}\n{self.site.logs()}") from e

    def scenario(self):
        b = self.browser
        b.call("Log.enable", session=True)
        b.navigate(self.site.url("/"))
        b.wait_for("document.querySelectorAll('#messages li.message').length > 0", what="the message list")
        footer = "document.querySelector('#served-by').textContent"
        self.assertIn("database node", b.evaluate(footer))

        # The limits show before posting.
        self.assertEqual(b.evaluate("[document.querySelector('#author').maxLength,"
                                    " document.querySelector('#text').maxLength]"), [64, 2000])
        self.assertEqual(b.evaluate("document.querySelector('#count').textContent"), "0 / 2000 characters")
        b.evaluate("(() => { const t = document.querySelector('#text'); t.value = 'x'.repeat(1995);"
                   " t.dispatchEvent(new Event('input')); return true; })()")
        self.assertEqual(b.evaluate("document.querySelector('#count').textContent"), "1995 / 2000 characters")

        # A name of only spaces is refused in the browser, in the form's words; nothing is sent.
        before = b.evaluate("document.querySelectorAll('#messages li.message').length")
        fill_and_post(b, "   ", "hello")
        self.assertEqual(b.evaluate("document.querySelector('#error').textContent"), "Your name must not be empty.")
        self.assertEqual(b.evaluate("document.activeElement.id"), "author")
        self.assertEqual(b.evaluate("document.querySelector('#author').getAttribute('aria-invalid')"), "true")

        # A right-to-left message: posted, announced, focus back in the message box, shown as RTL.
        rtl = f"שלום, עולם! {os.getpid()}"
        b.evaluate("document.querySelector('#author').focus()")
        fill_and_post(b, "דנה", rtl)
        b.wait_for(texts_in_list(rtl) + " === 1", what="the RTL message in the list")
        self.assertEqual(b.evaluate("document.querySelector('#error').textContent"), "")
        self.assertEqual(b.evaluate("document.querySelector('#status').textContent"), "Your message was posted.")
        self.assertEqual(b.evaluate("document.querySelector('#status').getAttribute('aria-live')"), "polite")
        self.assertEqual(b.evaluate("document.activeElement.id"), "text")
        self.assertEqual(b.evaluate("document.querySelector('#text').value"), "")
        self.assertGreater(b.evaluate("document.querySelectorAll('#messages li.message').length"), before)
        first = "document.querySelector('#messages li.message')"
        self.assertEqual(b.evaluate(f"[{first}.querySelector('.text').dir, {first}.querySelector('.author').dir,"
                                    f" getComputedStyle({first}.querySelector('.text')).direction]"),
                         ["auto", "auto", "rtl"])
        self.assertIn("Last API answer: web node web-1, database node", b.evaluate(footer))
        # The announcement clears itself.
        b.wait_for("document.querySelector('#status').textContent === ''", timeout=8, what="the status line to clear")

        # Contrast from the page's computed styles: borders of controls 3:1, text 4.5:1.
        ratios = b.evaluate(CONTRAST_JS)
        for name, ratio in ratios.items():
            self.assertGreaterEqual(ratio, 3.0 if name.startswith("border") else 4.5, f"{name}: {ratios}")

        self.assertEqual(console_errors(b), [], "console errors on load and posting")
        wide = b.screenshot(os.path.join(artifact_dir(), "guestbook-1280.png"))

        # The list's load error clears on the next good refresh, which the page makes by itself.
        b.call("Network.enable", session=True)
        conditions = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
        b.call("Network.emulateNetworkConditions", dict(conditions, offline=True), session=True)
        b.evaluate("load().then(() => true)")
        self.assertTrue(b.evaluate("document.querySelector('#load-error').textContent")
                        .startswith("Could not load messages"))
        b.call("Network.emulateNetworkConditions", dict(conditions, offline=False), session=True)
        b.wait_for("document.querySelector('#load-error').textContent === ''", timeout=8,
                   what="the load error to clear when the network is back")

        # A post while the primary is dead: the page retries with one calm status line, and the
        # message is stored exactly once on the new primary.
        agent = self.site.cluster.agents[self.primary]
        agent.proc.kill()
        agent.stop()
        killed = time.monotonic()
        wait_until(lambda: processes_mentioning(os.path.join(self.site.cluster.dir, "var", self.primary)) == [],
                   timeout=15, what="the old primary's PostgreSQL gone")
        during = f"posted during a failover {os.getpid()}"
        seen = len(b._events)
        fill_and_post(b, "Dee", during)
        b.wait_for("document.querySelector('#status').textContent.includes('sent automatically')", timeout=5,
                   what="the retry status line")
        self.assertEqual(b.evaluate("document.querySelector('#error').textContent"), "")
        b.wait_for(texts_in_list(during) + " === 1", timeout=30, what="the message posted after the failover")
        took = time.monotonic() - killed
        self.assertEqual(b.evaluate("document.querySelector('#status').textContent"), "Your message was posted.")
        self.assertEqual(b.evaluate("document.querySelector('#error').textContent"), "")
        self.assertEqual(b.evaluate("document.activeElement.id"), "text")
        stored = b.evaluate("fetch('/api/messages?limit=200').then(r => r.json()).then(d => d.messages"
                            f".filter(m => m.text === {json.dumps(during)}).length)")
        self.assertEqual(stored, 1)
        # Retried after each Retry-After (seconds), not in a tight loop.
        posts = [e for e in b._events[seen:] if e.get("method") == "Network.requestWillBeSent"
                 and e["params"]["request"]["method"] == "POST"]
        self.assertGreaterEqual(len(posts), 2)
        self.assertLessEqual(len(posts), 5)
        footer_now = b.evaluate(footer)
        self.assertNotIn(f"database node {self.primary}.", footer_now)
        print(f"\npage posted {took:.1f} s after the primary's agent was killed, in {len(posts)} attempts; "
              f"footer: {footer_now}")

        b.narrow_to(390)
        self.assertLessEqual(b.evaluate("document.scrollingElement.scrollWidth"), 390)
        narrow = b.screenshot(os.path.join(artifact_dir(), "guestbook-390.png"))
        for shot in (wide, narrow):
            self.assertGreater(os.path.getsize(shot), 1000)
            print(f"guestbook screenshot: {shot}")


if __name__ == "__main__":
    unittest.main()
