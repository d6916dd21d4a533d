"""`fulcrum web` end to end: a real process on a free loopback port, real clients."""
import hashlib
import json
import re
import os
import select
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import (FULCRUM, Process, TempDir, assert_valid_metrics, free_port, http_get, raw_exchange, read_body,
                     read_head, read_response, status_of, wait_reload_report, wait_until)


def statuses_of(raw):
    """Status codes of every response in a pipelined exchange (bodies here hold no status lines)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


class WebServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.port = free_port()
        root = os.path.join(cls.tmp.path, "www")
        cls.tmp.write("www/index.html", "<h1>home</h1>\n")
        cls.tmp.write("www/small.txt", "0123456789abcdef" * 64)  # 1 KiB
        cls.big = os.urandom(300 * 1024)
        cls.tmp.write("www/big.bin", cls.big, mode="wb")
        cls.tmp.write("www/sub/index.html", "<p>sub</p>\n")
        cls.tmp.write("www/style.css", "body{}\n")
        cls.tmp.write("secret.txt", "do not serve\n")  # outside the docroot
        os.symlink(os.path.join(cls.tmp.path, "secret.txt"), os.path.join(root, "escape.txt"))
        os.symlink("small.txt", os.path.join(root, "inside-link.txt"))
        cls.site = cls.tmp.write("site.toml", f"""
[site]
name = "test"
state_dir = "var"
[lb.timeouts]
http_request_ms = 1500
client_ms = 5000
[web]
docroot = "www"
app = "none"
[[web.node]]
name = "web-t1"
listen = "127.0.0.1:{cls.port}"
threads = 2
""")
        cls.proc = Process([FULCRUM, "web", "--site", cls.site, "--node", "web-t1"],
                           os.path.join(cls.tmp.path, "web.log"))
        cls.base = f"http://127.0.0.1:{cls.port}"
        try:
            wait_until(lambda: http_get(cls.base + "/healthz")[0] == 200, what="web node health")
        except Exception:
            cls.proc.stop()
            print(cls.proc.output())
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.proc.stop()
        cls.tmp.cleanup()

    def test_healthz_and_served_by(self):
        status, headers, body = http_get(self.base + "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"ok\n")
        self.assertEqual(headers["X-Served-By"], "web-t1")

    def test_access_line_per_request(self):
        status, _, _ = http_get(self.base + "/style.css?v=3")
        self.assertEqual(status, 200)
        line = wait_until(lambda: re.search(r"access client=127\.0\.0\.1:\d+ method=GET path=/style\.css\?v=3 "
                                            r"status=200 bytes=\d+ total_ms=[\d.]+", self.proc.output()),
                          timeout=10, what="the web node's access line")
        self.assertTrue(line)

    def test_index_and_mime(self):
        status, headers, body = http_get(self.base + "/")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"<h1>home</h1>\n")
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        status, headers, _ = http_get(self.base + "/style.css")
        self.assertTrue(headers["Content-Type"].startswith("text/css"))
        status, headers, _ = http_get(self.base + "/big.bin")
        self.assertEqual(headers["Content-Type"], "application/octet-stream")

    def test_directory_redirect_and_index(self):
        raw = raw_exchange(self.port, b"GET /sub HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(status_of(raw), 301)
        self.assertIn(b"Location: /sub/\r\n", raw)
        status, _, body = http_get(self.base + "/sub/")
        self.assertEqual((status, body), (200, b"<p>sub</p>\n"))

    def test_large_file_intact(self):
        status, headers, body = http_get(self.base + "/big.bin")
        self.assertEqual(status, 200)
        self.assertEqual(int(headers["Content-Length"]), len(self.big))
        self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(self.big).hexdigest())

    def test_head_has_length_but_no_body(self):
        raw = raw_exchange(self.port, b"HEAD /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertEqual(status_of(raw), 200)
        self.assertIn(b"Content-Length: 1024", head)
        self.assertEqual(body, b"")

    def test_conditional_etag_and_last_modified(self):
        status, headers, _ = http_get(self.base + "/small.txt")
        etag, last_modified = headers["ETag"], headers["Last-Modified"]
        status, _, body = http_get(self.base + "/small.txt", {"If-None-Match": etag})
        self.assertEqual((status, body), (304, b""))
        status, _, _ = http_get(self.base + "/small.txt", {"If-None-Match": '"nope", ' + etag})
        self.assertEqual(status, 304)
        status, _, _ = http_get(self.base + "/small.txt", {"If-None-Match": '"nope"'})
        self.assertEqual(status, 200)
        status, _, _ = http_get(self.base + "/small.txt", {"If-Modified-Since": last_modified})
        self.assertEqual(status, 304)
        status, _, _ = http_get(self.base + "/small.txt", {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})
        self.assertEqual(status, 200)

    def test_ranges(self):
        status, headers, body = http_get(self.base + "/big.bin", {"Range": "bytes=100-199"})
        self.assertEqual(status, 206)
        self.assertEqual(body, self.big[100:200])
        self.assertEqual(headers["Content-Range"], f"bytes 100-199/{len(self.big)}")
        status, _, body = http_get(self.base + "/big.bin", {"Range": "bytes=-10"})
        self.assertEqual((status, body), (206, self.big[-10:]))
        status, _, body = http_get(self.base + "/big.bin", {"Range": "bytes=307000-"})
        self.assertEqual((status, body), (206, self.big[307000:]))
        status, headers, _ = http_get(self.base + "/big.bin", {"Range": f"bytes={len(self.big)}-"})
        self.assertEqual(status, 416)
        self.assertEqual(headers["Content-Range"], f"bytes */{len(self.big)}")
        status, _, body = http_get(self.base + "/big.bin", {"Range": "bytes=0-1,5-6"})
        self.assertEqual((status, len(body)), (200, len(self.big)))
        status, _, body = http_get(self.base + "/big.bin", {"Range": "bytes=0-9", "If-Range": '"stale"'})
        self.assertEqual((status, len(body)), (200, len(self.big)))

    def test_traversal_attempts_fail(self):
        attempts = [
            b"/../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2E%2Fsecret.txt", b"/sub/../../secret.txt",
            b"/..%2fsecret.txt", b"/escape.txt", b"/small.txt%00.html", b"/%00", b"/sub/%2e%2e/%2e%2e/secret.txt",
        ]
        for target in attempts:
            raw = raw_exchange(self.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertIn(status_of(raw), (400, 403, 404), target)
            self.assertNotIn(b"do not serve", raw, target)

    def test_symlink_inside_root_is_served(self):
        status, _, body = http_get(self.base + "/inside-link.txt")
        self.assertEqual((status, len(body)), (200, 1024))

    def test_method_not_allowed(self):
        status, headers, _ = http_get(self.base + "/small.txt", method="DELETE")
        self.assertEqual(status, 405)
        self.assertEqual(headers["Allow"], "GET, HEAD")

    def test_pipelining_answers_in_order(self):
        reqs = b"".join(f"GET /{p} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                        for p in ["healthz", "small.txt", "nope", "healthz"])
        reqs += b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        raw = raw_exchange(self.port, reqs)
        statuses = statuses_of(raw)
        self.assertEqual(statuses, [200, 200, 404, 200, 200])

    def test_keep_alive_many_requests_one_connection(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            f = s.makefile("rb")
            for _ in range(50):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                status_line = f.readline()
                self.assertEqual(status_line, b"HTTP/1.1 200 OK\r\n")
                length = None
                while True:
                    line = f.readline()
                    if line == b"\r\n":
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.assertEqual(f.read(length), b"ok\n")

    def test_http10_closes_by_default(self):
        raw = raw_exchange(self.port, b"GET /healthz HTTP/1.0\r\n\r\n", timeout=3)
        self.assertEqual(status_of(raw), 200)
        self.assertIn(b"Connection: close", raw)

    def test_malformed_requests_get_rfc_status(self):
        cases = [
            (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n", 400),
        ]
        for payload, expected in cases:
            raw = raw_exchange(self.port, payload)
            self.assertEqual(status_of(raw), expected, payload[:80])

    def test_slowloris_gets_408(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
            start = time.monotonic()
            data = s.recv(4096)
            elapsed = time.monotonic() - start
        self.assertEqual(status_of(data), 408)
        self.assertLess(elapsed, 8)

    def test_static_routes_take_no_body(self):
        # An empty body is no body: the connection survives the 405.
        payload = (b"POST /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                   b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                   b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(statuses_of(raw_exchange(self.port, payload)), [405, 405, 200])
        # Any byte of body is refused (RFC 9110 §9.3.1: a GET body has no meaning), and the
        # connection closes: what follows is not read.
        for payload in [b"POST /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                        b"GET /small.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]:
            raw = raw_exchange(self.port, payload + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(statuses_of(raw), [413], raw)
            self.assertIn(b"Connection: close", raw)

    def test_expect_continue_over_the_limit_gets_413_not_100(self):
        # The route's limit is checked on the head: 413 at once, no 100 Continue, no body sent.
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
            f = s.makefile("rb")
            start, headers = read_head(f)
            self.assertTrue(start.startswith("HTTP/1.1 413 "), start)
            self.assertEqual(headers["connection"], "close")
            read_body(f, headers)
            self.assertEqual(f.read(), b"")  # closed after the answer
        # A length the route takes (none here) still gets no 100: there is no body to invite.
        raw = raw_exchange(self.port, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                      b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        self.assertEqual(statuses_of(raw), [405])

    def test_client_still_uploading_receives_the_413(self):
        # The server refuses on the head and closes gracefully (half-close, then drains), so a
        # client that keeps uploading reads the 413 rather than a reset.
        body = os.urandom(4 << 20)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode() +
                      b"\r\n\r\n")
            sent_error = None
            try:
                s.sendall(body)
            except (BrokenPipeError, ConnectionResetError) as e:
                sent_error = e
            data = b""
            while True:
                chunk = s.recv(65536)  # ConnectionResetError here is the failure this test is for
                if not chunk:
                    break
                data += chunk
        self.assertEqual(statuses_of(data), [413], (data[:200], sent_error))

    def test_if_none_match_on_two_lines(self):
        status, headers, _ = http_get(self.base + "/small.txt")
        etag = headers["ETag"].encode()
        raw = raw_exchange(self.port, b"GET /small.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"zzz\"\r\n"
                                      b"If-None-Match: " + etag + b"\r\nConnection: close\r\n\r\n")
        self.assertEqual(statuses_of(raw), [304], raw)

    def test_metrics(self):
        http_get(self.base + "/healthz")
        status, headers, body = http_get(self.base + "/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b'fulcrum_web_requests_total{node="web-t1"}', body)
        self.assertIn(b"# TYPE fulcrum_web_responses_total counter", body)
        assert_valid_metrics(self, body)
        self.assertRegex(body.decode(), r"\nprocess_open_fds \d+\n")
        self.assertRegex(body.decode(), r'\nfulcrum_build_info\{version="[^"]+",build_type="[^"]+"\} 1\n')

    def test_route_series_move_with_requests(self):
        def series(text, pattern):
            found = re.search(pattern + r" (\d+)\n", text)
            self.assertIsNotNone(found, pattern)
            return int(found.group(1))

        def figures():
            text = http_get(self.base + "/metrics")[2].decode()
            count = r'fulcrum_web_request_duration_seconds_count\{{node="web-t1",route="{}"\}}'
            code = r'fulcrum_web_route_responses_total\{{node="web-t1",route="{}",code="{}"\}}'
            return {"static": series(text, count.format("static")), "health": series(text, count.format("health")),
                    "metrics": series(text, count.format("metrics")), "other": series(text, count.format("other")),
                    "static_2xx": series(text, code.format("static", "2xx")),
                    "static_4xx": series(text, code.format("static", "4xx")),
                    "static_le_inf": series(text, r'fulcrum_web_request_duration_seconds_bucket\{node="web-t1",'
                                                  r'route="static",le="\+Inf"\}')}
        before = figures()
        for _ in range(3):
            self.assertEqual(http_get(self.base + "/small.txt")[0], 200)
        self.assertEqual(http_get(self.base + "/no-such-file")[0], 404)
        self.assertEqual(http_get(self.base + "/healthz")[0], 200)
        self.assertEqual(http_get(self.base + "/small.txt", method="DELETE")[0], 405)
        after = figures()
        delta = {k: after[k] - before[k] for k in before}
        # The first scrape's own answer is counted once it is sent, so "metrics" moved by one.
        self.assertEqual(delta, {"static": 4, "health": 1, "metrics": 1, "other": 1, "static_2xx": 3,
                                 "static_4xx": 1, "static_le_inf": 4})

    def test_concurrent_clients(self):
        errors = []

        def worker():
            for _ in range(50):
                try:
                    status, _, body = http_get(self.base + "/small.txt")
                    if status != 200 or len(body) != 1024:
                        errors.append(status)
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [])


def vm_kib(pid, field):
    """A /proc/PID/status size in KiB: VmRSS now, VmHWM its peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} for pid {pid}")


class WebBodyMemoryTest(unittest.TestCase):
    """Memory per connection is bounded by what the route takes, not by the global body limit:
    50 clients each uploading a 9 MB chunked body at once. Timeouts are long so that, without
    the bound, the node would hold every body whole (and, today, twice)."""

    CLIENTS = 50
    BODY = 9 * 1000 * 1000
    CHUNK = 64 * 1024

    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.port = free_port()
        self.tmp.write("www/index.html", "hi\n")
        site = self.tmp.write("site.toml", f"""
[site]
name = "test"
state_dir = "var"
[lb.timeouts]
http_request_ms = 60000
client_ms = 60000
[web]
docroot = "www"
app = "none"
[[web.node]]
name = "web-m1"
listen = "127.0.0.1:{self.port}"
threads = 2
""")
        self.proc = Process([FULCRUM, "web", "--site", site, "--node", "web-m1"], os.path.join(self.tmp.path, "web.log"))
        self.addCleanup(self.proc.stop)
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.port}/healthz")[0] == 200, what="web node health")

    def test_fifty_large_chunked_uploads_stay_small(self):
        pid = self.proc.proc.pid
        before = vm_kib(pid, "VmHWM")
        chunk = b"%x\r\n" % self.CHUNK + b"u" * self.CHUNK + b"\r\n"
        head = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        clients = []
        for _ in range(self.CLIENTS):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.setblocking(False)
            clients.append({"sock": s, "out": memoryview(head), "sent": 0, "answer": b"", "done": False})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(c["done"] for c in clients):
            live = [c for c in clients if not c["done"]]
            _, writable, _ = select.select([], [c["sock"] for c in live], [], 0.5)
            # Round robin: one chunk per client per turn, so every upload is in flight at once.
            for c in live:
                try:
                    data = c["sock"].recv(65536)
                    if data:
                        c["answer"] += data
                    else:
                        c["done"] = True
                        continue
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    c["done"] = True
                    continue
                if c["sock"] not in writable:
                    continue
                if not c["out"]:
                    if c["sent"] >= self.BODY:
                        continue  # all sent: waiting for the answer
                    c["out"] = memoryview(chunk if c["sent"] + self.CHUNK < self.BODY else chunk + b"0\r\n\r\n")
                    c["sent"] += self.CHUNK
                try:
                    n = c["sock"].send(c["out"])
                    c["out"] = c["out"][n:]
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    c["done"] = True
        for c in clients:
            c["sock"].close()
        grown_mib = (vm_kib(pid, "VmHWM") - before) / 1024
        statuses = [status_of(c["answer"]) for c in clients]
        print(f"\n{self.CLIENTS} x {self.BODY} B chunked uploads: peak RSS grew {grown_mib:.1f} MiB; "
              f"answers {sorted(set(map(str, statuses)))}")
        self.assertEqual(statuses, [413] * self.CLIENTS)
        self.assertLess(grown_mib, 64)


class WebLifecycleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.port = free_port()
        self.tmp.write("www/index.html", "hi\n")
        self.tmp.write("www/big.bin", os.urandom(16 * 1024 * 1024), mode="wb")
        self.site = self.tmp.write("site.toml", f"""
[web]
docroot = "www"
app = "none"
[[web.node]]
name = "web-life"
listen = "127.0.0.1:{self.port}"
threads = 1
""")

    def start(self):
        proc = Process([FULCRUM, "web", "--site", self.site, "--node", "web-life"],
                       os.path.join(self.tmp.path, "web.log"))
        self.addCleanup(proc.stop)
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.port}/healthz")[0] == 200, what="health")
        return proc

    def test_sigterm_finishes_in_flight_response_and_exits_zero(self):
        proc = self.start()
        # An idle keep-alive connection, known to be accepted: it has had one answer.
        idle = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: idle.recv(4096).endswith(b"ok\n"), what="idle connection answered")
        # A download far larger than the socket buffers (small receive buffer, slow reader).
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", self.port))
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(1024)
        self.assertEqual(status_of(first), 200)
        proc.signal(signal.SIGTERM)
        received = len(first)
        while True:
            data = s.recv(65536)
            if not data:
                break
            received += len(data)
        s.close()
        head_len = first.index(b"\r\n\r\n") + 4
        self.assertEqual(received - head_len, 16 * 1024 * 1024)
        self.assertEqual(idle.recv(10), b"")  # the idle keep-alive connection was closed
        idle.close()
        self.assertEqual(proc.wait(timeout=15), 0)
        self.assertIn("stopped", proc.output())

    def reload_report(self, sequence):
        return wait_reload_report(os.path.join(self.tmp.path, "var"), "web-life", sequence)

    def test_sighup_swaps_docroot_without_dropping_connections_and_refuses_a_broken_file(self):
        proc = self.start()
        # One node of a name per host: a second one refuses to start.
        second = subprocess.run([FULCRUM, "web", "--site", self.site, "--node", "web-life"], capture_output=True,
                                timeout=15)
        self.assertEqual(second.returncode, 1)
        self.assertIn(b"already runs here (pid %d)" % proc.proc.pid, second.stderr)
        # A keep-alive connection with one answer, and a download in flight across the reload.
        kept = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        kept_file = kept.makefile("rb")
        kept.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(kept_file)[::2], (200, b"hi\n"))
        download = socket.socket()
        download.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        download.settimeout(10)
        download.connect(("127.0.0.1", self.port))
        download.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        first = download.recv(1024)
        self.assertEqual(status_of(first), 200)

        self.tmp.write("www2/only-new.txt", "new root\n")
        with open(self.site) as f:
            good = f.read().replace('docroot = "www"', 'docroot = "www2"').replace("threads = 1", "threads = 2")
        self.tmp.write("site.toml", good)
        proc.signal(signal.SIGHUP)
        report = self.reload_report(1)
        self.assertTrue(report["ok"], report)
        self.assertEqual(report["pid"], proc.proc.pid)
        self.assertEqual(len(report["changes"]), 1, report)
        self.assertRegex(report["changes"][0], r"^web\.docroot: .*/www -> .*/www2$")
        self.assertEqual(report["needs_restart"], ["web.node[0].threads: 1 -> 2"])
        self.assertEqual(http_get(f"http://127.0.0.1:{self.port}/only-new.txt")[::2], (200, b"new root\n"))
        self.assertEqual(http_get(f"http://127.0.0.1:{self.port}/index.html")[0], 404)
        # The connection opened before the reload is served from the new root.
        kept.sendall(b"GET /only-new.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(kept_file)[::2], (200, b"new root\n"))
        # The download started before it ends whole, from the file it opened.
        received = len(first)
        while data := download.recv(65536):
            received += len(data)
        download.close()
        self.assertEqual(received - (first.index(b"\r\n\r\n") + 4), 16 * 1024 * 1024)

        # A broken file: refused with its position, the running configuration kept.
        self.tmp.write("site.toml", good.replace('docroot = "www2"', 'docroot = "www"').replace(
            f'listen = "127.0.0.1:{self.port}"', 'listen = "nowhere"'))
        proc.signal(signal.SIGHUP)
        report = self.reload_report(2)
        self.assertFalse(report["ok"])
        self.assertEqual(report["changes"], [])
        self.assertRegex(report["errors"][0], r"site\.toml:\d+:\d+: web\.node\[0\]\.listen: ")
        self.assertIn("reload refused", proc.output())
        self.assertEqual(http_get(f"http://127.0.0.1:{self.port}/only-new.txt")[0], 200)
        kept.sendall(b"GET /only-new.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(kept_file)[0], 200)
        kept_file.close()
        kept.close()
        self.assertTrue(proc.alive())

    def test_sigint_exits_zero(self):
        proc = self.start()
        proc.signal(signal.SIGINT)
        self.assertEqual(proc.wait(timeout=15), 0)

    def test_port_in_use_is_runtime_error(self):
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", self.port))
        blocker.listen()
        self.addCleanup(blocker.close)
        result = subprocess.run([FULCRUM, "web", "--site", self.site, "--node", "web-life"],
                                capture_output=True, timeout=15)
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"Address already in use", result.stderr)

    def test_unknown_node_and_guestbook_without_db_refused(self):
        result = subprocess.run([FULCRUM, "web", "--site", self.site, "--node", "nope"], capture_output=True,
                                timeout=15)
        self.assertEqual(result.returncode, 2)
        self.tmp.write("gb.toml", f"""
[web]
docroot = "www"
app = "guestbook"
[[web.node]]
name = "web-gb"
listen = "127.0.0.1:{self.port}"
""")
        result = subprocess.run([FULCRUM, "web", "--site", os.path.join(self.tmp.path, "gb.toml"), "--node",
                                 "web-gb"], capture_output=True, timeout=15)
        self.assertEqual(result.returncode, 2)
        self.assertIn(b"web.app", result.stderr)
        self.assertIn(b"the guestbook needs its database", result.stderr)


if __name__ == "__main__":
    unittest.main()
