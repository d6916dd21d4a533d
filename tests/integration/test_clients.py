"""Real clients through `fulcrum lb` and straight to `fulcrum web`: every way a request can be
framed, split across writes and kept alive answers correctly and promptly.

The requests go through the lb to a recording echo server (tests/integration/test_lb.py's
PyBackend), which answers with what it received: method, target, fields, body length and hash.
So each case checks the answer, the time it took, the connection afterwards, and exactly what
reached the server. The same splits go straight to the web node, whose answer must not depend
on how the bytes arrived."""
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import unittest
import urllib.request

from harness import FULCRUM, Process, ThreadedServer, needs, read_head, read_response, wait_until, http_get
from test_lb import LbTestCase, Server

PROMPT = 3.0  # seconds: every answer here is a loopback exchange of a few KiB


def request_bytes(framing, version="1.1", keep_alive=True, body=b"", target="/echo", extra=b""):
    """One POST request as a client would write it: (head bytes, body bytes as framed)."""
    head = f"POST {target} HTTP/{version}\r\nHost: t\r\nContent-Type: application/octet-stream\r\n".encode()
    if version == "1.0" and keep_alive:
        head += b"Connection: keep-alive\r\n"
    elif version == "1.1" and not keep_alive:
        head += b"Connection: close\r\n"
    head += extra
    if framing == "length":
        head += f"Content-Length: {len(body)}\r\n".encode()
        framed = body
    elif framing == "chunked":
        head += b"Transfer-Encoding: chunked\r\n"
        # Uneven chunks, an extension and a trailer: every kind of framing byte is present.
        half = len(body) // 3
        framed = b""
        for piece, ext in ((body[:half], b";ext=1"), (body[half:], b"")):
            if piece:
                framed += f"{len(piece):x}".encode() + ext + b"\r\n" + piece + b"\r\n"
        framed += b"0\r\nX-Trailer: yes\r\n\r\n"
    else:
        framed = b""  # no framing: a request without a length has no body (RFC 9112 §6.3)
    return head + b"\r\n", framed


def splits(payload, how, head_len):
    """The writes a client makes: one, head then body, or one byte at a time."""
    if how == "one":
        return [payload]
    if how == "head-body":
        return [payload[:head_len], payload[head_len:]] if head_len < len(payload) else [payload]
    if how == "bytes":
        return [payload[i:i + 1] for i in range(len(payload))]
    raise ValueError(how)


class Conn:
    """A client connection that writes in pieces, with a gap so each piece is its own read."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=PROMPT + 2)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def send(self, pieces, gap=0.002):
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(gap)  # not a wait on a condition: it keeps the pieces in separate reads
            self.sock.sendall(piece)

    def response(self, method="POST"):
        return read_response(self.file, method=method)

    def closed_by_peer(self):
        """True if the peer closes within PROMPT (and sends nothing more)."""
        self.sock.settimeout(PROMPT)
        try:
            return self.file.read1(1) == b""
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.file.close()
        self.sock.close()


class EarlyAnswerServer:
    """Answers 413 after reading `after` bytes of any request body, then closes: a server that
    refuses an upload part way through, as nginx does with client_max_body_size."""

    def __init__(self, after=20000):
        self.after = after
        self.server = ThreadedServer(self._handle)
        self.port = self.server.port

    def _handle(self, conn, server):
        f = conn.makefile("rb")
        _, headers = read_head(f)
        if headers.get("x-probe"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            return
        f.read(self.after)
        conn.sendall(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
        conn.close()  # with body bytes unread: the kernel answers them with a reset

    def stop(self):
        self.server.stop()


def start_web_node(name):
    """A `fulcrum web` node (static files, no app) on a free port, serving www/small.txt:
    (TempDir, port, Process); the caller stops the process and cleans the directory."""
    from harness import TempDir, free_port
    tmp = TempDir()
    tmp.write("www/small.txt", "small\n")
    port = free_port()
    site = tmp.write("web.toml", f"""
[site]
name = "{name}"
state_dir = "var"
[web]
docroot = "www"
app = "none"
[[web.node]]
name = "{name}"
listen = "127.0.0.1:{port}"
threads = 1
""")
    web = Process([FULCRUM, "web", "--site", site, "--node", name], os.path.join(tmp.path, "web.log"))
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="web node")
    except Exception:
        web.stop()
        tmp.cleanup()
        raise
    return tmp, port, web


class ClientMatrixThroughLbTest(LbTestCase):
    """Every framing x version x keep-alive x split, through the lb to the echo server."""

    def setUp(self):
        super().setUp()
        self.backend = self.py_backend("echo")
        self.lb = self.start_lb([Server("echo", self.backend.port)])

    def check_echo(self, status, headers, body, sent_body, method="POST"):
        self.assertEqual(status, 200, body[:300])
        echo = json.loads(body)
        self.assertEqual(echo["method"], method)
        self.assertEqual(echo["body_length"], len(sent_body))
        self.assertEqual(echo["body_sha256"], hashlib.sha256(sent_body).hexdigest())
        return echo

    def test_every_framing_version_connection_and_split(self):
        body = os.urandom(700)
        for framing in ("length", "chunked", "none"):
            for version in ("1.1", "1.0"):
                for keep_alive in (True, False):
                    for how in ("one", "head-body", "bytes"):
                        with self.subTest(framing=framing, version=version, keep_alive=keep_alive, split=how):
                            self.one_case(framing, version, keep_alive, how, body)
        self.assertTrue(self.lb.alive(), self.lb.output()[-3000:])

    def one_case(self, framing, version, keep_alive, how, body):
        sent = body if framing != "none" else b""
        head, framed = request_bytes(framing, version, keep_alive, sent)
        if how == "bytes":  # byte by byte over a shorter body keeps the case quick
            sent = sent[:40] if framing != "none" else b""
            head, framed = request_bytes(framing, version, keep_alive, sent)
        conn = Conn(self.lb.port)
        try:
            started = time.monotonic()
            conn.send(splits(head + framed, how, len(head)))
            status, headers, answer = conn.response()
            elapsed = time.monotonic() - started - (len(head + framed) * 0.002 if how == "bytes" else 0)
            if framing == "chunked" and version == "1.0":
                # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
                self.assertEqual(status, 400)
                self.assertTrue(conn.closed_by_peer())
                return
            self.check_echo(status, headers, answer, sent)
            self.assertLess(elapsed, PROMPT)
            if keep_alive:
                # The connection is still good: a second request on it is answered too.
                conn.send([b"GET /again HTTP/1.%s\r\nHost: t\r\n%s\r\n" %
                           (version[-1].encode(), b"Connection: keep-alive\r\n" if version == "1.0" else b"")])
                status, _, answer = conn.response(method="GET")
                self.assertEqual(status, 200)
                self.assertEqual(json.loads(answer)["target"], "/again")
            else:
                self.assertTrue(conn.closed_by_peer(), "the lb kept a Connection: close client open")
        finally:
            conn.close()

    def test_uploads_split_at_every_byte_boundary_of_their_framing(self):
        body = b"0123456789abcdef" * 3 + b"xyz"
        for framing in ("chunked", "length"):
            head, framed = request_bytes(framing, body=body)
            payload = head + framed
            for cut in range(len(head) - 4, len(payload)):
                with self.subTest(framing=framing, cut=cut):
                    conn = Conn(self.lb.port)
                    try:
                        conn.send([payload[:cut], payload[cut:]], gap=0.01)
                        status, headers, answer = conn.response()
                        self.check_echo(status, headers, answer, body)
                    finally:
                        conn.close()
        self.assertTrue(self.lb.alive(), self.lb.output()[-3000:])

    def test_chunked_upload_ending_in_a_later_read_does_not_crash(self):
        # The report's reproduction: the last chunk's "0" and its CRLFs arrive separately.
        conn = Conn(self.lb.port)
        try:
            conn.send([b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\nc\r\n{\"author\":1}\r\n0", b"\r\n\r\n"], gap=0.3)
            status, headers, answer = conn.response()
            self.check_echo(status, headers, answer, b'{"author":1}')
        finally:
            conn.close()
        self.assertTrue(self.lb.alive(), self.lb.output()[-3000:])

    def test_pipelined_requests_with_bodies(self):
        one, one_body = request_bytes("length", body=b"first body")
        two, two_body = request_bytes("chunked", body=b"second, chunked", target="/second")
        three = b"GET /third HTTP/1.1\r\nHost: t\r\n\r\n"
        payload = one + one_body + two + two_body + three
        for how in ("one", "bytes"):
            with self.subTest(split=how):
                conn = Conn(self.lb.port)
                try:
                    conn.send(splits(payload, how, len(one)), gap=0.001)
                    first = self.check_echo(*conn.response(), b"first body")
                    second = self.check_echo(*conn.response(), b"second, chunked")
                    status, _, third = conn.response(method="GET")
                    self.assertEqual((first["target"], second["target"], status, json.loads(third)["target"]),
                                     ("/echo", "/second", 200, "/third"))
                finally:
                    conn.close()

    def test_python_urllib_post_with_connection_close(self):
        # urllib writes the head and the body separately, with Connection: close.
        body = json.dumps({"author": "a", "text": "x" * 3000}).encode()
        started = time.monotonic()
        req = urllib.request.Request(f"http://127.0.0.1:{self.lb.port}/api/messages", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=PROMPT + 2) as resp:
            status, answer = resp.status, resp.read()
        self.assertLess(time.monotonic() - started, PROMPT)
        self.check_echo(status, {}, answer, body)

    def test_python_http_client_chunked_and_length_uploads(self):
        body = os.urandom(200000)
        for chunked in (True, False):
            with self.subTest(chunked=chunked):
                conn = http.client.HTTPConnection("127.0.0.1", self.lb.port, timeout=PROMPT + 2)
                try:
                    if chunked:
                        pieces = (body[i:i + 7000] for i in range(0, len(body), 7000))
                        conn.request("POST", "/upload-echo", body=pieces, encode_chunked=True)
                    else:
                        conn.request("POST", "/upload-echo", body=body)
                    resp = conn.getresponse()
                    self.check_echo(resp.status, {}, resp.read(), body)
                finally:
                    conn.close()

    def test_curl_streamed_upload_from_stdin(self):
        # `head -c 3000000 /dev/urandom | curl -T - -X POST` crashed the lb in 3 runs of 8.
        data = os.urandom(3000000)
        for run in range(4):
            with self.subTest(run=run):
                out = subprocess.run(["curl", "-sS", "--max-time", "20", "-T", "-", "-X", "POST",
                                      f"http://127.0.0.1:{self.lb.port}/api/messages"],
                                     input=data, capture_output=True, timeout=30)
                self.assertEqual(out.returncode, 0, out.stderr)
                echo = json.loads(out.stdout)
                self.assertEqual((echo["body_length"], echo["body_sha256"]),
                                 (len(data), hashlib.sha256(data).hexdigest()))
        self.assertTrue(self.lb.alive(), self.lb.output()[-3000:])

    def test_curl_expect_continue_and_wget_post(self):
        data = os.urandom(2 * 1024 * 1024)  # curl sends Expect: 100-continue for large bodies
        path = os.path.join(self.tmp.path, "upload.bin")
        with open(path, "wb") as f:
            f.write(data)
        out = subprocess.run(["curl", "-sS", "--max-time", "20", "-H", "Expect: 100-continue",
                              "--data-binary", "@" + path, f"http://127.0.0.1:{self.lb.port}/curl"],
                             capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["body_sha256"], hashlib.sha256(data).hexdigest())
        wget = shutil.which("wget")
        if wget is None:
            self.fail("wget is not installed (scripts/deps.sh installs it)")
        out = subprocess.run([wget, "-q", "-O", "-", "--timeout=10", "--tries=1", "--post-file=" + path,
                              f"http://127.0.0.1:{self.lb.port}/wget"], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["body_sha256"], hashlib.sha256(data).hexdigest())

    @needs(None if shutil.which("chromium") else "chromium")
    def test_chromium_fetch_post(self):
        from browser import Browser
        browser = Browser()
        try:
            browser.navigate(f"http://127.0.0.1:{self.lb.port}/page")
            result = browser.evaluate(
                "fetch('/fetch', {method: 'POST', body: 'x'.repeat(150000)})"
                ".then(r => r.json()).then(j => j.method + ' ' + j.body_length)")
        finally:
            browser.close()
        self.assertEqual(result, "POST 150000")

    def test_forwarding_lists_split_over_lines_are_combined_in_order(self):
        conn = Conn(self.lb.port)
        try:
            conn.send([b"GET /xff HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 192.0.2.1\r\n"
                       b"Forwarded: for=192.0.2.1\r\nX-Forwarded-For: 198.51.100.2, 198.51.100.3\r\n"
                       b"Forwarded: for=198.51.100.2\r\nConnection: X-Private\r\nConnection: keep-alive\r\n"
                       b"X-Private: secret\r\n\r\n"])
            status, _, answer = conn.response(method="GET")
        finally:
            conn.close()
        self.assertEqual(status, 200)
        fields = json.loads(answer)["fields"]
        xff = [v for n, v in fields if n.lower() == "x-forwarded-for"]
        fwd = [v for n, v in fields if n.lower() == "forwarded"]
        self.assertEqual(xff, ["192.0.2.1, 198.51.100.2, 198.51.100.3, 127.0.0.1"])
        self.assertEqual(fwd, ["for=192.0.2.1, for=198.51.100.2, for=127.0.0.1;proto=http"])
        self.assertNotIn("x-private", [n.lower() for n, _ in fields])

    def test_server_that_answers_early_and_closes_is_relayed(self):
        early = EarlyAnswerServer(after=20000)
        self.addCleanup(early.stop)
        lb = self.start_lb([Server("early", early.port)], name="early", retries=0)
        body = os.urandom(1024 * 1024)
        statuses = []
        for _ in range(10):
            conn = Conn(lb.port)
            try:
                head = (f"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                try:
                    conn.sock.sendall(head + body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the lb may close its side once the answer is out: it is still read below
                status, headers, _ = conn.response()
                statuses.append(status)
                if headers.get("connection") == "close":
                    self.assertTrue(conn.closed_by_peer())
                else:
                    # The lb read (and dropped) the rest of the body: the connection is in step
                    # and carries the next request.
                    conn.send([b"GET /p HTTP/1.1\r\nHost: t\r\nX-Probe: 1\r\n\r\n"])
                    self.assertEqual(conn.response(method="GET")[0], 200)
            finally:
                conn.close()
        self.assertEqual(statuses, [413] * 10)


class HeadLimitsTest(LbTestCase):
    """A request the lb accepts fits what its servers (with the same limits) accept: the lb's
    forwarding fields never push a head over a server's limit."""

    @classmethod
    def setUpClass(cls):
        cls.tmp, cls.web_port, cls.web = start_web_node("web-l1")

    @classmethod
    def tearDownClass(cls):
        cls.web.stop()
        cls.tmp.cleanup()

    def exchange(self, port, head):
        conn = Conn(port)
        try:
            conn.send([head])
            return conn.response(method="GET")
        finally:
            conn.close()

    def test_large_heads_are_refused_by_the_lb_or_served(self):
        lb = self.start_lb([Server("web-l1", self.web_port)])
        base = b"GET /small.txt HTTP/1.1\r\nHost: t\r\nX-Pad: "
        for size in range(16200, 16385, 12):
            pad = size - len(base) - 4
            status, headers, _ = self.exchange(lb.port, base + b"p" * pad + b"\r\n\r\n")
            with self.subTest(size=size):
                self.assertIn(status, (200, 431))
                if status == 431:
                    self.assertNotIn("x-served-by", headers, "the server refused a head the lb accepted")
        for count in range(118, 129):
            head = b"GET /small.txt HTTP/1.1\r\nHost: t\r\n" + b"".join(
                b"X-H%d: v\r\n" % i for i in range(count - 1)) + b"\r\n"
            status, headers, _ = self.exchange(lb.port, head)
            with self.subTest(fields=count):
                self.assertIn(status, (200, 431))
                if status == 431:
                    self.assertNotIn("x-served-by", headers, "the server refused a head the lb accepted")


class WebNodeSplitsTest(unittest.TestCase):
    """Straight to the web node: the answer does not depend on how the request was split."""

    @classmethod
    def setUpClass(cls):
        cls.tmp, cls.port, cls.web = start_web_node("web-s1")

    @classmethod
    def tearDownClass(cls):
        cls.web.stop()
        cls.tmp.cleanup()

    def answer(self, pieces, gap=0.002):
        conn = Conn(self.port)
        try:
            started = time.monotonic()
            conn.send(pieces, gap)
            status, headers, body = conn.response()
            return status, time.monotonic() - started - gap * len(pieces), conn.closed_by_peer() \
                if "close" in headers.get("connection", "") else False
        finally:
            conn.close()

    def test_answer_does_not_depend_on_the_split(self):
        for framing in ("length", "chunked", "none"):
            for version in ("1.1", "1.0"):
                for keep_alive in (True, False):
                    head, framed = request_bytes(framing, version, keep_alive, b"x" * 40, target="/small.txt")
                    payload = head + framed
                    reference = self.answer([payload])
                    for how in ("head-body", "bytes"):
                        with self.subTest(framing=framing, version=version, keep_alive=keep_alive, split=how):
                            status, elapsed, closed = self.answer(splits(payload, how, len(head)))
                            self.assertEqual((status, closed), (reference[0], reference[2]))
                            self.assertLess(elapsed, PROMPT)
        self.assertTrue(self.web.alive(), self.web.output()[-3000:])


if __name__ == "__main__":
    unittest.main()
