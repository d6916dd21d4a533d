"""`fulcrum db` tried as a PostgreSQL HA tester and an attacker would: an emptied data directory,
a leader of another cluster, garbage written into the site's etcd keys. Real etcd, agents and
PostgreSQL (test_db.py's Cluster); bounded polling; everything removed even when a test fails."""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import unittest

from harness import http_get, needs, wait_until
from test_db import NODES, Cluster, children_of, missing_requirement, pg_bin, processes_mentioning


class Etcd:
    """etcd's v3 JSON gateway, as anyone with access to it could use it."""

    def __init__(self, cluster):
        self.base = f"http://127.0.0.1:{cluster.etcd_port}/v3"

    def call(self, path, body):
        code, _, raw = http_get(self.base + path, method="POST", data=json.dumps(body).encode(),
                                headers={"Content-Type": "application/json"}, timeout=5)
        assert code == 200, (code, raw)
        return json.loads(raw)

    @staticmethod
    def b64(text):
        return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()

    def put(self, key, value, lease=0):
        body = {"key": self.b64(key), "value": self.b64(value)}
        if lease:
            body["lease"] = str(lease)
        self.call("/kv/put", body)

    def get(self, key):
        """(value, lease) or None."""
        kvs = self.call("/kv/range", {"key": self.b64(key)}).get("kvs", [])
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", "")).decode(errors="replace"), int(kvs[0].get("lease", 0))

    def delete(self, key):
        self.call("/kv/deleterange", {"key": self.b64(key)})

    def grant(self, ttl):
        return int(self.call("/lease/grant", {"TTL": str(ttl)})["ID"])

    def revoke(self, lease):
        self.call("/lease/revoke", {"ID": str(lease)})


def key(name):
    return "/fulcrum/dbtest/" + name


def log_of(cluster, name):
    return cluster.agents[name].output() if name in cluster.agents else ""


def foreign_initdb(cluster, data_dir):
    """A new, unrelated cluster in `data_dir` (as the postgres user): another system identifier."""
    os.makedirs(data_dir)
    shutil.chown(data_dir, "postgres", "postgres")
    os.chmod(data_dir, 0o700)
    subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pg_bin(), "initdb"), "-D", data_dir,
                    "--no-sync", "-A", "trust"], check=True, capture_output=True, timeout=120)


def superuser_sql(cluster, name, *statements):
    """SQL as the superuser over the node's local socket (root is mapped to it), each statement in
    its own transaction."""
    args = [os.path.join(pg_bin(), "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
            os.path.join(cluster.dir, "var", name, "run"), "-p", str(cluster.ports[name][0]), "-U", "postgres",
            "-d", "postgres"]
    for sql in statements:
        args += ["-c", sql]
    return subprocess.run(args, capture_output=True, text=True, timeout=10)


def sysid_of(data_dir):
    out = subprocess.run([os.path.join(pg_bin(), "pg_controldata"), "-D", data_dir], capture_output=True,
                         text=True, timeout=30, env=dict(os.environ, LC_ALL="C"))
    for line in out.stdout.splitlines():
        if line.startswith("Database system identifier:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(out.stdout + out.stderr)


@needs(missing_requirement())
class DbSafetyTest(unittest.TestCase):
    def rows(self, cluster, name):
        out = cluster.psql(name, "SELECT count(*) FROM t")
        return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip().isdigit() else None

    def test_emptied_node_never_initializes_again(self):
        """The initialize key records the cluster's identifier: the node that ran initdb, its data
        directory emptied and started alone, waits for a leader instead of making a new cluster;
        once the last primary is back it clones it, and every row is served."""
        cluster = Cluster(failover=True)
        self.addCleanup(cluster.cleanup)
        etcd = Etcd(cluster)
        primary, replicas = cluster.start(self)
        init = json.loads(etcd.get(key("initialize"))[0])
        self.assertEqual(init["node"], primary)
        self.assertEqual(init["sysid"], sysid_of(cluster.data_dir(primary)))

        # The primary moves away from the node that initialized the cluster, and gets rows.
        code, body, _ = cluster.planned_switchover(primary, replicas[0], cluster.token())
        self.assertEqual(code, 200, body)
        leader, initializer = replicas[0], primary
        cluster.wait_roles(self, NODES, timeout=60)
        wrote = cluster.psql(leader, "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 3869)")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        for name in NODES:
            cluster.wait_for(self, lambda n=name: self.rows(cluster, n) == 3869, 30, f"the rows on {name}")

        # Everything stops; the initializer's data directory is moved aside; it starts alone.
        cluster.stop_all(self)
        os.rename(cluster.data_dir(initializer), cluster.data_dir(initializer) + ".moved")
        cluster.start_agent(initializer)
        cluster.wait_for(self, lambda: "clones the leader of the cluster" in log_of(cluster, initializer), 30,
                         "the emptied node waiting for a leader")
        self.assertNotIn("initializes the cluster", log_of(cluster, initializer))
        self.assertFalse(os.path.exists(os.path.join(cluster.data_dir(initializer), "PG_VERSION")))
        self.assertNotEqual(cluster.code(initializer, "/health"), 200)
        self.assertIsNone(etcd.get(key("leader")))

        # The rest come back: the last primary leads again, the emptied node clones it.
        for name in NODES:
            if name != initializer:
                cluster.start_agent(name)
        now_primary, _ = cluster.wait_roles(self, NODES, timeout=90)
        self.assertEqual(now_primary, leader)
        for name in NODES:
            cluster.wait_for(self, lambda n=name: self.rows(cluster, n) == 3869, 30, f"the rows on {name}")
        self.assertEqual(sysid_of(cluster.data_dir(initializer)), init["sysid"])
        self.assertNotIn("initializes the cluster", log_of(cluster, initializer))
        self.assertEqual([d for d in os.listdir(os.path.join(cluster.dir, "var", initializer))
                          if d.startswith("data.failed")], [])
        cluster.stop_all(self)

    def test_leader_and_data_of_another_system_are_refused(self):
        """A leader key naming a node whose record carries another system identifier is never
        followed, rewound onto or cloned, and nobody's data is moved aside for it; a node whose own
        data is of another system neither leads nor follows. Both are logged with both
        identifiers. Once the stranger's lease is gone the cluster elects a leader of its own."""
        cluster = Cluster(failover=True)
        self.addCleanup(cluster.cleanup)
        etcd = Etcd(cluster)
        primary, replicas = cluster.start(self)
        wrote = cluster.psql(primary, "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        for name in replicas:
            cluster.wait_for(self, lambda n=name: self.rows(cluster, n) == 2, 30, f"the rows on {name}")
        cluster_sysid = json.loads(etcd.get(key("initialize"))[0])["sysid"]
        cluster.stop_all(self)

        # The third node's data is replaced by another cluster's.
        stranger = replicas[1]
        shutil.rmtree(cluster.data_dir(stranger))
        foreign_initdb(cluster, cluster.data_dir(stranger))
        foreign_sysid = sysid_of(cluster.data_dir(stranger))
        self.assertNotEqual(foreign_sysid, cluster_sysid)

        # A leader key for the old primary, bound to a lease of ours, whose record claims another
        # system (an address that answers nothing: no connection is ever attempted).
        lease = etcd.grant(600)
        etcd.put(key("leader"), primary, lease)
        etcd.put(key("members/" + primary),
                 json.dumps({"name": primary, "role": "primary", "pg": "127.0.0.1:9", "agent": "127.0.0.1:9",
                             "timeline": 1, "lsn": "0/3000000", "received": "0/3000000",
                             "sysid": foreign_sysid}), lease)
        follower = replicas[0]
        cluster.start_agent(follower)
        cluster.start_agent(stranger)
        cluster.wait_for(self, lambda: "refusing to follow leader " + primary in log_of(cluster, follower), 30,
                         "the replica refusing the stranger leader")
        self.assertIn(foreign_sysid, log_of(cluster, follower))
        self.assertIn(cluster_sysid, log_of(cluster, follower))
        cluster.wait_for(self, lambda: "is of system " + foreign_sysid in log_of(cluster, stranger), 30,
                         "the foreign node refusing to take part")
        self.assertIn(cluster_sysid, log_of(cluster, stranger))

        # The stranger's lease ends; the cluster elects a leader of its own (the replica, by
        # failover, or the returning old primary) and the other follows it; the foreign node still
        # takes no part and its data stays where it is.
        etcd.revoke(lease)
        cluster.start_agent(primary)
        leader, (other,) = cluster.wait_roles(self, [primary, follower], timeout=60)
        self.assertEqual(self.rows(cluster, leader), 2)
        cluster.wait_for(self, lambda: self.rows(cluster, other) == 2, 30, "the rows on the replica")
        self.assertNotEqual(cluster.code(stranger, "/health"), 200)
        self.assertNotEqual(cluster.code(stranger, "/primary"), 200)
        self.assertEqual(sysid_of(cluster.data_dir(stranger)), foreign_sysid)
        for name in NODES:
            self.assertEqual([d for d in os.listdir(os.path.join(cluster.dir, "var", name))
                              if d.startswith("data.failed")], [], name)
        cluster.stop_all(self)

    def test_garbage_in_etcd_keeps_one_primary(self):
        """Each kind of garbage once found to break the cluster, written into its keys through
        etcd's gateway: the cluster stays safe and keeps, or regains, exactly one primary."""
        cluster = Cluster(failover=True)
        self.addCleanup(cluster.cleanup)
        etcd = Etcd(cluster)
        primary, replicas = cluster.start(self)

        def one_primary(timeout=30):
            return cluster.wait_roles(self, NODES, timeout=timeout)

        # 1. An impostor member record (no such node, claiming db-2's name and a far position), a
        #    1.4 MB nested value under a member key and under a key of its own.
        etcd.put(key("members/db-99"), json.dumps({"name": replicas[0], "role": "primary", "pg": "127.0.0.1:9",
                                                   "lsn": "FF/0", "received": "FF/0"}), etcd.grant(600))
        nested = "[" * 700000 + "]" * 700000
        etcd.put(key("junk"), nested)
        etcd.put(key("members/db-98"), nested, etcd.grant(600))
        cluster.wait_for(self, lambda: "ignoring " + key("members/db-99") in log_of(cluster, replicas[0]), 20,
                         "the impostor record logged")
        lagless = lambda: all(cluster.status(n)["lag_bytes"] is not None and cluster.status(n)["lag_bytes"] < 1 << 30
                              for n in replicas)
        cluster.wait_for(self, lagless, 20, "replicas reporting real lag")
        for name in replicas:  # a status query may time out now and then on a loaded machine
            cluster.wait_for(self, lambda n=name: cluster.code(n, "/replica?lag=1048576") == 200, 20,
                             name + " a replica within the lag bound")
        self.assertEqual(log_of(cluster, replicas[0]).count("ignoring " + key("members/db-99")), 1)

        # 2. A stale switchover intent without a lease: failover is not blocked. The primary's
        #    agent dies; a replica takes over.
        etcd.put(key("switchover"), json.dumps({"from": replicas[1], "to": "db-99"}))
        cluster.agents[primary].proc.kill()
        cluster.agents[primary].stop()
        new_primary, _ = cluster.wait_roles(self, replicas, timeout=45)
        cluster.start_agent(primary)
        one_primary(timeout=60)

        # 3. The leader key rewritten with the same value and no lease: the leader binds it again
        #    (no fence, no gap), nobody else takes it.
        etcd.put(key("leader"), new_primary)
        cluster.wait_for(self, lambda: (etcd.get(key("leader")) or ("", 0))[1] != 0, 15,
                         "the leader key bound to a lease again")
        self.assertEqual(etcd.get(key("leader"))[0], new_primary)
        self.assertEqual(one_primary()[0], new_primary)
        self.assertNotIn("no valid leader lease", log_of(cluster, new_primary))

        # 4. The leader key rewritten without a lease while its leader is gone (its agent and
        #    PostgreSQL killed): the key counts as free after a TTL and a replica takes over.
        cluster.agents[new_primary].proc.kill()
        cluster.agents[new_primary].stop()
        etcd.put(key("leader"), new_primary)
        others = [n for n in NODES if n != new_primary]
        third, _ = cluster.wait_roles(self, others, timeout=60)
        self.assertNotEqual(third, new_primary)
        self.assertNotEqual(etcd.get(key("leader"))[1], 0)
        cluster.start_agent(new_primary)
        one_primary(timeout=60)
        cluster.stop_all(self)

    def test_diverged_replica_is_rewound_and_never_read(self):
        """A replica that received WAL the new leader never had (it streamed from the old primary
        while its own agent was frozen) is rewound and streams from the new leader; meanwhile its
        agent never calls it a healthy replica."""
        cluster = Cluster(failover=True)
        self.addCleanup(cluster.cleanup)
        old, (behind, ahead) = cluster.start(self)
        wrote = cluster.psql(old, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        for name in (behind, ahead):
            cluster.wait_for(self, lambda n=name: self.rows(cluster, n) == 1, 30, f"the first row on {name}")

        # `behind` stops receiving; the old primary commits rows only `ahead` receives.
        cut = superuser_sql(cluster, behind, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")
        self.assertEqual(cut.returncode, 0, cut.stderr)
        cluster.wait_for(self, lambda: superuser_sql(cluster, behind, "SELECT count(*) FROM pg_stat_wal_receiver")
                         .stdout.strip() == "0", 20, "the WAL receiver of " + behind + " gone")
        wrote = cluster.psql(old, "INSERT INTO t SELECT generate_series(2, 100)")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        cluster.wait_for(self, lambda: self.rows(cluster, ahead) == 100, 30, "the extra rows on " + ahead)
        self.assertEqual(self.rows(cluster, behind), 1)

        # `ahead`'s agent freezes (its PostgreSQL runs on); the old primary dies for good; with
        # `ahead` unseen, `behind` is the one replica left and takes over.
        cluster.agents[ahead].signal(signal.SIGSTOP)
        self.addCleanup(lambda: cluster.agents[ahead].signal(signal.SIGCONT))
        cluster.agents[old].proc.kill()
        for pid in processes_mentioning(os.path.join(cluster.dir, "var", old)):
            os.kill(pid, signal.SIGKILL)
        cluster.wait_for(self, lambda: cluster.code(behind, "/primary") == 200, 60, behind + " promoted")
        wrote = cluster.psql(behind, "INSERT INTO t VALUES (-1)")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)

        # `ahead` thaws: it must rewind and stream from `behind`, never answering /replica 200
        # while it still holds the old primary's extra rows.
        cluster.agents[ahead].signal(signal.SIGCONT)
        healthy_with_extra_rows = []

        def rejoined():
            code = cluster.code(ahead, "/replica")
            rows = self.rows(cluster, ahead)
            if code == 200 and rows not in (None, 2):
                healthy_with_extra_rows.append(rows)
            return code == 200 and rows == 2

        cluster.wait_for(self, rejoined, 90, ahead + " rewound and streaming from " + behind)
        self.assertEqual(healthy_with_extra_rows, [])
        self.assertIn("forked off", log_of(cluster, ahead))
        status = cluster.status(ahead)
        self.assertEqual(status["timeline"], cluster.status(behind)["timeline"])

        # The old primary returns and is rewound too: one primary, two replicas of it.
        cluster.start_agent(old)
        self.assertEqual(cluster.wait_roles(self, NODES, timeout=90)[0], behind)
        cluster.stop_all(self)

    def test_switchover_and_failover_on_any_member(self):
        """As Patroni: POST /switchover sent to a replica is carried out by the leader, and POST
        /failover naming another replica by that replica; the answer comes back relayed."""
        cluster = Cluster(failover=False)
        self.addCleanup(cluster.cleanup)
        leader, (a, b) = cluster.start(self)
        token = cluster.token()

        def admin(name, path, body, token=token):
            headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
            code, _, raw = http_get(cluster.url(name, path), method="POST", data=json.dumps(body).encode(),
                                    headers=headers, timeout=40)
            return code, json.loads(raw)

        self.assertEqual(admin(b, "/switchover", {"to": a}, token="wrong")[0], 401)  # checked before forwarding
        deadline = time.monotonic() + 30
        while True:
            code, body = admin(b, "/switchover", {"to": a})
            if code not in (409, 503) or time.monotonic() > deadline:  # a target not yet seen healthy
                break
            time.sleep(0.3)
        self.assertEqual(code, 200, body)
        self.assertEqual(cluster.wait_roles(self, NODES, timeout=60)[0], a)
        self.assertIn("forwarding POST /switchover to " + leader, log_of(cluster, b))

        # The new leader dies; failover = false: nobody takes over until told, here through the
        # old leader (now a replica), which carries the request to the named replica.
        cluster.agents[a].proc.kill()
        for pid in processes_mentioning(os.path.join(cluster.dir, "var", a)):
            os.kill(pid, signal.SIGKILL)
        cluster.agents.pop(a).stop()
        cluster.wait_for(self, lambda: etcd_leader(cluster) is None, 30, "the leader key expired")
        deadline = time.monotonic() + 30
        while True:
            code, body = admin(leader, "/failover", {"to": b})
            if code != 409 or time.monotonic() > deadline:  # b may not have seen every replica yet
                break
            time.sleep(0.3)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["leader"], b)
        cluster.wait_for(self, lambda: cluster.code(b, "/primary") == 200, 20, b + " the primary")
        self.assertIn("forwarding POST /failover to " + b, log_of(cluster, leader))
        cluster.stop_all(self)

    def test_api_answers_while_a_clone_runs(self):
        """initdb, pg_basebackup, pg_rewind and starts run beside the agent's loop, not inside
        it: while a clone waits (the leader's checkpointer frozen, so pg_basebackup's checkpoint
        never comes), the cloning agent answers its API at once and says what it is doing."""
        cluster = Cluster(failover=True)
        self.addCleanup(cluster.cleanup)
        leader, (emptied, _) = cluster.start(self)
        cluster.agents[emptied].signal(signal.SIGTERM)
        self.assertEqual(cluster.agents[emptied].wait(timeout=45), 0)
        shutil.rmtree(cluster.data_dir(emptied))
        checkpointer = [pid for pid in children_of(cluster.postmaster_pid(leader))
                        if b"checkpointer" in open(f"/proc/{pid}/cmdline", "rb").read()]
        self.assertEqual(len(checkpointer), 1)
        os.kill(checkpointer[0], signal.SIGSTOP)
        self.addCleanup(thaw, checkpointer)
        cluster.start_agent(emptied)

        def cloning():
            try:
                op = cluster.status(emptied).get("operation")
            except (OSError, AssertionError):
                return None
            return op if op and op["what"].startswith("pg_basebackup") and op["ms"] > 2000 else None

        cluster.wait_for(self, cloning, 30, "a clone under way for 2 s")
        slowest = 0.0
        for _ in range(20):
            started = time.monotonic()
            code, _, _ = http_get(cluster.url(emptied, "/liveness"), timeout=5)
            slowest = max(slowest, time.monotonic() - started)
            self.assertEqual(code, 200)
            self.assertEqual(cluster.code(emptied, "/health"), 503)
            time.sleep(0.05)
        self.assertLess(slowest, 1.0, "the API waited for the clone")
        self.assertEqual(cluster.status(emptied)["state"], "bootstrapping")
        os.kill(checkpointer[0], signal.SIGCONT)
        cluster.wait_for(self, lambda: cluster.code(emptied, "/replica") == 200, 60, emptied + " cloned and streaming")
        print(f"\nslowest API answer during a clone: {slowest * 1000:.0f} ms")
        cluster.stop_all(self)


    def test_api_stays_reachable_under_a_connection_flood(self):
        """Idle connections that never send a byte, from 20 addresses, 1,100 at once and reopened
        as fast as the agent closes them (its cap is 1,000): /primary, what the lbs check, still
        answers at once every time. The oldest idle connection makes room for a new one, and no
        address holds more than 64."""
        cluster = Cluster(failover=True)
        self.addCleanup(cluster.cleanup)
        leader, _ = cluster.start(self)
        port = cluster.ports[leader][1]
        sources = [f"127.0.{i}.9" for i in range(1, 21)]
        flood = {}  # socket -> source
        opened = refused = 0

        def refill():
            nonlocal opened, refused
            for sock in [s for s in flood if closed_by_peer(s)]:
                del flood[sock]
                sock.close()
            for i in range(1100 - len(flood)):
                source = sources[i % len(sources)]
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source, 0))
                except OSError:
                    refused += 1
                    continue
                flood[sock] = source
                opened += 1

        try:
            refill()
            slowest = 0.0
            for _ in range(30):
                refill()
                started = time.monotonic()
                code, _, _ = http_get(cluster.url(leader, "/primary"), timeout=5)
                slowest = max(slowest, time.monotonic() - started)
                self.assertEqual(code, 200)
            self.assertLess(slowest, 1.0, "a health check waited behind the flood")
            metrics = http_get(cluster.url(leader, "/metrics"), timeout=5)[2].decode()
            print(f"\nflood of {opened} connections: slowest /primary {slowest * 1000:.0f} ms", flush=True)
            self.assertRegex(metrics, r'fulcrum_db_api_connections_evicted_total\{node="[^"]+"\} [1-9]')
        finally:
            for sock in flood:
                sock.close()
        self.assertEqual(cluster.code(leader, "/primary"), 200)
        cluster.stop_all(self)


def closed_by_peer(sock):
    """True when the peer has closed (or reset) `sock`; never blocks."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)

def thaw(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def etcd_leader(cluster):
    found = Etcd(cluster).get(key("leader"))
    return found[0] if found else None


if __name__ == "__main__":
    unittest.main()
