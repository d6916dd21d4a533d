"""The load balancer's stats listener end to end: dashboard, /metrics, /api/state and the admin
API (bearer token; ready / drain / maint), with real `fulcrum web` nodes behind a real balancer."""
import json
import os
import re
import unittest
import urllib.request

from harness import (FULCRUM, Process, TempDir, ThreadedServer, assert_valid_metrics, free_port, http_get,
                     wait_until)
from test_lb import Client, LbTestCase, Server, WebNodes


def answer_503(conn, _server):
    """A server whose every answer, its health check's included, is 503."""
    f = conn.makefile("rb")
    while f.readline() not in (b"\r\n", b"\n", b""):
        pass
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


class LbStatsTest(LbTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.addClassCleanup(cls.tmp.cleanup)
        cls.tmp.write("www/small.txt", "0123456789abcdef" * 64)
        cls.web = WebNodes(cls.tmp)
        cls.addClassCleanup(cls.web.stop_all)
        cls.web.start_all()

    def setUp(self):
        super().setUp()
        self.stats_port = free_port()
        self.lb = self.start_lb(self.web.servers(), node_extra={"stats": f"127.0.0.1:{self.stats_port}"})
        self.stats = f"http://127.0.0.1:{self.stats_port}"
        wait_until(lambda: http_get(self.stats + "/api/state")[0] == 200, what="stats listener")
        token_path = os.path.join(self.tmp.path, "var", "admin.token")
        wait_until(lambda: os.path.exists(token_path), what="admin token")
        self.assertEqual(os.stat(token_path).st_mode & 0o777, 0o600)
        with open(token_path) as f:
            self.token = f.read().strip()

    def state(self):
        status, _, body = http_get(self.stats + "/api/state")
        self.assertEqual(status, 200)
        return json.loads(body)

    def set_state(self, server, body, token=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token is not False:
            headers["Authorization"] = f"Bearer {token or self.token}"
        return http_get(f"{self.stats}/api/servers/{server}/state", headers=headers, method="POST", data=data)

    def served(self, count):
        client = Client(self.lb.port)
        try:
            return [client.get("/small.txt")[1] for _ in range(count)]
        finally:
            client.close()

    def test_dashboard_metrics_and_state_count_traffic(self):
        self.served(12)
        status, headers, body = http_get(self.stats + "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        self.assertIn(b"api/state", body)
        state = self.state()
        self.assertEqual(state["node"], "lb-t")
        self.assertEqual([s["name"] for s in state["servers"]], ["web-1", "web-2", "web-3"])
        self.assertEqual(sum(s["responses"]["2xx"] for s in state["servers"]), 12)
        self.assertTrue(all(s["health"] == "up" and s["admin"] == "ready" for s in state["servers"]))
        status, headers, body = http_get(self.stats + "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        self.assertRegex(text, r'fulcrum_lb_requests_total\{node="lb-t"\} 12\n')
        for name in ("web-1", "web-2", "web-3"):
            self.assertRegex(text, rf'fulcrum_lb_server_up\{{node="lb-t",server="{name}"\}} 1\n')
            self.assertRegex(text, rf'fulcrum_lb_server_responses_total\{{node="lb-t",server="{name}",code="2xx"\}} 4\n')
            self.assertRegex(text, rf'fulcrum_lb_server_admin_state\{{node="lb-t",server="{name}",state="ready"\}} 1\n')
            self.assertRegex(text, rf'fulcrum_lb_server_admin_state\{{node="lb-t",server="{name}",state="drain"\}} 0\n')
        assert_valid_metrics(self, body)
        # One client, keep-alive: after each server's first request the lb reuses its connection.
        reused = re.findall(r'fulcrum_lb_server_connections_reused_total\{node="lb-t",server="web-\d"\} (\d+)\n', text)
        self.assertEqual(len(reused), 3)
        self.assertGreater(sum(map(int, reused)), 0, text)
        # 12 requests: each one a new connection or a reused one.
        opened = re.findall(r'fulcrum_lb_server_connections_total\{node="lb-t",server="web-\d"\} (\d+)\n', text)
        self.assertEqual(len(opened), 3)
        self.assertEqual(sum(map(int, opened)) + sum(map(int, reused)), 12, text)
        self.assertRegex(text, r'fulcrum_lb_server_connections_idle\{node="lb-t",server="web-1"\} \d+\n')
        self.assertRegex(text, r'fulcrum_lb_server_connections_open\{node="lb-t",server="web-1"\} \d+\n')
        for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                       "process_open_fds", "process_max_fds", "process_start_time_seconds"):
            self.assertRegex(text, rf"\n{family} [0-9.e+]+\n")
        self.assertRegex(text, r'\nfulcrum_build_info\{version="[^"]+",build_type="[^"]+"\} 1\n')

        # Health checks: the series move with each active check.
        def passed(name):
            found = re.search(rf'fulcrum_lb_server_checks_total\{{node="lb-t",server="{name}",result="passed"\}} (\d+)\n',
                              http_get(self.stats + "/metrics")[2].decode())
            return int(found.group(1)) if found else -1
        before = passed("web-1")
        wait_until(lambda: passed("web-1") > max(before, 0), what="another passing check of web-1")
        text = http_get(self.stats + "/metrics")[2].decode()
        self.assertRegex(text, r'fulcrum_lb_server_check_up\{node="lb-t",server="web-1"\} 1\n')
        self.assertRegex(text, r'fulcrum_lb_server_last_check_duration_seconds\{node="lb-t",server="web-1"\} [0-9.e-]+\n')
        self.assertRegex(text, r'fulcrum_lb_server_state_changes_total\{node="lb-t",server="web-1",to="down"\} 0\n')

    def test_a_failing_server_shows_its_last_check_downtime_and_last_change(self):
        sick = ThreadedServer(answer_503)
        self.addCleanup(sick.stop)
        stats_port = free_port()
        self.start_lb(self.web.servers() + [Server("sick", sick.port)], name="sick",
                      health={"path": "/healthz", "interval_ms": 100, "timeout_ms": 2000, "rise": 2, "fall": 2},
                      node_extra={"stats": f"127.0.0.1:{stats_port}"})
        stats = f"http://127.0.0.1:{stats_port}"

        def servers():
            return {s["name"]: s for s in json.loads(http_get(stats + "/api/state")[2])["servers"]}

        wait_until(lambda: servers()["sick"]["health"] == "down", what="sick down")
        first = servers()
        s = first["sick"]
        # HAProxy's LastChk: L7STS/503, with the reason in words.
        self.assertEqual((s["last_check"]["result"], s["last_check"]["status"], s["last_check"]["reason"]),
                         ("L7STS", 503, "HTTP 503"), s)
        self.assertGreaterEqual(s["last_check"]["duration_ms"], 0)
        self.assertEqual(s["down_transitions"], 1)
        self.assertGreaterEqual(s["checks_failed"], 2)
        wait_until(lambda: servers()["sick"]["downtime_seconds"] > s["downtime_seconds"] + 0.2,
                   what="sick's downtime growing")
        later = servers()["sick"]
        self.assertGreater(later["last_change_seconds"], s["last_change_seconds"])
        ok = first["web-1"]
        self.assertEqual((ok["last_check"]["result"], ok["last_check"]["status"]), ("L7OK", 200), ok)
        self.assertEqual((ok["downtime_seconds"], ok["down_transitions"]), (0, 0))
        text = http_get(stats + "/metrics")[2].decode()
        found = re.search(r'fulcrum_lb_server_downtime_seconds_total\{node="lb-t-sick",server="sick"\} ([0-9.e+-]+)\n', text)
        self.assertTrue(found, text)
        self.assertGreater(float(found.group(1)), 0)
        self.assertRegex(text, r'fulcrum_lb_server_downtime_seconds_total\{node="lb-t-sick",server="web-1"\} 0\n')
        self.assertRegex(text, r'fulcrum_lb_server_last_change_seconds\{node="lb-t-sick",server="web-1"\} [0-9.e+-]+\n')
        # An admin change is a change of state too.
        wait_until(lambda: servers()["web-2"]["last_change_seconds"] > 1, what="web-2 unchanged for a second")
        self.assertEqual(http_get(f"{stats}/api/servers/web-2/state", method="POST",
                                  data=json.dumps({"state": "drain"}).encode(),
                                  headers={"Content-Type": "application/json",
                                           "Authorization": f"Bearer {self.token}"})[0], 200)
        self.assertLess(servers()["web-2"]["last_change_seconds"], 1)

    def test_admin_api_needs_the_token_and_bad_calls_change_nothing(self):
        status, headers, _ = self.set_state("web-2", {"state": "drain"}, token=False)
        self.assertEqual(status, 401)
        self.assertEqual(headers.get("WWW-Authenticate"), "Bearer")
        status, _, _ = self.set_state("web-2", {"state": "drain"}, token="x" * 64)
        self.assertEqual(status, 401)
        for body, expected in ((b"not json", 400), ({"state": "sleep"}, 400), ({"state": 1}, 400),
                               ({"state": "drain", "extra": 1}, 400), ({}, 400)):
            status, _, reply = self.set_state("web-2", body)
            self.assertEqual(status, expected, body)
            self.assertIn(b"error", reply)
        status, _, _ = self.set_state("nope", {"state": "drain"})
        self.assertEqual(status, 404)
        status, _, _ = http_get(f"{self.stats}/api/servers/web-2/state", headers={"Authorization": f"Bearer {self.token}"})
        self.assertEqual(status, 405)
        self.assertTrue(all(s["admin"] == "ready" for s in self.state()["servers"]))
        self.assertEqual(sorted(set(self.served(9))), ["web-1", "web-2", "web-3"])

    def test_drain_and_maint_take_a_server_out_and_ready_brings_it_back(self):
        status, _, body = self.set_state("web-2", {"state": "drain"})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"server": "web-2", "state": "drain", "previous": "ready"})
        # Workers apply the change by message: poll until no new request reaches web-2.
        wait_until(lambda: "web-2" not in self.served(6), what="web-2 out of rotation")
        self.assertEqual(sorted(set(self.served(12))), ["web-1", "web-3"])
        self.assertEqual(self.state()["servers"][1]["admin"], "drain")
        status, _, _ = self.set_state("web-3", {"state": "maint"})
        self.assertEqual(status, 200)
        wait_until(lambda: set(self.served(4)) == {"web-1"}, what="only web-1 in rotation")
        status, _, body = http_get(self.stats + "/metrics")
        text = body.decode()
        self.assertRegex(text, r'fulcrum_lb_server_in_rotation\{node="lb-t",server="web-3"\} 0\n')
        # The admin state, one-hot: web-2 drain, web-3 maint, web-1 ready.
        for name, now in (("web-1", "ready"), ("web-2", "drain"), ("web-3", "maint")):
            for state in ("ready", "drain", "maint"):
                self.assertRegex(text, rf'fulcrum_lb_server_admin_state\{{node="lb-t",server="{name}",state="{state}"\}} '
                                       rf'{1 if state == now else 0}\n')
        assert_valid_metrics(self, body)
        for name in ("web-2", "web-3"):
            status, _, _ = self.set_state(name, {"state": "ready"})
            self.assertEqual(status, 200)
        text = http_get(self.stats + "/metrics")[2].decode()
        self.assertRegex(text, r'fulcrum_lb_server_admin_state\{node="lb-t",server="web-3",state="ready"\} 1\n')
        self.assertRegex(text, r'fulcrum_lb_server_admin_state\{node="lb-t",server="web-3",state="maint"\} 0\n')
        wait_until(lambda: set(self.served(9)) == {"web-1", "web-2", "web-3"}, what="all back in rotation")
        self.assertIn("admin: server web-2 set to drain (was ready)", self.lb.output())


if __name__ == "__main__":
    unittest.main()
