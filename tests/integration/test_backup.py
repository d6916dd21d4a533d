"""[db.backup] end to end with real PostgreSQL and pgBackRest under `fulcrum up` (issue 20): WAL
archived continuously from the primary, a first full backup taken by itself, `fulcrum backup` on
demand and `--list`, a point-in-time restore through the guestbook after a DELETE without WHERE
(every row back, served through the lb, the replica cloned again), a failover between backups
and a restore past it, an unwritable repository seen in the metrics while the primary keeps
taking writes, and a damaged backup refused with nothing changed.

The steps share one site (initdb, a clone and a first backup cost tens of seconds), so they run
in order. Waits are bounded polls; the site is stopped and its directory removed even when a step
fails. Skipped when etcd, PostgreSQL, pgBackRest or root is missing."""
import json
import math
import os
import shutil
import signal
import subprocess
import time
import unittest

from harness import FULCRUM, http_get, needs, wait_until
from test_db import missing_requirement, processes_mentioning
from test_up import DB, Site


def requirement():
    missing = missing_requirement()
    if missing:
        return missing
    return None if shutil.which("pgbackrest") else "pgbackrest is not installed (scripts/deps.sh)"


@needs(requirement())
class BackupTest(unittest.TestCase):
    site = None

    @classmethod
    def setUpClass(cls):
        # Three segments of WAL may wait for the archive; beyond that pgBackRest drops them.
        cls.site = Site(app="guestbook", extra_db="failover = true\n[db.backup]\narchive_queue_max_bytes = 50331648\n"
                                                           "replica_from_backup_bytes = 1\n")
        try:
            cls.site.start(unittest.TestCase())
        except BaseException:
            cls.site.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.site.cleanup()

    # --- helpers ---------------------------------------------------------------------------------

    def explain(self):
        return self.site.up.output()[-3000:] + self.site.logs()

    def fulcrum(self, *args, timeout=300):
        return subprocess.run([FULCRUM, *args, self.site.file], capture_output=True, text=True, timeout=timeout)

    def catalog(self):
        run = self.fulcrum("backup", "--list", "--json", timeout=30)
        return json.loads(run.stdout) if run.returncode == 0 else None

    def agent(self, name, path):
        code, _, body = http_get(f"http://127.0.0.1:{self.site.ports[name][1]}{path}", timeout=5)
        return code, body.decode()

    def metric(self, name, metric):
        _, text = self.agent(name, "/metrics")
        for line in text.splitlines():
            if line.startswith(metric + "{") or line.startswith(metric + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def lb(self, path):
        return f"http://127.0.0.1:{self.site.lb_http}{path}"

    def post(self, author, text):
        return http_get(self.lb("/api/messages"), method="POST", timeout=10,
                        data=json.dumps({"author": author, "text": text}).encode(),
                        headers={"Content-Type": "application/json"})[0]

    def texts(self):
        """Every message text the guestbook shows through the lb (None while it cannot answer)."""
        try:
            code, _, body = http_get(self.lb("/api/messages?limit=200"), timeout=5)
        except OSError:
            return None
        if code != 200:
            return None
        return {m["text"] for m in json.loads(body)["messages"]}

    def post_all(self, author, texts):
        for text in texts:
            wait_until(lambda: self.post(author, text) in (200, 201), timeout=60, interval=0.2,
                       what=f"message {text!r} posted")

    def wait_archived(self):
        """A WAL switch on the primary and its segment in the archive."""
        primary = self.site.primary()
        before = self.metric(primary, "fulcrum_db_archive_archived_total") or 0
        switch = self.site.psql_superuser(primary, "SELECT pg_switch_wal()")
        self.assertEqual(switch.returncode, 0, switch.stderr)
        wait_until(lambda: (self.metric(primary, "fulcrum_db_archive_archived_total") or 0) > before, timeout=30,
                   what="the switched segment archived")

    def wait_site_healthy(self, timeout=120):
        def healthy():
            code, rows = self.site.status()
            return code == 0 and all(r["healthy"] for r in rows)
        wait_until(healthy, timeout=timeout, interval=0.5, what="every node of the site healthy")

    # --- steps -----------------------------------------------------------------------------------

    def test_1_archiving_and_a_first_full_backup_by_themselves(self):
        wait_until(lambda: (self.catalog() or {}).get("backups"), timeout=120, interval=1,
                   what="the first full backup, taken by itself")
        catalog = self.catalog()
        self.assertEqual(catalog["backups"][0]["type"], "full", catalog)
        self.assertIsNotNone(catalog["recoverable"], catalog)
        self.assertTrue(catalog["archive"]["ok"], catalog)
        primary = self.site.primary()
        self.assertEqual(self.metric(primary, "fulcrum_db_backups"), 1)
        self.assertEqual(self.metric(primary, "fulcrum_db_archive_failing"), 0)
        # `fulcrum status` and the agent's /status say how archiving goes.
        _, status = self.agent(primary, "/status")
        self.assertTrue(json.loads(status)["backup"]["archive"]["ok"])
        listing = self.fulcrum("backup", "--list", timeout=30)
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertIn(catalog["backups"][0]["label"], listing.stdout)
        self.assertIn("restorable to any moment from", listing.stdout)

    def test_2_point_in_time_restore_after_a_delete_without_where(self):
        # A differential backup on demand first: the restore starts from the newest one before the target.
        run = self.fulcrum("backup", timeout=300)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr + self.explain())
        self.assertRegex(run.stdout, r"backup \S+D \(diff, from \S+\) done")
        kept = [f"kept {i}" for i in range(5)]
        self.post_all("keeper", kept)
        wait_until(lambda: set(kept) <= (self.texts() or set()), timeout=30, what="the messages readable")
        self.wait_archived()
        target = time.time()
        wait_until(lambda: time.time() >= target + 1.5, timeout=5, what="the clock past the target")
        deleted = self.site.psql(self.site.primary(), "DELETE FROM guestbook_messages")
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        def gone():
            texts = self.texts()
            return texts is not None and not set(kept) & texts
        wait_until(gone, timeout=30, what="the rows gone")
        self.wait_archived()

        at = f"@{math.ceil(target)}"  # after every kept commit, before the DELETE
        dry = self.fulcrum("restore", "--to", at, "--dry-run", timeout=30)
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn("would do", dry.stdout)
        self.assertIn("pgBackRest", dry.stdout)
        self.assertFalse(set(kept) & (self.texts() or set()), "a dry run changed nothing")

        restore = self.fulcrum("restore", "--to", at, timeout=600)
        self.assertEqual(restore.returncode, 0, restore.stdout + restore.stderr + self.explain())
        self.assertIn("promoted on timeline", restore.stdout)
        for name in DB:  # every state change the restore made is one the agents' table allows
            with open(os.path.join(self.site.dir, "var", "logs", f"{name}.log"), errors="replace") as f:
                self.assertNotIn("please report", f.read())
        wait_until(lambda: set(kept) <= (self.texts() or set()), timeout=120, interval=0.5,
                   what="every deleted message back through the guestbook")
        self.wait_site_healthy()
        # The replica was cloned again from the restored leader and serves the rows too.
        replica = next(n for n in DB if n != self.site.primary())
        wait_until(lambda: self.site.psql(replica, "SELECT count(*) FROM guestbook_messages WHERE author = 'keeper'")
                   .stdout.strip() == "5", timeout=120, interval=0.5, what="the rows on the re-cloned replica")
        # New writes go on, on the new timeline.
        self.post_all("after", ["after the restore"])

    def test_3_a_damaged_backup_is_refused_and_nothing_changes(self):
        # The full backup the restore asked for is done first (a restore waits for no backup).
        wait_until(lambda: (self.catalog() or {}).get("running") is None and self.catalog().get("requested") is None,
                   timeout=120, interval=0.5, what="no backup running")
        catalog = self.catalog()
        fulls = [b for b in catalog["backups"] if b["type"] == "full"]
        self.assertTrue(fulls, catalog)
        label = fulls[-1]["label"]
        # Damage one data file of that backup in the repository.
        root = os.path.join(self.site.dir, "var", "backup", "backup", "uptest", label, "pg_data", "base")
        victims = []
        for dirpath, _, files in os.walk(root):
            victims += [os.path.join(dirpath, f) for f in files if os.path.getsize(os.path.join(dirpath, f)) > 64]
        self.assertTrue(victims, f"no file to damage under {root}")
        victim = max(victims, key=os.path.getsize)
        with open(victim, "r+b") as f:
            f.seek(16)
            f.write(b"\xde\xad\xbe\xef" * 8)
        before = self.texts()
        primary = self.site.primary()
        restore = self.fulcrum("restore", "--to-backup", label, timeout=300)
        self.assertNotEqual(restore.returncode, 0, restore.stdout)
        self.assertIn("failed", restore.stderr)
        self.assertIn(label, restore.stderr)
        # Nothing was stopped or swapped: the same leader, the same rows, still writable.
        self.assertEqual(self.site.primary(), primary)
        self.assertEqual(self.texts(), before)
        self.post_all("after", ["after the refused restore"])
        self.assertFalse(os.path.exists(os.path.join(self.site.dir, "var", primary, "data.restore")))

    def test_4_an_unwritable_repository_shows_bounded_wal_and_the_gap(self):
        repo = os.path.join(self.site.dir, "var", "backup")
        os.chmod(repo, 0o000)
        self.addCleanup(os.chmod, repo, 0o700)
        primary = self.site.primary()
        failed_before = self.metric(primary, "fulcrum_db_archive_failed_total") or 0
        self.new_segment(primary)
        wait_until(lambda: self.metric(primary, "fulcrum_db_archive_failing") == 1, timeout=60, interval=0.5,
                   what="archiving seen failing")
        self.assertGreater(self.metric(primary, "fulcrum_db_archive_failed_total"), failed_before)
        self.assertGreaterEqual(self.metric(primary, "fulcrum_db_archive_ready_segments"), 1)
        listing = self.fulcrum("backup", "--list", timeout=30)
        self.assertIn("FAILING", listing.stdout)
        code, rows = self.site.status()
        self.assertIn("FAILING", [r.get("archive") for r in rows if r["name"] == primary][0] or "")
        # Writes still go through the whole site.
        self.post_all("during", ["while the archive is down"])
        # Seven more segments: pgBackRest keeps at most archive_queue_max_bytes (3 segments) waiting
        # and drops the rest, so pg_wal cannot fill the disk.
        for _ in range(7):
            self.new_segment(primary)
        wait_until(lambda: self.metric(primary, "fulcrum_db_archive_ready_segments") <= 4, timeout=60, interval=0.5,
                   what="the WAL waiting for the archive bounded")
        self.assertLessEqual(self.metric(primary, "fulcrum_db_archive_ready_segments"), 4)
        os.chmod(repo, 0o700)
        self.new_segment(primary)
        wait_until(lambda: self.metric(primary, "fulcrum_db_archive_failing") == 0
                   and self.metric(primary, "fulcrum_db_archive_ready_segments") == 0, timeout=120, interval=0.5,
                   what="archiving recovered once the repository is writable again")
        # The dropped segments are a gap in the archive: shown, and mended by a full backup.
        wait_until(lambda: (self.metric(primary, "fulcrum_db_archive_missing_segments") or 0) > 0, timeout=60,
                   interval=0.5, what="the dropped WAL seen missing from the archive")
        self.assertIn("WARNING", self.fulcrum("backup", "--list", timeout=30).stdout)
        run = self.fulcrum("backup", "--full", timeout=300)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        wait_until(lambda: self.metric(primary, "fulcrum_db_archive_missing_segments") == 0, timeout=60,
                   interval=0.5, what="no gap since the new full backup")

    def test_5_a_restore_past_a_failover_follows_the_timelines(self):
        run = self.fulcrum("backup", timeout=300)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr + self.explain())
        before = [f"before failover {i}" for i in range(3)]
        self.post_all("keeper", before)
        old = self.site.primary()
        # A frozen leader agent: its lease runs out, its fence stops its PostgreSQL, and the
        # replica takes over (a killed one could come back and win the key again).
        frozen = self.site.pid_of(old)
        os.kill(frozen, signal.SIGSTOP)
        self.addCleanup(lambda: subprocess.run(["kill", "-CONT", str(frozen)], capture_output=True))
        wait_until(lambda: self.site.primary() not in (None, old), timeout=60, interval=0.2,
                   what="the other node promoted")
        os.kill(frozen, signal.SIGCONT)  # it rejoins as a replica of the new timeline
        after = [f"after failover {i}" for i in range(3)]
        self.post_all("keeper", after)
        wait_until(lambda: set(before + after) <= (self.texts() or set()), timeout=30, what="all readable")
        self.wait_archived()
        target = time.time()
        wait_until(lambda: time.time() >= target + 1.5, timeout=5, what="the clock past the target")
        deleted = self.site.psql(self.site.primary(), "DELETE FROM guestbook_messages")
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        restore = self.fulcrum("restore", "--to", f"@{math.ceil(target)}", timeout=600)
        self.assertEqual(restore.returncode, 0, restore.stdout + restore.stderr + self.explain())
        wait_until(lambda: set(before + after) <= (self.texts() or set()), timeout=120, interval=0.5,
                   what="the rows from both sides of the failover back")
        self.wait_site_healthy()

    def test_6_an_emptied_replica_comes_back_from_the_repository(self):
        wait_until(lambda: (self.catalog() or {}).get("running") is None and self.catalog().get("requested") is None,
                   timeout=120, interval=0.5, what="no backup running")
        run = self.fulcrum("backup", "--full", timeout=300)  # a backup of the current timeline
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.post_all("keeper", ["after the last backup"])  # streamed from the primary, not in the backup
        primary = self.site.primary()
        replica = next(n for n in DB if n != primary)
        data = os.path.join(self.site.dir, "var", replica, "data")
        os.kill(self.site.pid_of(replica), 9)  # its PostgreSQL follows by its death signal
        wait_until(lambda: not processes_mentioning(data), timeout=30, what="the replica's PostgreSQL gone")
        def emptied():
            shutil.rmtree(data, ignore_errors=True)  # a backend still exiting may remove its own files
            return not os.path.exists(data)
        wait_until(emptied, timeout=10, what="the replica's data directory removed")
        wait_until(lambda: self.site.psql(replica, "SELECT count(*) FROM guestbook_messages "
                                                   "WHERE text = 'after the last backup'").stdout.strip() == "1",
                   timeout=180, interval=0.5, what="the emptied replica back, with the rows after the backup")
        with open(os.path.join(self.site.dir, "var", "logs", f"{replica}.log"), errors="replace") as f:
            log = f.read()
        self.assertIn("from the repository, then streaming from leader", log)
        self.wait_site_healthy()

    def new_segment(self, name):
        """Some WAL, then a switch: one more segment for the archiver."""
        run = self.site.psql_superuser(name, "CREATE TABLE IF NOT EXISTS wal_filler (x int); "
                                         "INSERT INTO wal_filler VALUES (1); SELECT pg_switch_wal()")
        self.assertEqual(run.returncode, 0, run.stderr)

    # --- psql ------------------------------------------------------------------------------------


if __name__ == "__main__":
    unittest.main()
