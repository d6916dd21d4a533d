"""`fulcrum db` end to end: a real etcd and three real database agents, each supervising its own
PostgreSQL, on free loopback ports under a temporary directory the postgres user can traverse.
Conditions are awaited by bounded polling; every process is reaped and every data directory
removed, even when a test fails. Skipped when etcd, PostgreSQL or its OS user is missing."""
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import FULCRUM, Process, free_port, http_get, wait_until

LEADER_TTL_MS = 3000
NODES = ["db-1", "db-2", "db-3"]


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def missing_requirement():
    if shutil.which("etcd") is None:
        return "etcd is not installed"
    if pg_bin() is None:
        return "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` OS user"
    if os.geteuid() != 0:
        return "the agent runs PostgreSQL as the postgres user: needs root"
    return None


def processes_mentioning(text):
    """Pids of live processes whose command line contains `text`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


def site_text(etcd_port, ports, failover=False, synchronous=False):
    text = '[site]\nname = "dbtest"\nstate_dir = "var"\n'
    text += (f"[db]\nfailover = {'true' if failover else 'false'}\nleader_ttl_ms = {LEADER_TTL_MS}\n"
             f"synchronous = {'true' if synchronous else 'false'}\n")
    for name in NODES:
        pg, agent = ports[name]
        text += f'[[db.node]]\nname = "{name}"\npg = "127.0.0.1:{pg}"\nagent = "127.0.0.1:{agent}"\n'
    text += f'[etcd]\nendpoints = ["127.0.0.1:{etcd_port}"]\nmanaged = false\n'
    return text


class Cluster:
    """A temporary directory (0755 under /tmp), an etcd, and the agents' processes."""

    def __init__(self, failover=False):
        self.dir = tempfile.mkdtemp(prefix="fulcrum-db-", dir="/tmp")
        os.chmod(self.dir, 0o755)  # the postgres user must traverse it
        self.etcd = None
        self.agents = {}
        self.etcd_port = free_port()
        self.ports = {name: (free_port(), free_port()) for name in NODES}
        self.site = os.path.join(self.dir, "site.toml")
        with open(self.site, "w") as f:
            f.write(site_text(self.etcd_port, self.ports, failover=failover))

    def start_etcd(self):
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{free_port()}"
        self.etcd = Process(["etcd", "--name=fulcrum-db-test", "--data-dir=" + os.path.join(self.dir, "etcd"),
                             "--listen-client-urls=" + client, "--advertise-client-urls=" + client,
                             "--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
                             "--initial-cluster=fulcrum-db-test=" + peer, "--heartbeat-interval=50",
                             "--election-timeout=500", "--logger=zap", "--log-level=warn"],
                            os.path.join(self.dir, "etcd.log"))
        wait_until(lambda: http_get(client + "/health", timeout=1)[0] == 200, timeout=15, what="etcd healthy")

    def start_agent(self, name):
        self.agents[name] = Process([FULCRUM, "db", "--site", self.site, "--node", name],
                                    os.path.join(self.dir, name + ".log"))

    def url(self, name, path):
        return f"http://127.0.0.1:{self.ports[name][1]}{path}"

    def code(self, name, path, method="GET"):
        try:
            return http_get(self.url(name, path), method=method, timeout=2)[0]
        except OSError:
            return None

    def status(self, name):
        code, _, body = http_get(self.url(name, "/status"), timeout=2)
        assert code == 200, code
        return json.loads(body)

    def wait_roles(self, test, names, timeout):
        """Waits until exactly one of `names` answers /primary 200 and every other /replica 200."""
        def roles():
            primaries = [n for n in names if self.code(n, "/primary") == 200]
            replicas = [n for n in names if self.code(n, "/replica") == 200]
            ok = len(primaries) == 1 and len(replicas) == len(names) - 1 and primaries[0] not in replicas
            return (primaries[0], replicas) if ok else None

        try:
            return wait_until(roles, timeout=timeout, interval=0.2, what="one primary, the others replicas")
        except AssertionError:
            test.fail(f"no primary and {len(names) - 1} replicas among {names}:\n" + self.logs())

    def has_rows(self, name, expected):
        return self.psql(name, "SELECT v FROM t ORDER BY v").stdout.split() == expected

    def stop_all(self, test):
        """SIGTERM: every agent exits 0 and leaves no PostgreSQL behind."""
        for agent in self.agents.values():
            agent.signal(signal.SIGTERM)
        for name, agent in self.agents.items():
            test.assertEqual(agent.wait(timeout=45), 0, f"{name}:\n{agent.output()[-3000:]}")
        wait_until(lambda: processes_mentioning(os.path.join(self.dir, "var")) == [], timeout=10,
                   what="no PostgreSQL left")

    def psql(self, name, sql):
        """psql over TCP as the application role, with the generated password."""
        with open(os.path.join(self.dir, "var", "db.password")) as f:
            password = f.readline().strip()
        env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="3")
        return subprocess.run([os.path.join(pg_bin(), "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", "127.0.0.1", "-p", str(self.ports[name][0]), "-U", "site", "-d", "site",
                               "-c", sql], env=env, capture_output=True, text=True, timeout=10)

    def logs(self):
        out = []
        for name, agent in self.agents.items():
            out.append(f"--- {name} ---\n{agent.output()[-4000:]}")
        return "\n".join(out)

    def cleanup(self):
        for agent in self.agents.values():
            agent.stop(timeout=30)
        if self.etcd is not None:
            self.etcd.proc.kill()
            self.etcd.stop()
        # A postmaster an agent failed to stop (it should never happen) dies with the test.
        for pid in processes_mentioning(self.dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@unittest.skipIf(missing_requirement() is not None, missing_requirement() or "")
class DbAgentTest(unittest.TestCase):
    def test_refuses_settings_not_built_yet(self):
        cluster = Cluster()
        self.addCleanup(cluster.cleanup)
        with open(cluster.site, "w") as f:
            f.write(site_text(cluster.etcd_port, cluster.ports, synchronous=True))
        run = subprocess.run([FULCRUM, "db", "--site", cluster.site, "--node", "db-1"], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertIn("synchronous replication is not supported yet", run.stderr)
        check = subprocess.run([FULCRUM, "check", cluster.site], capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertIn("db.synchronous", check.stderr)
        self.assertFalse(os.path.exists(os.path.join(cluster.dir, "var", "db-1", "data")))

    def test_bootstrap_replicate_fence_and_stop(self):
        cluster = Cluster()
        self.addCleanup(cluster.cleanup)
        cluster.start_etcd()
        for name in NODES:
            cluster.start_agent(name)

        primary, replicas = cluster.wait_roles(self, NODES, timeout=60)
        self.assertNotIn(primary, replicas)
        for name in NODES:
            self.assertEqual(cluster.code(name, "/health"), 200)
        self.assertEqual(cluster.code(primary, "/replica"), 503)
        for name in replicas:
            self.assertEqual(cluster.code(name, "/primary"), 503)

        # A row written on the primary reaches both replicas.
        wrote = cluster.psql(primary, "CREATE TABLE t (v text); INSERT INTO t VALUES ('hello from the primary')")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        for name in replicas:
            wait_until(lambda n=name: cluster.psql(n, "SELECT v FROM t").stdout.strip() == "hello from the primary",
                       timeout=15, interval=0.2, what=f"the row on {name}")
            refused = cluster.psql(name, "INSERT INTO t VALUES ('no')")
            self.assertNotEqual(refused.returncode, 0)
            self.assertIn("read-only", refused.stderr)

        # /status shape, on every node, once every member record is published.
        def published():
            return all(len(cluster.status(n)["members"]) == 3 and cluster.status(n)["leader"] == primary
                       for n in NODES)

        wait_until(published, timeout=10, interval=0.2, what="three members and the leader in /status")
        for name in NODES:
            st = cluster.status(name)
            for key in ("role", "timeline", "lsn", "lag_bytes", "leader", "members"):
                self.assertIn(key, st)
            self.assertEqual(st["role"], "primary" if name == primary else "replica")
            self.assertEqual(st["timeline"], 1)
            self.assertRegex(st["lsn"], r"^[0-9A-F]+/[0-9A-F]+$")
            self.assertIsInstance(st["lag_bytes"], int)
            self.assertEqual(sorted(m["name"] for m in st["members"]), NODES)
        wait_until(lambda: all(cluster.code(n, "/replica?lag=1048576") == 200 for n in replicas), timeout=10,
                   what="replicas within the lag bound")
        self.assertEqual(cluster.code(replicas[0], "/replica?lag=oops"), 400)

        # Status only for HEAD and OPTIONS; metrics; switchover not built yet.
        code, _, body = http_get(cluster.url(primary, "/primary"), method="HEAD")
        self.assertEqual((code, body), (200, b""))
        code, _, body = http_get(cluster.url(replicas[0], "/primary"), method="OPTIONS")
        self.assertEqual((code, body), (503, b""))
        code, headers, body = http_get(cluster.url(primary, "/metrics"))
        self.assertEqual(code, 200)
        self.assertIn(b'fulcrum_db_primary{node="%s"} 1' % primary.encode(), body)
        code, _, body = http_get(cluster.url(primary, "/switchover"), method="POST",
                                 data=json.dumps({"to": replicas[0]}).encode(),
                                 headers={"Content-Type": "application/json"})
        self.assertEqual(code, 501)
        self.assertIn("not supported yet", json.loads(body)["error"])
        self.assertEqual(cluster.code(primary, "/nowhere"), 404)

        # The primary's postmaster dies: its agent sees it and restarts it (the lease is still valid).
        with open(os.path.join(cluster.dir, "var", primary, "data", "postmaster.pid")) as f:
            os.kill(int(f.readline()), signal.SIGKILL)
        exits = b'fulcrum_db_postgres_exits_total{node="%s"} 1' % primary.encode()
        wait_until(lambda: exits in http_get(cluster.url(primary, "/metrics"), timeout=2)[2], timeout=10,
                   interval=0.1, what="the dead postmaster noticed")
        wait_until(lambda: cluster.code(primary, "/primary") == 200, timeout=30, interval=0.1,
                   what="the primary restarted")
        wait_until(lambda: cluster.psql(primary, "SELECT count(*) FROM t").stdout.strip() == "1", timeout=10,
                   what="the row kept across the restart")

        # etcd dies: the leader cannot renew its lease and fences itself before it can expire.
        cluster.etcd.proc.kill()
        killed = time.monotonic()
        wait_until(lambda: cluster.code(primary, "/primary") == 503, timeout=LEADER_TTL_MS / 1000, interval=0.05,
                   what="the primary fenced")
        fenced_after = time.monotonic() - killed
        self.assertLess(fenced_after, LEADER_TTL_MS / 1000)
        wait_until(lambda: cluster.psql(primary, "INSERT INTO t VALUES ('after the fence')").returncode != 0,
                   timeout=5, interval=0.1, what="writes refused on the fenced primary")
        wait_until(lambda: cluster.code(primary, "/health") == 503, timeout=5, what="PostgreSQL stopped")

        cluster.stop_all(self)
        if os.environ.get("FULCRUM_TEST_LOGS"):
            print(cluster.logs())
        print(f"\nfenced {fenced_after * 1000:.0f} ms after etcd died (ttl {LEADER_TTL_MS} ms)")


    def test_failover_rewind_and_rejoin(self):
        cluster = Cluster(failover=True)
        self.addCleanup(cluster.cleanup)
        cluster.start_etcd()
        for name in NODES:
            cluster.start_agent(name)
        primary, replicas = cluster.wait_roles(self, NODES, timeout=60)
        wrote = cluster.psql(primary, "CREATE TABLE t (v text); INSERT INTO t VALUES ('before')")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        for name in replicas:
            wait_until(lambda n=name: cluster.has_rows(n, ["before"]), timeout=15, interval=0.2,
                       what=f"the row on {name}")

        # The primary's agent dies (its postmaster gets SIGINT with it): once the lease expires, a
        # replica takes the key and promotes, and the other follows it onto the new timeline.
        cluster.agents[primary].proc.kill()
        cluster.agents[primary].stop()
        killed = time.monotonic()
        wait_until(lambda: processes_mentioning(os.path.join(cluster.dir, "var", primary)) == [], timeout=15,
                   what="the old primary's PostgreSQL gone")
        new_primary, others = cluster.wait_roles(self, replicas, timeout=30)
        took_over = time.monotonic() - killed
        self.assertEqual(cluster.status(new_primary)["timeline"], 2)
        wrote = cluster.psql(new_primary, "INSERT INTO t VALUES ('after')")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        wait_until(lambda: cluster.has_rows(others[0], ["after", "before"]), timeout=20, interval=0.2,
                   what="the other replica following the new primary")

        # The old primary comes back: rewound against the new leader, it rejoins as its replica.
        cluster.start_agent(primary)
        wait_until(lambda: cluster.code(primary, "/replica") == 200, timeout=45, interval=0.2,
                   what="the old primary streaming as a replica")
        wait_until(lambda: cluster.has_rows(primary, ["after", "before"]), timeout=15, interval=0.2,
                   what="the old primary caught up")
        self.assertEqual(cluster.status(primary)["timeline"], 2)
        self.assertEqual(cluster.code(primary, "/primary"), 503)
        refused = cluster.psql(primary, "INSERT INTO t VALUES ('no')")
        self.assertIn("read-only", refused.stderr)
        self.assertEqual([n for n in NODES if cluster.code(n, "/primary") == 200], [new_primary])

        cluster.stop_all(self)
        if os.environ.get("FULCRUM_TEST_LOGS"):
            print(cluster.logs())
        print(f"\nnew primary {new_primary} {took_over * 1000:.0f} ms after the old one's agent died "
              f"(ttl {LEADER_TTL_MS} ms)")


if __name__ == "__main__":
    unittest.main()
