"""Certificates from an ACME CA, end to end against Debian's pebble (the ACME test server Let's
Encrypt publishes) and pebble-challtestsrv (its DNS answers every test name with 127.0.0.1),
both started here on loopback ports. The lb obtains a certificate for its domains with HTTP-01
answered on its own http listener (redirect_http on), serves it without a restart, keeps it
across restarts, and two nodes sharing a state_dir do not both order one."""
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import unittest

from harness import FULCRUM, Process, free_port, wait_until
from test_lb import LbTestCase, Server, lb_site_text
from test_tls import der_of, tls_connect

DOMAINS = ["acme.test", "www.acme.test"]


def https_get_text(port, cafile, path, timeout=5):
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class Pebble:
    """pebble and pebble-challtestsrv on free loopback ports; `validation_port` is where pebble
    checks HTTP-01 answers (the lb's http listener)."""

    def __init__(self, tmp, validation_port, tls_validation_port=None):
        self.dir = os.path.join(tmp.path, "pebble")
        os.makedirs(self.dir)
        self.cert, key = os.path.join(self.dir, "pebble.crt"), os.path.join(self.dir, "pebble.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", self.cert, "-days", "30", "-subj", "/CN=pebble",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
        self.port, self.management, dns, dns_management = free_port(), free_port(), free_port(), free_port()
        config = os.path.join(self.dir, "pebble.json")
        with open(config, "w") as f:
            json.dump({"pebble": {"listenAddress": f"127.0.0.1:{self.port}",
                                  "managementListenAddress": f"127.0.0.1:{self.management}",
                                  "certificate": self.cert, "privateKey": key, "httpPort": validation_port,
                                  "tlsPort": tls_validation_port or free_port(), "ocspResponderURL": "",
                                  "externalAccountBindingRequired": False}}, f)
        self.dns = Process(["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "",
                            "-tlsalpn01", "", "-management", f"127.0.0.1:{dns_management}",
                            "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""], os.path.join(self.dir, "dns.log"))
        # No sleeps before validating; no nonces refused at random (the client retries those, but
        # the test wants a deterministic count of orders).
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self.server = Process(["pebble", "-config", config, "-dnsserver", f"127.0.0.1:{dns}"],
                              os.path.join(self.dir, "pebble.log"), env=env)
        wait_until(self.listening, timeout=20, what="pebble listening")
        self.directory = f"https://127.0.0.1:{self.port}/dir"

    def listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def root(self):
        """The root pebble issues under (it changes with every pebble start), as a PEM file."""
        status, body = https_get_text(self.management, self.cert, "/roots/0")
        assert status == 200, status
        path = os.path.join(self.dir, "root.pem")
        with open(path, "wb") as f:
            f.write(body)
        return path

    def issued(self):
        return self.server.output().count("Issued certificate serial")

    def stop(self):
        self.server.stop()
        self.dns.stop()


class AcmeTest(LbTestCase):
    challenge = "http-01"

    def setUp(self):
        super().setUp()
        for tool in ("pebble", "pebble-challtestsrv"):
            self.assertIsNotNone(shutil.which(tool), f"{tool} is not installed (scripts/deps.sh installs pebble)")
        self.http_port, self.https_port = free_port(), free_port()
        if self.challenge == "tls-alpn-01":
            # pebble checks the https listener; its HTTP-01 checks would go to a port nobody has.
            self.pebble = Pebble(self.tmp, free_port(), tls_validation_port=self.https_port)
        else:
            self.pebble = Pebble(self.tmp, self.http_port)
        self.addCleanup(self.pebble.stop)
        self.backend = self.py_backend("py")

    def site(self, name, http_port, https_port):
        extra = (f'[lb.tls]\nredirect_http = true\n[lb.acme]\ndirectory = "{self.pebble.directory}"\n'
                 f'email = "ops@acme.test"\ndomains = {json.dumps(DOMAINS)}\nca_file = "{self.pebble.cert}"\n'
                 f'challenge = "{self.challenge}"\n')
        text = lb_site_text(http_port, [Server("py", self.backend.port)], extra=extra,
                            node_extra={"https": f"127.0.0.1:{https_port}"}).replace('name = "lb-t"', f'name = "{name}"')
        return self.tmp.write(f"{name}.toml", text)

    def start(self, name, http_port, https_port):
        path = self.site(name, http_port, https_port)
        proc = Process([FULCRUM, "lb", "--site", path, "--node", name], path + f".{free_port()}.log")
        self.addCleanup(self.stop_lb, proc)
        return proc

    def served_cert(self, port, root, name):
        ctx = ssl.create_default_context(cafile=root)
        with tls_connect(port, ctx, name) as s:  # verified: chain to pebble's root, and the name
            return s.getpeercert(binary_form=True)

    def acme_leaf(self):
        """The DER of the first certificate of the chain the lb wrote."""
        with open(os.path.join(self.tmp.path, "var", "acme", "cert.pem")) as f:
            pem = f.read()
        end = "-----END CERTIFICATE-----"
        return ssl.PEM_cert_to_DER_cert(pem[:pem.index(end) + len(end)] + "\n")

    def wait_serving_acme(self, root):
        """Until new handshakes get the certificate the lb wrote, without a restart."""
        def serving_acme():
            try:
                return self.served_cert(self.https_port, root, "www.acme.test") == self.acme_leaf()
            except (OSError, ssl.SSLError):
                return False
        wait_until(serving_acme, timeout=15, what="the ACME certificate served without a restart")

    def test_obtains_serves_keeps_and_shares_one_certificate(self):
        lb = self.start("lb-a", self.http_port, self.https_port)
        wait_until(lambda: "acme: certificate for acme.test written" in lb.output(), timeout=60,
                   what="a certificate from pebble")
        root = self.pebble.root()
        self.wait_serving_acme(root)
        self.assertEqual(self.served_cert(self.https_port, root, "acme.test"), self.acme_leaf())
        acme_dir = os.path.join(self.tmp.path, "var", "acme")
        for secret in ("account.key", "key.pem"):
            self.assertEqual(os.stat(os.path.join(acme_dir, secret)).st_mode & 0o777, 0o600, secret)
        self.assertEqual(self.pebble.issued(), 1)
        # Requests through it reach the server over https.
        ctx = ssl.create_default_context(cafile=root)
        with tls_connect(self.https_port, ctx, "acme.test") as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n")
            self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200 "))

        # A second node sharing the state_dir uses the same certificate and orders none.
        http2, https2 = free_port(), free_port()
        other = self.start("lb-b", http2, https2)
        wait_until(lambda: "acme: certificate for acme.test valid" in other.output() or
                   other.output().count("https certificate") >= 1, timeout=15, what="the second node up")
        wait_until(lambda: self.served_cert(https2, root, "acme.test") == self.acme_leaf(), timeout=15,
                   what="the second node serving the shared certificate")
        self.assertEqual(self.pebble.issued(), 1)

        # A restart keeps the certificate (and the account): nothing is ordered again.
        self.stop_lb(lb)
        lb = self.start("lb-a", self.http_port, self.https_port)
        wait_until(lambda: "renewal in" in lb.output() or "https certificate" in lb.output(), timeout=15,
                   what="the node back")
        wait_until(lambda: self.served_cert(self.https_port, root, "acme.test") == self.acme_leaf(),
                   timeout=15, what="the kept certificate served at start")
        self.assertEqual(self.pebble.issued(), 1)

    def due_certificate(self, directory):
        """A self-signed certificate for DOMAINS with most of its life behind it (10 days ago to 1 day
        from now: renewal is due at two thirds), made with `openssl ca -selfsign` to set the dates."""
        os.makedirs(directory)
        key, csr, cert = (os.path.join(directory, n) for n in ("due.key", "due.csr", "due.pem"))
        cnf = os.path.join(directory, "ca.cnf")
        with open(cnf, "w") as f:
            f.write(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {directory}/index.txt\nnew_certs_dir = {directory}\n"
                    f"serial = {directory}/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n"
                    f"[p]\ncommonName = supplied\n")
        open(os.path.join(directory, "index.txt"), "w").close()
        with open(os.path.join(directory, "serial"), "w") as f:
            f.write("01\n")
        san = ",".join(f"DNS:{d}" for d in DOMAINS)
        run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, timeout=30)
        run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
            "-out", csr, "-subj", f"/CN={DOMAINS[0]}", "-addext", f"subjectAltName={san}",
            "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "keyUsage=critical,digitalSignature")
        now = time.time()
        stamp = lambda t: time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))
        run("ca", "-batch", "-config", cnf, "-selfsign", "-keyfile", key, "-in", csr, "-out", cert,
            "-startdate", stamp(now - 10 * 86400), "-enddate", stamp(now + 86400))
        return cert, key

    def test_a_due_certificate_is_renewed_under_load_with_no_failed_request(self):
        lb = self.start("lb-a", self.http_port, self.https_port)
        wait_until(lambda: "acme: certificate for acme.test written" in lb.output(), timeout=60,
                   what="the first certificate")
        root = self.pebble.root()
        wait_until(lambda: self.served_cert(self.https_port, root, "acme.test") == self.acme_leaf(), timeout=15,
                   what="the first certificate served")
        due_cert, due_key = self.due_certificate(os.path.join(self.tmp.path, "due"))
        # An operator (or another node) puts a certificate near its end in place, key first.
        acme_dir = os.path.join(self.tmp.path, "var", "acme")
        shutil.copy(due_key, os.path.join(acme_dir, "key.pem.new"))
        os.replace(os.path.join(acme_dir, "key.pem.new"), os.path.join(acme_dir, "key.pem"))
        shutil.copy(due_cert, os.path.join(acme_dir, "cert.pem.new"))
        os.replace(os.path.join(acme_dir, "cert.pem.new"), os.path.join(acme_dir, "cert.pem"))

        # Load: new TLS connections one after another, each verified (pebble's root, or the due
        # certificate while it serves), each request answered 200.
        cafile = os.path.join(self.tmp.path, "trusted.pem")
        with open(cafile, "w") as out:
            for path in (root, due_cert):
                with open(path) as f:
                    out.write(f.read().strip() + "\n")
        ctx = ssl.create_default_context(cafile=cafile)
        stop = threading.Event()
        results = {"ok": 0, "failed": [], "serials": set()}

        def load():
            for _ in range(100000):
                if stop.is_set():
                    return
                try:
                    with tls_connect(self.https_port, ctx, "acme.test") as s:
                        results["serials"].add(s.getpeercert()["serialNumber"])
                        s.sendall(b"GET /echo HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n")
                        if not s.recv(100).startswith(b"HTTP/1.1 200 "):
                            raise AssertionError("not a 200")
                    results["ok"] += 1
                except Exception as e:  # every failure is reported below
                    results["failed"].append(repr(e))
        thread = threading.Thread(target=load)
        thread.start()
        try:
            wait_until(lambda: self.pebble.issued() == 2, timeout=60, what="the renewal ordered")
            wait_until(lambda: self.served_cert(self.https_port, root, "acme.test") == self.acme_leaf(),
                       timeout=15, what="the renewed certificate served")
            wait_until(lambda: results["ok"] >= 20, timeout=15, what="requests under load")
        finally:
            stop.set()
            thread.join(timeout=30)
        self.assertEqual(results["failed"], [])
        self.assertGreaterEqual(len(results["serials"]), 2, "the load never saw the certificate change")
        self.assertIn("renewing a certificate for acme.test", lb.output())

    def test_an_unreachable_ca_keeps_the_node_serving_and_retries(self):
        self.pebble.stop()
        lb = self.start("lb-a", self.http_port, self.https_port)
        wait_until(lambda: "acme: " in lb.output() and "retrying in 10 s" in lb.output(), timeout=40,
                   what="a failed order, retried")
        # The self-signed certificate serves meanwhile.
        self_signed = os.path.join(self.tmp.path, "var", "tls", "self-signed.crt")
        ctx = ssl.create_default_context(cafile=self_signed)
        with tls_connect(self.https_port, ctx, "acme.test") as s:
            self.assertEqual(s.getpeercert(binary_form=True), der_of(self_signed))
        self.assertTrue(lb.alive())


class TlsAlpnTest(AcmeTest):
    """TLS-ALPN-01 (RFC 8737): pebble validates on the https listener, asking for acme-tls/1."""
    challenge = "tls-alpn-01"

    def test_obtains_serves_keeps_and_shares_one_certificate(self):
        lb = self.start("lb-a", self.http_port, self.https_port)
        try:
            wait_until(lambda: "acme: certificate for acme.test written" in lb.output(), timeout=60,
                       what="a certificate from pebble over TLS-ALPN-01")
        except AssertionError:
            self.fail(lb.output()[-3000:] + "\npebble:\n" + self.pebble.server.output()[-3000:])
        root = self.pebble.root()
        self.wait_serving_acme(root)
        self.assertEqual(self.pebble.issued(), 1)
        # Outside a validation, acme-tls/1 is refused: no client gets a validation certificate.
        ctx = ssl.create_default_context(cafile=root)
        ctx.set_alpn_protocols(["acme-tls/1"])
        with self.assertRaises((ssl.SSLError, OSError)):
            with tls_connect(self.https_port, ctx, "acme.test"):
                pass
        # Browsers' handshakes were never disturbed: h2 chosen, as on any https listener.
        ctx = ssl.create_default_context(cafile=root)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with tls_connect(self.https_port, ctx, "acme.test") as s:
            self.assertEqual(s.selected_alpn_protocol(), "h2")

    test_a_due_certificate_is_renewed_under_load_with_no_failed_request = None
    test_an_unreachable_ca_keeps_the_node_serving_and_retries = None


if __name__ == "__main__":
    unittest.main()
