"""Certificates renewed while the site runs ([security] internal_tls = true under `fulcrum up`):
test_up's site (managed etcd, two database agents with PostgreSQL, two web nodes, one lb) with
the guestbook. Node pairs are removed and reissued while every node runs, two ways: SIGHUP to
`up` (it reissues what is missing or due, then signals the nodes), and `fulcrum certs` alone
(each node notices its new files within seconds). The web nodes, PostgreSQL and etcd then
serve their new certificates to new handshakes, the lb reaches the web nodes with its own new
one, and the guestbook still writes and reads through the lb, with no process restarted.
Skipped when etcd, PostgreSQL or root is missing."""
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import unittest

from harness import FULCRUM, http_get, needs, wait_until
from test_db import missing_requirement
from test_up import Site


def served_der(port, tls_dir, postgres=False):
    """The DER certificate a node serves on 127.0.0.1:`port` to a client with the operator's pair
    (PostgreSQL: after its SSLRequest)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(tls_dir, "ca.crt"))
    ctx.load_cert_chain(os.path.join(tls_dir, "operator.crt"), os.path.join(tls_dir, "operator.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        if postgres:
            raw.sendall(struct.pack("!ii", 8, 80877103))
            if raw.recv(1) != b"S":
                raise AssertionError("PostgreSQL refused TLS")
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def file_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


@needs(missing_requirement())
class InternalTlsRenewalTest(unittest.TestCase):
    def test_nodes_take_reissued_certificates_without_a_restart(self):
        site = Site(app="guestbook", extra="[security]\ninternal_tls = true\n")
        self.addCleanup(site.cleanup)
        site.start(self)
        try:
            self.scenario(site)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{site.up.output()[-3000:]}{site.logs()}") from e

    def post_and_read(self, site, text):
        code, headers, body = http_get(f"http://127.0.0.1:{site.lb_http}/api/messages", method="POST",
                                       headers={"Content-Type": "application/json"},
                                       data=json.dumps({"author": "renewal", "text": text}).encode(), timeout=10)
        if code != 201:
            return False
        cookie = headers.get("Set-Cookie", "").split(";", 1)[0]
        code, _, body = http_get(f"http://127.0.0.1:{site.lb_http}/api/messages", headers={"Cookie": cookie},
                                 timeout=10)
        return code == 200 and text in [m["text"] for m in json.loads(body)["messages"]]

    def scenario(self, site):
        tls = os.path.join(site.dir, "var", "tls")
        wait_until(lambda: site.primary() is not None, timeout=60, interval=0.3, what="a primary")
        wait_until(lambda: self.post_and_read(site, "before"), timeout=60, interval=0.5, what="a first write")
        pids = {name: site.pid_of(name) for name in ("lb-1", "web-1", "web-2", "db-1", "db-2")}
        primary = site.primary()
        pg_port = site.ports[primary][0]
        before = {"web-1": served_der(site.web["web-1"], tls), primary: served_der(pg_port, tls, postgres=True),
                  "etcd": served_der(site.etcd_ports[0], tls)}

        # 1. Pairs removed and SIGHUP to `up`: it reissues them at once and signals the nodes,
        #    which take them on that signal.
        for name in ("lb-1", "web-1", primary, "etcd"):
            for ext in (".crt", ".key"):
                os.remove(os.path.join(tls, name + ext))
        site.up.signal(signal.SIGHUP)
        wait_until(lambda: all(os.path.exists(os.path.join(tls, n + ".crt")) for n in ("lb-1", "web-1", primary)),
                   timeout=20, interval=0.1, what="`up` to reissue the removed pairs")
        self.assertRegex(site.up.output(), r"issued the certificate of web-1")
        wait_until(lambda: served_der(site.web["web-1"], tls) == file_der(os.path.join(tls, "web-1.crt")),
                   timeout=20, interval=0.2, what="web-1 serving its new certificate")
        wait_until(lambda: served_der(pg_port, tls, postgres=True) == file_der(os.path.join(tls, primary + ".crt")),
                   timeout=20, interval=0.2, what=f"PostgreSQL on {primary} serving its new certificate")
        # etcd reads its pair at each handshake.
        wait_until(lambda: served_der(site.etcd_ports[0], tls) == file_der(os.path.join(tls, "etcd.crt")),
                   timeout=20, interval=0.2, what="etcd serving its new certificate")
        for name in ("web-1", primary, "etcd"):
            self.assertNotEqual(before[name], file_der(os.path.join(tls, name + ".crt")), name)
        with open(os.path.join(site.dir, "var", "logs", "lb-1.log")) as f:
            wait_until(lambda: "lb-1 takes its new certificate" in (f.seek(0) or f.read()), timeout=20,
                       interval=0.2, what="lb-1 to take its new certificate")

        # The lb, with its new pair, reaches web-1 with its new one: new connections only (the
        # web nodes and the lb keep open connections on the old ones), so a write and its read
        # until both web nodes have answered.
        for i in range(10):
            self.assertTrue(self.post_and_read(site, f"after SIGHUP {i}"), f"write {i} after the reissue")

        # 2. `fulcrum certs` alone (as on a host where `up` does not run): web-2 notices its new
        #    files on its own within seconds.
        for ext in (".crt", ".key"):
            os.remove(os.path.join(tls, "web-2" + ext))
        made = subprocess.run([FULCRUM, "certs", site.file], capture_output=True, text=True, timeout=60)
        self.assertEqual(made.returncode, 0, made.stdout + made.stderr)
        self.assertRegex(made.stdout, r"web-2.*issued")
        wait_until(lambda: served_der(site.web["web-2"], tls) == file_der(os.path.join(tls, "web-2.crt")),
                   timeout=30, interval=0.3, what="web-2 serving its new certificate without a signal")
        for i in range(10):
            self.assertTrue(self.post_and_read(site, f"after certs {i}"), f"write {i} after `fulcrum certs`")

        # Nothing restarted to get there.
        self.assertEqual({name: site.pid_of(name) for name in pids}, pids)
        site.stop(self)


if __name__ == "__main__":
    unittest.main()
