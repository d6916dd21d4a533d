"""`fulcrum lb` terminating HTTPS on [[lb.node]] https: the self-signed certificate, configured
certificates chosen by SNI (ECDSA and RSA side by side), the protocol policy (TLS 1.2/1.3, suites,
groups, ALPN, resumption), redirect_http and hsts, hostile bytes on the https port, large bodies
both ways, and what `fulcrum check` refuses. Real processes on free loopback ports, real TLS
clients (Python's ssl, `openssl s_client`); conditions awaited by bounded polling; every process
cleaned up even when a test fails."""
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import unittest
import warnings

from harness import (FULCRUM, ThreadedServer, free_port, raw_exchange, read_body, read_head, read_response,
                     wait_until)
from test_abuse import METRICS, exchange_from, wait_listening
from test_lb import Client, LbTestCase, Server, WebNodes, get_once, lb_site_text, responses_of

HSTS = "max-age=63072000; includeSubDomains"
MIB = 1 << 20


# ---------------------------------------------------------------------------------------------
# TLS clients


def client_context(*cafiles, check_hostname=True):
    """A TLS client context trusting exactly `cafiles` (verification on)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    for cafile in cafiles:
        ctx.load_verify_locations(cafile=cafile)
    return ctx


def insecure_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_connect(port, ctx, server_hostname, session=None, rcvbuf=None, timeout=10.0):
    """A TLS connection to 127.0.0.1:`port` (handshake done), SNI `server_hostname`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        return ctx.wrap_socket(sock, server_hostname=server_hostname, session=session)
    except BaseException:
        sock.close()
        raise


def https_client(port, ctx, server_hostname, **connect):
    """A test_lb.Client (keep-alive http.client) whose connection runs over TLS; .tls is the socket."""
    client = Client(port)
    client.tls = client.conn.sock = tls_connect(port, ctx, server_hostname, **connect)
    return client


def https_get(port, ctx, server_hostname, path="/echo", headers=None, method="GET", body=None):
    """(status, X-Served-By, body, response) of one request on a new TLS connection."""
    client = https_client(port, ctx, server_hostname)
    try:
        return client.get(path, headers, method, body)
    finally:
        client.close()


def tls_exchange(port, ctx, server_hostname, payload, timeout=5.0):
    """Raw bytes over TLS; everything answered until the lb closes (or `timeout`)."""
    with tls_connect(port, ctx, server_hostname, timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (socket.timeout, ssl.SSLEOFError, ConnectionResetError):
            pass
        return data


def echo_fields(body, name):
    """The values of field `name` in a PyBackend echo, in order."""
    return [value for field, value in json.loads(body)["fields"] if field.lower() == name.lower()]


def head_fields(raw):
    """(status, [[name, value], ...]) of the first response in raw bytes."""
    start, _, fields = read_head(io.BufferedReader(io.BytesIO(raw)), keep_fields=True)
    return int(start.split(" ")[1]), fields


def values(fields, name):
    return [value for field, value in fields if field.lower() == name.lower()]


def client_hello():
    """The bytes of a real ClientHello (TLS 1.2/1.3, SNI localhost), made without a network."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def until_closed(sock, timeout):
    """Reads until the peer closes: (bytes received, seconds taken), or (bytes, None) when the
    connection is still open after `timeout` seconds."""
    started = time.monotonic()
    deadline = started + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return data, None
        except ConnectionResetError:
            return data, time.monotonic() - started
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def make_cert(directory, stem, name, kind="ec"):
    """A self-signed certificate for DNS name `name` (CN and SAN), ECDSA P-256 or RSA-2048:
    (cert path, key path)."""
    cert, key = os.path.join(directory, stem + ".crt"), os.path.join(directory, stem + ".key")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" else ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def der_of(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def common_name(peer):
    """The CN of a getpeercert() dict."""
    return dict(item for rdn in peer["subject"] for item in rdn)["commonName"]


def s_client(port, *args, timeout=15):
    """`openssl s_client` to 127.0.0.1:`port` with stdin closed: (exit code, output)."""
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


class TlsTestCase(LbTestCase):
    def start_https_lb(self, servers, tls="", name="lb", node_extra=None, extra="", **site):
        """An lb with an http and an https listener; `tls` is raw TOML appended (an [lb.tls]
        table). Returns its Process with .port (http) and .https_port."""
        https_port = free_port()
        node = dict(node_extra or {})
        node["https"] = f"127.0.0.1:{https_port}"
        lb = self.start_lb(servers, name=name, node_extra=node, extra=extra + tls, **site)
        lb.https_port = https_port
        wait_listening(https_port)
        return lb

    def self_signed(self):
        d = os.path.join(self.tmp.path, "var", "tls")
        return os.path.join(d, "self-signed.crt"), os.path.join(d, "self-signed.key")

    def assert_serving(self, lb, ctx, name="localhost"):
        """The lb is alive and answers a real https request."""
        self.assertTrue(lb.alive(), lb.output()[-3000:])
        self.assertEqual(https_get(lb.https_port, ctx, name)[0], 200, lb.output()[-3000:])


# ---------------------------------------------------------------------------------------------


class SelfSignedTest(TlsTestCase):
    def test_self_signed_certificate_is_made_once_and_serves(self):
        backend = self.py_backend("py")
        lb = self.start_https_lb([Server("py", backend.port)])
        cert, key = self.self_signed()
        self.assertTrue(os.path.isfile(cert) and os.path.isfile(key), lb.output()[-3000:])
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        text = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-text"], capture_output=True, text=True,
                              timeout=10, check=True).stdout
        self.assertRegex(text, r"prime256v1|P-256")  # ECDSA P-256

        ctx = client_context(cert)
        # A spoofed X-Forwarded-Proto from the client is replaced, not passed on.
        status, served, body, _ = https_get(lb.https_port, ctx, "localhost", headers={"X-Forwarded-Proto": "http"})
        self.assertEqual((status, served), (200, "py"), body[:300])
        self.assertEqual(echo_fields(body, "X-Forwarded-Proto"), ["https"])
        forwarded = echo_fields(body, "Forwarded")
        self.assertEqual(len(forwarded), 1, forwarded)
        self.assertIn("proto=https", forwarded[0])
        # The names: the site's, localhost and the listen address, each verifiable.
        with tls_connect(lb.https_port, ctx, "localhost") as s:
            sans = set(s.getpeercert()["subjectAltName"])
            served_der = s.getpeercert(binary_form=True)
        self.assertLessEqual({("DNS", "lb-test"), ("DNS", "localhost"), ("IP Address", "127.0.0.1")}, sans)
        self.assertEqual(served_der, der_of(cert))
        for name in ("lb-test", "127.0.0.1"):
            self.assertEqual(https_get(lb.https_port, ctx, name)[0], 200, name)
        # Plain http on the http listener says http.
        self.assertEqual(echo_fields(get_once(lb.port, "/echo")[2], "X-Forwarded-Proto"), ["http"])

        with open(cert, "rb") as f:
            cert_bytes = f.read()
        with open(key, "rb") as f:
            key_bytes = f.read()
        self.stop_lb(lb)
        again = self.start_https_lb([Server("py", backend.port)], name="lb2")
        with open(cert, "rb") as f:
            self.assertEqual(f.read(), cert_bytes, "the certificate was made again")
        with open(key, "rb") as f:
            self.assertEqual(f.read(), key_bytes, "the key was made again")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        with tls_connect(again.https_port, ctx, "localhost") as s:
            self.assertEqual(s.getpeercert(binary_form=True), der_of(cert))
        self.assert_serving(again, ctx)


class ConfiguredCertificatesTest(TlsTestCase):
    def test_sni_picks_the_certificate_and_the_key_type_the_client_takes(self):
        backend = self.py_backend("py")
        d = self.tmp.path
        a_ec = make_cert(d, "a-ec", "a.test")
        b_ec = make_cert(d, "b-ec", "b.test")
        b_rsa = make_cert(d, "b-rsa", "b.test", kind="rsa")
        pairs = ", ".join(f'{{cert = "{c}", key = "{k}"}}' for c, k in (a_ec, b_ec, b_rsa))
        lb = self.start_https_lb([Server("py", backend.port)], tls=f"[lb.tls]\ncerts = [{pairs}]\n")
        cafiles = (a_ec[0], b_ec[0], b_rsa[0])
        self.assertFalse(os.path.exists(self.self_signed()[0]), "a self-signed certificate was made anyway")

        def served(name, ctx):
            with tls_connect(lb.https_port, ctx, name) as s:
                return s.getpeercert(binary_form=True), s.getpeercert(), s.cipher()

        ctx = client_context(*cafiles)  # hostname checked too
        der, peer, _ = served("a.test", ctx)
        self.assertEqual(common_name(peer), "a.test")
        self.assertEqual(der, der_of(a_ec[0]))
        der, peer, _ = served("b.test", ctx)
        self.assertEqual(common_name(peer), "b.test")
        self.assertIn(der, (der_of(b_ec[0]), der_of(b_rsa[0])))
        self.assertEqual(json.loads(https_get(lb.https_port, ctx, "b.test")[2])["target"], "/echo")

        # An unknown name, and no SNI at all: the default (first) certificate.
        loose = client_context(*cafiles, check_hostname=False)
        for name in ("unknown.test", None):
            der, peer, _ = served(name, loose)
            self.assertEqual(der, der_of(a_ec[0]), name)

        # b.test to a client that takes only RSA, then only ECDSA (TLS 1.2, one suite each).
        for suite, expected in (("ECDHE-RSA-AES128-GCM-SHA256", b_rsa[0]), ("ECDHE-ECDSA-AES128-GCM-SHA256", b_ec[0])):
            ctx = client_context(*cafiles)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(suite)
            der, peer, cipher = served("b.test", ctx)
            self.assertEqual(cipher[0], suite)
            self.assertEqual(der, der_of(expected), suite)
            self.assertEqual(common_name(peer), "b.test")
        # a.test has no RSA certificate: an RSA-only client cannot be served it.
        ctx = client_context(*cafiles)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
        with self.assertRaises(ssl.SSLError):
            served("a.test", ctx)
        self.assert_serving(lb, client_context(*cafiles), "a.test")


class CertificateReloadTest(TlsTestCase):
    def test_new_files_are_taken_by_new_handshakes_and_open_connections_continue(self):
        backend = self.py_backend("py")
        d = self.tmp.path
        first = make_cert(d, "first", "site.test")
        cert, key = os.path.join(d, "live.crt"), os.path.join(d, "live.key")
        shutil.copy(first[0], cert)
        shutil.copy(first[1], key)
        lb = self.start_https_lb([Server("py", backend.port)], tls=f'[lb.tls]\ncert = "{cert}"\nkey = "{key}"\n')
        second = make_cert(d, "second", "site.test")
        ctx = client_context(first[0], second[0])

        def served_cert():
            with tls_connect(lb.https_port, ctx, "site.test") as s:
                return s.getpeercert(binary_form=True)

        self.assertEqual(served_cert(), der_of(first[0]))
        held = https_client(lb.https_port, ctx, "site.test")
        self.addCleanup(held.close)
        self.assertEqual(held.get("/echo")[0], 200)

        # Renewed in place (as certbot or an ACME client would): picked up without a signal.
        os.replace(shutil.copy(second[1], key + ".new"), key)
        os.replace(shutil.copy(second[0], cert + ".new"), cert)
        wait_until(lambda: served_cert() == der_of(second[0]), timeout=15, what="the new certificate served")
        self.assertEqual(held.get("/echo")[0], 200)  # the connection opened before goes on
        self.assertEqual(der_of_peer(held), der_of(first[0]))

        # A broken file is refused: the certificate in force keeps serving.
        with open(cert, "w") as f:
            f.write("not a certificate\n")
        lb.proc.send_signal(signal.SIGHUP)
        self.wait_log(lb, r"certificates not reloaded \(SIGHUP\)")
        self.assertEqual(served_cert(), der_of(second[0]))

        # SIGHUP with good files: taken at once.
        shutil.copy(first[1], key)
        shutil.copy(first[0], cert)
        lb.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: served_cert() == der_of(first[0]), timeout=15, what="the first certificate again")
        self.assertTrue(lb.alive())


def der_of_peer(client):
    return client.tls.getpeercert(binary_form=True)


class TestsslTest(TlsTestCase):
    """testssl (Debian's testssl.sh) against the https listener as a site would run it: a
    certificate from a CA (this test's, handed to testssl with --add-ca) and hsts on. Its exit code
    does not encode findings, so its JSON is read: nothing of severity MEDIUM or above."""

    def ca_signed(self, directory):
        ca_key, ca_cert = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.crt")
        key, csr, cert = (os.path.join(directory, n) for n in ("leaf.key", "leaf.csr", "leaf.crt"))
        ext = os.path.join(directory, "leaf.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                    "crlDistributionPoints=URI:http://127.0.0.1:9/ca.crl\n"
                    "authorityInfoAccess=OCSP;URI:http://127.0.0.1:9/ocsp\n")
        run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca_key,
            "-out", ca_cert, "-days", "365", "-subj", "/CN=Fulcrum test CA")
        run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
            "-out", csr, "-subj", "/CN=localhost")
        run("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
            "-days", "90", "-sha256", "-extfile", ext)
        return ca_cert, cert, key

    def test_no_finding_of_medium_severity_or_above(self):
        testssl = shutil.which("testssl") or shutil.which("testssl.sh")
        self.assertIsNotNone(testssl, "testssl is not installed (scripts/deps.sh installs testssl.sh)")
        backend = self.py_backend("py")
        ca, cert, key = self.ca_signed(self.tmp.path)
        lb = self.start_https_lb([Server("py", backend.port)],
                                 tls=f'[lb.tls]\ncert = "{cert}"\nkey = "{key}"\nhsts = true\n')
        report = os.path.join(self.tmp.path, "testssl.json")
        result = subprocess.run([testssl, "--quiet", "--color", "0", "--warnings", "off", "--add-ca", ca,
                                 "--jsonfile", report, "--ip", "127.0.0.1", f"https://localhost:{lb.https_port}/"],
                                capture_output=True, text=True, timeout=540)
        self.assertTrue(os.path.exists(report), result.stdout[-3000:] + result.stderr[-3000:])
        with open(report) as f:
            findings = json.load(f)
        severe = [f"{x['id']} {x['severity']}: {x['finding']}" for x in findings
                  if x.get("severity") in ("MEDIUM", "HIGH", "CRITICAL")]
        print(f"\ntestssl: {len(findings)} findings, none MEDIUM or above" if not severe else "", flush=True)
        self.assertEqual(severe, [], result.stdout[-4000:])
        self.assertTrue(lb.alive())


class ProtocolPolicyTest(TlsTestCase):
    def setUp(self):
        super().setUp()
        self.backend = self.py_backend("py")
        self.lb = self.start_https_lb([Server("py", self.backend.port)])
        self.cert = self.self_signed()[0]

    def versions(self, minimum, maximum):
        ctx = client_context(self.cert)
        ctx.minimum_version, ctx.maximum_version = minimum, maximum
        return ctx

    def test_tls_1_1_refused_1_2_and_1_3_accepted(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = insecure_context()
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this OpenSSL offers TLS 1.1 at all
        with self.assertRaises(ssl.SSLError) as caught:
            tls_connect(self.lb.https_port, ctx, "localhost").close()
        # The refusal is the server's (its protocol_version alert), not our OpenSSL declining to try.
        self.assertIn("ALERT_PROTOCOL_VERSION", str(caught.exception))

        for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            client = https_client(self.lb.https_port, self.versions(version, version), "localhost")
            try:
                self.assertEqual(client.tls.version(), name)
                self.assertEqual(client.get("/echo")[0], 200)
            finally:
                client.close()

    def test_suites_and_groups(self):
        # TLS 1.2: ECDHE with AES-GCM or ChaCha20-Poly1305; CBC with SHA-1 is not offered.
        for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                      "ECDHE-ECDSA-CHACHA20-POLY1305"):
            ctx = self.versions(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
            ctx.set_ciphers(suite)
            with tls_connect(self.lb.https_port, ctx, "localhost") as s:
                self.assertEqual(s.cipher()[0], suite)
        ctx = self.versions(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA")
        with self.assertRaises(ssl.SSLError):
            tls_connect(self.lb.https_port, ctx, "localhost").close()
        # Groups X25519, P-256, P-384; not P-521.
        for group, shown in (("X25519", "X25519"), ("P-256", "prime256v1"), ("P-384", "secp384r1")):
            code, out = s_client(self.lb.https_port, "-tls1_3", "-groups", group, "-servername", "localhost")
            self.assertEqual(code, 0, out[-2000:])
            self.assertRegex(out, rf"(Server|Peer) Temp Key: [^\n]*{shown}", out[-2000:])
        code, out = s_client(self.lb.https_port, "-tls1_3", "-groups", "P-521", "-servername", "localhost")
        self.assertNotEqual(code, 0, out[-2000:])
        self.assertTrue(self.lb.alive())

    def test_client_renegotiation_refused(self):
        # s_client's "R" asks for a TLS 1.2 renegotiation; stdin stays open until the answer came.
        log_path = os.path.join(self.tmp.path, "renegotiate.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{self.lb.https_port}", "-tls1_2",
                                     "-servername", "localhost"], stdin=subprocess.PIPE, stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            def output():
                with open(log_path, "rb") as f:
                    return f.read().decode("utf-8", "replace")
            wait_until(lambda: "Verify return code" in output() or proc.poll() is not None, timeout=10,
                       what="s_client handshake")
            proc.stdin.write(b"R\n")
            proc.stdin.flush()
            wait_until(lambda: "no renegotiation" in output() or proc.poll() is not None, timeout=10,
                       what="the renegotiation answered")
            self.assertIn("RENEGOTIATING", output())
            self.assertIn("no renegotiation", output())  # the lb's no_renegotiation alert
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            proc.stdin.close()
        self.assertTrue(self.lb.alive())
        self.assertEqual(https_get(self.lb.https_port, client_context(self.cert), "localhost")[0], 200)

    def test_alpn_selects_h2_then_http_1_1(self):
        # [lb.tls] http2 is on by default: h2 wins whatever order the client lists it in, and a
        # client that offers only http/1.1 gets it (test_h2 covers the HTTP/2 itself).
        for offered, chosen in ((["http/1.1", "h2"], "h2"), (["http/1.1"], "http/1.1")):
            ctx = client_context(self.cert)
            ctx.set_alpn_protocols(offered)
            client = https_client(self.lb.https_port, ctx, "localhost")
            try:
                self.assertEqual(client.tls.selected_alpn_protocol(), chosen)
                if chosen == "http/1.1":
                    self.assertEqual(client.get("/echo")[0], 200)
            finally:
                client.close()

    def resumes(self, ctx):
        """Whether a second connection resumes the session of a first one that made a request."""
        first = https_client(self.lb.https_port, ctx, "localhost")
        try:
            self.assertEqual(first.get("/echo")[0], 200)  # TLS 1.3 tickets come after the handshake
            session = first.tls.session
        finally:
            first.close()
        self.assertIsNotNone(session)
        self.assertTrue(session.has_ticket, "no session ticket was issued")
        second = https_client(self.lb.https_port, ctx, "localhost", session=session)
        try:
            self.assertEqual(second.get("/echo")[0], 200)
            return second.tls.session_reused
        finally:
            second.close()

    def test_tls_1_2_session_resumes(self):
        self.assertTrue(self.resumes(self.versions(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)))

    def test_tls_1_3_session_resumes(self):
        self.assertTrue(self.resumes(self.versions(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)))


class RedirectAndHstsTest(TlsTestCase):
    """The server behind these lbs sends a Strict-Transport-Security of its own (max-age=5)."""

    def sts_server(self):
        seen = []

        def handle(conn, server):
            f = conn.makefile("rb")
            while True:
                start, headers = read_head(f)
                framed = "transfer-encoding" in headers or "content-length" in headers
                read_body(f, headers, bodiless=not framed)
                target = start.split(" ")[1]
                if target != "/healthz":
                    seen.append(target)
                body = target.encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=5\r\nContent-Length: " +
                             str(len(body)).encode() + b"\r\n\r\n" + body)

        server = ThreadedServer(handle)
        self.addCleanup(server.stop)
        server.seen = seen
        return server

    def test_redirect_http_and_hsts(self):
        server = self.sts_server()
        lb = self.start_https_lb([Server("sts", server.port)], tls="[lb.tls]\nredirect_http = true\nhsts = true\n")
        https = lb.https_port

        def redirect(request):
            status, fields = head_fields(raw_exchange(lb.port, request))  # read until the lb closes
            self.assertEqual(status, 308, fields)
            self.assertEqual(values(fields, "Connection"), ["close"])
            self.assertEqual(values(fields, "Strict-Transport-Security"), [], "STS on plain http")
            return values(fields, "Location")

        self.assertEqual(redirect(b"GET /p?q=1 HTTP/1.1\r\nHost: example.test:80\r\n\r\n"),
                         [f"https://example.test:{https}/p?q=1"])
        self.assertEqual(redirect(b"POST /form?x=y HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nabc"),
                         [f"https://example.test:{https}/form?x=y"])
        self.assertEqual(redirect(b"GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), [f"https://[::1]:{https}/v6"])
        self.assertEqual(redirect(b"GET /old HTTP/1.0\r\n\r\n"), [f"https://127.0.0.1:{https}/old"])
        # An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
        self.assertEqual(redirect(b"GET http://other.test/x?y HTTP/1.1\r\nHost: example.test\r\n\r\n"),
                         [f"https://other.test:{https}/x?y"])
        self.assertEqual(server.seen, [], "a redirected request reached the server")

        ctx = client_context(self.self_signed()[0])
        # https: exactly one STS, ours, in place of the server's; on an lb-made error too.
        status, _, body, resp = https_get(https, ctx, "localhost", path="/p?q=1")
        self.assertEqual((status, body), (200, b"/p?q=1"))
        self.assertEqual(resp.msg.get_all("Strict-Transport-Security"), [HSTS])
        status, fields = head_fields(tls_exchange(https, ctx, "localhost", b"GET / HTTP/1.1\r\n\r\n"))  # no Host
        self.assertEqual(status, 400)
        self.assertEqual(values(fields, "Strict-Transport-Security"), [HSTS])

        # hsts without redirect_http: http responses pass the server's own field, the lb adds none.
        plain = self.start_https_lb([Server("sts", server.port)], tls="[lb.tls]\nhsts = true\n", name="lb2")
        status, _, body, resp = get_once(plain.port, "/plain")
        self.assertEqual((status, body), (200, b"/plain"))
        self.assertEqual(resp.msg.get_all("Strict-Transport-Security"), ["max-age=5"])
        status, _, _, resp = https_get(plain.https_port, ctx, "localhost", path="/secure")
        self.assertEqual(status, 200)
        self.assertEqual(resp.msg.get_all("Strict-Transport-Security"), [HSTS])


class HostileBytesTest(TlsTestCase):
    """Bytes that are not TLS on the https port: each connection is closed, the lb keeps serving."""

    def test_plaintext_garbage_truncated_hello_and_idle_connections(self):
        backend = self.py_backend("py")
        stats_port = free_port()
        lb = self.start_https_lb([Server("py", backend.port)], timeouts={"http_request_ms": 1000},
                                 node_extra={"stats": f"127.0.0.1:{stats_port}"})
        wait_listening(stats_port)
        ctx = client_context(self.self_signed()[0])
        self.assert_serving(lb, ctx)
        before = exchange_from(stats_port, METRICS).decode()

        def closed(payload, timeout=5.0):
            with socket.create_connection(("127.0.0.1", lb.https_port), timeout=5) as s:
                s.sendall(payload)
                data, elapsed = until_closed(s, timeout)
            self.assertIsNotNone(elapsed, f"still open after {timeout} s; received {data[:100]!r}")
            self.assertFalse(data.startswith(b"HTTP/"), data[:200])  # no plaintext answer
            return data, elapsed

        closed(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assert_serving(lb, ctx)
        closed(bytes(range(256)) * 4)
        self.assert_serving(lb, ctx)
        hello = client_hello()
        self.assertGreater(len(hello), 100)
        _, elapsed = closed(hello[:50])  # then silence: the handshake deadline is http_request_ms
        self.assertGreater(elapsed, 0.5)
        self.assert_serving(lb, ctx)

        # 200 connections that never send a ClientHello: closed at the handshake deadline.
        with self.idle_connections(lb.https_port, 200) as idle:
            self.assert_serving(lb, ctx)
            wait_until(lambda: all(state(s) == "closed" for s in idle), timeout=10,
                       what="idle connections closed at the handshake deadline")
        self.assert_serving(lb, ctx)

        after = exchange_from(stats_port, METRICS).decode()
        tls_lines = [line for line in after.splitlines() if "tls" in line.lower() and not line.startswith("#")]
        failure_lines = [line for line in tls_lines if re.search(r"fail|error|refus", line)]
        if failure_lines:
            names = {re.split(r"[{ ]", line, 1)[0] for line in failure_lines}

            def total(text):
                return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if re.split(r"[{ ]", line, 1)[0] in names)
            self.assertGreaterEqual(total(after) - total(before), 3, failure_lines)
        else:
            print(f"\nno TLS handshake failure metric on /metrics (lines naming tls: {tls_lines})", flush=True)

    def test_idle_connections_do_not_stop_a_real_client(self):
        # The default handshake deadline (10 s) keeps them open for the whole check: the real
        # client is served while every one of the 200 still holds its connection.
        backend = self.py_backend("py")
        lb = self.start_https_lb([Server("py", backend.port)])
        ctx = client_context(self.self_signed()[0])
        with self.idle_connections(lb.https_port, 200) as idle:
            started = time.monotonic()
            self.assert_serving(lb, ctx)
            self.assertLess(time.monotonic() - started, 5.0)
            self.assertEqual([state(s) for s in idle].count("open"), 200)
        self.assert_serving(lb, ctx)

    @contextlib.contextmanager
    def idle_connections(self, port, count):
        idle = []
        try:
            for _ in range(count):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            yield idle
        finally:
            for s in idle:
                s.close()


def state(sock):
    """"open" (nothing to read yet), "closed" (EOF or reset) or "data" (bytes came), at once."""
    sock.settimeout(0)
    try:
        return "data" if sock.recv(1) else "closed"
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"


class LargeBodiesTest(TlsTestCase):
    """Bodies far larger than a TLS record and the socket buffers: partial writes and backpressure."""

    def test_3mib_download_from_a_web_node(self):
        content = os.urandom(3 * MIB)
        with open(os.path.join(self.tmp.path, "www", "big.bin"), "wb") as f:
            f.write(content)
        nodes = WebNodes(self.tmp, count=1)
        self.addCleanup(nodes.stop_all)
        nodes.start_all()
        lb = self.start_https_lb(nodes.servers())
        ctx = client_context(self.self_signed()[0])
        expected = hashlib.sha256(content).hexdigest()
        # A small receive window: the lb's TLS writes hit EAGAIN mid-record, again and again.
        with tls_connect(lb.https_port, ctx, "localhost", rcvbuf=16384, timeout=20) as s, s.makefile("rb") as f:
            for _ in range(2):  # twice on one keep-alive connection
                s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
                digest = hashlib.sha256()
                status, headers, length = read_response(f, sink=digest.update)
                self.assertEqual(status, 200, headers)
                self.assertEqual(length, len(content))
                self.assertEqual(digest.hexdigest(), expected)
        nodes.assert_all_healthy(self)
        self.assertTrue(lb.alive())

    def test_1mib_upload_to_the_server(self):
        backend = self.py_backend("py")
        lb = self.start_https_lb([Server("py", backend.port)])
        ctx = client_context(self.self_signed()[0])
        body = os.urandom(MIB)
        client = https_client(lb.https_port, ctx, "localhost", timeout=20)
        try:
            status, _, answer, _ = client.get("/upload", method="POST", body=body)
            self.assertEqual((status, answer), (200, str(MIB).encode()))
            status, _, answer, _ = client.get("/echo", method="POST", body=body)  # the bytes, not only the count
            self.assertEqual(status, 200)
            echo = json.loads(answer)
            self.assertEqual((echo["body_length"], echo["body_sha256"]), (MIB, hashlib.sha256(body).hexdigest()))
        finally:
            client.close()
        self.assertTrue(lb.alive())


class TlsStreamsTest(TlsTestCase):
    """Many requests in one TLS record (bytes OpenSSL holds decrypted but unread must not be
    forgotten), and a websocket tunnel over TLS."""

    def test_pipelined_requests_in_one_record_and_a_websocket_tunnel(self):
        backend = self.py_backend("py")
        lb = self.start_https_lb([Server("py", backend.port)])
        ctx = client_context(self.self_signed()[0])
        count = 40
        requests = b"".join(b"GET /echo%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(count))
        requests += b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
        requests += b"p" * 5000
        with tls_connect(lb.https_port, ctx, "localhost") as s:
            s.sendall(requests)  # one write: a TLS record or two holding every request
            data, elapsed = until_closed(s, 10)
        self.assertIsNotNone(elapsed, f"not every response came: {data.count(b'HTTP/1.1 200')} of {count + 1}")
        responses = responses_of(data)
        self.assertEqual([r[0] for r in responses], [200] * (count + 1))
        self.assertEqual([json.loads(r[2])["target"] for r in responses[:count]],
                         [f"/echo{i}" for i in range(count)])
        self.assertEqual(json.loads(responses[-1][2])["body_length"], 5000)

        with tls_connect(lb.https_port, ctx, "localhost") as s, s.makefile("rb") as f:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            start, _ = read_head(f)
            self.assertTrue(start.startswith("HTTP/1.1 101 "), start)
            payload = os.urandom(200000)
            s.sendall(payload)
            echoed = b""
            while len(echoed) < len(payload):
                chunk = f.read1(65536)
                self.assertTrue(chunk, f"tunnel closed after {len(echoed)} bytes")
                echoed += chunk
            self.assertEqual(echoed, payload)
        self.assertTrue(lb.alive())


class CheckRefusalsTest(TlsTestCase):
    def site(self, stem, tls, https=True):
        node = {"https": f"127.0.0.1:{free_port()}"} if https else {}
        return self.tmp.write(f"{stem}.toml", lb_site_text(free_port(), [Server("py", free_port())],
                                                           node_extra=node, extra=tls))

    def check(self, path):
        result = subprocess.run([FULCRUM, "check", path], capture_output=True, text=True, timeout=15)
        return result.returncode, result.stdout + result.stderr

    def lb(self, path):
        result = subprocess.run([FULCRUM, "lb", "--site", path, "--node", "lb-t"], capture_output=True, text=True,
                                timeout=15)
        return result.returncode, result.stdout + result.stderr

    def test_check_refusals(self):
        cert, key = make_cert(self.tmp.path, "ok", "ok.test")
        # The control: a complete [lb.tls] passes, so what follows fails for its own reason.
        good = self.site("good", f'[lb.tls]\ncert = "{cert}"\nkey = "{key}"\nredirect_http = true\nhsts = true\n')
        code, out = self.check(good)
        self.assertEqual(code, 0, out)

        path = self.site("http2", "[lb.tls]\nhttp2 = \"yes\"\n")
        code, out = self.check(path)
        self.assertEqual(code, 2, out)
        self.assertIn("lb.tls.http2", out)

        missing = os.path.join(self.tmp.path, "no-such-dir", "missing.pem")
        path = self.site("missing", f'[lb.tls]\ncert = "{missing}"\nkey = "{key}"\n')
        code, out = self.check(path)
        self.assertEqual(code, 2, out)
        self.assertRegex(out, r"lb\.tls\.cert\b")
        self.assertIn(missing, out)
        code, out = self.lb(path)
        self.assertNotEqual(code, 0, out)
        self.assertIn(missing, out)

        path = self.site("missing-pair", f'[lb.tls]\ncerts = [{{cert = "{cert}", key = "{missing}"}}]\n')
        code, out = self.check(path)
        self.assertEqual(code, 2, out)
        self.assertIn("lb.tls.certs[0].key", out)
        self.assertIn(missing, out)

        path = self.site("redirect", "[lb.tls]\nredirect_http = true\n", https=False)
        code, out = self.check(path)
        self.assertEqual(code, 2, out)
        self.assertIn("lb.tls.redirect_http", out)
        code, out = self.lb(path)
        self.assertNotEqual(code, 0, out)


if __name__ == "__main__":
    unittest.main()
