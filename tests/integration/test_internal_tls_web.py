"""`[security] internal_tls` between the lb and the web nodes: `fulcrum certs` issues the site's
certificates, then a real lb in front of a `fulcrum web` node and a Python backend (for what
`fulcrum web` lacks: an echo of a POST body, a WebSocket) that both require a client certificate
from the site CA. Requests through the lb work; a direct request without a certificate does not;
health checks over TLS follow a node going away and coming back."""
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import unittest

from harness import FULCRUM, Process, TempDir, free_port, read_head, wait_until
from test_lb import Client, PyBackend

HEALTH = {"path": "/healthz", "interval_ms": 200, "timeout_ms": 1000, "rise": 2, "fall": 2}


class TlsBackend(PyBackend):
    """PyBackend behind TLS with the node's certificate, requiring a client certificate from the
    site CA (as `fulcrum web` does under internal_tls). The context is set once the certificates
    exist; a failed handshake just ends that connection."""

    context = None

    def _handle(self, conn, server):
        with self.context.wrap_socket(conn, server_side=True) as tls:
            super()._handle(tls, server)


class InternalTlsWebTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        try:
            cls._start()
        except BaseException:
            cls._stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._stop()

    @classmethod
    def _stop(cls):
        for proc in getattr(cls, "procs", {}).values():
            proc.stop()
        if getattr(cls, "py", None):
            cls.py.stop()
        cls.tmp.cleanup()

    @classmethod
    def _start(cls):
        cls.procs = {}
        cls.web_starts = 0
        cls.py = TlsBackend("web-2")
        cls.lb_port, cls.web_port = free_port(), free_port()
        cls.tmp.write("www/small.txt", "0123456789abcdef" * 64)
        site = (
            '[site]\nname = "itls"\nstate_dir = "var"\n'
            '[security]\ninternal_tls = true\n'
            '[lb]\nalgorithm = "roundrobin"\nretries = 2\nh2c = true\n'
            "[lb.health]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in HEALTH.items()) +
            f'[[lb.node]]\nname = "lb-t"\nhttp = "127.0.0.1:{cls.lb_port}"\nthreads = 2\n'
            '[web]\ndocroot = "www"\napp = "none"\n'
            f'[[web.node]]\nname = "web-1"\nlisten = "127.0.0.1:{cls.web_port}"\nthreads = 1\n'
            f'[[web.node]]\nname = "web-2"\nlisten = "127.0.0.1:{cls.py.port}"\n')
        cls.site = cls.tmp.write("site.toml", site)
        certs = subprocess.run([FULCRUM, "certs", cls.site], capture_output=True, text=True, timeout=30)
        if certs.returncode != 0:
            raise AssertionError(f"fulcrum certs: {certs.returncode}\n{certs.stdout}\n{certs.stderr}")
        cls.pki = os.path.join(cls.tmp.path, "var", "tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cls.pem("web-2.crt"), cls.pem("web-2.key"))
        context.load_verify_locations(cls.pem("ca.crt"))
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["http/1.1"])
        cls.py.context = context
        cls.start_web()
        cls.lb = Process([FULCRUM, "lb", "--site", cls.site, "--node", "lb-t"], cls.site + ".lb.log")
        cls.procs["lb"] = cls.lb
        wait_until(lambda: cls.lb.alive() and cls.connectable(cls.lb_port), timeout=20, what="lb listening")
        wait_until(lambda: set(cls.served_by(4)) == {"web-1", "web-2"}, timeout=20, what="both web nodes served")

    @classmethod
    def pem(cls, name):
        return os.path.join(cls.pki, name)

    @classmethod
    def start_web(cls):
        cls.web_starts += 1
        proc = Process([FULCRUM, "web", "--site", cls.site, "--node", "web-1"],
                       cls.site + f".web-1.{cls.web_starts}.log")
        cls.procs["web-1"] = proc
        wait_until(lambda: proc.alive() and cls.connectable(cls.web_port), timeout=20, what="web-1 listening")
        return proc

    @staticmethod
    def connectable(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    @classmethod
    def served_by(cls, count, path="/small.txt"):
        """X-Served-By of `count` GETs on one keep-alive connection to the lb (200s only)."""
        client = Client(cls.lb_port)
        try:
            out = []
            for _ in range(count):
                status, served, _, _ = client.get(path)
                out.append(served if status == 200 else f"status {status}")
            return out
        finally:
            client.close()

    def tls_client(self, cert=None):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(self.pem("ca.crt"))
        context.check_hostname = False  # verified by IP below, as the lb does
        if cert:
            context.load_cert_chain(self.pem(cert + ".crt"), self.pem(cert + ".key"))
        return context

    def wait_log(self, proc, pattern, timeout=15.0):
        wait_until(lambda: re.search(pattern, proc.output()), timeout=timeout, what=f"log line /{pattern}/")

    def test_1_keep_alive_requests_reach_both_nodes_over_tls(self):
        seen = self.served_by(20)
        self.assertEqual(set(seen), {"web-1", "web-2"}, seen)
        # The lb's connections are pooled and its new ones (health checks: one each) resume.
        wait_until(lambda: self.web_metric(r'fulcrum_web_tls_handshakes_total\{node="web-1",result="resumed"\} (\d+)') > 0,
                   timeout=10, what="resumed handshakes on web-1")

    def web_metric(self, pattern):
        """A number from web-1's /metrics, read over TLS as the operator."""
        with socket.create_connection(("127.0.0.1", self.web_port), timeout=5) as raw:
            with self.tls_client("operator").wrap_socket(raw, server_hostname=None) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                text = b""
                while data := s.recv(65536):
                    text += data
        found = re.search(pattern, text.decode())
        self.assertIsNotNone(found, text.decode()[-2000:])
        return int(found.group(1))

    def test_2_no_certificate_no_entry(self):
        # Plain HTTP: no HTTP answer, the connection just ends.
        with socket.create_connection(("127.0.0.1", self.web_port), timeout=5) as s:
            s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = s.recv(65536)
            except ConnectionResetError:
                answer = b""
            self.assertNotIn(b"HTTP/1.1", answer)
        # TLS that trusts the site CA but shows no certificate: refused at the handshake (TLS 1.3:
        # the refusal arrives as the first read's alert).
        with self.assertRaises((ssl.SSLError, ConnectionResetError)):
            with socket.create_connection(("127.0.0.1", self.web_port), timeout=5) as raw:
                with self.tls_client().wrap_socket(raw, server_hostname=None) as s:
                    s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
                    if not s.recv(65536):
                        raise ConnectionResetError("closed")
        self.wait_log(self.procs["web-1"], r"TLS client 127\.0\.0\.1:\d+ refused: ")

    def test_3_health_checks_follow_a_node_over_tls(self):
        web = self.procs["web-1"]
        web.stop()
        self.wait_log(self.lb, r"server web-1 is DOWN")
        self.assertEqual(set(self.served_by(6)), {"web-2"})
        # web-2 alone: a POST body and a WebSocket go through its TLS link.
        client = Client(self.lb_port)
        try:
            status, served, data, _ = client.get("/echo", method="POST", body=b"x" * 100000)
            self.assertEqual((status, served), (200, "web-2"))
            echo = json.loads(data)
            self.assertEqual(echo["method"], "POST")
            self.assertEqual(echo["body_length"], 100000)
            self.assertEqual(client.get("/small.txt")[:2], (200, "web-2"))  # the same connection
        finally:
            client.close()
        # The same over HTTP/2 (h2c, nghttp: two streams at once on one connection): each
        # stream's body crosses a new TLS connection of the lb (its replay buffer fills during
        # the handshake and goes out in one send).
        body = self.tmp.write("body.bin", "y" * 300000)
        for _ in range(3):
            run = subprocess.run(["nghttp", "-d", body, f"http://127.0.0.1:{self.lb_port}/echo",
                                  f"http://127.0.0.1:{self.lb_port}/echo?second"],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(run.returncode, 0, run.stdout[-500:] + run.stderr)
            self.assertEqual(re.findall(r'"body_length": ?(\d+)', run.stdout), ["300000", "300000"], run.stdout[:500])
        with socket.create_connection(("127.0.0.1", self.lb_port), timeout=5) as s:
            s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            f = s.makefile("rb")
            start, _ = read_head(f)
            self.assertIn(" 101 ", start)
            for message in (b"hello", b"over TLS" * 10000):
                s.sendall(message)
                got = b""
                while len(got) < len(message):
                    data = f.read1(65536)
                    self.assertTrue(data, "tunnel closed")
                    got += data
                self.assertEqual(got, message)
        self.start_web()
        self.wait_log(self.lb, r"server web-1 is UP")
        wait_until(lambda: "web-1" in self.served_by(4), timeout=10, what="web-1 back in rotation")
        self.assertNotIn("certificate refused", self.lb.output())
        self.assertNotIn("TLS handshake failed", self.lb.output())


if __name__ == "__main__":
    unittest.main()
