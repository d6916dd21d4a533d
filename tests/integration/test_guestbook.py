"""The guestbook in `fulcrum web` against a real three-node database (etcd, three `fulcrum db`
agents, each with its PostgreSQL): posting and reading back, read-your-writes with the replicas'
replay paused, bad input, and a failover of the primary. Reuses test_db's Cluster; the web node
reads the same site file, extended with [web]. Skipped when etcd or PostgreSQL is missing."""
import json
import os
import signal
import subprocess
import time
import unittest
import urllib.parse

from harness import FULCRUM, Process, TempDir, free_port, http_get, wait_until, needs
from test_db import NODES, Cluster, missing_requirement, pg_bin, processes_mentioning


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
        return f"http://127.0.0.1:{self.web_port}{path}"

    def get(self, path, cookie=None, timeout=5):
        headers = {"Cookie": cookie} if cookie else {}
        return http_get(self.url(path), headers=headers, timeout=timeout)

    def post(self, body, content_type="application/json", timeout=5):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http_get(self.url("/api/messages"), method="POST", data=data,
                        headers={"Content-Type": content_type}, timeout=timeout)

    def as_postgres(self, name, sql):
        """psql as the superuser over the node's private socket (peer authentication)."""
        run_dir = os.path.join(self.cluster.dir, "var", name, "run")
        return subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pg_bin(), "psql"), "-X", "-A", "-t",
                               "-h", run_dir, "-p", str(self.cluster.ports[name][0]), "-d", "postgres", "-c", sql],
                              capture_output=True, text=True, timeout=10)

    def logs(self):
        web = self.web.output()[-4000:] if self.web else ""
        return f"--- web-1 ---\n{web}\n{self.cluster.logs()}"

    def cleanup(self):
        if self.web is not None:
            self.web.stop(timeout=15)
        self.cluster.cleanup()


def cookie_of(headers):
    value = headers.get("Set-Cookie", "")
    return value.split(";", 1)[0] if value.startswith("fulcrum_lsn=") else None


def ids_in(body):
    return [m["id"] for m in json.loads(body)["messages"]]


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

        # Reads without a token are spread over the replicas once they have caught up.
        served = set()

        def replica_reads():
            c, h, _ = site.get("/api/messages?limit=1")
            served.add(h.get("X-Db-Node"))
            return set(self.replicas) <= served

        wait_until(replica_reads, timeout=10, interval=0.05, what="reads served by both replicas")

        # --- bad input: JSON errors, never a 500 ----------------------------------------------------
        cases = [
            (site.post(b"{not json"), 400),
            (site.post({"author": "", "text": "x"}), 400),
            (site.post({"author": "a", "text": ""}), 400),
            (site.post({"author": "a" * 65, "text": "x"}), 400),
            (site.post({"author": "a", "text": "x" * 2001}), 400),
            (site.post(b'{"author":"a","text":"\xff\xfe"}'), 400),
            (site.post({"author": "a", "text": "x" * 20000}), 413),
            (site.post({"author": "a", "text": "x"}, content_type="text/plain"), 415),
            (site.get("/api/messages?limit=0"), 400),
            (site.get("/api/messages?limit=201"), 400),
            (site.get("/api/messages?limit=abc"), 400),
            (site.get("/api/messages?limit=-1"), 400),
            (http_get(site.url("/api/messages"), method="DELETE"), 405),
            (http_get(site.url("/"), method="POST", data=b"x"), 405),
        ]
        for i, ((code, headers, body), expected) in enumerate(cases):
            self.assertEqual(code, expected, f"case {i}: {body!r}")
            self.assertIn("error", json.loads(body), f"case {i}")
            self.assertEqual(headers["Content-Type"], "application/json")
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
            self.assertEqual(headers.get("Retry-After"), "1")
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
