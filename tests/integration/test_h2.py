"""`fulcrum lb` speaking HTTP/2 to clients: h2 by ALPN on an https listener and h2c with prior
knowledge on an http one, each stream proxied as an HTTP/1.1 request; the strictness of the
translation (nothing the HTTP/1.1 server would read differently); the defences against the known
HTTP/2 attacks (Rapid Reset, CONTINUATION flood, control-frame floods, zero-window stalls, too
many streams), each driven with raw frames; and the graceful GOAWAY of a draining lb.

The client is our own: frames from hyperframe, header blocks from hpack (Debian's python3-h2
family), so that it can send what a conforming client library refuses to. Conditions are awaited
by bounded polling; every process is cleaned up even when a test fails."""
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

if importlib.util.find_spec("hpack") is None or importlib.util.find_spec("hyperframe") is None:
    # A python3 (pyenv) without Debian's python3-h2 family: take them from the system's.
    sys.path.append("/usr/lib/python3/dist-packages")

import hpack  # noqa: E402
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,  # noqa: E402
                              PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from harness import (FULCRUM, Process, ThreadedServer, free_port, raw_exchange, read_body, read_head, status_of,
                     wait_until)
from test_abuse import METRICS, exchange_from, wait_listening
from test_lb import PyBackend, Server
from test_tls import TlsTestCase, insecure_context, tls_connect

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MIB = 1 << 20
# Error codes (RFC 9113 §7).
NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0x0, 0x1, 0x7, 0x8, 0xB
# SETTINGS parameters.
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x3, 0x4, 0x5

BLOB = random.Random(17).randbytes(MIB)  # the backend's /blob: a response to check byte for byte


# ---------------------------------------------------------------------------------------------
# The backend: an HTTP/1.1 server that records what the lb sends it.


class Backend:
    """HTTP/1.1 server behind the lb. /healthz: ok. /blob: BLOB. /hold: answers (an echo) once
    `release` is set. Anything else: a JSON echo of the request (method, target, version,
    fields, body length and sha256). Every request but /healthz is recorded as it arrives, with
    "body" set once the whole body came (so a request cut short keeps body None)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.release = threading.Event()
        self.server = ThreadedServer(self._handle)
        self.port = self.server.port

    def stop(self):
        self.release.set()
        self.server.stop()

    def records(self, target_prefix=""):
        with self.lock:
            return [r for r in self.requests if r["target"].startswith(target_prefix)]

    def _handle(self, conn, server):
        f = conn.makefile("rb")
        while not server.stopping.is_set():
            try:
                start, headers, fields = read_head(f, keep_fields=True)
            except EOFError:
                return
            method, target, version = start.split(" ", 2)
            framed = "transfer-encoding" in headers or "content-length" in headers
            if target == "/healthz":
                read_body(f, headers, bodiless=not framed)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                continue
            record = {"method": method, "target": target, "version": version, "fields": fields, "body": None}
            with self.lock:
                self.requests.append(record)
            body = read_body(f, headers, bodiless=not framed)
            record["body"] = body
            if target == "/blob":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(BLOB) + BLOB)
                continue
            if target.startswith("/hold"):
                while not self.release.wait(0.05):
                    if server.stopping.is_set():
                        return
            echo = json.dumps({"method": method, "target": target, "version": version, "fields": fields,
                               "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(echo) + echo)


def fields_named(fields, name):
    return [value for field, value in fields if field.lower() == name]


# ---------------------------------------------------------------------------------------------
# The client: raw frames.


class Stream:
    def __init__(self):
        self.interim = []      # 1xx header lists
        self.headers = None    # the final response's fields [(name, value)]
        self.trailers = None
        self.data = bytearray()
        self.ended = False     # END_STREAM received
        self.reset = None      # the error code of a RST_STREAM received

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def status(self):
        return int(dict(self.headers)[":status"]) if self.headers else None

    def field(self, name):
        return dict(self.headers or []).get(name)


class H2Raw:
    """One HTTP/2 connection driven frame by frame. It keeps HPACK in step, acknowledges SETTINGS
    (unless `ack_settings` is False), gives back every DATA byte at once (unless `window_updates`
    is False), and sends DATA within the lb's flow-control windows. Anything else is sent as
    built, legal or not."""

    def __init__(self, sock, scheme, settings=None, window_updates=True, ack_settings=True):
        self.sock, self.scheme, self.window_updates, self.ack_settings = sock, scheme, window_updates, ack_settings
        self.buf = bytearray()
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.dec.max_header_list_size = 1 << 20
        self.streams = {}
        self.goaway = None           # (last stream id, error code) of a GOAWAY received
        self.goaway_at = None        # time.monotonic() when it came
        self.closed = False          # the lb closed (or reset) the connection
        self.closed_at = None
        self.server_settings = {}
        self.settings_acked = False  # the lb acknowledged our SETTINGS
        self.ping_acks = 0
        self.conn_window = 65535     # what we may send
        self.initial_window = 65535
        self.windows = {}
        self.max_frame = 16384
        self.block = None            # [stream id, block bytes, END_STREAM] of a header block being received
        self.held = set()            # streams whose window we do not give back (a slow reader of them)
        self.next_id = 1
        self.send(PREFACE + SettingsFrame(0, settings or {}).serialize())

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def send_lenient(self, data):
        """Sends what the lb may refuse halfway (an attack): a close while writing is expected."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
            pass

    # -- frames in ------------------------------------------------------------------------------

    def pump(self, timeout):
        """Reads once (waiting at most `timeout`) and handles every whole frame."""
        if self.closed:
            return
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
            return
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            self.closed_at = time.monotonic()
            return
        self.buf += data
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf)[:9])
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(self.buf[9:9 + length])))
            del self.buf[:9 + length]
            self.on_frame(frame)

    def wait(self, predicate, timeout=10.0, what="condition"):
        """Reads frames until `predicate()` holds; fails after `timeout` s or when the lb closes first."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                raise AssertionError(f"{what}: not seen (closed={self.closed}, goaway={self.goaway}, "
                                     f"streams={ {k: (v.status, v.reset, v.ended) for k, v in self.streams.items()} })")
            self.pump(min(remaining, 0.5))
        return predicate()

    def wait_closed(self, timeout=10.0):
        """Reads until the lb closes the connection; True when it did within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.pump(min(deadline - time.monotonic(), 0.5))
        return self.closed

    def stream(self, sid):
        return self.streams.setdefault(sid, Stream())

    def on_frame(self, frame):
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acked = True
                return
            self.server_settings.update(frame.settings)
            if SETTINGS_INITIAL_WINDOW_SIZE in frame.settings:
                delta = frame.settings[SETTINGS_INITIAL_WINDOW_SIZE] - self.initial_window
                self.initial_window += delta
                for sid in self.windows:
                    self.windows[sid] += delta
            self.max_frame = frame.settings.get(SETTINGS_MAX_FRAME_SIZE, self.max_frame)
            if self.ack_settings:
                self.send_lenient(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(frame, HeadersFrame):
            self.block = [frame.stream_id, bytes(frame.data), "END_STREAM" in frame.flags]
            if "END_HEADERS" in frame.flags:
                self.end_block()
        elif isinstance(frame, ContinuationFrame):
            self.block[1] += bytes(frame.data)
            if "END_HEADERS" in frame.flags:
                self.end_block()
        elif isinstance(frame, DataFrame):
            s = self.stream(frame.stream_id)
            s.data += frame.data
            if "END_STREAM" in frame.flags:
                s.ended = True
            n = frame.flow_controlled_length
            if self.window_updates and n > 0:
                update = WindowUpdateFrame(0, window_increment=n).serialize()
                if not s.ended and frame.stream_id not in self.held:
                    update += WindowUpdateFrame(frame.stream_id, window_increment=n).serialize()
                self.send_lenient(update)
        elif isinstance(frame, RstStreamFrame):
            self.stream(frame.stream_id).reset = frame.error_code
        elif isinstance(frame, GoAwayFrame):
            self.goaway = (frame.last_stream_id, frame.error_code)
            self.goaway_at = time.monotonic()
        elif isinstance(frame, WindowUpdateFrame):
            if frame.stream_id == 0:
                self.conn_window += frame.window_increment
            elif frame.stream_id in self.windows:
                self.windows[frame.stream_id] += frame.window_increment
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                self.ping_acks += 1

    def end_block(self):
        sid, block, end_stream = self.block
        self.block = None
        fields = [(str(n), str(v)) for n, v in self.dec.decode(block)]
        s = self.stream(sid)
        if s.headers is None:
            status = dict(fields).get(":status", "")
            if status.startswith("1"):
                s.interim.append(fields)
            else:
                s.headers = fields
        else:
            s.trailers = fields
        if end_stream:
            s.ended = True

    # -- frames out -----------------------------------------------------------------------------

    def take_id(self):
        sid = self.next_id
        self.next_id += 2
        self.windows[sid] = self.initial_window
        return sid

    def request_fields(self, path="/echo", method="GET", authority="a.test", extra=()):
        return [(":method", method), (":scheme", self.scheme), (":authority", authority), (":path", path)] + list(extra)

    def headers_frame(self, sid, fields, end_stream=True, end_headers=True):
        """A HEADERS frame of `fields` (sent as they are: any name, any bytes in a value)."""
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        return HeadersFrame(sid, data=self.enc.encode(fields, huffman=False), flags=flags).serialize()

    def request(self, path="/echo", method="GET", authority="a.test", extra=(), fields=None, body=None):
        """Opens a stream: HEADERS (and the body within the windows, END_STREAM on its last DATA)."""
        sid = self.take_id()
        fields = fields if fields is not None else self.request_fields(path, method, authority, extra)
        self.send(self.headers_frame(sid, fields, end_stream=body is None))
        if body is not None:
            self.send_body(sid, body)
        return sid

    def send_body(self, sid, body, end=True, timeout=20.0):
        deadline = time.monotonic() + timeout
        view = memoryview(body)
        pos = 0
        while pos < len(body):
            n = min(self.conn_window, self.windows[sid], self.max_frame, len(body) - pos)
            if n <= 0:
                if time.monotonic() > deadline or self.closed or self.stream(sid).reset is not None:
                    raise AssertionError(f"stream {sid}: the lb's window stayed shut ({pos} of {len(body)} sent)")
                self.pump(0.5)
                continue
            pos += n
            flags = ["END_STREAM"] if end and pos == len(body) else []
            self.send(DataFrame(sid, data=bytes(view[pos - n:pos]), flags=flags).serialize())
            self.conn_window -= n
            self.windows[sid] -= n
        if not body and end:
            self.send(DataFrame(sid, data=b"", flags=["END_STREAM"]).serialize())

    def get(self, path="/echo", timeout=10.0, **kwargs):
        """One request; waits for its end (or reset) and returns its Stream."""
        sid = self.request(path, **kwargs)
        self.wait(lambda: self.stream(sid).done, timeout, what=f"the answer of stream {sid} ({path})")
        return self.stream(sid)


def h2c_connect(port, **kwargs):
    return H2Raw(socket.create_connection(("127.0.0.1", port), timeout=10), "http", **kwargs)


def h2_connect(port, **kwargs):
    """h2 over TLS (ALPN h2, the lb's self-signed certificate)."""
    ctx = insecure_context()
    ctx.set_alpn_protocols(["h2"])
    sock = tls_connect(port, ctx, "localhost")
    if sock.selected_alpn_protocol() != "h2":
        sock.close()
        raise AssertionError(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
    return H2Raw(sock, "https", **kwargs)


def echo_of(stream):
    return json.loads(bytes(stream.data))


# ---------------------------------------------------------------------------------------------


class H2TestCase(TlsTestCase):
    def start_h2_lb(self, h2c=True, timeouts=None, limits=None, tls=""):
        """An lb with an http listener (h2c as asked), an https one (h2 by ALPN) and a stats
        listener, in front of one Backend. Sets self.backend, self.lb, self.stats_port."""
        self.backend = Backend()
        self.addCleanup(self.backend.stop)
        self.stats_port = free_port()
        self.lb = self.start_https_lb([Server("py", self.backend.port)], tls=tls, timeouts=timeouts,
                                      limits=limits, node_extra={"stats": f"127.0.0.1:{self.stats_port}"},
                                      lb_keys={"h2c": h2c})
        wait_listening(self.stats_port)
        return self.lb

    def metric(self, name, labels=""):
        text = exchange_from(self.stats_port, METRICS).decode()
        match = re.search(re.escape(f'{name}{{node="lb-t"{labels}}} ') + r"(\d+)", text)
        self.assertIsNotNone(match, (name, labels, text[-3000:]))
        return int(match.group(1))

    def goaways(self, reason):
        return self.metric("fulcrum_lb_h2_goaway_total", f',reason="{reason}"')

    def connect(self, tls=True, **kwargs):
        client = (h2_connect(self.lb.https_port, **kwargs) if tls else h2c_connect(self.lb.port, **kwargs))
        self.addCleanup(client.close)
        return client

    def assert_served(self, tls=True):
        """An ordinary client on a new connection gets its answer."""
        client = self.connect(tls)
        s = client.get("/echo?after")
        self.assertEqual(s.status, 200, self.lb.output()[-3000:])
        self.assertEqual(echo_of(s)["target"], "/echo?after")
        client.close()

    def assert_lb_alive(self):
        self.assertTrue(self.lb.alive(), self.lb.output()[-3000:])


class H2BasicTest(H2TestCase):
    def test_get_over_h2_and_h2c_reaches_the_server_as_http_1_1(self):
        self.start_h2_lb()
        for tls in (True, False):
            client = self.connect(tls)
            s = client.get(f"/echo?tls={tls}", authority="a.test",
                           extra=[("user-agent", "t"), ("te", "trailers"), ("accept", "*/*")])
            self.assertEqual(s.status, 200, (s.headers, self.lb.output()[-2000:]))
            echo = echo_of(s)
            self.assertEqual(echo["target"], f"/echo?tls={tls}")
            self.assertEqual(echo["version"], "HTTP/1.1")
            self.assertEqual(fields_named(echo["fields"], "host"), ["a.test"])
            self.assertEqual(fields_named(echo["fields"], "user-agent"), ["t"])
            for hop in ("te", "connection", "transfer-encoding", "content-length", "upgrade", "keep-alive"):
                self.assertEqual(fields_named(echo["fields"], hop), [], (hop, echo["fields"]))
            # The server's own connection-specific fields are not passed on (RFC 9113 §8.2.2).
            self.assertIsNone(s.field("connection"), s.headers)
            self.assertEqual(s.field("content-type"), "application/json")
        self.wait_log(self.lb, r"path=/echo\?tls=True\b.*version=HTTP/2")
        self.wait_log(self.lb, r"path=/echo\?tls=False\b.*version=HTTP/2")
        self.assertGreaterEqual(self.metric("fulcrum_lb_h2_connections_total"), 2)
        self.assertGreaterEqual(self.metric("fulcrum_lb_h2_streams_total"), 2)

    def test_twenty_concurrent_streams_on_one_connection(self):
        self.start_h2_lb()
        client = self.connect()
        sids = [client.take_id() for _ in range(20)]
        # All twenty HEADERS in one write: the streams run side by side.
        client.send(b"".join(client.headers_frame(sid, client.request_fields(f"/echo?n={i}"))
                             for i, sid in enumerate(sids)))
        client.wait(lambda: all(client.stream(sid).done for sid in sids), what="20 answers")
        for i, sid in enumerate(sids):
            s = client.stream(sid)
            self.assertEqual(s.status, 200, (sid, s.reset))
            self.assertEqual(echo_of(s)["target"], f"/echo?n={i}")

    def test_a_stream_the_client_does_not_read_stalls_no_other(self):
        self.start_h2_lb()
        client = self.connect()
        client.wait(lambda: client.server_settings, what="the lb's SETTINGS")
        slow = client.take_id()
        client.held.add(slow)  # its 64 KiB window is never given back: the rest of /blob waits
        client.send(client.headers_frame(slow, client.request_fields("/blob")))
        client.wait(lambda: len(client.stream(slow).data) == 65535, what="the slow stream's first window")
        for i in range(5):  # meanwhile the other streams of the connection are answered
            s = client.get(f"/echo?beside-{i}")
            self.assertEqual(s.status, 200)
        self.assertEqual(len(client.stream(slow).data), 65535)
        client.held.discard(slow)
        client.send(WindowUpdateFrame(slow, window_increment=len(BLOB)).serialize())
        client.wait(lambda: client.stream(slow).done, timeout=20, what="the rest of /blob")
        self.assertTrue(bytes(client.stream(slow).data) == BLOB, "the body differs from what the server sent")

    def test_request_bodies_reach_the_server_byte_exact(self):
        self.start_h2_lb()
        body = random.Random(5).randbytes(300 * 1024)
        digest = hashlib.sha256(body).hexdigest()
        client = self.connect()
        # With content-length: the server gets Content-Length; without: chunked.
        for path, extra, framing in (("/echo?cl", [("content-length", str(len(body)))], "content-length"),
                                     ("/echo?nocl", [], "transfer-encoding")):
            sid = client.request(path, method="POST", extra=extra, body=body)
            client.wait(lambda: client.stream(sid).done, timeout=20, what=f"the answer to {path}")
            s = client.stream(sid)
            self.assertEqual(s.status, 200, (s.reset, self.lb.output()[-2000:]))
            echo = echo_of(s)
            self.assertEqual((echo["body_length"], echo["body_sha256"]), (len(body), digest), path)
            if framing == "content-length":
                self.assertEqual(fields_named(echo["fields"], "content-length"), [str(len(body))])
                self.assertEqual(fields_named(echo["fields"], "transfer-encoding"), [])
            else:
                self.assertEqual(fields_named(echo["fields"], "transfer-encoding"), ["chunked"])
                self.assertEqual(fields_named(echo["fields"], "content-length"), [])
        # And over h2c.
        client = self.connect(tls=False)
        s = client.get("/echo?h2c", method="POST", body=body, timeout=20)
        self.assertEqual(s.status, 200)
        self.assertEqual(echo_of(s)["body_sha256"], digest)

    def test_one_mib_response_streams_back_byte_exact(self):
        self.start_h2_lb()
        for tls in (True, False):
            client = self.connect(tls)
            s = client.get("/blob", timeout=20)
            self.assertEqual(s.status, 200)
            self.assertEqual(s.field("content-length"), str(len(BLOB)))
            self.assertEqual(len(s.data), len(BLOB))
            self.assertTrue(bytes(s.data) == BLOB, "the body differs from what the server sent")

    def test_http2_off_gives_http_1_1_and_h2c_off_answers_505(self):
        # [lb.tls] http2 = false, [lb] h2c left at its default (off).
        backend = Backend()
        self.addCleanup(backend.stop)
        self.lb = self.start_https_lb([Server("py", backend.port)], tls="[lb.tls]\nhttp2 = false\n")
        ctx = insecure_context()
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with tls_connect(self.lb.https_port, ctx, "localhost") as sock:
            self.assertEqual(sock.selected_alpn_protocol(), "http/1.1")
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            self.assertTrue(sock.recv(100).startswith(b"HTTP/1.1 200 "))
        answer = raw_exchange(self.lb.port, PREFACE + SettingsFrame(0).serialize())
        self.assertTrue(answer.startswith(b"HTTP/1.1 505 "), answer[:200])
        self.assertEqual(status_of(answer), 505)
        self.assertEqual([r["target"] for r in backend.records()], ["/echo"])


class H2RealClientsTest(H2TestCase):
    """Clients people use: curl (libcurl's nghttp2) and h2load, not only our frames."""

    def test_curl_over_h2_and_h2c(self):
        self.start_h2_lb()
        upload = bytes(random.Random(7).getrandbits(8) for _ in range(200_000))
        path = os.path.join(self.tmp.path, "upload.bin")
        with open(path, "wb") as f:
            f.write(upload)
        for url, flag in ((f"https://127.0.0.1:{self.lb.https_port}", "--http2"),
                          (f"http://127.0.0.1:{self.lb.port}", "--http2-prior-knowledge")):
            out = subprocess.run(["curl", "-sk", flag, "-w", "\n%{http_version} %{http_code}", f"{url}/blob"],
                                 capture_output=True, timeout=30)
            body, _, tail = out.stdout.rpartition(b"\n")
            self.assertEqual(tail, b"2 200", out.stderr)
            self.assertEqual(body, BLOB)
            out = subprocess.run(["curl", "-sk", flag, "--data-binary", f"@{path}", "-w", "\n%{http_version}",
                                  f"{url}/post"], capture_output=True, timeout=30)
            echo_text, _, version = out.stdout.rpartition(b"\n")
            self.assertEqual(version, b"2", out.stderr)
            echo = json.loads(echo_text)
            self.assertEqual(echo["body_length"], len(upload))
            self.assertEqual(echo["body_sha256"], hashlib.sha256(upload).hexdigest())

    @unittest.skipUnless(shutil.which("h2load"), "h2load (Debian nghttp2-client) is not installed")
    def test_h2load_many_streams_all_answered(self):
        self.start_h2_lb()
        out = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "20", f"https://127.0.0.1:{self.lb.https_port}/echo"],
                             capture_output=True, text=True, timeout=60)
        self.assertIn("Application protocol: h2", out.stdout, out.stdout + out.stderr)
        self.assertRegex(out.stdout, r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed",
                         out.stdout)
        self.assertIn("status codes: 2000 2xx", out.stdout)


class H2StrictnessTest(H2TestCase):
    """Requests an HTTP/1.1 server could read otherwise than the lb: each is a stream error (or a
    4xx), never forwarded, and the connection goes on serving."""

    def refused(self, client, fields, body=None, data_frames=None):
        """Sends one request as built; returns its Stream once reset or answered."""
        sid = client.take_id()
        client.send(client.headers_frame(sid, fields, end_stream=body is None and data_frames is None))
        if data_frames:
            client.send(b"".join(DataFrame(sid, data=d, flags=f).serialize() for d, f in data_frames))
        client.wait(lambda: client.stream(sid).done, what=f"the end of stream {sid}")
        return client.stream(sid)

    def test_malformed_requests_are_stream_errors_and_the_connection_goes_on(self):
        self.start_h2_lb()
        client = self.connect()
        base = client.request_fields
        cases = {
            "uppercase-name": base("/bad?upper", extra=[("X-Upper", "1")]),
            "connection": base("/bad?connection", extra=[("connection", "close")]),
            "transfer-encoding": base("/bad?te-chunked", extra=[("transfer-encoding", "chunked")]),
            "te-gzip": base("/bad?te-gzip", extra=[("te", "gzip")]),
            "keep-alive": base("/bad?keep-alive", extra=[("keep-alive", "timeout=5")]),
            "upgrade": base("/bad?upgrade", extra=[("upgrade", "websocket")]),
            "crlf": base("/bad?crlf", extra=[("x-a", b"1\r\nX-Injected: 1")]),
            "lf": base("/bad?lf", extra=[("x-a", b"1\nX-Injected: 1")]),
            "nul": base("/bad?nul", extra=[("x-a", b"1\x002")]),
            "missing-path": [(":method", "GET"), (":scheme", "https"), (":authority", "a.test")],
            "duplicate-method": [(":method", "GET"), (":method", "POST"), (":scheme", "https"),
                                 (":authority", "a.test"), (":path", "/bad?dup-method")],
            "pseudo-after-regular": [(":method", "GET"), (":scheme", "https"), ("x-a", "1"),
                                     (":authority", "a.test"), (":path", "/bad?late-pseudo")],
        }
        for name, fields in cases.items():
            s = self.refused(client, fields)
            if s.reset is not None:
                self.assertEqual(s.reset, PROTOCOL_ERROR, name)
            else:
                self.assertTrue(400 <= s.status < 500, (name, s.headers))
            # The connection goes on: a good request on it is answered.
            good = client.get(f"/echo?after-{name}")
            self.assertEqual(good.status, 200, (name, client.goaway))
        self.assertIsNone(client.goaway)
        self.assertEqual([r["target"] for r in self.backend.records("/bad")], [])
        self.assert_lb_alive()

    def test_authority_and_host_must_agree(self):
        self.start_h2_lb()
        client = self.connect()
        s = client.get("/bad?host", authority="a.test", extra=[("host", "b.test")])
        self.assertEqual(s.status, 400, (s.headers, s.reset))
        # Two host fields: nghttp2's own check (a stream error) or ours (400).
        s = client.get("/bad?hosts", authority="a.test", extra=[("host", "a.test"), ("host", "b.test")])
        self.assertTrue(s.status == 400 or s.reset == PROTOCOL_ERROR, (s.headers, s.reset))
        # The same name twice is one origin.
        s = client.get("/echo?same", authority="a.test", extra=[("host", "a.test")])
        self.assertEqual(s.status, 200)
        self.assertEqual(fields_named(echo_of(s)["fields"], "host"), ["a.test"])
        # Without :authority, host names the origin.
        s = client.get(fields=[(":method", "GET"), (":scheme", "https"), (":path", "/echo?host-only"),
                               ("host", "c.test")])
        self.assertEqual(s.status, 200, (s.headers, s.reset))
        self.assertEqual(fields_named(echo_of(s)["fields"], "host"), ["c.test"])
        self.assertEqual(self.backend.records("/bad"), [])

    def test_content_length_must_match_the_data(self):
        self.start_h2_lb()
        client = self.connect()
        fields = client.request_fields("/echo?short", method="POST", extra=[("content-length", "10")])
        s = self.refused(client, fields, data_frames=[(b"12345", ["END_STREAM"])])
        self.assertEqual(s.reset, PROTOCOL_ERROR, (s.headers, bytes(s.data)))
        # More DATA than announced.
        fields = client.request_fields("/echo?long", method="POST", extra=[("content-length", "3")])
        s = self.refused(client, fields, data_frames=[(b"12345", ["END_STREAM"])])
        self.assertEqual(s.reset, PROTOCOL_ERROR, (s.headers, bytes(s.data)))
        self.assertEqual(client.get("/echo?after").status, 200)
        # The server may have seen a head, never a whole request.
        self.assertEqual([r["target"] for r in self.backend.records("/echo?") if r["body"] is not None
                          and r["target"] in ("/echo?short", "/echo?long")], [])

    def test_limits_of_the_request(self):
        self.start_h2_lb(limits={"max_header_bytes": 4096, "max_body_bytes": 1000})
        client = self.connect()
        # A header list over max_header_bytes (decoded size, counted as HTTP/1.1 would): 431.
        s = client.get("/bad?big-head", extra=[("x-big", "v" * 3000), ("x-big2", "w" * 3000)])
        self.assertEqual(s.status, 431, (s.headers, s.reset))
        # CONNECT (no tunnels over HTTP/2): 501; one with :scheme and :path is malformed (§8.5).
        s = client.get(fields=[(":method", "CONNECT"), (":authority", "a.test:443")])
        self.assertEqual(s.status, 501, (s.headers, s.reset))
        s = client.get("/bad?connect", method="CONNECT")
        self.assertEqual(s.reset, PROTOCOL_ERROR, (s.headers, s.reset))
        # A body over max_body_bytes, announced or not: 413.
        s = client.get("/bad?big-body", method="POST", extra=[("content-length", "5000")], body=b"x" * 5000)
        self.assertEqual(s.status, 413, (s.headers, s.reset))
        s = client.get("/bad?big-body-chunked", method="POST", body=b"x" * 5000)
        self.assertEqual(s.status, 413, (s.headers, s.reset))
        # A :path nghttp2 lets through but HTTP/1.1 would not take as a target: 400 from us.
        s = client.get(fields=client.request_fields("/bad#fragment"))
        self.assertEqual(s.status, 400, (s.headers, s.reset))
        for path in ("/bad path", "bad", ""):  # refused by nghttp2 itself
            s = client.get(fields=client.request_fields(path))
            self.assertEqual(s.reset, PROTOCOL_ERROR, (path, s.headers))
        self.assertEqual(client.get("/echo?after").status, 200)
        self.assertIsNone(client.goaway)
        self.assertEqual([r["target"] for r in self.backend.records("/bad")], [])


class H2DefenceTest(H2TestCase):
    """Each attack, with raw frames, ends its connection with a GOAWAY naming it, is counted by
    reason, and costs other clients nothing."""

    def attack(self, frames, reason, code=ENHANCE_YOUR_CALM, settings=None, timeout=10.0):
        """Sends `frames` (bytes, or a list of bytes written one by one) on a new h2 connection,
        then expects GOAWAY(`code`) and the close, the counter of `reason` up by one, and an
        ordinary client served."""
        before = self.goaways(reason)
        client = self.connect(settings=settings)
        client.wait(lambda: client.server_settings, what="the lb's SETTINGS")
        for chunk in ([frames] if isinstance(frames, bytes) else frames):
            client.send_lenient(chunk)
        self.assertTrue(client.wait_closed(timeout), f"the lb kept the connection open; goaway={client.goaway}")
        self.assertIsNotNone(client.goaway, "closed without a GOAWAY")
        self.assertEqual(client.goaway[1], code, client.goaway)
        wait_until(lambda: self.goaways(reason) == before + 1, timeout=5, what=f"goaway {reason} counted")
        self.assert_lb_alive()
        self.assert_served()
        self.assert_served(tls=False)
        return client

    def test_rapid_reset(self):
        self.start_h2_lb()
        resets_before = self.metric("fulcrum_lb_h2_resets_received_total")
        enc = hpack.Encoder()
        writes = []
        sid = 1
        for _ in range(4):  # 4000 streams opened and reset, in 4 writes
            chunk = []
            for _ in range(1000):
                fields = [(":method", "GET"), (":scheme", "https"), (":authority", "a.test"), (":path", f"/rr{sid}")]
                flags = ["END_HEADERS", "END_STREAM"]
                chunk.append(HeadersFrame(sid, data=enc.encode(fields), flags=flags).serialize())
                chunk.append(RstStreamFrame(sid, error_code=CANCEL).serialize())
                sid += 2
            writes.append(b"".join(chunk))
        # The client's encoder is its own: the H2Raw's one is unused on this connection.
        client = self.attack(writes, "rapid_reset")
        # Cut well before the 4000: the burst is 200 resets.
        self.assertLess(client.goaway[0], 2 * 1000, client.goaway)
        self.assertGreater(self.metric("fulcrum_lb_h2_resets_received_total"), resets_before + 200)
        self.assertLess(len(self.backend.records("/rr")), 1000)

    def test_streams_answered_then_reset_are_no_attack(self):
        # A browser cancels streams it no longer needs; resets of answered streams cost nothing.
        self.start_h2_lb()
        client = self.connect()
        for i in range(300):
            s = client.get(f"/echo?{i}")
            self.assertEqual(s.status, 200)
        before = self.metric("fulcrum_lb_h2_resets_received_total")
        client.send(b"".join(RstStreamFrame(sid, error_code=CANCEL).serialize() for sid in range(1, 600, 2)))
        self.assertEqual(client.get("/echo?last").status, 200)
        self.assertIsNone(client.goaway)
        wait_until(lambda: self.metric("fulcrum_lb_h2_resets_received_total") >= before + 300, timeout=5,
                   what="resets counted")

    def test_continuation_flood(self):
        self.start_h2_lb()
        enc = hpack.Encoder()
        block = enc.encode([(":method", "GET"), (":scheme", "https"), (":authority", "a.test"), (":path", "/cf")])
        filler = enc.encode([("x-f", "f" * 100)], huffman=False)  # indexed after its first use: tiny
        frames = HeadersFrame(1, data=block).serialize()
        frames += b"".join(ContinuationFrame(1, data=filler).serialize() for _ in range(2000))
        self.attack(frames, "continuation_flood")
        self.assertEqual(self.backend.records("/cf"), [])

    def test_continuation_flood_by_bytes(self):
        # Few frames, but each full: the block outgrows 2 * max_header_bytes + 16 KiB.
        self.start_h2_lb(limits={"max_header_bytes": 4096})
        enc = hpack.Encoder()
        block = enc.encode([(":method", "GET"), (":scheme", "https"), (":authority", "a.test"), (":path", "/cf")])
        frames = HeadersFrame(1, data=block).serialize()
        frames += b"".join(ContinuationFrame(1, data=enc.encode([("x-f", "f" * 15000)], huffman=False)).serialize()
                            for _ in range(4))
        self.attack(frames, "continuation_flood")

    def test_ping_flood(self):
        self.start_h2_lb()
        self.attack(b"".join(PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize() for i in range(5000)),
                    "control_flood")

    def test_settings_flood(self):
        self.start_h2_lb()
        self.attack(b"".join(SettingsFrame(0, settings={SETTINGS_MAX_FRAME_SIZE: 16384}).serialize()
                             for _ in range(5000)), "control_flood")

    def test_empty_data_flood(self):
        self.start_h2_lb()
        enc = hpack.Encoder()
        fields = [(":method", "POST"), (":scheme", "https"), (":authority", "a.test"), (":path", "/hold?empty")]
        frames = HeadersFrame(1, data=enc.encode(fields), flags=["END_HEADERS"]).serialize()
        frames += b"".join(DataFrame(1, data=b"").serialize() for _ in range(5000))
        self.attack(frames, "control_flood")

    def test_a_few_pings_are_answered(self):
        self.start_h2_lb()
        client = self.connect()
        client.send(b"".join(PingFrame(0, opaque_data=bytes(8)).serialize() for _ in range(50)))
        client.wait(lambda: client.ping_acks == 50, what="50 PING ACKs")
        self.assertEqual(client.get("/echo").status, 200)
        self.assertIsNone(client.goaway)


class H2StallAndStreamsTest(H2TestCase):
    def test_zero_window_client_is_cut_within_client_ms(self):
        self.start_h2_lb(timeouts={"client_ms": 1000})
        before = self.goaways("stalled")
        client = self.connect(settings={SETTINGS_INITIAL_WINDOW_SIZE: 0}, window_updates=False)
        client.wait(lambda: client.settings_acked, what="our SETTINGS acknowledged")
        started = time.monotonic()
        sid = client.request("/blob")
        client.wait(lambda: client.stream(sid).headers is not None, what="the response head")
        self.assertTrue(client.wait_closed(8), f"still open after 8 s; goaway={client.goaway}")
        took = client.closed_at - started
        self.assertEqual(len(client.stream(sid).data), 0)
        self.assertIsNotNone(client.goaway, "closed without a GOAWAY")
        self.assertEqual(client.goaway[1], ENHANCE_YOUR_CALM, client.goaway)
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 3.5)
        wait_until(lambda: self.goaways("stalled") == before + 1, timeout=5, what="stalled counted")
        self.assert_served()

    def test_zero_window_client_busy_with_pings_is_cut_too(self):
        # Slow read disguised as activity: a PING every 200 ms (within the control budget) must
        # not keep alive a stream whose answer the client never takes.
        self.start_h2_lb(timeouts={"client_ms": 1000})
        before = self.goaways("stalled")
        client = self.connect(settings={SETTINGS_INITIAL_WINDOW_SIZE: 0}, window_updates=False)
        client.wait(lambda: client.settings_acked, what="our SETTINGS acknowledged")
        started = time.monotonic()
        sid = client.request("/blob")
        client.wait(lambda: client.stream(sid).headers is not None, what="the response head")
        deadline = time.monotonic() + 8
        next_ping = 0.0
        while not client.closed and time.monotonic() < deadline:
            if time.monotonic() >= next_ping:  # paced: 5 a second, well within the control budget
                client.send_lenient(PingFrame(0, opaque_data=bytes(8)).serialize())
                next_ping = time.monotonic() + 0.2
            client.pump(0.05)
        self.assertTrue(client.closed, f"still open after 8 s of pings; goaway={client.goaway}")
        self.assertLess(client.closed_at - started, 3.5)
        self.assertEqual(client.goaway[1], ENHANCE_YOUR_CALM, client.goaway)
        wait_until(lambda: self.goaways("stalled") == before + 1, timeout=5, what="stalled counted")

    def test_unfinished_header_block_is_cut(self):
        self.start_h2_lb(timeouts={"client_ms": 1000, "http_request_ms": 1000})
        before = self.goaways("stalled")
        client = self.connect()
        client.wait(lambda: client.server_settings, what="the lb's SETTINGS")
        started = time.monotonic()
        # HEADERS without END_HEADERS, and no CONTINUATION ever.
        client.send(client.headers_frame(client.take_id(), client.request_fields("/half"), end_headers=False))
        self.assertTrue(client.wait_closed(8), f"still open after 8 s; goaway={client.goaway}")
        self.assertLess(client.closed_at - started, 4.0)
        self.assertIsNotNone(client.goaway, "closed without a GOAWAY")
        self.assertEqual(client.goaway[1], PROTOCOL_ERROR, client.goaway)
        wait_until(lambda: self.goaways("stalled") == before + 1, timeout=5, what="stalled counted")
        self.assertEqual(self.backend.records("/half"), [])

    def over_the_limit(self, acknowledge):
        """Six streams to /hold at once on an lb allowing 4, sent after the lb's SETTINGS came and
        (`acknowledge`) after our ACK of them or (not) before it: the last two are refused, the
        first four reach the server and are answered, the connection goes on."""
        self.start_h2_lb(limits={"h2_max_streams": 4})
        client = self.connect(ack_settings=acknowledge)
        client.wait(lambda: client.server_settings, what="the lb's SETTINGS")
        self.assertEqual(client.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS), 4)
        sids = [client.take_id() for _ in range(6)]
        client.send(b"".join(client.headers_frame(sid, client.request_fields(f"/hold?{i}"))
                             for i, sid in enumerate(sids)))
        client.wait(lambda: all(client.stream(sid).reset is not None for sid in sids[4:]), what="2 refusals")
        for sid in sids[4:]:
            self.assertIn(client.stream(sid).reset, (REFUSED_STREAM, PROTOCOL_ERROR))
            self.assertIsNone(client.stream(sid).headers)
        wait_until(lambda: len(self.backend.records("/hold")) == 4, timeout=10, what="4 streams at the server")
        self.backend.release.set()
        client.wait(lambda: all(client.stream(sid).done for sid in sids[:4]), what="the 4 answers")
        for i, sid in enumerate(sids[:4]):
            self.assertEqual(client.stream(sid).status, 200)
            self.assertEqual(echo_of(client.stream(sid))["target"], f"/hold?{i}")
        self.assertEqual(sorted(r["target"] for r in self.backend.records("/hold")), [f"/hold?{i}" for i in range(4)])
        self.assertIsNone(client.goaway)
        self.assertEqual(client.get("/echo").status, 200)

    def test_streams_beyond_the_limit_are_refused(self):
        # Before the client acknowledged the SETTINGS (a browser's first requests).
        self.over_the_limit(acknowledge=False)

    def test_streams_beyond_the_acknowledged_limit_end_the_connection(self):
        # After the ACK, RFC 9113 §5.1.2 makes it a stream error, but nghttp2 1.52 (as Apache httpd
        # and Envoy, which use it) ends the connection: a client that ignores a limit it has
        # acknowledged gets a PROTOCOL_ERROR GOAWAY, counted and logged with nghttp2's reason, and
        # its streams are logged as ended by its error. docs/operations.md says so.
        self.start_h2_lb(limits={"h2_max_streams": 4})
        before = self.goaways("protocol_error")
        client = self.connect(ack_settings=True)
        client.wait(lambda: client.server_settings, what="the lb's SETTINGS")
        self.assertEqual(client.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS), 4)
        sids = [client.take_id() for _ in range(6)]
        client.send(b"".join(client.headers_frame(sid, client.request_fields(f"/hold?{i}"))
                             for i, sid in enumerate(sids)))
        client.wait(lambda: client.goaway is not None, what="GOAWAY")
        self.assertEqual(client.goaway[1], PROTOCOL_ERROR, client.goaway)
        self.assertEqual(self.goaways("protocol_error"), before + 1)
        self.wait_log(self.lb, r"h2: closing the connection of 127\.0\.0\.1:\d+: protocol_error \(.*max concurrent")
        self.wait_log(self.lb, r"path=/hold\?0 status=499 .*term=bad_request version=HTTP/2")
        self.backend.release.set()
        self.assert_served()


class H2WebSocketTest(H2TestCase):
    def test_websocket_over_h2_reaches_an_http_1_1_server(self):
        # RFC 8441: the lb offers extended CONNECT; the server behind gets the HTTP/1.1 upgrade it
        # knows (with a key the lb made), its 101 becomes the stream's 200, bytes echo both ways,
        # and the client's END_STREAM ends the tunnel.
        backend = PyBackend("ws")
        self.addCleanup(backend.stop)
        self.stats_port = free_port()
        self.lb = self.start_https_lb([Server("ws", backend.port)],
                                      node_extra={"stats": f"127.0.0.1:{self.stats_port}"}, lb_keys={"h2c": True})
        wait_listening(self.stats_port)
        for tls in (True, False):
            client = self.connect(tls)
            client.wait(lambda: client.server_settings, what="the lb's SETTINGS")
            self.assertEqual(client.server_settings.get(0x8), 1, "SETTINGS_ENABLE_CONNECT_PROTOCOL")
            sid = client.take_id()
            fields = client.request_fields("/chat", method="CONNECT") + [(":protocol", "websocket"),
                                                                          ("sec-websocket-version", "13")]
            client.send(client.headers_frame(sid, fields, end_stream=False))
            client.wait(lambda: client.stream(sid).headers is not None or client.stream(sid).reset is not None,
                        what="the CONNECT's answer")
            self.assertEqual(client.stream(sid).status, 200, client.stream(sid).headers)
            self.assertIsNone(client.stream(sid).field("sec-websocket-accept"))
            for i in range(3):
                message = f"frame-{i}-{tls}".encode() * 100
                before = len(client.stream(sid).data)
                client.send_body(sid, message, end=False)
                client.wait(lambda: len(client.stream(sid).data) >= before + len(message), what="the echo")
                self.assertEqual(bytes(client.stream(sid).data[before:]), message)
            client.send_body(sid, b"", end=True)
            client.wait(lambda: client.stream(sid).ended, what="the server's end of the tunnel")
            upgrade = [r for r in backend.requests if r["target"] == "/chat"][-1]
            fields = {k.lower(): v for k, v in upgrade["fields"]}
            self.assertEqual(upgrade["method"], "GET")
            self.assertEqual(fields.get("upgrade"), "websocket")
            self.assertEqual(fields.get("connection"), "upgrade")
            self.assertEqual(len(fields.get("sec-websocket-key", "")), 24, fields)
            self.assertEqual(fields.get("host"), "a.test")
        self.wait_log(self.lb, r"path=/chat status=200 .*term=tunnel version=HTTP/2")

    def test_plain_connect_and_other_protocols_are_refused(self):
        self.start_h2_lb()
        client = self.connect()
        client.wait(lambda: client.server_settings, what="the lb's SETTINGS")
        sid = client.take_id()
        fields = client.request_fields("/x", method="CONNECT") + [(":protocol", "not-websocket")]
        client.send(client.headers_frame(sid, fields, end_stream=False))
        client.wait(lambda: client.stream(sid).done, what="the refusal")
        self.assertEqual(client.stream(sid).status, 501)
        self.assertEqual(self.backend.records("/x"), [])


class H2GracefulTest(H2TestCase):
    def test_sigterm_sends_goaway_and_in_flight_streams_finish(self):
        self.start_h2_lb()
        client = self.connect()
        client.wait(lambda: client.server_settings, what="the lb's SETTINGS")
        sid = client.request("/hold?drain")
        wait_until(lambda: self.backend.records("/hold?drain"), timeout=10, what="the request at the server")
        self.lb.signal(signal.SIGTERM)
        client.wait(lambda: client.goaway is not None, what="GOAWAY")
        self.assertEqual(client.goaway[1], NO_ERROR, client.goaway)
        self.assertGreaterEqual(client.goaway[0], sid)
        self.assertFalse(client.stream(sid).done)
        self.backend.release.set()
        client.wait(lambda: client.stream(sid).done, what="the in-flight answer")
        s = client.stream(sid)
        self.assertEqual(s.status, 200, s.reset)
        self.assertEqual(echo_of(s)["target"], "/hold?drain")
        self.assertTrue(client.wait_closed(10), "the lb kept the connection after its last stream")
        self.assertEqual(self.lb.wait(timeout=15), 0, self.lb.output()[-3000:])

    def test_takeover_sends_goaway_and_in_flight_streams_finish(self):
        # A binary upgrade (`fulcrum lb --takeover`, what `reload --upgrade` runs): the new
        # process takes the listeners, the old one says GOAWAY on its h2 connections and drains.
        self.start_h2_lb()
        old = self.lb
        client = self.connect()
        client.wait(lambda: client.server_settings, what="the lb's SETTINGS")
        sid = client.request("/hold?upgrade")
        wait_until(lambda: self.backend.records("/hold?upgrade"), timeout=10, what="the request at the server")
        site_path = old.log_path[:-len(".log")]
        new = Process([FULCRUM, "lb", "--site", site_path, "--node", "lb-t", "--takeover"], site_path + ".takeover.log")
        self.addCleanup(self.stop_lb, new)
        wait_until(lambda: "--takeover: serving" in new.output() or not new.alive(), timeout=20,
                   what="the new process serving")
        self.assertTrue(new.alive(), new.output())
        client.wait(lambda: client.goaway is not None, what="GOAWAY")
        self.assertEqual(client.goaway[1], NO_ERROR, client.goaway)
        self.assertGreaterEqual(client.goaway[0], sid)
        # New connections (h2 and h2c) go to the new process while the old stream waits.
        self.lb = new
        new.https_port, new.port = old.https_port, old.port
        self.assert_served()
        self.assert_served(tls=False)
        self.assertFalse(client.stream(sid).done)
        self.backend.release.set()
        client.wait(lambda: client.stream(sid).done, what="the in-flight answer")
        self.assertEqual(client.stream(sid).status, 200, client.stream(sid).reset)
        self.assertEqual(echo_of(client.stream(sid))["target"], "/hold?upgrade")
        self.assertTrue(client.wait_closed(10), "the old process kept the connection after its last stream")
        self.assertEqual(old.wait(timeout=15), 0, old.output()[-3000:])
        self.assertIn("version=HTTP/2", new.output())


if __name__ == "__main__":
    unittest.main()
