"""The stats listener's dashboard in headless Chromium: two real `fulcrum lb` nodes (each sees the
other) in front of two real `fulcrum web` nodes. Every node renders with its state, a killed web node
turns red (class "down") within 3 s with the summary saying so, and at 390 px the page does not
scroll sideways. Screenshots at 1280 px and 390 px are kept under the build dir's test-artifacts."""
import json
import os
import tempfile
import time
import unittest

from browser import Browser, chromium_binary
from harness import FULCRUM, Process, TempDir, free_port, http_get, needs, wait_until
from test_lb import STEADY_HEALTH, WebNodes, toml_table


def artifact_dir():
    path = os.environ.get("FULCRUM_ARTIFACTS") or os.path.join(tempfile.gettempdir(), "fulcrum-test-artifacts")
    os.makedirs(path, exist_ok=True)
    return path


@needs(None if chromium_binary() else "chromium is not installed")
class DashboardTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.tmp.write("www/index.html", "hello")
        self.web = WebNodes(self.tmp, count=2)
        self.addCleanup(self.web.stop_all)
        self.web.start_all()
        ports = {n: (free_port(), free_port()) for n in ("lb-1", "lb-2")}  # http, stats
        text = toml_table("site", {"name": "dash-test", "state_dir": "var"})
        text += toml_table("lb.health", STEADY_HEALTH)
        for name, (http, stats) in ports.items():
            text += f'[[lb.node]]\nname = "{name}"\nhttp = "127.0.0.1:{http}"\nstats = "127.0.0.1:{stats}"\nthreads = 1\n'
        text += toml_table("web", {"docroot": "www", "app": "none"})
        for name, port in self.web.ports.items():
            text += f'[[web.node]]\nname = "{name}"\nlisten = "127.0.0.1:{port}"\n'
        site = self.tmp.write("site.toml", text)
        for name in ports:
            proc = Process([FULCRUM, "lb", "--site", site, "--node", name], os.path.join(self.tmp.path, name + ".log"))
            self.addCleanup(proc.stop)
        self.stats = f"http://127.0.0.1:{ports['lb-1'][1]}"
        wait_until(lambda: http_get(self.stats + "/healthz")[0] == 200, timeout=20, what="lb-1 stats")

    def test_every_node_renders_and_a_killed_web_node_turns_red(self):
        status, headers, body = http_get(self.stats + "/favicon.ico")
        self.assertEqual(status, 200)
        self.assertIn(b"<svg", body)
        state = json.loads(http_get(self.stats + "/api/state")[2])
        self.assertEqual([s["name"] for s in state["servers"]], ["web-1", "web-2"])  # the old keys stay

        browser = Browser(width=1280, height=900)
        self.addCleanup(browser.close)
        browser.navigate(self.stats + "/")
        rows = "Object.fromEntries(Array.from(document.querySelectorAll('.node')).map(e => [e.dataset.name, e.className]))"
        expected = {"lb-1": "node ok", "lb-2": "node ok", "web-1": "node ok", "web-2": "node ok"}
        wait_until(lambda: browser.evaluate(rows) == expected, timeout=10,
                   what=f"every node ok (last {browser.evaluate(rows)})")
        self.assertEqual(browser.evaluate("document.querySelector('#summary').textContent"), "all healthy")

        self.web.kill("web-2")
        killed = time.monotonic()
        browser.wait_for("document.querySelector('.node[data-name=\"web-2\"]').classList.contains('down')",
                         timeout=3.0, what="web-2's row to turn red")
        self.assertLess(time.monotonic() - killed, 3.0)
        browser.wait_for("document.querySelector('#summary').textContent.startsWith('web-2 down for')", timeout=3.0,
                         what="the summary to name web-2")
        self.assertEqual(browser.evaluate(rows)["web-1"], "node ok")
        # The servers table, as HAProxy's stats page: the last check says why.
        browser.wait_for("document.querySelector('tr[data-server=\"web-2\"] td.check').textContent.startsWith('L4CON')",
                         timeout=3.0, what="web-2's last check L4CON in the servers table")
        self.assertTrue(browser.evaluate("document.querySelector('tr[data-server=\"web-1\"] td.check').textContent")
                        .startswith("L7OK/200 in "))
        browser.wait_for("Array.from(document.querySelectorAll('#events li')).some(e => e.textContent.includes('web-2')"
                         " && e.textContent.includes('up → down'))", timeout=3.0, what="the change in the event list")
        wide = browser.screenshot(os.path.join(artifact_dir(), "dashboard-1280.png"))

        browser.narrow_to(390)
        self.assertLessEqual(browser.evaluate("document.scrollingElement.scrollWidth"), 390)
        narrow = browser.screenshot(os.path.join(artifact_dir(), "dashboard-390.png"))
        for shot in (wide, narrow):
            self.assertGreater(os.path.getsize(shot), 1000)
            print(f"dashboard screenshot: {shot}")


if __name__ == "__main__":
    unittest.main()
