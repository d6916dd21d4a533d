"""Sticky sessions by cookie ([lb] sticky = "cookie", HAProxy's `cookie ... insert`), end to end:
a real `fulcrum lb` with two workers in front of Python servers, driven by a cookie-keeping
client library (urllib with a CookieJar), raw requests and curl over HTTP/2."""
import http.cookiejar
import json
import os
import shutil
import subprocess
import unittest
import urllib.request

from harness import free_port, http_get, wait_until
from test_lb import Client, LbTestCase, Server


class StickyTest(LbTestCase):
    def start(self, names=("a", "b", "c"), **lb_keys):
        self.backends = {n: self.py_backend(n) for n in names}
        self.stats_port = free_port()
        lb = self.start_lb([Server(n, b.port) for n, b in self.backends.items()], threads=2,
                           lb_keys={"sticky": "cookie", **lb_keys},
                           node_extra={"stats": f"127.0.0.1:{self.stats_port}"},
                           health={"path": "/healthz", "interval_ms": 100, "timeout_ms": 1000, "rise": 1, "fall": 2})
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.stats_port}/api/state")[0] == 200, what="stats")
        with open(os.path.join(self.tmp.path, "var", "admin.token")) as f:
            self.token = f.read().strip()
        return lb

    def up(self):
        state = json.loads(http_get(f"http://127.0.0.1:{self.stats_port}/api/state")[2])
        return {s["name"] for s in state["servers"] if s["health"] == "up" and s["admin"] == "ready"}

    def set_admin(self, server, state):
        status, _, body = http_get(f"http://127.0.0.1:{self.stats_port}/api/servers/{server}/state",
                                   method="POST", data=json.dumps({"state": state}).encode(),
                                   headers={"Authorization": f"Bearer {self.token}",
                                            "Content-Type": "application/json"})
        self.assertEqual(status, 200, body)

    def get(self, port, cookie=None, name="FULCRUM_SERVER"):
        """One request on a new connection: (served by, Set-Cookie or None)."""
        client = Client(port)
        try:
            headers = {"Cookie": f"session=abc; {name}={cookie}; theme=dark"} if cookie else {}
            status, served, _, resp = client.get("/page", headers=headers)
            self.assertEqual(status, 200)
            return served, resp.getheader("Set-Cookie")
        finally:
            client.close()

    def test_a_cookie_keeps_a_client_on_its_server_and_names_it_not_its_address(self):
        lb = self.start()
        served, set_cookie = self.get(lb.port)
        self.assertEqual(set_cookie, f"FULCRUM_SERVER={served}; Path=/; HttpOnly; SameSite=Lax")
        self.assertNotIn("127.0.0.1", set_cookie)
        for _ in range(12):  # new connections, both workers: always the same server, no new cookie
            again, set_again = self.get(lb.port, served)
            self.assertEqual(again, served)
            self.assertIsNone(set_again)
        # Without the cookie the balancer spreads requests as before.
        self.assertEqual({self.get(lb.port)[0] for _ in range(6)}, {"a", "b", "c"})
        # The cookie among others, sent to the server untouched.
        cookies = [v for r in self.backends[served].requests for k, v in r["fields"] if k.lower() == "cookie"]
        self.assertEqual(cookies, [f"session=abc; FULCRUM_SERVER={served}; theme=dark"] * 12)

    def test_a_real_cookie_jar_client_stays_and_moves_when_its_server_is_drained_or_dies(self):
        lb = self.start()
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def fetch():
            with opener.open(f"http://127.0.0.1:{lb.port}/page", timeout=10) as resp:
                self.assertEqual(resp.status, 200)
                return resp.headers["X-Served-By"]

        first = fetch()
        self.assertEqual([fetch() for _ in range(8)], [first] * 8)
        self.assertEqual([c.value for c in jar if c.name == "FULCRUM_SERVER"], [first])
        # Drained: the client moves, its cookie too, and it stays on its new server.
        self.set_admin(first, "drain")
        second = fetch()
        self.assertNotEqual(second, first)
        self.assertEqual([c.value for c in jar if c.name == "FULCRUM_SERVER"], [second])
        self.assertEqual([fetch() for _ in range(5)], [second] * 5)
        # Back in rotation: the client stays where it is now.
        self.set_admin(first, "ready")
        self.assertEqual([fetch() for _ in range(5)], [second] * 5)
        # Dead: once the checks see it down the client moves again.
        self.backends[second].stop()
        wait_until(lambda: second not in self.up(), what=f"{second} down")
        third = fetch()
        self.assertNotEqual(third, second)
        self.assertEqual([fetch() for _ in range(5)], [third] * 5)

    def test_an_unknown_or_malformed_cookie_is_a_client_without_one(self):
        lb = self.start(sticky_cookie="SRV")
        for value in ("nosuch", "", "a b", '"a'):
            served, set_cookie = self.get(lb.port, value, name="SRV")
            self.assertIn(served, ("a", "b", "c"))
            self.assertEqual(set_cookie, f"SRV={served}; Path=/; HttpOnly; SameSite=Lax")
        # The default name means nothing with sticky_cookie set.
        served, set_cookie = self.get(lb.port, "b")
        self.assertTrue(set_cookie.startswith("SRV="))

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_http2_clients_stick_too(self):
        lb = self.start(h2c=True)
        args = ["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-",
                f"http://127.0.0.1:{lb.port}/page"]
        head = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.lower()
        self.assertIn("http/2 200", head)
        served = [l.split(":", 1)[1].strip() for l in head.splitlines() if l.startswith("x-served-by:")][0]
        self.assertIn(f"set-cookie: fulcrum_server={served}; path=/; httponly; samesite=lax", head)
        for _ in range(5):
            again = subprocess.run(args[:-1] + ["-b", f"FULCRUM_SERVER={served}", args[-1]], capture_output=True,
                                   text=True, timeout=30).stdout.lower()
            self.assertIn(f"x-served-by: {served}", again)
            self.assertNotIn("set-cookie", again)

    def test_off_by_default(self):
        backend = self.py_backend("a")
        lb = self.start_lb([Server("a", backend.port)])
        client = Client(lb.port)
        try:
            _, _, _, resp = client.get("/page")
            self.assertIsNone(resp.getheader("Set-Cookie"))
        finally:
            client.close()


if __name__ == "__main__":
    unittest.main()
