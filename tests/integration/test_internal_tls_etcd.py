"""etcd over mutual TLS ([security] internal_tls = true) under `fulcrum up`: three managed members
serve clients and peers over https with the site CA's certificates and want one from every client.
The site (test_up's: two database agents with real PostgreSQL, two web nodes, one load balancer,
leader_ttl_ms = 3000) bootstraps with its agents' etcd calls and watches over TLS (etcd's own
watcher count shows both streams), elects a leader, fails over when the leader's agent stops (and
is killed), the agents' API answers `up`'s probes and the lb's checks (db_write frontend,
dashboard) over https, and `fulcrum status` (the "operator" certificate) reads every member. curl without a certificate, or with another CA's, is refused.
Every process and directory is removed even when the test fails. Skipped when etcd, PostgreSQL,
root, curl or openssl is missing."""
import json
import os
import re
import shutil
import signal
import subprocess
import unittest

from harness import FULCRUM, free_port, wait_until, needs
from test_db import missing_requirement
from test_up import Site

MEMBERS = ["etcd-1", "etcd-2", "etcd-3"]


def missing():
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return missing_requirement()


def curl(url, *args):
    return subprocess.run(["curl", "-sS", "--max-time", "5", *args, url], capture_output=True, text=True,
                          timeout=20)


@needs(missing())
class InternalTlsEtcdTest(unittest.TestCase):
    def test_etcd_mutual_tls_bootstrap_failover_status(self):
        db_write = free_port()
        site = Site(etcd_members=3, extra="[security]\ninternal_tls = true\n",
                    extra_lb=f'db_write = "127.0.0.1:{db_write}"\n')
        self.addCleanup(site.cleanup)
        site.start(self)
        out = site.up.output()
        for name in MEMBERS:
            self.assertRegex(out, rf"\d+\.\d s  etcd +{name} +up +https://127\.0\.0\.1:\d+/health", out)
        # The agents' API is https too: `up` probes it as the operator.
        for name in site.ports:
            self.assertRegex(out, rf"\d+\.\d s  db +{name} +up +https://127\.0\.0\.1:\d+/health", out)

        # The command line `up` runs: https for clients and peers, client certificates required.
        etcd_1 = subprocess.run([FULCRUM, "etcd", "--site", site.file, "--node", "etcd-1", "--print"], capture_output=True,
                                text=True, timeout=30)
        self.assertEqual(etcd_1.returncode, 0, etcd_1.stderr)
        for flag in ("--client-cert-auth", "--peer-client-cert-auth", "--trusted-ca-file=",
                     "--peer-trusted-ca-file=", "--listen-client-urls=https://", "--listen-peer-urls=https://"):
            self.assertIn(flag, etcd_1.stdout)

        tls = os.path.join(site.dir, "var", "tls")
        ca = os.path.join(tls, "ca.crt")
        operator = ("--cert", os.path.join(tls, "operator.crt"), "--key", os.path.join(tls, "operator.key"))
        url = f"https://127.0.0.1:{site.etcd_ports[0]}/health"
        answered = curl(url, "--cacert", ca, *operator)
        self.assertEqual(answered.returncode, 0, answered.stderr)
        self.assertIn('"health":"true"', answered.stdout)

        # No client certificate: the handshake is refused, nothing of etcd's answers.
        bare = curl(url, "--cacert", ca)
        self.assertNotEqual(bare.returncode, 0, bare.stdout)
        self.assertNotIn("health", bare.stdout)
        # A certificate of another CA (self-signed, same name): refused too.
        other = os.path.join(site.dir, "other")
        os.makedirs(other)
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                               "-nodes", "-subj", "/CN=operator", "-days", "1", "-keyout",
                               os.path.join(other, "k.pem"), "-out", os.path.join(other, "c.pem")],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(made.returncode, 0, made.stderr)
        foreign = curl(url, "--cacert", ca, "--cert", os.path.join(other, "c.pem"), "--key",
                       os.path.join(other, "k.pem"))
        self.assertNotEqual(foreign.returncode, 0, foreign.stdout)
        self.assertNotIn("health", foreign.stdout)
        # Plain http on the client port gets no etcd answer either.
        plain = curl(f"http://127.0.0.1:{site.etcd_ports[0]}/health")
        self.assertNotIn('"health":"true"', plain.stdout)

        # status over TLS: every member up, one etcd leader, one primary, one replica.
        def settled():
            _, rows = site.status()
            leaders = sum(r["health"] == "ok, leader" for r in rows if r["role"] == "etcd")
            db = sorted(r["health"].split()[0] for r in rows if r["role"] == "db")
            # Only etcd's and the agents' rows: the web rows are another link's.
            return rows if leaders == 1 and db == ["primary", "replica"] else None
        rows = wait_until(settled, timeout=40, interval=0.5, what="`status`: one etcd leader, a primary, a replica")
        etcd_rows = [r for r in rows if r["role"] == "etcd"]
        self.assertEqual([r["name"] for r in etcd_rows], MEMBERS)
        self.assertTrue(all(r["state"] == "up" for r in etcd_rows), etcd_rows)

        # Both agents' watches stream over TLS (etcd counts a watcher per stream).
        def watchers():
            total = 0
            for port in site.etcd_ports:
                metrics = curl(f"https://127.0.0.1:{port}/metrics", "--cacert", ca, *operator).stdout
                found = re.search(r"^etcd_debugging_mvcc_watcher_total (\d+)", metrics, re.M)
                total += int(found.group(1)) if found else 0
            return total >= 2
        wait_until(watchers, timeout=15, interval=0.5, what="the two agents' etcd watches")

        primary = wait_until(site.primary, timeout=30, interval=0.2, what="a primary")

        # The lb checks the agents over TLS with its own certificate: its db_write frontend routes
        # to the primary, and its dashboard shows both db nodes with their roles.
        def lb_sees_the_agents():
            # The stats listener is https too (the operator's certificate is optional for reads).
            state = json.loads(curl(f"https://127.0.0.1:{site.lb_stats}/api/state", "--cacert", ca).stdout)
            roles = sorted(n["state"] for n in state["nodes"] if n["role"] == "db")
            writes = [s["name"] for f in state.get("db_frontends", []) if f["name"] == "db_write"
                      for s in f["servers"] if s["health"] == "up"]
            return roles == ["primary", "replica"] and writes == [primary]
        wait_until(lb_sees_the_agents, timeout=20, interval=0.3, what="the lb's checks of the agents over TLS")
        other_node = next(n for n in site.ports if n != primary)

        # The leader's agent stops (SIGSTOP: `up` would restart a dead one at once, and the restarted
        # agent, holding the newest data, may win the key back): its lease runs out, the other node
        # takes the leader key over TLS and promotes. Then the frozen agent is killed; `up` restarts it.
        agent = site.pid_of(primary)
        self.assertIsNotNone(agent)
        os.kill(agent, signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(agent, signal.SIGKILL) if site.pid_of(primary) == agent else None)
        try:
            wait_until(lambda: site.primary() == other_node, timeout=30, interval=0.2,
                       what=f"{other_node} promoted after {primary}'s agent stopped")
        except AssertionError as e:
            self.fail(f"{e}\n{site.up.output()[-3000:]}{site.logs()}")
        os.kill(agent, signal.SIGKILL)

        def failed_over():
            _, rows = site.status()
            row = next(r for r in rows if r["name"] == other_node)
            return row if re.fullmatch(r"primary tl [2-9]", row["health"]) else None
        wait_until(failed_over, timeout=30, interval=0.5, what=f"`status` to show {other_node} as the new primary")
        site.stop(self)


if __name__ == "__main__":
    unittest.main()
