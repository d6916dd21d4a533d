"""`fulcrum db list|switchover|failover` against a real site under `fulcrum up` (issue 21): the
commands find the agents and the token themselves, print what happened, and exit non-zero with the
reason when they cannot act. Skipped when etcd, PostgreSQL or root is missing."""
import json
import os
import signal
import subprocess
import time
import unittest

from harness import FULCRUM, http_get, needs, wait_until
from test_db import missing_requirement
from test_up import DB, Site


@needs(missing_requirement())
class DbCliTest(unittest.TestCase):
    site = None

    @classmethod
    def setUpClass(cls):
        cls.site = Site(extra_db="failover = true\n")
        try:
            cls.site.start(unittest.TestCase())
        except BaseException:
            cls.site.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.site.cleanup()

    def db(self, *args, timeout=60):
        return subprocess.run([FULCRUM, "db", *args, self.site.file], capture_output=True, text=True, timeout=timeout)

    def cluster(self):
        run = self.db("list", "--json")
        return run.returncode, json.loads(run.stdout)

    def settled(self):
        """The cluster once a leader leads and every other member streams from it."""
        def ready():
            code, c = self.cluster()
            return code == 0 and all(m["role"] == "leader" or m["receiver"] == "streaming" for m in c["members"])
        wait_until(ready, timeout=60, interval=0.3, what="a leader and streaming replicas")
        return self.cluster()[1]

    def test_1_list_shows_the_leader_timeline_and_each_member(self):
        c = self.settled()
        self.assertEqual(c["site"], "uptest")
        self.assertIn(c["leader"], DB)
        self.assertGreaterEqual(c["timeline"], 1)
        self.assertEqual([m["name"] for m in c["members"]], DB)
        roles = {m["name"]: m["role"] for m in c["members"]}
        self.assertEqual(roles[c["leader"]], "leader")
        replica = next(m for m in c["members"] if m["name"] != c["leader"])
        self.assertEqual((replica["role"], replica["state"], replica["timeline"]), ("replica", "running", c["timeline"]))
        self.assertIsInstance(replica["lag_bytes"], int)
        # Replay lag in time too (0 once everything received is replayed).
        wait_until(lambda: next(m for m in self.cluster()[1]["members"] if m["name"] == replica["name"])
                   ["lag_seconds"] is not None, timeout=15, what="the replica's lag in seconds")
        table = self.db("list")
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertIn(f"leader: {c['leader']}", table.stdout)
        self.assertRegex(table.stdout, rf"{replica['name']} +\S+ +replica +running +{c['timeline']} +streaming")
        # `fulcrum status` shows the same cluster above its table; --watch repeats the report until stopped.
        watch = subprocess.run(["timeout", "8", FULCRUM, "status", "--watch", "--interval", "1", self.site.file],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(watch.returncode, 124, watch.stderr)  # still running when `timeout` stopped it
        self.assertGreaterEqual(watch.stdout.count(f"database: leader {c['leader']}  timeline {c['timeline']}"), 2,
                                watch.stdout)

    def test_2_switchover_to_the_replica(self):
        before = self.settled()
        target = next(n for n in DB if n != before["leader"])
        run = self.db("switchover", "--to", target, timeout=90)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("switchover", run.stdout)
        after = self.settled()
        self.assertEqual(after["leader"], target)
        self.assertGreater(after["timeline"], before["timeline"])

    def test_3_refusals_say_why_and_change_nothing(self):
        before = self.settled()
        run = self.db("switchover", "--to", "db-9")
        self.assertEqual(run.returncode, 1)
        self.assertIn("no [[db.node]] named 'db-9'", run.stderr)
        # A failover is for a cluster without a leader.
        other = next(n for n in DB if n != before["leader"])
        run = self.db("failover", "--to", other)
        self.assertEqual(run.returncode, 1)
        self.assertIn("holds the leader key", run.stderr)
        run = self.db("switchover", "--to", before["leader"])
        self.assertEqual(run.returncode, 1)
        self.assertIn("already the leader", run.stderr)
        self.assertEqual(self.settled()["leader"], before["leader"])

    def test_4_paused_no_failover_until_resumed(self):
        before = self.settled()
        run = self.db("pause")
        self.assertEqual(run.returncode, 0, run.stderr)
        wait_until(lambda: self.cluster()[1]["paused"], timeout=10, what="every agent sees the pause")
        self.assertIn("paused: YES", self.db("list").stdout)
        # The lb's dashboard says it on every database member, and in its summary line.
        def dashboard_paused():
            state = json.loads(http_get(f"http://127.0.0.1:{self.site.lb_stats}/api/state", timeout=5)[2])
            members = [n for n in state["nodes"] if n["role"] == "db"]
            return members and all(n["paused"] for n in members) and "paused" in state["summary"]["text"]
        wait_until(dashboard_paused, timeout=15, what="the dashboard shows the pause")
        again = self.db("pause", "--json")  # idempotent
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertFalse(json.loads(again.stdout)["changed"])
        # The leader's agent freezes: its lease runs out (3 s), its fence stops its PostgreSQL, and
        # the replica, paused, does not take over.
        old = before["leader"]
        replica = next(n for n in DB if n != old)
        frozen = self.site.pid_of(old)
        os.kill(frozen, signal.SIGSTOP)
        self.addCleanup(lambda: subprocess.run(["kill", "-CONT", str(frozen)], capture_output=True))
        deadline = time.monotonic() + 12  # four lease TTLs: an absence can only be watched for a while
        while time.monotonic() < deadline:
            members = {m["name"]: m for m in self.cluster()[1]["members"]}
            self.assertNotEqual(members[replica]["role"], "leader", "a replica took over while paused")
            if members[replica]["state"] == "running":  # streaming from nobody, it says the last timeline it knew
                self.assertEqual(members[replica]["timeline"], before["timeline"], members[replica])
            time.sleep(0.5)
        run = self.db("resume")
        self.assertEqual(run.returncode, 0, run.stderr)
        wait_until(lambda: self.cluster()[1]["leader"] == replica, timeout=30, interval=0.3,
                   what="the replica takes over once resumed")
        os.kill(frozen, signal.SIGCONT)
        after = self.settled()
        self.assertEqual(after["leader"], replica)
        self.assertFalse(after["paused"])

    def test_5_restart_keeps_each_role(self):
        before = self.settled()
        leader = before["leader"]
        replica = next(n for n in DB if n != leader)
        # A setting that takes effect only at a restart: `db list` says the leader waits for one.
        changed = self.site.psql_superuser(leader, "ALTER SYSTEM SET max_files_per_process = 999")
        self.assertEqual(changed.returncode, 0, changed.stderr)
        self.site.psql_superuser(leader, "SELECT pg_reload_conf()")
        pending = lambda: {m["name"]: m["pending_restart"] for m in self.cluster()[1]["members"]}
        wait_until(lambda: pending()[leader], timeout=15, what="the leader's pending restart shown")
        self.assertRegex(self.db("list").stdout, rf"\n{leader} .* pending\n")
        for node in (leader, replica):
            if node == leader:
                run = self.db("restart", node, timeout=150)
                self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
                self.assertIn(f"restart: {node}: PostgreSQL running again", run.stdout)
            else:
                run = self.db("restart", node, "--json", timeout=150)
                self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
                outcome = json.loads(run.stdout)
                self.assertEqual((outcome["node"], outcome["role"], outcome["restarted"]), (node, "replica", True))
            after = self.settled()
            # The leader kept its lease through its server's restart: no failover, same timeline.
            self.assertEqual((after["leader"], after["timeline"]), (leader, before["timeline"]))
        self.assertFalse(pending()[leader])
        self.assertEqual(self.site.psql_superuser(leader, "SHOW max_files_per_process").stdout.strip(), "999")
        wrote = self.site.psql(leader, "CREATE TABLE after_restart(x int); INSERT INTO after_restart VALUES (1)")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        run = self.db("restart", "db-9")
        self.assertEqual(run.returncode, 1)
        self.assertIn("no [[db.node]] named 'db-9'", run.stderr)

    def test_6_reinit_clones_a_replica_and_refuses_the_leader(self):
        before = self.settled()
        leader = before["leader"]
        replica = next(n for n in DB if n != leader)
        run = self.db("reinit", leader)
        self.assertEqual(run.returncode, 1)
        self.assertIn("leads", run.stderr)
        wrote = self.site.psql(leader, "CREATE TABLE before_reinit(x int); INSERT INTO before_reinit VALUES (7)")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        run = self.db("reinit", replica, "--wait", "120", timeout=150)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn(f"reinit: {replica}: cloned, streaming", run.stdout)
        old = run.stdout.split("kept at ", 1)[1].split(" (", 1)[0]
        self.assertTrue(os.path.isdir(old), old)  # kept until the operator deletes it
        after = self.settled()
        self.assertEqual(after["leader"], leader)
        wait_until(lambda: self.site.psql(replica, "SELECT x FROM before_reinit").stdout.strip() == "7", timeout=30,
                   what="the re-cloned replica has the leader's rows")

    def test_7_history_says_when_and_why_each_timeline_began(self):
        c = self.settled()
        run = self.db("history", "--json")
        self.assertEqual(run.returncode, 0, run.stderr)
        h = json.loads(run.stdout)
        self.assertEqual(h["timeline"], c["timeline"])
        timelines = [e["timeline"] for e in h["history"]]
        self.assertEqual(timelines, list(range(1, c["timeline"] + 1)))
        reasons = [e["reason"] or "" for e in h["history"]]
        # test_2's switchover and test_4's failover (after the frozen leader's lease ended).
        self.assertTrue(any(r.startswith("switchover from ") for r in reasons), reasons)
        self.assertTrue(any(r.startswith("failover: ") for r in reasons), reasons)
        last = h["history"][-1]
        self.assertEqual(last["leader"], c["leader"])
        self.assertRegex(last["at"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
        self.assertNotEqual(last["lsn"], "0/0")
        table = self.db("history")
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertRegex(table.stdout, rf"\n +{c['timeline']} +\S+ +\d{{4}}-")

    def test_8_a_scheduled_switchover_happens_at_its_time_or_is_cancelled(self):
        before = self.settled()
        target = next(n for n in DB if n != before["leader"])
        run = self.db("switchover", "--at", "@%d" % (time.time() - 5))
        self.assertEqual(run.returncode, 1)
        self.assertIn("not in the future", run.stderr)
        # Planned for an hour from now, then cancelled: nothing happens.
        run = self.db("switchover", "--to", target, "--at", "@%d" % (time.time() + 3600))
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("scheduled for", run.stdout)
        wait_until(lambda: self.cluster()[1]["scheduled_switchover"], timeout=10, what="the schedule shown")
        self.assertIn("Scheduled switchover: " + before["leader"] + " -> " + target, self.db("list").stdout)
        again = self.db("switchover", "--at", "@%d" % (time.time() + 7200))
        self.assertEqual(again.returncode, 1)
        self.assertIn("already scheduled", again.stderr)
        run = self.db("switchover", "--cancel")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn('"cancelled":true', run.stdout)
        wait_until(lambda: self.cluster()[1]["scheduled_switchover"] is None, timeout=10, what="the schedule gone")
        # Planned for a few seconds from now: the leader hands over then, by itself.
        at = time.time() + 4
        run = self.db("switchover", "--to", target, "--at", "@%d" % at)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(self.cluster()[1]["leader"], before["leader"])
        wait_until(lambda: self.cluster()[1]["leader"] == target, timeout=40, interval=0.3,
                   what="the scheduled switchover carried out")
        self.assertGreaterEqual(time.time(), int(at))
        after = self.settled()
        self.assertIsNone(after["scheduled_switchover"])
        history = json.loads(self.db("history", "--json").stdout)["history"]
        self.assertEqual(history[-1]["reason"], "switchover from " + before["leader"])


@needs(missing_requirement())
class ManualFailoverTest(unittest.TestCase):
    """failover = false under `fulcrum up`: the operator stops the primary's node (`fulcrum stop`),
    nobody takes over by themselves, and `fulcrum db failover --to` makes the replica lead."""

    def test_stopped_primary_then_db_failover(self):
        site = Site(extra_db="failover = false\n")
        self.addCleanup(site.cleanup)
        site.start(self)

        def cluster():
            run = subprocess.run([FULCRUM, "db", "list", "--json", site.file], capture_output=True, text=True,
                                 timeout=60)
            return json.loads(run.stdout)

        wait_until(lambda: cluster()["leader"] in DB and all(
            m["role"] == "leader" or m["receiver"] == "streaming" for m in cluster()["members"]),
            timeout=60, interval=0.3, what="a leader and a streaming replica")
        old = cluster()["leader"]
        replica = next(n for n in DB if n != old)
        run = subprocess.run([FULCRUM, "stop", site.file, old], capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        wait_until(lambda: cluster()["leader"] is None, timeout=30, interval=0.3, what="the stopped leader's key gone")
        deadline = time.monotonic() + 6  # two lease TTLs: an absence can only be watched for a while
        while time.monotonic() < deadline:
            members = {m["name"]: m for m in cluster()["members"]}
            self.assertNotEqual(members[replica]["role"], "leader", "a replica took over with failover = false")
            time.sleep(0.5)
        run = subprocess.run([FULCRUM, "db", "failover", "--to", replica, site.file], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn(f"{replica} is the leader", run.stdout)
        self.assertEqual(cluster()["leader"], replica)
        # The new leader writes its line once its timeline is on disk.
        wait_until(lambda: json.loads(subprocess.run([FULCRUM, "db", "history", "--json", site.file],
                                                     capture_output=True, text=True, timeout=60).stdout)
                   ["history"][-1]["reason"] == "manual failover", timeout=20, what="the history says why")
        run = subprocess.run([FULCRUM, "start", site.file, old], capture_output=True, text=True, timeout=240)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        wait_until(lambda: {m["name"]: (m["role"], m["receiver"]) for m in cluster()["members"]}.get(old)
                   == ("replica", "streaming"), timeout=90, interval=0.5, what="the old leader back as a replica")


if __name__ == "__main__":
    unittest.main()
