"""The PROXY protocol (v1 and v2) on real processes: `fulcrum lb` behind another balancer
([lb] accept_proxy) takes the client's address from the header for its logs, X-Forwarded-For,
source hashing, firewall and rate limits; a malformed header closes the connection and is
counted; and toward servers with send_proxy every upstream connection opens with a header naming
its one client, to a Python server that parses it and to a real `fulcrum web` node."""
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import unittest

from harness import FULCRUM, Process, ThreadedServer, free_port, read_body, read_head, wait_until
from test_lb import LbTestCase, Server, get_once

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
METRICS = b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def v1(src, dst, sport=40000, dport=80):
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src=None, dst=None, sport=40000, dport=80, tlvs=b"", local=False):
    """A v2 header; LOCAL (no addresses) when `local`."""
    if local:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack(">H", 0)
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if s.version == 4 else 0x21
    payload = s.packed + d.packed + struct.pack(">HH", sport, dport) + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack(">H", len(payload)) + payload


def send_in_pieces(sock, data, cuts):
    """Writes `data` cut at the offsets `cuts`, each piece on its own (a pause lets it leave as
    its own segment, so the lb meets the cut)."""
    start = 0
    for cut in list(cuts) + [len(data)]:
        if cut > start:
            sock.sendall(data[start:cut])
            start = cut
            if cut < len(data):
                time.sleep(0.005)


def exchange(port, data, cuts=(), source=None, timeout=5.0):
    """Sends `data` (cut at `cuts`) on a new connection and reads until the lb closes it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        try:
            send_in_pieces(s, data, cuts)
        except OSError:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def echo_fields(raw):
    """The request fields a PyBackend echoed, from a raw response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), raw[:300]
    return json.loads(body)["fields"]


def field(fields, name):
    values = [v for n, v in fields if n.lower() == name.lower()]
    return values[0] if values else None


def metric(port, name, label=""):
    """A sample of the lb's /metrics (the first whose labels contain `label`), or None."""
    raw = exchange(port, METRICS)
    m = re.search(re.escape(name) + r"\{[^}]*" + re.escape(label) + r"[^}]*\} (\d+)", raw.decode(errors="replace"))
    return int(m.group(1)) if m else None


def closed_without_answer(port, data, source=None):
    return exchange(port, data, source=source) == b""


class ProxyHeaderServer:
    """An HTTP/1.1 server behind `fulcrum lb` with send_proxy: each connection must open with a
    PROXY header (v1 or v2), which it parses and records; every response names the client that
    header announced, so a test can tell whose connection served it. Health checks come with a
    LOCAL (v2) or UNKNOWN (v1) header."""

    def __init__(self):
        self.lock = threading.Lock()
        self.headers = []  # one per connection: {"version", "src", "dst", "local"}
        self.bad = []
        self.server = ThreadedServer(self._handle)
        self.port = self.server.port

    def stop(self):
        self.server.stop()

    def _read_header(self, f):
        first = f.read(1)
        if first == b"P":
            line = first + f.readline(107)
            if not line.endswith(b"\r\n"):
                raise ValueError(f"v1 line {line!r}")
            parts = line[:-2].decode().split(" ")
            if parts[1] == "UNKNOWN":
                return {"version": 1, "local": True}
            return {"version": 1, "local": False, "src": f"{parts[2]}:{parts[4]}", "dst": f"{parts[3]}:{parts[5]}"}
        if first == b"\r":
            fixed = first + f.read(15)
            if fixed[:12] != V2_SIGNATURE:
                raise ValueError(f"v2 signature {fixed!r}")
            length = struct.unpack(">H", fixed[14:16])[0]
            payload = f.read(length)
            if fixed[12] == 0x20:
                return {"version": 2, "local": True}
            if fixed[12] != 0x21:
                raise ValueError(f"v2 command {fixed[12]:#x}")
            size = 4 if fixed[13] == 0x11 else 16
            src = ipaddress.ip_address(payload[:size])
            dst = ipaddress.ip_address(payload[size:2 * size])
            sport, dport = struct.unpack(">HH", payload[2 * size:2 * size + 4])
            return {"version": 2, "local": False, "src": f"{src}:{sport}", "dst": f"{dst}:{dport}"}
        raise ValueError(f"no PROXY header: {first!r}")

    def _handle(self, conn, server):
        f = conn.makefile("rb")
        try:
            header = self._read_header(f)
        except (ValueError, IndexError, OSError) as e:
            with self.lock:
                self.bad.append(str(e))
            return
        with self.lock:
            self.headers.append(header)
        while not server.stopping.is_set():
            try:
                start, headers, _ = read_head(f, keep_fields=True)
            except EOFError:
                return
            framed = "transfer-encoding" in headers or "content-length" in headers
            read_body(f, headers, bodiless=not framed)
            body = json.dumps({"src": header.get("src"), "dst": header.get("dst"),
                               "version": header["version"], "local": header["local"]}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                         str(len(body)).encode() + b"\r\n\r\n" + body)

    def proxied(self):
        with self.lock:
            return [h for h in self.headers if not h["local"]]


class AcceptProxyTest(LbTestCase):
    """[lb] accept_proxy: a python client plays the balancer in front."""

    def start_proxied_lb(self, servers, lb_keys=None, **site):
        self.stats_port = free_port()
        keys = {"accept_proxy": True, **(lb_keys or {})}
        lb = self.start_lb(servers, lb_keys=keys, node_extra={"stats": f"127.0.0.1:{self.stats_port}"}, **site)
        wait_until(lambda: metric(self.stats_port, "fulcrum_lb_requests_total") is not None, timeout=15,
                   what="stats listener")
        return lb

    def test_the_headers_client_is_logged_and_forwarded_at_every_split(self):
        backend = self.py_backend("py")
        lb = self.start_proxied_lb([Server("py", backend.port)])
        headers = {
            "v1 tcp4": (v1("203.0.113.7", "127.0.0.1", 5555, lb.port), "203.0.113.7", "203.0.113.7:5555"),
            "v1 tcp6": (v1("2001:db8::7", "::1", 6666, lb.port), "2001:db8::7", "[2001:db8::7]:6666"),
            "v2 tcp4 with TLVs": (v2("198.51.100.9", "127.0.0.1", 7777, lb.port,
                                     tlvs=b"\x01\x00\x02h2" + b"\x04\x00\x03abc"),
                                  "198.51.100.9", "198.51.100.9:7777"),
            "v2 tcp6": (v2("2001:db8::9", "::1", 8888, lb.port), "2001:db8::9", "[2001:db8::9]:8888"),
        }
        for what, (header, ip, logged) in headers.items():
            with self.subTest(what):
                fields = echo_fields(exchange(lb.port, header + REQUEST, cuts=[5]))
                self.assertEqual(field(fields, "X-Forwarded-For"), ip)
                forwarded_for = f'"[{ip}]"' if ":" in ip else ip
                self.assertEqual(field(fields, "Forwarded"), f"for={forwarded_for};proto=http")
                self.wait_log(lb, r"access client=" + re.escape(logged) + " ")
        # Every boundary of a v1 and a v2 header, the request's first bytes sent with the header's
        # last ones: nothing of the request is lost.
        for header in (v1("203.0.113.8", "127.0.0.1", 1234, lb.port), v2("203.0.113.8", "127.0.0.1", 1234, lb.port)):
            for cut in range(1, len(header) + 1):
                raw = exchange(lb.port, header + REQUEST, cuts=[cut])
                self.assertEqual(field(echo_fields(raw), "X-Forwarded-For"), "203.0.113.8", f"cut at {cut}")
        # LOCAL (the front balancer's own check) and UNKNOWN keep the socket's address.
        for header in (v2(local=True), b"PROXY UNKNOWN\r\n"):
            fields = echo_fields(exchange(lb.port, header + REQUEST, source="127.0.0.4"))
            self.assertEqual(field(fields, "X-Forwarded-For"), "127.0.0.4")
        self.assertEqual(metric(self.stats_port, "fulcrum_lb_proxy_protocol_errors_total"), 0)

    def test_malformed_headers_close_the_connection_and_are_counted(self):
        backend = self.py_backend("py")
        lb = self.start_proxied_lb([Server("py", backend.port)], timeouts={"http_request_ms": 1500})
        bad = [
            REQUEST,  # no header at all
            b"PROXY TCP4 203.0.113.7 127.0.0.1 5555\r\n" + REQUEST,  # a field missing
            b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 99999\r\n" + REQUEST,  # port out of range
            b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\n" + REQUEST,  # LF without CR
            b"PROXY TCP4 " + b"1" * 200 + b"\r\n",  # no CRLF within 107 bytes
            b"PROXY TCP6 203.0.113.7 127.0.0.1 5555 80\r\n" + REQUEST,  # v4 under TCP6
            V2_SIGNATURE + bytes([0x31, 0x11]) + struct.pack(">H", 12) + bytes(12) + REQUEST,  # version 3
            V2_SIGNATURE + bytes([0x23, 0x11]) + struct.pack(">H", 12) + bytes(12) + REQUEST,  # command 3
            V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack(">H", 8) + bytes(8) + REQUEST,  # too short
            V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack(">H", 60000) + bytes(100),  # over the limit
            V2_SIGNATURE + bytes([0x21, 0x12]) + struct.pack(">H", 12) + bytes(12) + REQUEST,  # DGRAM
        ]
        for data in bad:
            with self.subTest(data[:40]):
                self.assertTrue(closed_without_answer(lb.port, data))
        wait_until(lambda: metric(self.stats_port, "fulcrum_lb_proxy_protocol_errors_total") == len(bad),
                   timeout=10, what=f"{len(bad)} PROXY protocol errors counted")
        self.assertIn("PROXY header from 127.0.0.1:", lb.output())
        # A header that never ends is closed at http_request_ms.
        s = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
        try:
            s.sendall(b"PROXY TCP4 203.0.113.7")
            started = time.monotonic()
            self.assertEqual(s.recv(100), b"")
            self.assertLess(time.monotonic() - started, 5)
        finally:
            s.close()
        wait_until(lambda: metric(self.stats_port, "fulcrum_lb_proxy_protocol_errors_total") == len(bad) + 1,
                   timeout=10, what="the late header counted")
        self.assertTrue(lb.alive())

    def test_source_hashing_follows_the_headers_client(self):
        backends = [self.py_backend(f"py{i}") for i in range(2)]
        lb = self.start_proxied_lb([Server(b.name, b.port) for b in backends], algorithm="source")

        def served_by(ip):
            raw = exchange(lb.port, v1(ip, "127.0.0.1", 1000, lb.port) + REQUEST)
            self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw[:200])
            return re.search(rb"X-Served-By: (\S+)", raw).group(1).decode()
        chosen = {}
        for i in range(16):
            chosen[f"10.9.0.{i + 1}"] = served_by(f"10.9.0.{i + 1}")
        # Every connection comes from 127.0.0.1, yet the named clients spread over both servers,
        # each sticking to its own.
        self.assertEqual(set(chosen.values()), {"py0", "py1"})
        for ip, server in chosen.items():
            self.assertEqual(served_by(ip), server, ip)

    def test_firewall_and_rate_limit_judge_the_headers_client(self):
        backend = self.py_backend("py")
        lb = self.start_proxied_lb([Server("py", backend.port)], limits={"rate_per_ip": 1, "rate_burst": 2},
                                   extra='[lb.firewall]\ndeny = ["203.0.113.0/24"]\n')
        self.assertTrue(closed_without_answer(lb.port, v1("203.0.113.5", "127.0.0.1") + REQUEST))
        wait_until(lambda: metric(self.stats_port, "fulcrum_lb_firewall_refused_total", 'reason="deny"') == 1, timeout=10,
                   what="the header's address denied")
        self.assertEqual(metric(self.stats_port, "fulcrum_lb_proxy_protocol_errors_total"), 0)

        def status(ip):
            raw = exchange(lb.port, v2(ip, "127.0.0.1", 1000, lb.port) + REQUEST)
            return int(raw.split(b" ", 2)[1]) if raw else None
        # Two at once (the burst), then 429 for that client; another named client is not charged.
        self.assertEqual([status("198.51.100.1") for _ in range(3)], [200, 200, 429])
        self.assertEqual(status("198.51.100.2"), 200)

    def test_only_accept_proxy_from_may_send_the_header(self):
        backend = self.py_backend("py")
        lb = self.start_proxied_lb([Server("py", backend.port)], lb_keys={"accept_proxy_from": ["127.0.0.2/32"]})
        # The start-up probe (from 127.0.0.1, a connect alone) was a stranger too. The kernel finished
        # its handshake before the lb accepted it, so wait for it to be counted before taking the base.
        wait_until(lambda: metric(self.stats_port, "fulcrum_lb_proxy_protocol_errors_total") == 1, timeout=10,
                   what="the start-up probe counted")
        before = 1
        header = v1("203.0.113.7", "127.0.0.1", 5555, lb.port)
        fields = echo_fields(exchange(lb.port, header + REQUEST, source="127.0.0.2"))
        self.assertEqual(field(fields, "X-Forwarded-For"), "203.0.113.7")
        self.assertTrue(closed_without_answer(lb.port, header + REQUEST, source="127.0.0.3"))
        wait_until(lambda: metric(self.stats_port, "fulcrum_lb_proxy_protocol_errors_total") == before + 1,
                   timeout=10, what="the stranger counted")
        self.assertIn("not in accept_proxy_from", lb.output())

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_curl_haproxy_protocol(self):
        backend = self.py_backend("py")
        lb = self.start_proxied_lb([Server("py", backend.port)])
        out = subprocess.run(["curl", "-sS", "--haproxy-protocol", "--interface", "127.0.0.6",
                              f"http://127.0.0.1:{lb.port}/echo"], capture_output=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(field(json.loads(out.stdout)["fields"], "X-Forwarded-For"), "127.0.0.6")
        self.wait_log(lb, r"access client=127\.0\.0\.6:\d+ method=GET path=/echo status=200")

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_h2c_after_the_header(self):
        backend = self.py_backend("py")
        lb = self.start_proxied_lb([Server("py", backend.port)], lb_keys={"h2c": True})
        out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--haproxy-protocol", "--interface",
                              "127.0.0.8", f"http://127.0.0.1:{lb.port}/echo"], capture_output=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(field(json.loads(out.stdout)["fields"], "X-Forwarded-For"), "127.0.0.8")
        self.wait_log(lb, r"access client=127\.0\.0\.8:\d+ method=GET path=/echo status=200 .*version=HTTP/2")

    def test_https_starts_after_the_header(self):
        backend = self.py_backend("py")
        https_port = free_port()
        self.stats_port = free_port()
        lb = self.start_lb([Server("py", backend.port)], lb_keys={"accept_proxy": True},
                           node_extra={"https": f"127.0.0.1:{https_port}", "stats": f"127.0.0.1:{self.stats_port}"})
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def https_request(header, cut):
            raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            send_in_pieces(raw, header, [cut])
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(REQUEST)
                out = b""
                while chunk := tls.recv(65536):
                    out += chunk
                return out
        wait_until(lambda: _connectable(https_port), timeout=15, what="https listener")
        for header in (v1("203.0.113.70", "127.0.0.1", 4444, https_port),
                       v2("2001:db8::70", "::1", 4444, https_port)):
            fields = echo_fields(https_request(header, 3))
            self.assertEqual(field(fields, "X-Forwarded-For"), str(ipaddress.ip_address(
                "203.0.113.70" if header.startswith(b"PROXY") else "2001:db8::70")))
            self.assertEqual(field(fields, "X-Forwarded-Proto"), "https")
        self.wait_log(lb, r"access client=203\.0\.113\.70:4444 ")


def _connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class SendProxyTest(LbTestCase):
    """[[web.node]] send_proxy: every connection the lb opens to the server starts with a header
    naming the client and the lb's listener; none serves two clients."""

    def start_send_proxy_lb(self, version):
        server = ProxyHeaderServer()
        self.addCleanup(server.stop)
        port = free_port()
        site = f"""
[site]
name = "pp"
state_dir = "var"
[lb]
[lb.health]
path = "/healthz"
interval_ms = 200
timeout_ms = 2000
rise = 1
fall = 2
[[lb.node]]
name = "lb-t"
http = "127.0.0.1:{port}"
threads = 1
[web]
docroot = "www"
app = "none"
[[web.node]]
name = "pp"
listen = "127.0.0.1:{server.port}"
send_proxy = "{version}"
"""
        path = self.tmp.write(f"send-{version}.toml", site)
        lb = Process([FULCRUM, "lb", "--site", path, "--node", "lb-t"], path + ".log")
        self.addCleanup(self.stop_lb, lb)
        lb.port = port
        # Servers start up; the checks (with a LOCAL or UNKNOWN header) keep them so.
        wait_until(lambda: any(h["local"] for h in server.headers), timeout=10, what="a checked connection")
        self.assertTrue(lb.alive(), lb.output())
        return lb, server

    def check_clients_never_share(self, version):
        lb, server = self.start_send_proxy_lb(version)
        self.assertEqual(server.bad, [])
        from test_lb import Client
        a, b = Client(lb.port, source="127.0.0.21"), Client(lb.port, source="127.0.0.22")
        try:
            for _ in range(3):
                for client, ip in ((a, "127.0.0.21"), (b, "127.0.0.22")):
                    status, _, body, _ = client.get("/who")
                    self.assertEqual(status, 200)
                    seen = json.loads(body)
                    self.assertEqual(seen["version"], int(version[1]))
                    self.assertFalse(seen["local"])
                    self.assertEqual(seen["src"].rsplit(":", 1)[0], ip)
                    self.assertEqual(seen["src"].rsplit(":", 1)[1],
                                     str(client.conn.sock.getsockname()[1]))
                    self.assertEqual(seen["dst"], f"127.0.0.1:{lb.port}")
        finally:
            a.close()
            b.close()
        # Six requests, and every upstream connection announced the one client that used it.
        self.assertGreaterEqual(len(server.proxied()), 6)
        self.assertEqual(server.bad, [])

    def test_v1(self):
        self.check_clients_never_share("v1")

    def test_v2(self):
        self.check_clients_never_share("v2")

    def run_web_node(self, internal_tls):
        os.makedirs(os.path.join(self.tmp.path, "www"), exist_ok=True)
        self.tmp.write("www/small.txt", "small\n")
        lb_port, web_port = free_port(), free_port()
        site = f"""
[site]
name = "pp"
state_dir = "var"
[security]
internal_tls = {"true" if internal_tls else "false"}
[lb.health]
path = "/healthz"
interval_ms = 200
timeout_ms = 2000
rise = 1
fall = 2
[[lb.node]]
name = "lb-t"
http = "127.0.0.1:{lb_port}"
threads = 1
[web]
docroot = "www"
app = "none"
[[web.node]]
name = "web-pp"
listen = "127.0.0.1:{web_port}"
threads = 1
send_proxy = "v2"
"""
        path = self.tmp.write("send-web.toml", site)
        if internal_tls:
            certs = subprocess.run([FULCRUM, "certs", path], capture_output=True, text=True, timeout=30)
            self.assertEqual(certs.returncode, 0, certs.stdout + certs.stderr)
        web = Process([FULCRUM, "web", "--site", path, "--node", "web-pp"], path + ".web.log")
        self.addCleanup(self.stop_lb, web)
        if not internal_tls:
            # Direct probes (status, Prometheus) still reach it without a header.
            wait_until(lambda: _get_ok(web_port, "/healthz"), timeout=20, what="web node serving")
        lb = Process([FULCRUM, "lb", "--site", path, "--node", "lb-t"], path + ".lb.log")
        self.addCleanup(self.stop_lb, lb)
        wait_until(lambda: _get_ok(lb_port, "/small.txt", source="127.0.0.31"), timeout=20,
                   what="served through the lb")
        status, served, body, _ = get_once(lb_port, "/small.txt", source="127.0.0.31")
        self.assertEqual((status, served, body), (200, "web-pp", b"small\n"))
        self.wait_log(web, r"access client=127\.0\.0\.31:\d+ method=GET path=/small\.txt status=200")
        self.assertNotIn("PROXY header from", web.output())
        self.assertTrue(lb.alive() and web.alive())

    def test_a_fulcrum_web_node_takes_the_header(self):
        self.run_web_node(internal_tls=False)

    def test_a_fulcrum_web_node_under_internal_tls_takes_it_before_the_handshake(self):
        self.run_web_node(internal_tls=True)


def _get_ok(port, path, source=None):
    try:
        return get_once(port, path, source=source, timeout=2)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main()
