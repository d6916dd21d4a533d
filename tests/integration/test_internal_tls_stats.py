"""The lb's stats listener under `[security] internal_tls = true`: it speaks HTTPS only, with the lb
node's certificate from the site CA. Reads (/metrics, /api/state, /healthz) work with the operator's
client certificate and without any (a browser); the admin API wants the operator's certificate as
well as the token (a token alone gets 403 and changes nothing); a certificate from another CA is
refused at the handshake and the lb's log says who and why. Two lbs: each one's site monitor reads
the other's stats listener over TLS; `fulcrum status` reads both as the operator, and Prometheus
(when installed) scrapes them over https with the operator's certificate from the generated
prometheus.yml."""
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import unittest

from harness import FULCRUM, Process, TempDir, free_port, http_get, needs, wait_until


def missing():
    return "openssl is not installed" if shutil.which("openssl") is None else None


def openssl(*args, cwd):
    made = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)}: {made.stderr}")


@needs(missing())
class InternalTlsStatsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.procs = {}
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
        for proc in cls.procs.values():
            proc.stop()
        cls.tmp.cleanup()

    @classmethod
    def _start(cls):
        cls.web_port, cls.prometheus_port = free_port(), free_port()
        cls.lbs = {name: (free_port(), free_port()) for name in ("lb-1", "lb-2")}  # http, stats
        cls.tmp.write("www/index.html", "hello\n")
        site = ('[site]\nname = "stls"\nstate_dir = "var"\n'
                '[security]\ninternal_tls = true\n'
                '[lb.health]\ninterval_ms = 200\ntimeout_ms = 1000\nrise = 1\nfall = 2\n')
        for name, (http, stats) in cls.lbs.items():
            site += (f'[[lb.node]]\nname = "{name}"\nhttp = "127.0.0.1:{http}"\n'
                     f'stats = "127.0.0.1:{stats}"\nthreads = 1\n')
        site += ('[web]\ndocroot = "www"\napp = "none"\n'
                 f'[[web.node]]\nname = "web-1"\nlisten = "127.0.0.1:{cls.web_port}"\nthreads = 1\n'
                 # Run by test_5 from `fulcrum monitoring`'s files, when Prometheus is installed.
                 f'[monitoring]\nprometheus = "127.0.0.1:{cls.prometheus_port}"\nalertmanager = ""\n'
                 'managed = false\ninterval_ms = 500\n')
        cls.site = cls.tmp.write("site.toml", site)
        certs = subprocess.run([FULCRUM, "certs", cls.site], capture_output=True, text=True, timeout=30)
        if certs.returncode != 0:
            raise AssertionError(f"fulcrum certs: {certs.returncode}\n{certs.stdout}\n{certs.stderr}")
        cls.pki = os.path.join(cls.tmp.path, "var", "tls")
        cls.procs["web-1"] = Process([FULCRUM, "web", "--site", cls.site, "--node", "web-1"],
                                     cls.site + ".web-1.log")
        for name in cls.lbs:
            cls.procs[name] = Process([FULCRUM, "lb", "--site", cls.site, "--node", name],
                                      cls.site + f".{name}.log")
        cls.lb = cls.procs["lb-1"]
        cls.stats = cls.lbs["lb-1"][1]
        for name, (_, stats) in cls.lbs.items():
            wait_until(lambda: cls.procs[name].alive() and cls.get(stats, "/healthz")[0] == 200, timeout=20,
                       what=f"{name}'s stats listener over https")
        with open(os.path.join(cls.tmp.path, "var", "admin.token")) as f:
            cls.token = f.read().strip()
        # A CA of another site, and a client certificate it signed.
        cls.other = os.path.join(cls.tmp.path, "other")
        os.makedirs(cls.other)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
                "/CN=other CA", "-days", "1", "-keyout", "ca.key", "-out", "ca.crt", cwd=cls.other)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=operator",
                "-keyout", "operator.key", "-out", "operator.csr", cwd=cls.other)
        openssl("x509", "-req", "-in", "operator.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-out", "operator.crt", cwd=cls.other)

    @classmethod
    def context(cls, cert=None, key=None):
        """A client that trusts the site CA (the lb's certificate names its IP, as SANs do), with
        an optional client certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(os.path.join(cls.pki, "ca.crt"))
        if cert:
            context.load_cert_chain(cert, key)
        return context

    @classmethod
    def operator(cls):
        return cls.context(os.path.join(cls.pki, "operator.crt"), os.path.join(cls.pki, "operator.key"))

    @classmethod
    def get(cls, port, path, context=None, **kwargs):
        try:
            return http_get(f"https://127.0.0.1:{port}{path}", context=context or cls.context(), **kwargs)
        except OSError as e:
            return 0, {}, str(e).encode()

    def post_state(self, state, context, token=True):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {self.token}"
        return http_get(f"https://127.0.0.1:{self.stats}/api/servers/web-1/state", headers=headers,
                        method="POST", data=json.dumps({"state": state}).encode(), context=context)

    def admin_state(self):
        status, _, body = self.get(self.stats, "/api/state")
        self.assertEqual(status, 200, body)
        return {s["name"]: s["admin"] for s in json.loads(body)["servers"]}["web-1"]

    def test_1_https_only_reads_with_or_without_a_client_certificate(self):
        # Plain HTTP gets no HTTP answer.
        with socket.create_connection(("127.0.0.1", self.stats), timeout=5) as s:
            s.sendall(b"GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = s.recv(65536)
            except ConnectionResetError:
                answer = b""
            self.assertNotIn(b"HTTP/1.1", answer)
        for context in (self.context(), self.operator()):
            status, headers, body = self.get(self.stats, "/metrics", context)
            self.assertEqual(status, 200, body)
            self.assertIn(b'fulcrum_lb_requests_total{node="lb-1"}', body)
            status, _, body = self.get(self.stats, "/api/state", context)
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body)["node"], "lb-1")
            status, _, body = self.get(self.stats, "/", context)
            self.assertEqual(status, 200)
            self.assertIn(b"<html", body.lower())

        # Each lb's site monitor reads the other's stats listener over TLS.
        def peer_up():
            status, _, body = self.get(self.stats, "/api/state")
            nodes = {n["name"]: n for n in json.loads(body)["nodes"]} if status == 200 else {}
            return nodes.get("lb-2", {}).get("state") == "up"
        wait_until(peer_up, timeout=15, interval=0.3, what="lb-1's dashboard to show lb-2 up")
        self.assertNotRegex(self.procs["lb-2"].output(), r"TLS client \S+ refused")

    def test_2_admin_api_needs_the_operator_certificate_and_the_token(self):
        self.assertEqual(self.admin_state(), "ready")
        # The token without a client certificate: 403, and nothing changes.
        status, headers, body = self.post_state("drain", self.context())
        self.assertEqual(status, 403, body)
        self.assertIn("application/json", headers.get("Content-Type", ""))
        self.assertIn("client certificate", json.loads(body)["error"])
        self.assertEqual(self.admin_state(), "ready")
        wait_until(lambda: re.search(r"admin: POST /api/servers/web-1/state from 127\.0\.0\.1:\d+ refused: no "
                                     r"client certificate", self.lb.output()), timeout=5, what="the 403 logged")
        # /api/reload is refused the same way.
        status, _, body = http_get(f"https://127.0.0.1:{self.stats}/api/reload", method="POST", data=b"",
                                   headers={"Authorization": f"Bearer {self.token}"}, context=self.context())
        self.assertEqual(status, 403, body)
        # The operator's certificate without the token: 401.
        status, _, body = self.post_state("drain", self.operator(), token=False)
        self.assertEqual(status, 401, body)
        self.assertEqual(self.admin_state(), "ready")
        # Both: it takes effect.
        status, _, body = self.post_state("drain", self.operator())
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"server": "web-1", "state": "drain", "previous": "ready"})
        self.assertEqual(self.admin_state(), "drain")
        status, _, body = self.post_state("ready", self.operator())
        self.assertEqual(status, 200, body)
        self.assertEqual(self.admin_state(), "ready")

    def test_3_a_certificate_from_another_ca_is_refused_at_the_handshake(self):
        foreign = self.context(os.path.join(self.other, "operator.crt"), os.path.join(self.other, "operator.key"))

        # Refusals are logged one a second at most (test_1's plain request may have just been):
        # each try is refused, one of them is logged.
        def refused_and_logged():
            status, _, body = self.get(self.stats, "/api/state", foreign)
            self.assertEqual(status, 0, body)  # no HTTP answer: the handshake failed
            return re.search(r"TLS client 127\.0\.0\.1:\d+ refused: unable to get local issuer certificate",
                             self.lb.output())
        wait_until(refused_and_logged, timeout=10, interval=0.3, what="the refusal logged with its reason")
        status, _, body = self.get(self.stats, "/metrics")
        self.assertEqual(status, 200, body)
        self.assertRegex(body.decode(), r'fulcrum_lb_stats_tls_verify_failures_total\{node="lb-1"\} [1-9]')

    def test_4_status_reads_the_lbs_as_the_operator(self):
        def rows():
            run = subprocess.run([FULCRUM, "status", "--site", self.site, "--json"], capture_output=True, text=True,
                                 timeout=30)
            lbs = [r for r in json.loads(run.stdout) if r["role"] == "lb"]
            return lbs if lbs and all(r["state"] == "up" and r["health"] == "1/1 servers up" for r in lbs) else None
        lbs = wait_until(rows, timeout=15, interval=0.5, what="`status`: both lbs up, web-1 up behind them")
        self.assertEqual([r["name"] for r in lbs], ["lb-1", "lb-2"])

    @needs(None if shutil.which("prometheus") else "prometheus is not installed (scripts/deps.sh installs it)")
    def test_5_prometheus_scrapes_the_lbs_over_https_as_the_operator(self):
        out = os.path.join(self.tmp.path, "monitoring")
        wrote = subprocess.run([FULCRUM, "monitoring", self.site, "--out", out], capture_output=True, text=True,
                               timeout=30)
        self.assertEqual(wrote.returncode, 0, wrote.stdout + wrote.stderr)
        prometheus = Process(["prometheus", f"--config.file={out}/prometheus.yml",
                              f"--storage.tsdb.path={self.tmp.path}/prometheus",
                              f"--web.listen-address=127.0.0.1:{self.prometheus_port}"],
                             os.path.join(self.tmp.path, "prometheus.log"))
        self.addCleanup(prometheus.stop)

        def lb_targets():
            status, _, body = http_get(f"http://127.0.0.1:{self.prometheus_port}/api/v1/targets?state=active",
                                       timeout=3)
            if status != 200:
                return None
            targets = json.loads(body)["data"]["activeTargets"]
            lbs = {t["labels"]["node"]: t for t in targets if t["labels"]["job"] == "lb"}
            return lbs if len(lbs) == 2 and all(t["health"] == "up" for t in lbs.values()) else None
        try:
            lbs = wait_until(lb_targets, timeout=30, interval=0.5, what="Prometheus scraping both lbs")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{prometheus.output()[-3000:]}") from e
        self.assertTrue(all(t["scrapeUrl"].startswith("https://") for t in lbs.values()), lbs)


if __name__ == "__main__":
    unittest.main()
