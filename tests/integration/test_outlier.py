"""Outlier ejection ([lb.outlier]) and the retry budget end to end: a real `fulcrum lb` in front of
small Python servers that answer 500, answer slowly or reset, while their health checks pass.
Conditions are awaited by bounded polling; everything started is stopped even when a test fails."""
import json
import re
import socket
import struct
import threading
import unittest

from harness import ThreadedServer, assert_valid_metrics, free_port, http_get, read_body, read_head, wait_until
from test_lb import Client, LbTestCase, Server, get_once, toml_table

# Health checks that pass on every server here and that passive failures alone never fail.
HEALTH = {"path": "/healthz", "interval_ms": 200, "timeout_ms": 2000, "rise": 1, "fall": 100}


class Backend:
    """An HTTP/1.1 server whose /healthz always answers 200 and whose other requests, by `mode`:
    "ok" 200, "error" 500, "reset" a TCP reset (SO_LINGER 0) without an answer; each after
    `delay` seconds. Counts the requests it got (health checks apart)."""

    def __init__(self, test, name, mode="ok", delay=0.0):
        self.name, self.mode, self.delay = name, mode, delay
        self.lock = threading.Lock()
        self.count = 0
        self.server = ThreadedServer(self._handle)
        test.addCleanup(self.server.stop)
        self.port = self.server.port

    def requests(self):
        with self.lock:
            return self.count

    def _respond(self, conn, status):
        body = f"{self.name} {status}\n".encode()
        conn.sendall(f"HTTP/1.1 {status} X\r\nX-Served-By: {self.name}\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode() + body)

    def _handle(self, conn, server):
        f = conn.makefile("rb")
        while not server.stopping.is_set():
            try:
                start, headers = read_head(f)
            except EOFError:
                return
            target = start.split(" ")[1]
            read_body(f, headers, bodiless="content-length" not in headers and "transfer-encoding" not in headers)
            if target == "/healthz":
                self._respond(conn, 200)
                continue
            with self.lock:
                self.count += 1
            if self.delay and server.stopping.wait(self.delay):
                return
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            self._respond(conn, 500 if self.mode == "error" else 200)


class OutlierTestCase(LbTestCase):
    def start(self, backends, outlier=None, threads=2, retries=2, lb_keys=None, servers=None):
        self.stats_port = free_port()
        extra = toml_table("lb.outlier", outlier) if outlier else ""
        servers = servers or [Server(b.name, b.port) for b in backends]
        self.lb = self.start_lb(servers, threads=threads, retries=retries, health=HEALTH, extra=extra,
                                lb_keys=lb_keys, node_extra={"stats": f"127.0.0.1:{self.stats_port}"})
        self.stats = f"http://127.0.0.1:{self.stats_port}"
        wait_until(lambda: http_get(self.stats + "/api/state")[0] == 200, what="stats listener")
        return self.lb

    def servers(self):
        status, _, body = http_get(self.stats + "/api/state")
        self.assertEqual(status, 200)
        return {s["name"]: s for s in json.loads(body)["servers"]}

    def totals(self):
        return json.loads(http_get(self.stats + "/api/state")[2])["totals"]

    def metrics(self):
        status, _, body = http_get(self.stats + "/metrics")
        self.assertEqual(status, 200)
        return body.decode()

    def sample(self, text, name, **labels):
        """The value of the one sample of `name` with (at least) these labels."""
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        self.fail(f"no sample {name} {labels} in:\n{text}")

    def ejected(self, name):
        return self.servers()[name]["outlier"]["ejected"]

    def request(self):
        """One GET on a new connection (so both workers take some): (status, served by)."""
        status, served, _, _ = get_once(self.lb.port, "/x")
        return status, served


class OutlierEjectionTest(OutlierTestCase):
    def test_consecutive_5xx_ejects_for_a_growing_time_while_health_passes(self):
        good = [Backend(self, "good-1"), Backend(self, "good-2")]
        bad = Backend(self, "bad", mode="error")
        self.start(good + [bad], outlier={"consecutive_5xx": 3, "base_ejection_ms": 3000, "max_ejection_ms": 60000})
        self.assertFalse(self.ejected("bad"))

        # Requests on both workers: the run counts across them.
        wait_until(lambda: self.request() and self.ejected("bad"), timeout=15, what="bad ejected")
        self.wait_log(self.lb, r"outlier: ejecting bad for 3 s: 3 consecutive 5xx")
        state = self.servers()["bad"]
        self.assertEqual(state["health"], "up")  # its health check passes all along
        self.assertEqual(state["outlier"]["reason"], "consecutive_5xx")
        self.assertLessEqual(state["outlier"]["remaining_ms"], 3000)
        before = bad.requests()
        answers = [self.request() for _ in range(12)]
        still = self.servers()["bad"]["outlier"]
        self.assertTrue(still["ejected"], "the ejection ended before the checks were done: a slow machine")
        self.assertEqual([s for s, _ in answers], [200] * 12)
        self.assertNotIn("bad", [served for _, served in answers])
        self.assertEqual(bad.requests(), before)
        text = self.metrics()
        assert_valid_metrics(self, text)
        self.assertEqual(self.sample(text, "fulcrum_lb_server_ejected", server="bad"), 1)
        self.assertEqual(self.sample(text, "fulcrum_lb_server_ejected", server="good-1"), 0)
        self.assertEqual(self.sample(text, "fulcrum_lb_outlier_ejections_total", server="bad",
                                     reason="consecutive_5xx"), 1)
        self.assertEqual(self.sample(text, "fulcrum_lb_server_up", server="bad"), 1)

        # Back after its time, and ejected for twice as long on its next run of 500s.
        wait_until(lambda: not self.ejected("bad"), timeout=10, what="bad back in rotation")
        self.wait_log(self.lb, r"outlier: bad returns to rotation")
        wait_until(lambda: self.request() and self.ejected("bad"), timeout=15, what="bad ejected again")
        self.wait_log(self.lb, r"outlier: ejecting bad for 6 s: 3 consecutive 5xx")
        self.assertGreater(self.servers()["bad"]["outlier"]["remaining_ms"], 3000)
        self.assertEqual(self.sample(self.metrics(), "fulcrum_lb_outlier_ejections_total", server="bad",
                                     reason="consecutive_5xx"), 2)

    def test_consecutive_failures_eject_a_server_that_resets(self):
        good = Backend(self, "good")
        bad = Backend(self, "resets", mode="reset")
        self.start([good, bad], outlier={"consecutive_failures": 3, "base_ejection_ms": 30000})
        # Retries hide the resets from the clients; the server is ejected all the same.
        wait_until(lambda: self.request()[0] == 200 and self.ejected("resets"), timeout=15, what="resets ejected")
        self.assertEqual(self.servers()["resets"]["outlier"]["reason"], "consecutive_failures")
        before = bad.requests()
        self.assertEqual([self.request()[1] for _ in range(6)], ["good"] * 6)
        self.assertEqual(bad.requests(), before)

    def test_a_server_far_slower_than_its_peers_is_ejected(self):
        fast = [Backend(self, "fast-1"), Backend(self, "fast-2")]
        slow = Backend(self, "slow", delay=0.15)
        self.start(fast + [slow], outlier={"slow_factor": 3, "interval_ms": 1000, "min_requests": 3,
                                           "base_ejection_ms": 30000})
        stop = threading.Event()

        def load():
            client = Client(self.lb.port)
            try:
                while not stop.is_set():
                    client.get("/x")
            finally:
                client.close()

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: self.ejected("slow"), timeout=20, what="slow ejected")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        self.assertEqual(self.servers()["slow"]["outlier"]["reason"], "slow")
        self.wait_log(self.lb, r"outlier: ejecting slow for 30 s: mean response time \d+ ms over \d+ responses, "
                               r"more than 3 times its peers' median")
        self.assertFalse(self.ejected("fast-1") or self.ejected("fast-2"))
        before = slow.requests()
        self.assertNotIn("slow", [self.request()[1] for _ in range(6)])
        self.assertEqual(slow.requests(), before)

    def test_never_more_than_the_share_at_once(self):
        backends = [Backend(self, f"err-{i}", mode="error") for i in range(4)]
        self.start(backends, outlier={"consecutive_5xx": 2, "max_ejection_percent": 50, "base_ejection_ms": 60000})

        def ejected_count():
            return sum(1 for s in self.servers().values() if s["outlier"]["ejected"])

        wait_until(lambda: self.request() and ejected_count() == 2, timeout=15, what="two servers ejected")
        # Every server keeps failing: the other two stay in rotation and still answer.
        for _ in range(30):
            self.assertEqual(self.request()[0], 500)
        self.assertEqual(ejected_count(), 2)
        self.wait_log(self.lb, r"outlier: err-\d stays in rotation despite 2 consecutive 5xx: 2 of 4 servers "
                               r"ejected already \(max_ejection_percent 50\)")
        text = self.metrics()
        self.assertEqual(sum(self.sample(text, "fulcrum_lb_server_ejected", server=b.name) for b in backends), 2)


class RetryBudgetTest(OutlierTestCase):
    def test_retries_stay_within_the_budget_under_load(self):
        sick = [Backend(self, f"sick-{i}", mode="reset", delay=0.5) for i in range(2)]
        self.start(sick, threads=1, retries=2)
        clients = 40
        statuses = []
        lock = threading.Lock()

        def one():
            try:
                status = get_once(self.lb.port, "/x", timeout=20)[0]
            except OSError as e:
                status = repr(e)
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=one) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        self.assertEqual(len(statuses), clients)
        self.assertTrue(all(s in (502, 503) for s in statuses), statuses)
        totals = self.totals()
        # Without a budget every request would be retried (40 to 80 retries). With 20 % of at most
        # 40 requests in flight, about 8 go out at once, plus the floor of 3 as the rest end.
        self.assertLessEqual(totals["retries"], 20, totals)
        self.assertGreaterEqual(totals["retries_budget_exhausted"], 20, totals)
        text = self.metrics()
        self.assertEqual(self.sample(text, "fulcrum_lb_retries_budget_exhausted_total"),
                         totals["retries_budget_exhausted"])

    def test_a_single_request_to_a_dead_server_is_still_retried(self):
        good = Backend(self, "alive")
        dead = Server("dead", free_port())  # nothing listens there
        self.start([good], servers=[dead, Server("alive", good.port)], threads=1)
        for _ in range(4):
            self.assertEqual(self.request(), (200, "alive"))
        totals = self.totals()
        self.assertGreaterEqual(totals["retries"], 1, totals)
        self.assertEqual(totals["retries_budget_exhausted"], 0, totals)


if __name__ == "__main__":
    unittest.main()
