"""Per-server max_conn and the lb's queue (HAProxy's server maxconn + timeout queue), end to end:
a real `fulcrum lb` with two workers in front of Python servers that count how many requests
they hold at once. Conditions are awaited by bounded polling; everything is cleaned up."""
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from harness import ThreadedServer, free_port, http_get, read_body, read_head, wait_until
from test_lb import Client, LbTestCase, Server


class CountingBackend:
    """An HTTP/1.1 server that holds each request `delay` seconds (or until released, for
    /hold) and records the most requests it ever held at once. /healthz answers at once."""

    def __init__(self, name, delay=0.05):
        self.name = name
        self.delay = delay
        self.lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.served = 0
        self.release = threading.Event()
        self.server = ThreadedServer(self._handle)
        self.port = self.server.port

    def stop(self):
        self.release.set()
        self.server.stop()

    def _handle(self, conn, server):
        f = conn.makefile("rb")
        while not server.stopping.is_set():
            try:
                start, headers = read_head(f)
            except EOFError:
                return
            target = start.split(" ")[1]
            read_body(f, headers, bodiless="content-length" not in headers and "transfer-encoding" not in headers)
            if target != "/healthz":
                with self.lock:
                    self.current += 1
                    self.peak = max(self.peak, self.current)
                try:
                    if target == "/hold":
                        self.release.wait(30)
                    elif server.stopping.wait(self.delay):
                        return
                finally:
                    with self.lock:
                        self.current -= 1
                        self.served += 1
            body = self.name.encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Served-By: " + body + b"\r\nContent-Length: " +
                         str(len(body)).encode() + b"\r\n\r\n" + body)


def metric(text, name, **labels):
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


class QueueTest(LbTestCase):
    def start(self, backends, lb_keys=None, threads=2):
        self.stats_port = free_port()
        lb = self.start_lb(backends, threads=threads, lb_keys=lb_keys or {},
                           node_extra={"stats": f"127.0.0.1:{self.stats_port}"},
                           health={"path": "/healthz", "interval_ms": 200, "timeout_ms": 2000, "rise": 1, "fall": 3})
        wait_until(lambda: http_get(self.stats_url("/api/state"))[0] == 200, what="stats listener")
        return lb

    def stats_url(self, path):
        return f"http://127.0.0.1:{self.stats_port}{path}"

    def metrics(self):
        return http_get(self.stats_url("/metrics"))[2].decode()

    def state(self):
        return json.loads(http_get(self.stats_url("/api/state"))[2])

    def backend(self, name, delay=0.05):
        b = CountingBackend(name, delay)
        self.addCleanup(b.stop)
        return b

    def get(self, port, path="/"):
        client = Client(port, timeout=60)
        try:
            status, served, _, _ = client.get(path)
            return status, served
        finally:
            client.close()

    def test_a_server_with_max_conn_2_never_sees_a_third_request_under_50_clients(self):
        slow = self.backend("slow", delay=0.05)
        lb = self.start([Server("slow", slow.port, max_conn=2)], lb_keys={"queue_timeout_ms": 60000})

        def client(_):
            c = Client(lb.port, timeout=120)
            try:
                return [c.get(f"/r{i}")[0] for i in range(3)]
            finally:
                c.close()

        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = [s for batch in pool.map(client, range(50)) for s in batch]
        self.assertEqual(statuses, [200] * 150)
        self.assertEqual(slow.served, 150)
        self.assertLessEqual(slow.peak, 2, "the server saw more than its max_conn at once")
        self.assertEqual(slow.peak, 2, "the test never filled the server's two slots")
        text = self.metrics()
        self.assertGreater(metric(text, "fulcrum_lb_queued_total"), 50)
        self.assertEqual(metric(text, "fulcrum_lb_queue_current"), 0)
        self.assertEqual(metric(text, "fulcrum_lb_server_slots_used", server="slow"), 0)
        self.assertEqual(metric(text, "fulcrum_lb_server_max_conn", server="slow"), 2)
        self.assertGreater(metric(text, "fulcrum_lb_queue_seconds_count"), 50)
        self.assertEqual(metric(text, "fulcrum_lb_queue_refused_total", reason="timeout"), 0)
        wait_until(lambda: len(re.findall(r"queue_ms=([0-9.]+)", lb.output())) == 150,
                   what="every access line, each with queue_ms")
        waited = [float(m) for m in re.findall(r"queue_ms=([0-9.]+)", lb.output())]
        self.assertGreater(max(waited), 50, "requests waited their turn in the queue")
        state = self.state()
        self.assertEqual(state["totals"]["queue"]["current"], 0)
        self.assertEqual(state["servers"][0]["max_conn"], 2)

    @unittest.skipUnless(shutil.which("h2load"), "h2load (Debian nghttp2-client) is not installed")
    def test_http2_streams_share_the_same_slots(self):
        slow = self.backend("slow", delay=0.02)
        lb = self.start([Server("slow", slow.port, max_conn=2)], lb_keys={"queue_timeout_ms": 60000, "h2c": True})
        out = subprocess.run(["h2load", "-n", "200", "-c", "2", "-m", "50", f"http://127.0.0.1:{lb.port}/h2"],
                             capture_output=True, text=True, timeout=120)
        self.assertRegex(out.stdout, r"requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed",
                         out.stdout + out.stderr)
        self.assertEqual(slow.peak, 2)
        self.assertGreater(metric(self.metrics(), "fulcrum_lb_queued_total"), 50)

    def test_busy_servers_spill_to_one_with_room_and_never_to_a_backup(self):
        a = self.backend("a")
        b = self.backend("b")
        spare = self.backend("spare")
        lb = self.start([Server("a", a.port, max_conn=1), Server("b", b.port, max_conn=1),
                         Server("spare", spare.port, backup=True)],
                        lb_keys={"queue_timeout_ms": 60000})
        a.release.clear()
        held = []
        for _ in range(2):  # one /hold on each active server
            t = threading.Thread(target=lambda: held.append(self.get(lb.port, "/hold")), daemon=True)
            t.start()
        wait_until(lambda: a.current == 1 and b.current == 1, what="both active servers busy")
        waiting = []
        t = threading.Thread(target=lambda: waiting.append(self.get(lb.port, "/after")), daemon=True)
        t.start()
        wait_until(lambda: self.state()["totals"]["queue"]["current"] == 1, what="a request in the queue")
        self.assertEqual(spare.served, 0, "a busy active server is waited for, not replaced by a backup")
        a.release.set()
        b.release.set()
        wait_until(lambda: len(waiting) == 1 and len(held) == 2, timeout=20, what="every request answered")
        self.assertEqual(waiting[0][0], 200)
        self.assertIn(waiting[0][1], ("a", "b"))
        self.assertEqual(spare.served, 0)

    def test_queue_timeout_answers_503(self):
        slow = self.backend("slow")
        lb = self.start([Server("slow", slow.port, max_conn=1)], lb_keys={"queue_timeout_ms": 300})
        held = []
        threading.Thread(target=lambda: held.append(self.get(lb.port, "/hold")), daemon=True).start()
        wait_until(lambda: slow.current == 1, what="the slot taken")
        began = time.monotonic()
        status, _ = self.get(lb.port, "/late")
        self.assertEqual(status, 503)
        self.assertGreaterEqual(time.monotonic() - began, 0.25)
        self.wait_log(lb, r"path=/late status=503 .*term=queue_timeout")
        self.assertEqual(metric(self.metrics(), "fulcrum_lb_queue_refused_total", reason="timeout"), 1)
        slow.release.set()
        wait_until(lambda: len(held) == 1, timeout=20, what="the held request answered")
        self.assertEqual(held[0][0], 200)
        self.assertEqual(slow.peak, 1)

    def test_a_client_leaving_the_queue_takes_its_place_and_leaks_no_slot(self):
        slow = self.backend("slow")
        lb = self.start([Server("slow", slow.port, max_conn=1)], lb_keys={"queue_timeout_ms": 60000})
        held = []
        threading.Thread(target=lambda: held.append(self.get(lb.port, "/hold")), daemon=True).start()
        wait_until(lambda: slow.current == 1, what="the slot taken")
        gone = []
        for _ in range(3):  # they wait on either worker
            s = socket.create_connection(("127.0.0.1", lb.port))
            s.sendall(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
            gone.append(s)
        wait_until(lambda: self.state()["totals"]["queue"]["current"] == 3, what="three requests queued")
        for s in gone:
            s.close()
        # Far sooner than the queue timeout: the lb saw the clients go.
        wait_until(lambda: self.state()["totals"]["queue"]["current"] == 0, timeout=10, what="the queue empty again")
        slow.release.set()
        wait_until(lambda: len(held) == 1, timeout=20, what="the held request answered")
        self.assertEqual(held[0][0], 200)
        wait_until(lambda: metric(self.metrics(), "fulcrum_lb_server_slots_used", server="slow") == 0,
                   what="the slot given back")
        statuses = [self.get(lb.port, f"/next{i}")[0] for i in range(3)]
        self.assertEqual(statuses, [200] * 3)
        self.assertEqual(slow.peak, 1)
        wait_until(lambda: len(re.findall(r"path=/gone .*term=client_abort", lb.output())) == 3,
                   what="three access lines saying the clients left")

    def test_reload_changes_max_conn_and_queue_timeout(self):
        slow = self.backend("slow")
        lb = self.start([Server("slow", slow.port, max_conn=1)], lb_keys={"queue_timeout_ms": 0})
        slow.release.clear()
        held = []
        threading.Thread(target=lambda: held.append(self.get(lb.port, "/hold")), daemon=True).start()
        wait_until(lambda: slow.current == 1, what="the slot taken")
        # No queue: a 503 at once.
        self.assertEqual(self.get(lb.port, "/now")[0], 503)
        self.wait_log(lb, r"path=/now status=503 .*term=queue_full")
        self.assertEqual(metric(self.metrics(), "fulcrum_lb_queue_refused_total", reason="full"), 1)
        # A reload raises the limit: the second request goes through while the first is held.
        site = os.path.join(self.tmp.path, f"lb-{self.id().rsplit('.', 1)[-1]}.toml")
        with open(site) as f:
            text = f.read()
        with open(site, "w") as f:
            f.write(text.replace("max_conn = 1", "max_conn = 2"))
        lb.signal(1)  # SIGHUP
        wait_until(lambda: metric(self.metrics(), "fulcrum_lb_server_max_conn", server="slow") == 2,
                   what="max_conn 2 in force")
        self.assertEqual(self.get(lb.port, "/second")[0], 200)
        slow.release.set()
        wait_until(lambda: len(held) == 1, timeout=20, what="the held request answered")
        self.assertEqual(slow.peak, 2)


if __name__ == "__main__":
    unittest.main()
