"""The guestbook in `fulcrum web` against a real three-node database (etcd, three `fulcrum db`
agents, each with its PostgreSQL): posting and reading back, read-your-writes with the replicas'
replay paused, bad input, and a failover of the primary. Reuses test_db's Cluster; the web node
reads the same site file, extended with [web]. Skipped when etcd or PostgreSQL is missing."""
import concurrent.futures
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest
import urllib.parse

from harness import (FULCRUM, Process, TempDir, assert_valid_metrics, free_port, http_get, read_body, read_head,
                     read_response, wait_reload_report, wait_until, needs)
from test_db import LEADER_TTL_MS, NODES, Cluster, children_of, missing_requirement, pg_bin, processes_mentioning


class GuestbookSite:
    """A database cluster plus one web node serving the guestbook from the same site file."""

    def __init__(self, failover):
        self.cluster = Cluster(failover=failover)
        self.web_port = free_port()
        os.makedirs(os.path.join(self.cluster.dir, "www"))
        with open(os.path.join(self.cluster.dir, "www", "hello.txt"), "w") as f:
            f.write("static still served\n")
        with open(self.cluster.site, "a") as f:
            f.write('[web]\ndocroot = "www"\napp = "guestbook"\n'
                    f'[[web.node]]\nname = "web-1"\nlisten = "127.0.0.1:{self.web_port}"\nthreads = 2\n')
        self.web = None
        self.tls = None  # an ssl.SSLContext once use_tls() is called

    def use_tls(self, tls_dir):
        """[security] internal_tls: the web node answers only TLS clients with a site certificate,
        so the test speaks to it as the operator (`fulcrum certs` made the files in tls_dir)."""
        self.cluster.etcd_tls = tls_dir
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.tls.load_verify_locations(os.path.join(tls_dir, "ca.crt"))
        self.tls.load_cert_chain(os.path.join(tls_dir, "operator.crt"), os.path.join(tls_dir, "operator.key"))

    def start(self, test):
        self.cluster.start_etcd()
        for name in NODES:
            self.cluster.start_agent(name)
        primary, replicas = self.cluster.wait_roles(test, NODES, timeout=60)
        self.web = Process([FULCRUM, "web", "--site", self.cluster.site, "--node", "web-1"],
                           os.path.join(self.cluster.dir, "web-1.log"))
        wait_until(lambda: self.get("/healthz")[0] == 200, timeout=10, what="web node up")
        # Healthy means ready: every database node heard from, and the schema created.
        code, _, body = self.get("/api/messages")
        test.assertEqual(code, 200, body)
        # The router finds the primary by itself and creates the schema before the first write.
        wait_until(lambda: self.post({"author": "setup", "text": "first"})[0] == 201, timeout=15, interval=0.1,
                   what="a first write through the web node")
        return primary, replicas

    def url(self, path):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.web_port}{path}"

    def get(self, path, cookie=None, timeout=5):
        headers = {"Cookie": cookie} if cookie else {}
        return http_get(self.url(path), headers=headers, timeout=timeout, context=self.tls)

    def post(self, body, content_type="application/json", timeout=5):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http_get(self.url("/api/messages"), method="POST", data=data,
                        headers={"Content-Type": content_type}, timeout=timeout, context=self.tls)

    def as_postgres(self, name, sql):
        """psql as the superuser over the node's private socket (peer authentication)."""
        run_dir = os.path.join(self.cluster.dir, "var", name, "run")
        return subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pg_bin(), "psql"), "-X", "-A", "-t",
                               "-h", run_dir, "-p", str(self.cluster.ports[name][0]), "-d", "postgres", "-c", sql],
                              capture_output=True, text=True, timeout=10)

    def as_postgres_on(self, name, database, sql):
        run_dir = os.path.join(self.cluster.dir, "var", name, "run")
        return subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pg_bin(), "psql"), "-X", "-A", "-t",
                               "-h", run_dir, "-p", str(self.cluster.ports[name][0]), "-d", database, "-c", sql],
                              capture_output=True, text=True, timeout=10)

    def logs(self):
        web = self.web.output()[-4000:] if self.web else ""
        return f"--- web-1 ---\n{web}\n{self.cluster.logs()}"

    def cleanup(self):
        if self.web is not None:
            self.web.stop(timeout=15)
        self.cluster.cleanup()


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


def metric(site, name):
    """The web node's value of a counter (summed over its workers already)."""
    text = site.get("/metrics")[2].decode()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError(f"{name} not in /metrics")


def cookie_of(headers):
    value = headers.get("Set-Cookie", "")
    return value.split(";", 1)[0] if value.startswith("fulcrum_lsn=") else None


def ids_in(body):
    return [m["id"] for m in json.loads(body)["messages"]]


def check_body_limit_on_the_head(test, site):
    """Expect: 100-continue is answered from the head: 100 for a message that fits, 413 (and no
    100, no body read) for one that does not; a chunked message passing 16 KiB is a 413."""
    def exchange(head, body=b""):
        with socket.create_connection(("127.0.0.1", site.web_port), timeout=10) as s:
            s.sendall(head)
            f = s.makefile("rb")
            start, headers = read_head(f)
            if start.startswith("HTTP/1.1 100 "):
                s.sendall(body)
                start, headers = read_head(f)
                return ["100", start], read_body(f, headers)
            return [start], read_body(f, headers)

    message = json.dumps({"author": "expect", "text": "continue"}).encode()
    lines, _ = exchange(b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(message), message)
    test.assertEqual(lines[0], "100")
    test.assertTrue(lines[1].startswith("HTTP/1.1 201 "), lines)
    lines, _ = exchange(b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
    test.assertEqual(len(lines), 1)
    test.assertTrue(lines[0].startswith("HTTP/1.1 413 "), lines)
    chunked = b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
              b"Transfer-Encoding: chunked\r\n\r\n"
    lines, _ = exchange(chunked + b"%x\r\n%s\r\n0\r\n\r\n" % (len(message), message))
    test.assertTrue(lines[0].startswith("HTTP/1.1 201 "), lines)
    piece = b"1000\r\n" + b" " * 4096 + b"\r\n"  # JSON whitespace, 4 KiB a chunk
    lines, _ = exchange(chunked + piece * 5)
    test.assertTrue(lines[0].startswith("HTTP/1.1 413 "), lines)


@needs(missing_requirement())
class GuestbookTest(unittest.TestCase):
    def setUp(self):
        self.site = GuestbookSite(failover=True)
        self.addCleanup(self.site.cleanup)
        self.primary, self.replicas = self.site.start(self)

    def test_guestbook(self):
        try:
            self.scenario()
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.site.logs()}") from e

    def wait_read_pool(self, name, other, member, timeout=15):
        """Plain reads until replica `name` serves them (member) or, for 30 reads in a row, does not while
        `other` does; returns when the change took effect (the first read of that run)."""
        site = self.site
        deadline = time.monotonic() + timeout
        run_started = None
        run = 0
        while time.monotonic() < deadline:
            at = time.monotonic()
            code, headers, body = site.get("/api/messages?limit=1")
            self.assertEqual(code, 200, body)
            node = headers["X-Db-Node"]
            if member:
                if node == name:
                    return at
            elif node == name:
                run, run_started = 0, None
            else:
                self.assertEqual(node, other)
                run_started = run_started or at
                run += 1
                if run >= 30:
                    return run_started
            time.sleep(0.01)
        self.fail(f"{name} did not {'join' if member else 'leave'} the read pool in {timeout} s")

    def check_db_node_reload(self):
        """SIGHUP with a replica gone from [[db.node]], then back: reads leave it and come back, and
        meanwhile no request fails and a keep-alive connection stays open (issue 16)."""
        site = self.site
        gone, kept = self.replicas
        with open(site.cluster.site) as f:
            original = f.read()
        block = re.search(rf'\[\[db\.node\]\]\nname = "{gone}"\n[^\[]*', original).group(0)
        connection = socket.create_connection(("127.0.0.1", site.web_port), timeout=10)
        responses = connection.makefile("rb")

        def ask():
            connection.sendall(b"GET /api/messages?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            return read_response(responses)[0]

        self.assertEqual(ask(), 200)
        failures = []
        sent = [0]
        stop = threading.Event()

        def traffic():
            while not stop.is_set():
                sent[0] += 2
                code, _, body = site.post({"author": "reload", "text": "during a reload"})
                if code != 201:
                    failures.append((code, body))
                code, _, body = site.get("/api/messages?limit=1")
                if code != 200:
                    failures.append((code, body))
                time.sleep(0.02)

        thread = threading.Thread(target=traffic)
        thread.start()
        took = []
        try:
            for sequence, text in ((1, original.replace(block, "")), (2, original)):
                with open(site.cluster.site, "w") as f:
                    f.write(text)
                signalled = time.monotonic()
                site.web.signal(signal.SIGHUP)
                done = wait_reload_report(os.path.join(site.cluster.dir, "var"), "web-1", sequence)
                self.assertTrue(done["ok"], done)
                self.assertEqual(len(done["changes"]), 1, done)
                self.assertTrue(done["changes"][0].startswith("db.node: "), done)
                self.assertEqual(done["needs_restart"], [], done)
                took.append(self.wait_read_pool(gone, kept, member=sequence == 2) - signalled)
                self.assertEqual(f'db_node="{gone}"' in site.get("/metrics")[2].decode(), sequence == 2)
        finally:
            stop.set()
            thread.join()
        self.assertEqual(failures, [])
        self.assertEqual(ask(), 200)
        responses.close()
        connection.close()
        print(f"\nreload of [[db.node]]: {gone} out of the read pool {took[0] * 1000:.0f} ms after SIGHUP, back "
              f"{took[1] * 1000:.0f} ms after the next; {sent[0]} requests meanwhile, {len(failures)} failed")

    def scenario(self):
        site = self.site
        # --- post, then read back at once; the page and static files ---------------------------------
        code, headers, body = site.post({"author": "Ann", "text": "<script>alert('x')</script> & \"hi\""})
        self.assertEqual(code, 201, body)
        row = json.loads(body)
        self.assertEqual(row["author"], "Ann")
        self.assertEqual(row["text"], "<script>alert('x')</script> & \"hi\"")  # data, stored as sent
        self.assertEqual(row["web_node"], "web-1")
        self.assertEqual(row["db_node"], self.primary)
        self.assertEqual(headers["X-Db-Node"], self.primary)
        self.assertEqual(headers["X-Served-By"], "web-1")
        self.assertRegex(row["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertIn("HttpOnly", headers["Set-Cookie"])
        cookie = cookie_of(headers)
        self.assertRegex(cookie, r"^fulcrum_lsn=[0-9A-F]+/[0-9A-F]+$")
        code, headers, body = site.get("/api/messages", cookie=cookie)
        self.assertEqual(code, 200, body)
        listing = json.loads(body)
        self.assertEqual(listing["messages"][0], {k: row[k] for k in ("id", "author", "text", "created_at")})
        self.assertEqual(listing["db_node"], headers["X-Db-Node"])
        self.assertIn(listing["db_node"], NODES)
        code, headers, body = site.get("/")
        self.assertEqual(code, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        self.assertIn(b"/api/messages", body)
        self.assertEqual(site.get("/hello.txt")[2], b"static still served\n")

        # --- without pg_read_all_stats no replica can be shown to follow the primary ----------------
        # The agents create the application role without it (for now): the web node then sees only
        # its replicas' WAL receiver pids, sends every read to the primary, and says why.
        member = site.as_postgres(self.primary, "SELECT pg_has_role('site', 'pg_read_all_stats', 'MEMBER')")
        self.assertEqual(member.returncode, 0, member.stderr)
        if member.stdout.strip() == "f":
            for _ in range(4):
                code, headers, body = site.get("/api/messages?limit=1")
                self.assertEqual((code, headers["X-Db-Node"]), (200, self.primary), body)
            self.assertIn("grant it pg_read_all_stats", site.web.output())
            granted = site.as_postgres(self.primary, "GRANT pg_read_all_stats TO site")
            self.assertEqual(granted.returncode, 0, granted.stderr)
        granted_at = time.monotonic()

        # Reads without a token are spread over the replicas once they have caught up.
        served = set()

        def replica_reads():
            c, h, _ = site.get("/api/messages?limit=1")
            served.add(h.get("X-Db-Node"))
            return set(self.replicas) <= served

        wait_until(replica_reads, timeout=10, interval=0.05, what="reads served by both replicas")
        joined = time.monotonic() - granted_at

        # --- a replica that does not stream from the primary serves no reads ------------------------
        detached, other = self.replicas
        conninfo = site.as_postgres(detached, "SHOW primary_conninfo").stdout.strip()
        slot = site.as_postgres(detached, "SHOW primary_slot_name").stdout.strip()
        self.assertIn(f"port={site.cluster.ports[self.primary][0]}", conninfo)

        def reconfigure(conninfo_value, slot_value):
            for sql in (f"ALTER SYSTEM SET primary_conninfo = {sql_literal(conninfo_value)}",
                        f"ALTER SYSTEM SET primary_slot_name = {sql_literal(slot_value)}",
                        "SELECT pg_reload_conf()"):
                done = site.as_postgres(detached, sql)
                self.assertEqual(done.returncode, 0, done.stderr)
            return time.monotonic()

        # (a) Its WAL receiver stopped (primary_conninfo = '').
        changed = reconfigure("", slot)
        left_stopped = self.wait_read_pool(detached, other, member=False) - changed
        self.assertIn(f"db node {detached} serves no reads: its WAL receiver is not streaming", site.web.output())
        self.assertIn(f'db_node="{detached}",role="detached"}} 1', site.get("/metrics")[2].decode())
        changed = reconfigure(conninfo, slot)
        rejoined = self.wait_read_pool(detached, other, member=True) - changed
        # (b) It streams, but from the other replica (cascading): nothing shows it has the primary's
        # history, so it stays out until it follows the primary again.
        cascade = conninfo.replace(f"port={site.cluster.ports[self.primary][0]}",
                                   f"port={site.cluster.ports[other][0]}")
        changed = reconfigure(cascade, "")
        other_port = site.cluster.ports[other][0]
        wait_until(lambda: site.as_postgres(detached, "SELECT status, sender_port FROM pg_stat_wal_receiver")
                   .stdout.strip() == f"streaming|{other_port}", timeout=15, what=f"{detached} streaming from {other}")
        left_cascade = self.wait_read_pool(detached, other, member=False) - changed
        wait_until(lambda: f"db node {detached} serves no reads: it streams from another node than the primary"
                   in site.web.output(), timeout=5, what="the web node naming the other sender")
        self.wait_read_pool(detached, other, member=False)  # still out while it streams from there
        changed = reconfigure(conninfo, slot)
        self.wait_read_pool(detached, other, member=True)

        # --- bad input: JSON errors, never a 500 ----------------------------------------------------
        cases = [
            (site.post(b"{not json"), 400),
            (site.post({"author": "", "text": "x"}), 400),
            (site.post({"author": "a", "text": ""}), 400),
            (site.post({"author": "a" * 65, "text": "x"}), 400),
            (site.post({"author": "a", "text": "x" * 2001}), 400),
            (site.post(b'{"author":"a","text":"\xff\xfe"}'), 400),
            (site.post({"author": "a", "text": "x"}, content_type="text/plain"), 415),
            (site.get("/api/messages?limit=0"), 400),
            (site.get("/api/messages?limit=201"), 400),
            (site.get("/api/messages?limit=abc"), 400),
            (site.get("/api/messages?limit=-1"), 400),
            (http_get(site.url("/api/messages"), method="DELETE"), 405),
            (http_get(site.url("/"), method="POST"), 405),
        ]
        for i, ((code, headers, body), expected) in enumerate(cases):
            self.assertEqual(code, expected, f"case {i}: {body!r}")
            self.assertIn("error", json.loads(body), f"case {i}")
            self.assertEqual(headers["Content-Type"], "application/json")
        # A body over what the route takes (16 KiB for a message, none for the page) is refused by
        # the server from the head, before the guestbook sees it.
        for code, headers, body in [site.post({"author": "a", "text": "x" * 20000}),
                                    http_get(site.url("/"), method="POST", data=b"x")]:
            self.assertEqual(code, 413, body)
            self.assertEqual(headers["Connection"], "close")
        check_body_limit_on_the_head(self, site)
        # A malformed token is ignored, not an error.
        self.assertEqual(site.get("/api/messages", cookie="fulcrum_lsn=garbage")[0], 200)

        # --- limit bounds ------------------------------------------------------------------------
        for i in range(3):
            code, headers, _ = site.post({"author": "Bob", "text": f"note {i}"})
            self.assertEqual(code, 201)
        code, _, body = site.get("/api/messages?limit=1")
        self.assertEqual((code, len(ids_in(body))), (200, 1))
        # With the latest write's token every message so far is visible (an older token may be
        # served by a replica that has not replayed the newest ones yet).
        code, _, body = site.get("/api/messages?limit=200", cookie=cookie_of(headers))
        ids = ids_in(body)
        self.assertEqual(ids, sorted(ids, reverse=True))  # newest first
        self.assertGreaterEqual(len(ids), 5)

        # --- a write that outlives its deadline is cancelled on the server, not left running ---------
        locker = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", os.path.join(pg_bin(), "psql"), "-X", "-q",
             "-h", os.path.join(site.cluster.dir, "var", self.primary, "run"),
             "-p", str(site.cluster.ports[self.primary][0]), "-d", "site",
             "-c", "BEGIN; LOCK TABLE guestbook_messages; SELECT pg_sleep(20); COMMIT;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PGAPPNAME="gb-locker"))

        def stop_locker():
            site.as_postgres(self.primary, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                           "WHERE application_name = 'gb-locker'")
            locker.wait(timeout=10)

        self.addCleanup(stop_locker)
        wait_until(lambda: site.as_postgres(self.primary, "SELECT count(*) FROM pg_stat_activity WHERE "
                                            "application_name = 'gb-locker' AND query LIKE '%pg_sleep%'")
                   .stdout.strip() == "1", timeout=10, what="the table locked")
        started = time.monotonic()
        code, _, body = site.post({"author": "Eve", "text": "waits for a lock"})
        answered = time.monotonic() - started
        self.assertEqual(code, 503, body)
        waiting_sql = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fulcrum-web-1' "
                       "AND wait_event_type = 'Lock'")
        wait_until(lambda: site.as_postgres(self.primary, waiting_sql).stdout.strip() == "0", timeout=5,
                   what="the abandoned INSERT ended on the server")
        ended = time.monotonic() - started
        # Ended by the web node's cancel request, before the session's own statement_timeout (2.5 s).
        pg_log = os.path.join(site.cluster.dir, "var", "logs", self.primary + ".postgresql.log")

        def cancel_logged():
            with open(pg_log, errors="replace") as f:
                return "canceling statement due to user request" in f.read()

        wait_until(cancel_logged, timeout=5, what="the primary logging the cancel")
        stop_locker()
        wait_until(lambda: site.post({"author": "Eve", "text": "after the lock"})[0] == 201, timeout=10,
                   interval=0.1, what="writes again after the lock")

        # --- read-your-writes with both replicas' replay paused ---------------------------------------
        for name in self.replicas:
            paused = site.as_postgres(name, "SELECT pg_wal_replay_pause()")
            self.assertEqual(paused.returncode, 0, paused.stderr)
        self.addCleanup(lambda: [site.as_postgres(n, "SELECT pg_wal_replay_resume()") for n in self.replicas])
        code, headers, body = site.post({"author": "Cid", "text": "must be visible to me"})
        self.assertEqual(code, 201, body)
        mine = json.loads(body)["id"]
        token = cookie_of(headers)
        started = time.monotonic()
        code, headers, body = site.get("/api/messages", cookie=token)
        waited = time.monotonic() - started
        self.assertEqual(code, 200, body)
        self.assertIn(mine, ids_in(body))
        self.assertEqual(headers["X-Db-Node"], self.primary)  # no replica has it: the primary answered
        self.assertLess(waited, 2.0)
        # Many such reads at once: one replay check per replica per tick serves them all.
        checks_before = metric(site, "fulcrum_web_guestbook_replay_checks_total")
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda _: site.get("/api/messages", cookie=token, timeout=10), range(32)))
        checks = metric(site, "fulcrum_web_guestbook_replay_checks_total") - checks_before
        for code, headers, body in answers:
            self.assertEqual(code, 200, body)
            self.assertIn(mine, ids_in(body))
            self.assertEqual(headers["X-Db-Node"], self.primary)
        # Per worker (2) and replica (2), one check per 20 ms tick over the ~300 ms wait, plus the
        # spread of arrivals; a check per waiting read would be about 32 x 15.
        self.assertLessEqual(checks, 120)
        # Without the token, a replica answers, and it does not have the row yet.
        stale = 0
        for _ in range(4):
            code, headers, body = site.get("/api/messages")
            self.assertEqual(code, 200)
            if headers["X-Db-Node"] in self.replicas:
                self.assertNotIn(mine, ids_in(body))
                stale += 1
        self.assertGreater(stale, 0)
        for name in self.replicas:
            self.assertEqual(site.as_postgres(name, "SELECT pg_wal_replay_resume()").returncode, 0)

        # Replay resumed: the token's reads move back to the replicas, with the row.
        def replica_has_it():
            c, h, b = site.get("/api/messages", cookie=token)
            return c == 200 and h["X-Db-Node"] in self.replicas and mine in ids_in(b)

        wait_until(replica_has_it, timeout=10, interval=0.05, what="a replica serving the token's read")

        # --- /metrics ----------------------------------------------------------------------------
        code, _, body = site.get("/metrics")
        text = body.decode()
        self.assertIn(f'fulcrum_web_db_role{{node="web-1",db_node="{self.primary}",role="primary"}} 1', text)
        self.assertIn("fulcrum_web_guestbook_token_primary_reads_total", text)
        self.assertIn("fulcrum_web_db_lag_bytes", text)
        assert_valid_metrics(self, body)
        # The 33 token reads with replay paused each waited, then fell back to the primary; the
        # reads without a token went to replicas.
        self.assertGreaterEqual(metric(site, "fulcrum_web_guestbook_token_waits_total"), 33)
        self.assertGreaterEqual(metric(site, "fulcrum_web_guestbook_token_primary_reads_total"), 33)
        served = {by: int(float(re.search(rf'fulcrum_web_guestbook_reads_served_total\{{node="web-1",by="{by}"\}} (\S+)\n',
                                           text).group(1))) for by in ("primary", "replica")}
        self.assertGreaterEqual(served["primary"], 33)
        self.assertGreaterEqual(served["replica"], stale)
        for name in [self.primary] + list(self.replicas):
            for state in ("in_use", "idle"):
                self.assertRegex(text, rf'fulcrum_web_db_pool_connections\{{node="web-1",db_node="{name}",state="{state}"\}} \d+\n')
            self.assertRegex(text, rf'fulcrum_web_db_pool_waiting\{{node="web-1",db_node="{name}"\}} 0\n')
        # Between requests every pooled connection to the primary is idle again.
        self.assertRegex(text, rf'fulcrum_web_db_pool_connections\{{node="web-1",db_node="{self.primary}",state="in_use"\}} 0\n')
        self.assertRegex(text, r'fulcrum_web_request_duration_seconds_count\{node="web-1",route="guestbook"\} [1-9]\d*\n')

        self.check_db_node_reload()

        # --- a frozen primary: its fence holds, writes follow the new lease holder ----------------
        # The primary's agent freezes, and so does its fence's background worker (which would
        # otherwise stop the server at once): the old primary stays up, out of recovery, and
        # fulcrum.fenced turns on at its lease's fence deadline. It is no primary for the web
        # node; once a replica takes the key, writes go there (before the fence: "2 db nodes
        # claim to be primary", every write refused for the whole freeze).
        old = self.primary
        postmaster = site.cluster.postmaster_pid(old)
        workers = [pid for pid in children_of(postmaster)
                   if b"fulcrum fence" in open(f"/proc/{pid}/cmdline", "rb").read()]
        self.assertEqual(len(workers), 1, "the fence's background worker")
        frozen = [site.cluster.agents[old].proc.pid] + workers

        def thaw():
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass

        self.addCleanup(thaw)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        fenced_role = f'db_node="{old}",role="fenced"}} 1'
        wait_until(lambda: fenced_role in site.get("/metrics")[2].decode(), timeout=15, interval=0.05,
                   what="the frozen primary seen as fenced")
        self.assertIn(f"db node {old} is out of recovery but fenced (fulcrum.fenced is on", site.web.output())

        def written_elsewhere():
            code, headers, body = site.post({"author": "Fay", "text": "while frozen"})
            if code == 201:
                self.assertNotEqual(headers["X-Db-Node"], old)
                return headers["X-Db-Node"]
            self.assertEqual(code, 503, body)
            return None

        moved_to = wait_until(written_elsewhere, timeout=30, interval=0.1, what="writes on the new lease holder")
        self.assertIn(moved_to, self.replicas)
        refused = site.as_postgres(old, "SELECT 1")  # reads still answer there; writes never
        self.assertEqual(refused.returncode, 0, refused.stderr)
        thaw()
        self.primary, self.replicas = site.cluster.wait_roles(self, [old] + self.replicas, timeout=90)
        self.assertEqual(self.primary, moved_to)

        # --- failover: the primary's agent dies (its PostgreSQL stops with it) ---------------------
        acknowledged = [m for m in ids_in(site.get("/api/messages?limit=200", cookie=token)[2])]
        site.cluster.agents[self.primary].proc.kill()
        site.cluster.agents[self.primary].stop()
        killed = time.monotonic()
        wait_until(lambda: processes_mentioning(os.path.join(site.cluster.dir, "var", self.primary)) == [],
                   timeout=15, what="the old primary's PostgreSQL gone")
        refused = 0
        reads_ok = reads_failed = 0
        new_primary = None
        slowest = 0.0
        last_token = token
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            started = time.monotonic()
            code, headers, body = site.post({"author": "Dee", "text": f"during failover {refused}"}, timeout=10)
            slowest = max(slowest, time.monotonic() - started)
            if code == 201:
                acknowledged.append(json.loads(body)["id"])
                new_primary = headers["X-Db-Node"]
                last_token = cookie_of(headers) or last_token
                break
            self.assertEqual(code, 503, body)
            # Whole seconds, at most what is left of the lease's ttl and a promotion (3 s).
            self.assertIn(headers.get("Retry-After"), [str(s) for s in range(1, LEADER_TTL_MS // 1000 + 4)])
            self.assertIn("error", json.loads(body))
            refused += 1
            code, _, _ = site.get("/api/messages?limit=5")
            if code == 200:
                reads_ok += 1
            else:
                reads_failed += 1
            time.sleep(0.1)
        took = time.monotonic() - killed
        self.assertIsNotNone(new_primary, "writes never resumed after the failover")
        self.assertIn(new_primary, self.replicas)
        self.assertLess(slowest, 2.5, "a write during the gap hung")
        self.assertGreater(refused, 0)
        self.assertGreater(reads_ok, reads_failed, "reads did not keep flowing from the replicas")
        # Every acknowledged message is still there.
        code, _, body = site.get("/api/messages?limit=200", cookie=last_token)
        self.assertEqual(code, 200, body)
        missing = set(acknowledged) - set(ids_in(body))
        self.assertEqual(missing, set())
        # SIGTERM: the web node drains and exits 0 (under ASan: with no leak reported).
        self.assertEqual(site.web.stop(timeout=20), 0, site.web.output()[-3000:])
        if os.environ.get("FULCRUM_TEST_LOGS"):
            print(site.logs())
        print(f"\nfailover: writes resumed on {new_primary} {took * 1000:.0f} ms after the primary's agent died; "
              f"{refused} writes refused (slowest answer {slowest * 1000:.0f} ms), reads {reads_ok} ok / "
              f"{reads_failed} failed meanwhile; token read waited {waited * 1000:.0f} ms")
        print(f"read pool: replicas serving {joined * 1000:.0f} ms after the grant; a replica left it "
              f"{left_stopped * 1000:.0f} ms after its WAL receiver was stopped and {left_cascade * 1000:.0f} ms "
              f"after it was pointed at the other replica, and was back {rejoined * 1000:.0f} ms after it followed "
              f"the primary again; 32 waiting token reads cost {checks} replay checks; a write stuck on a lock "
              f"answered 503 after {answered * 1000:.0f} ms and its statement ended on the server after "
              f"{ended * 1000:.0f} ms")


if __name__ == "__main__":
    unittest.main()


class GuestbookStartupTest(unittest.TestCase):
    """No database needed: a guestbook web node that has not heard from its database nodes yet."""

    def test_healthz_is_503_until_the_database_nodes_are_heard_from(self):
        tmp = TempDir()
        self.addCleanup(tmp.cleanup)
        web_port = free_port()
        tmp.write("www/hello.txt", "static\n")
        # No password file in state_dir (as before the cluster's bootstrap): the router cannot
        # probe the node, and is ready only once its bound (3 s) has passed.
        site = tmp.write("site.toml", '[site]\nname = "gb-start"\nstate_dir = "var"\n'
                         '[web]\ndocroot = "www"\napp = "guestbook"\n'
                         f'[[web.node]]\nname = "web-1"\nlisten = "127.0.0.1:{web_port}"\nthreads = 2\n'
                         f'[db]\n[[db.node]]\nname = "db-1"\npg = "127.0.0.1:{free_port()}"\n'
                         f'agent = "127.0.0.1:{free_port()}"\n')
        web = Process([FULCRUM, "web", "--site", site, "--node", "web-1"], os.path.join(tmp.path, "web.log"))
        self.addCleanup(web.stop)
        url = f"http://127.0.0.1:{web_port}"
        started = time.monotonic()
        first = wait_until(lambda: http_get(url + "/healthz", timeout=2), timeout=10, what="a first /healthz answer")
        self.assertEqual(first[0], 503, first)
        self.assertIn(b"starting", first[2])
        self.assertEqual(first[1].get("Retry-After"), "1")
        self.assertEqual(http_get(url + "/hello.txt", timeout=2)[0], 200)  # static files meanwhile
        wait_until(lambda: http_get(url + "/healthz", timeout=2)[0] == 200, timeout=10, what="/healthz 200")
        self.assertGreaterEqual(time.monotonic() - started, 2.5)
