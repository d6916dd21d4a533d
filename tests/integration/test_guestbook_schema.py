"""The guestbook's schema statement (src/web/guestbook_model.h kSchemaSql), which every web node
and worker runs at start, against a real standalone PostgreSQL: several sessions running it at
the same instant all succeed and leave no ERROR in PostgreSQL's log (two bare CREATE TABLE IF NOT
EXISTS at once fail one of them on pg_type's unique index). A barrier inside PostgreSQL (sessions
waiting on an advisory lock the test holds) starts them together. Then two `fulcrum web` nodes
of two workers each start at once on an empty database and both become ready, again with no
ERROR in the log."""
import os
import pwd
import re
import shutil
import subprocess
import unittest

from harness import FULCRUM, Process, TempDir, free_port, http_get, needs, wait_until
from test_db import pg_bin

SOURCE_DIR = os.environ.get("FULCRUM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
CREATORS = 4
ROUNDS = 3
BARRIER_KEY = 424242  # not the schema's own key


def missing():
    if pg_bin() is None:
        return "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user"
    return None


def schema_sql():
    """kSchemaSql as the web node sends it: the C++ string literals of the header, joined."""
    with open(os.path.join(SOURCE_DIR, "src", "web", "guestbook_model.h")) as f:
        header = f.read()
    found = re.search(r"kSchemaSql =\s*((?:\"(?:[^\"\\]|\\.)*\"\s*)+);", header)
    assert found, "kSchemaSql not found in guestbook_model.h"
    return "".join(bytes(p, "utf-8").decode("unicode_escape") for p in re.findall(r"\"((?:[^\"\\]|\\.)*)\"",
                                                                                   found.group(1)))


@needs(missing())
class GuestbookSchemaTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)
        os.chmod(self.tmp.path, 0o755)  # the postgres user reaches its directories inside
        self.data = os.path.join(self.tmp.path, "pg")
        self.sockets = os.path.join(self.tmp.path, "run")
        for path in (self.data, self.sockets):
            os.makedirs(path)
            shutil.chown(path, "postgres", "postgres")
            os.chmod(path, 0o700)
        self.log = os.path.join(self.sockets, "postgresql.log")
        self.port = free_port()
        self.as_postgres(os.path.join(pg_bin(), "initdb"), "-D", self.data, "--no-sync", "-A", "trust")
        self.addCleanup(self.stop)
        self.as_postgres(os.path.join(pg_bin(), "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-o",
                         f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pg_bin(), "pg_ctl"), "-D", self.data, "-m",
                        "immediate", "-w", "stop"], capture_output=True, timeout=60)

    def as_postgres(self, *args):
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, text=True,
                              timeout=120).stdout

    def psql_args(self, *sql, database="postgres"):
        args = ["runuser", "-u", "postgres", "--", os.path.join(pg_bin(), "psql"), "-X", "-A", "-t", "-q", "-v",
                "ON_ERROR_STOP=1", "-h", self.sockets, "-p", str(self.port), "-d", database]
        for statement in sql:
            args += ["-c", statement]
        return args

    def sql(self, statement, database="postgres"):
        return subprocess.run(self.psql_args(statement, database=database), check=True, capture_output=True, text=True,
                              timeout=30).stdout.strip()

    def test_concurrent_creators_all_succeed_without_an_error_in_the_log(self):
        statement = schema_sql()
        self.assertIn("CREATE TABLE IF NOT EXISTS guestbook_messages", statement)
        waiting = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                   f"AND objid = {BARRIER_KEY}")
        for _ in range(ROUNDS):
            self.sql("DROP TABLE IF EXISTS guestbook_messages")
            # The barrier: a session holding the lock until every creator waits for it.
            holder = subprocess.Popen(self.psql_args(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, text=True)
            creators = []
            try:
                holder.stdin.write(f"SELECT pg_advisory_lock({BARRIER_KEY});\n")
                holder.stdin.flush()
                wait_until(lambda: self.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                            f"AND objid = {BARRIER_KEY}") == "1", timeout=10, what="the barrier")
                creators = [subprocess.Popen(self.psql_args(f"SELECT pg_advisory_lock_shared({BARRIER_KEY})", statement),
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                            for _ in range(CREATORS)]
                wait_until(lambda: self.sql(waiting) == str(CREATORS), timeout=10, what="every creator at the barrier")
                holder.stdin.write(f"SELECT pg_advisory_unlock({BARRIER_KEY});\n")
                holder.stdin.close()
                for c in creators:
                    _, err = c.communicate(timeout=30)
                    self.assertEqual(c.returncode, 0, err)
            finally:
                for p in creators + [holder]:
                    if p.poll() is None:
                        p.kill()
                    p.wait(timeout=10)
            self.assertEqual(self.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'guestbook_messages'"), "1")
        self.assert_no_error()

        # The web nodes' own path (libpq's extended protocol), four creators at once.
        self.sql("CREATE ROLE site LOGIN PASSWORD 'secret'")
        self.sql("CREATE DATABASE site OWNER site")
        self.tmp.write("var/db.password", "secret\n")
        self.tmp.write("www/hello.txt", "hello\n")
        ports = {"web-1": free_port(), "web-2": free_port()}
        text = ('[site]\nname = "gb-schema"\nstate_dir = "var"\n[web]\ndocroot = "www"\napp = "guestbook"\n'
                f'[db]\n[[db.node]]\nname = "db-1"\npg = "127.0.0.1:{self.port}"\nagent = "127.0.0.1:{free_port()}"\n')
        for name, port in ports.items():
            text += f'[[web.node]]\nname = "{name}"\nlisten = "127.0.0.1:{port}"\nthreads = 2\n'
        site = self.tmp.write("site.toml", text)
        for name in ports:
            web = Process([FULCRUM, "web", "--site", site, "--node", name], os.path.join(self.tmp.path, name + ".log"))
            self.addCleanup(web.stop)
        for name, port in ports.items():
            # Ready means the schema is in place.
            wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz", timeout=2)[0] == 200, timeout=15,
                       what=f"{name} ready")
            self.assertEqual(http_get(f"http://127.0.0.1:{port}/api/messages", timeout=2)[0], 200)
        self.assertEqual(self.sql("SELECT count(*) FROM guestbook_messages", database="site"), "0")
        self.assert_no_error()

    def assert_no_error(self):
        with open(self.log) as f:
            log = f.read()
        self.assertNotIn("duplicate key", log)
        self.assertNotIn("ERROR", log)


if __name__ == "__main__":
    unittest.main()
