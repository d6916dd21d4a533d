"""`[security] internal_tls = true` on the PostgreSQL links: a web node's guestbook and three db
agents whose servers take TLS with client certificates only (`hostssl ... cert`), certificates
from `fulcrum certs`. The guestbook writes and reads back (read-your-writes) through verified TLS,
pg_stat_ssl shows TLS for the web node's and the replicas' connections, a failover keeps it
working and the old primary rejoins over TLS; a client without a certificate, or with one from
another CA, is refused and the server's log says why; an agent or a web node without its
certificate refuses to start. The agents' REST API speaks https only: health endpoints answer
without a client certificate, a switchover with the token but no certificate is refused (403)
and changes nothing, one with another CA's certificate or an expired site certificate fails the
handshake (the agent logs the peer and the reason), and the operator's certificate with the token
switches over (the call, made to a replica, forwarded to the leader over TLS). Skipped when etcd or PostgreSQL is missing."""
import json
import os
import re
import subprocess
import time
import unittest

from harness import FULCRUM, http_get, needs, raw_exchange, wait_until
from test_db import missing_requirement, pg_bin, processes_mentioning
from test_guestbook import GuestbookSite, cookie_of, ids_in


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@needs(missing_requirement())
class InternalTlsDbTest(unittest.TestCase):
    def setUp(self):
        self.site = GuestbookSite(failover=True)
        self.addCleanup(self.site.cleanup)
        with open(self.site.cluster.site, "a") as f:
            f.write("[security]\ninternal_tls = true\n")
        made = subprocess.run([FULCRUM, "certs", self.site.cluster.site], capture_output=True, text=True,
                              timeout=60)
        self.assertEqual(made.returncode, 0, made.stdout + made.stderr)
        self.tls_dir = os.path.join(self.site.cluster.dir, "var", "tls")
        self.site.use_tls(self.tls_dir)
        self.primary, self.replicas = self.site.start(self)

    def test_internal_tls(self):
        try:
            self.scenario()
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.site.logs()}") from e

    def server_log(self, name):
        with open(os.path.join(self.site.cluster.dir, "var", "logs", name + ".postgresql.log"), errors="replace") as f:
            return f.read()

    def psql_tcp(self, name, conninfo):
        """psql over TCP to `name` as the application role, with extra conninfo keywords."""
        port = self.site.cluster.ports[name][0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return subprocess.run([os.path.join(pg_bin(), "psql"), "-X", "-A", "-t", "-c", "SELECT 1",
                               f"host=127.0.0.1 port={port} user=site dbname=site connect_timeout=5 {conninfo}"],
                              env=env, capture_output=True, text=True, timeout=15)

    def ssl_clients(self, name):
        """(application_name, backend_type, ssl, client_dn) of every TCP client of `name`'s server."""
        out = self.site.as_postgres(
            name, "SELECT a.application_name, a.backend_type, s.ssl, coalesce(s.client_dn, '')"
                  " FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.client_port IS NOT NULL"
                  " AND a.client_port <> -1 ORDER BY 1")
        self.assertEqual(out.returncode, 0, out.stderr)
        return [tuple(line.split("|")) for line in out.stdout.splitlines() if line]

    def write_and_read_back(self, text):
        """A post, then a read with its token: the message is there (read-your-writes)."""
        site = self.site
        code, headers, body = site.post({"author": "tls", "text": text}, timeout=10)
        self.assertEqual(code, 201, body)
        written = json.loads(body)["id"]
        cookie = cookie_of(headers)
        self.assertIsNotNone(cookie, headers)
        code, _, body = site.get("/api/messages?limit=20", cookie=cookie)
        self.assertEqual(code, 200, body)
        self.assertIn(written, ids_in(body))
        return headers["X-Db-Node"]

    def expired_site_certificate(self):
        """A certificate the site CA signed, valid in January 2020 only: `openssl ca` takes explicit
        start and end dates (x509 -req has no way to put the end in the past)."""
        work = os.path.join(self.site.cluster.dir, "expired")
        os.makedirs(work)
        with open(os.path.join(work, "ca.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca = site\n[site]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
                    "default_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n"
                    "[client]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n")
        open(os.path.join(work, "index.txt"), "w").close()
        with open(os.path.join(work, "serial"), "w") as f:
            f.write("1000\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=operator", "-keyout", "expired.key", "-out", "expired.csr", cwd=work)
        openssl("ca", "-batch", "-config", "ca.cnf", "-extensions", "client", "-notext",
                "-cert", os.path.join(self.tls_dir, "ca.crt"), "-keyfile", os.path.join(self.tls_dir, "ca.key"),
                "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                "-in", "expired.csr", "-out", "expired.crt", cwd=work)
        return os.path.join(work, "expired.crt"), os.path.join(work, "expired.key")

    def agent_api(self, forged):
        """The agents' REST API: https only; the health endpoints answer anyone, a certificate that
        is presented must verify (the agent logs who and why not), and a switchover needs the
        operator's certificate besides the token."""
        cluster = self.site.cluster
        old = self.primary
        port = cluster.ports[old][1]
        self.assertTrue(cluster.url(old, "/health").startswith("https://"))
        # Plain HTTP gets no answer: the agent reads it as a broken handshake (and may reset).
        try:
            answer = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n", timeout=3)
        except ConnectionResetError:
            answer = b""
        self.assertFalse(answer.startswith(b"HTTP/"), answer[:200])
        # Health and status without a client certificate, as an outside balancer asks.
        anonymous = cluster.agent_context(None)
        self.assertEqual(http_get(cluster.url(old, "/health"), context=anonymous)[0], 200)
        self.assertEqual(http_get(cluster.url(old, "/primary"), context=anonymous)[0], 200)
        # An admin call without one is refused (403) however good its token, and nothing changes.
        token = cluster.token()
        target = self.replicas[0]
        code, body = cluster.switchover(old, {"to": target}, token=token, holder=None, timeout=10)
        self.assertEqual(code, 403, body)
        self.assertIn("client certificate from the site CA is required", body["error"])
        code, body = cluster.switchover(target, {"to": target}, token=token, holder=None, timeout=10)
        self.assertEqual(code, 403, body)  # a replica refuses too, rather than forward it
        self.assertEqual(cluster.status(old)["role"], "primary")
        self.assertEqual(cluster.primary(), old)

        # A certificate that does not verify fails the handshake; the agent says who and why.
        expired = self.expired_site_certificate()
        agent = cluster.agents[old]
        for holder, reason in [((forged + ".crt", forged + ".key"), "unable to get local issuer certificate"),
                               (expired, "certificate has expired")]:
            line = re.compile(r"TLS client 127\.0\.0\.1:\d+ refused: " + re.escape(reason))

            def refused_and_logged():
                # Again until logged: refusals are logged one a second at most.
                try:
                    http_get(cluster.url(old, "/health"), context=cluster.agent_context(holder), timeout=3)
                    self.fail(f"{holder} was let in")
                except OSError:
                    pass
                return line.search(agent.output())

            wait_until(refused_and_logged, timeout=10, interval=0.3, what=f"'{reason}' in {old}'s log")
            with self.assertRaises(OSError):
                cluster.switchover(old, {"to": target}, token=token, holder=holder, timeout=10)
        self.assertEqual(cluster.primary(), old)
        metrics = http_get(cluster.url(old, "/metrics"), context=cluster.agent_context())[2].decode()
        refused = re.search(rf'^fulcrum_db_api_tls_clients_refused_total\{{node="{old}"\}} (\d+)$', metrics, re.M)
        self.assertTrue(refused and int(refused.group(1)) >= 2, metrics)

        # The operator's certificate and the token: the switchover happens. Asked of the other
        # replica, which forwards the call to the leader over TLS with its own certificate.
        other = self.replicas[1]
        code, body, _ = cluster.planned_switchover(other, target, token)
        self.assertEqual(code, 200, body)
        self.assertIn(f"forwarding POST /switchover to {old}", cluster.agents[other].output())
        self.primary, self.replicas = cluster.wait_roles(self, [old] + self.replicas, timeout=60)
        self.assertEqual(self.primary, target)

        def written_on_target():
            code, headers, _ = self.site.post({"author": "tls", "text": "after the switchover"}, timeout=10)
            return code == 201 and headers.get("X-Db-Node") == target

        wait_until(written_on_target, timeout=20, interval=0.3, what=f"writes on {target} after the switchover")
        self.assertEqual(self.write_and_read_back("after the switchover"), target)

    def scenario(self):
        site = self.site
        self.assertEqual(self.write_and_read_back("over verified TLS"), self.primary)

        # The web node's sessions and the replicas' WAL senders are TLS, each client named by its
        # certificate; and the password rules are gone from pg_hba.conf.
        def tls_clients_seen():
            clients = self.ssl_clients(self.primary)
            walsenders = {c[0] for c in clients if c[1] == "walsender"}
            web = [c for c in clients if c[0] == "fulcrum-web-1"]
            return clients if walsenders >= set(self.replicas) and web else None

        clients = wait_until(tls_clients_seen, timeout=15, interval=0.2, what="TLS clients in pg_stat_ssl")
        for application, backend, ssl, dn in clients:
            self.assertEqual(ssl, "t", clients)
            expected = "web-1" if application == "fulcrum-web-1" else application
            self.assertTrue(dn.endswith(f"/CN={expected}"), clients)
        for replica in self.replicas:
            web = [c for c in self.ssl_clients(replica) if c[0] == "fulcrum-web-1"]
            self.assertTrue(web and all(c[2] == "t" and c[3].endswith("/CN=web-1") for c in web), web)
        with open(os.path.join(site.cluster.data_dir(self.primary), "pg_hba.conf")) as f:
            rules = [line for line in f.read().splitlines() if line and not line.startswith("#")]
        self.assertTrue(all(r.startswith("local ") or
                            (r.startswith("hostssl ") and r.endswith(" cert map=fulcrum_cert")) for r in rules), rules)

        # Refused: no certificate (with the password: it is never asked for), no TLS at all, a
        # certificate from another CA with a web node's name, a db node's certificate for the
        # application role. The server's log names each reason.
        with open(os.path.join(site.cluster.dir, "var", "db.password")) as f:
            password = f.readline().strip()
        ca = os.path.join(self.tls_dir, "ca.crt")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", "/CN=other CA", "-keyout", "other-ca.key", "-out", "other-ca.crt", cwd=site.cluster.dir)
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", "/CN=web-1", "-keyout", "forged.key", "-out", "forged.csr", cwd=site.cluster.dir)
        openssl("x509", "-req", "-in", "forged.csr", "-CA", "other-ca.crt", "-CAkey", "other-ca.key",
                "-CAcreateserial", "-days", "2", "-out", "forged.crt", cwd=site.cluster.dir)
        forged = os.path.join(site.cluster.dir, "forged")
        db_cert = os.path.join(self.tls_dir, self.replicas[0])
        refusals = [
            (f"sslmode=verify-full sslrootcert={ca} password={password}",
             "connection requires a valid client certificate"),
            ("sslmode=disable",
             "no pg_hba.conf entry for host \"127.0.0.1\", user \"site\", database \"site\", no encryption"),
            (f"sslmode=verify-full sslrootcert={ca} sslcert={forged}.crt sslkey={forged}.key",
             "certificate verify failed"),
            (f"sslmode=verify-full sslrootcert={ca} sslcert={db_cert}.crt sslkey={db_cert}.key",
             "certificate authentication failed for user \"site\""),
        ]
        for conninfo, reason in refusals:
            refused = self.psql_tcp(self.primary, conninfo)
            self.assertNotEqual(refused.returncode, 0, f"{conninfo}: {refused.stdout}")
            wait_until(lambda: reason in self.server_log(self.primary), timeout=5, what=f"'{reason}' logged")
        web_cert = os.path.join(self.tls_dir, "web-1")
        admitted = self.psql_tcp(self.primary, f"sslmode=verify-full sslrootcert={ca} sslcert={web_cert}.crt "
                                               f"sslkey={web_cert}.key")
        self.assertEqual((admitted.returncode, admitted.stdout.strip()), (0, "1"), admitted.stderr)

        self.agent_api(forged)

        # Failover: the primary's agent dies (its PostgreSQL with it); writes resume on a replica
        # over TLS, and the old primary, started again, follows the new one over TLS.
        old = self.primary
        killed = time.monotonic()
        site.cluster.agents[old].proc.kill()
        site.cluster.agents[old].stop()
        wait_until(lambda: processes_mentioning(os.path.join(site.cluster.dir, "var", old)) == [], timeout=15,
                   what="the old primary's PostgreSQL gone")

        def written():
            code, headers, _ = site.post({"author": "tls", "text": "after the failover"}, timeout=10)
            return headers["X-Db-Node"] if code == 201 else None

        new_primary = wait_until(written, timeout=40, interval=0.2, what="writes on a new primary")
        self.assertIn(new_primary, self.replicas)
        took = time.monotonic() - killed
        self.assertEqual(self.write_and_read_back("on the new primary"), new_primary)
        site.cluster.start_agent(old)
        self.primary, self.replicas = site.cluster.wait_roles(self, [old] + self.replicas, timeout=60)
        self.assertEqual(self.primary, new_primary)

        def rejoined():
            clients = self.ssl_clients(new_primary)
            return any(c[:2] == (old, "walsender") for c in clients) and clients

        clients = wait_until(rejoined, timeout=30, interval=0.2, what=f"{old} streaming from {new_primary}")
        stream = [c for c in clients if c[:2] == (old, "walsender")]
        self.assertTrue(all(c[2] == "t" and c[3].endswith(f"/CN={old}") for c in stream), stream)
        self.assertEqual(self.write_and_read_back("all three again"), new_primary)
        self.assertEqual(site.web.stop(timeout=20), 0, site.web.output()[-3000:])

        # Without its certificate a node refuses to start, and says which file and why.
        replica = self.replicas[0]
        self.assertEqual(site.cluster.agents[replica].stop(timeout=30), 0)
        os.rename(os.path.join(self.tls_dir, replica + ".crt"), os.path.join(self.tls_dir, replica + ".crt.away"))
        os.remove(os.path.join(self.tls_dir, "web-1.key"))
        for role, node, reason in [("db", replica, f"internal_tls: {replica} needs its certificate (etcd, "
                                                   f"PostgreSQL, its API): the certificate of {replica}"),
                                   ("web", "web-1", "internal_tls: the guestbook's database connections need "
                                                    "web-1's certificate: the key of web-1")]:
            refused = subprocess.run([FULCRUM, role, "--site", site.cluster.site, "--node", node],
                                     capture_output=True, text=True, timeout=30)
            self.assertEqual(refused.returncode, 1, refused.stdout + refused.stderr)
            self.assertIn(reason, refused.stdout + refused.stderr)

        print(f"\ninternal_tls: {len(refusals)} kinds of client refused; writes resumed on {new_primary} "
              f"{took * 1000:.0f} ms after the primary's agent died; {old} rejoined over TLS")


if __name__ == "__main__":
    unittest.main()
