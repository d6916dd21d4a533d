"""`fulcrum web` end to end: a real process on a free loopback port, real clients."""
import hashlib
import re
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import (FULCRUM, Process, TempDir, free_port, http_get, raw_exchange, status_of, wait_until)


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
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
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

    def test_post_body_to_static_is_405_and_connection_survives(self):
        payload = (b"POST /small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                   b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = raw_exchange(self.port, payload)
        statuses = statuses_of(raw)
        self.assertEqual(statuses, [405, 200])

    def test_chunked_body_and_expect_continue(self):
        payload = (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n"
                   b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = raw_exchange(self.port, payload)
        statuses = statuses_of(raw)
        self.assertEqual(statuses, [405, 200])
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            interim = s.recv(4096)
            self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim)

    def test_metrics(self):
        http_get(self.base + "/healthz")
        status, headers, body = http_get(self.base + "/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b'fulcrum_web_requests_total{node="web-t1"}', body)
        self.assertIn(b"# TYPE fulcrum_web_responses_total counter", body)

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
