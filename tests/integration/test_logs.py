"""Logs an operator can live with: access lines in their own file (text, JSON or off), never in
the event log; every log file reopened on SIGUSR1 (logrotate); under `up`, the per-node files
rotated by size and PostgreSQL's own log kept apart from its agent's."""
import json
import os
import re
import signal
import unittest

from harness import FULCRUM, Process, TempDir, free_port, http_get, needs, wait_until
from test_db import missing_requirement
from test_lb import LbTestCase, Server
from test_up import Site


def lines_of(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


class LbAccessLogTest(LbTestCase):
    def start(self, backend, **lb_keys):
        return self.start_lb([Server("py", backend.port)], lb_keys=lb_keys)

    def test_text_lines_in_their_own_file_with_every_field(self):
        backend = self.py_backend("py")
        path = os.path.join(self.tmp.path, "lb-access.log")
        lb = self.start(backend, access_log="text", access_log_file=path)
        self.assertEqual(http_get(f"http://127.0.0.1:{lb.port}/echo?q=1&x=%20y")[0], 200)
        line = wait_until(lambda: [l for l in lines_of(path) if "path=/echo" in l], what="the access line")[0]
        self.assertRegex(line, r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[lb-t\] access client=127\.0\.0\.1:\d+ method=GET "
                               r"path=/echo\?q=1&x=%20y status=200 bytes=\d+ server=py retries=0 connect_ms=[\d.]+ "
                               r"server_ms=[\d.]+ response_ms=[\d.]+ total_ms=[\d.]+ term=done version=HTTP/1\.1 "
                               r"queue_ms=[\d.]+$")
        self.assertNotIn(" access ", lb.output())  # the event log holds events only

    def test_json_lines_parse_and_off_writes_nothing(self):
        backend = self.py_backend("py")
        path = os.path.join(self.tmp.path, "lb-access.json")
        lb = self.start(backend, access_log="json", access_log_file=path)
        self.assertEqual(http_get(f"http://127.0.0.1:{lb.port}/echo?a=b")[0], 200)
        line = wait_until(lambda: [l for l in lines_of(path) if "/echo" in l], what="the JSON access line")[0]
        entry = json.loads(line)
        self.assertEqual(entry["event"], "access")
        self.assertEqual(entry["node"], "lb-t")
        self.assertEqual(entry["path"], "/echo?a=b")
        self.assertEqual(entry["status"], 200)
        self.assertEqual(entry["server"], "py")
        self.assertEqual(entry["term"], "done")
        for key in ("client", "method", "bytes", "retries", "connect_ms", "server_ms", "response_ms", "total_ms",
                    "version", "queue_ms", "ts"):
            self.assertIn(key, entry)

        off_path = os.path.join(self.tmp.path, "off-access.log")
        off = self.start_lb([Server("py", backend.port)], name="off",
                            lb_keys={"access_log": "off", "access_log_file": off_path})
        self.assertEqual(http_get(f"http://127.0.0.1:{off.port}/echo")[0], 200)
        self.assertEqual(http_get(f"http://127.0.0.1:{lb.port}/echo?after=1")[0], 200)
        # The access line of the later request through the other lb is written: this one's would be by now.
        wait_until(lambda: any("after=1" in l for l in lines_of(path)), what="the later access line")
        self.assertFalse(os.path.exists(off_path))
        self.assertNotIn(" access client=", off.output())

    def test_sigusr1_reopens_the_file_after_logrotate_moved_it(self):
        backend = self.py_backend("py")
        path = os.path.join(self.tmp.path, "rotated.log")
        lb = self.start(backend, access_log_file=path)
        for i in range(5):
            self.assertEqual(http_get(f"http://127.0.0.1:{lb.port}/echo?before={i}")[0], 200)
        wait_until(lambda: len(lines_of(path)) == 5, what="five access lines")
        os.rename(path, path + ".1")
        lb.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(path), what="a new file at the path")
        for i in range(5):
            self.assertEqual(http_get(f"http://127.0.0.1:{lb.port}/echo?after={i}")[0], 200)
        wait_until(lambda: len(lines_of(path)) == 5, what="five access lines in the new file")
        self.assertEqual(len(lines_of(path + ".1")), 5)
        self.assertTrue(all("after=" in l for l in lines_of(path)))
        self.assertTrue(all("before=" in l for l in lines_of(path + ".1")))


class WebAccessLogTest(unittest.TestCase):
    def test_flags_json_and_sigusr1(self):
        tmp_dir = TempDir()
        self.addCleanup(tmp_dir.cleanup)
        tmp = tmp_dir.path
        port = free_port()
        os.makedirs(os.path.join(tmp, "www"))
        with open(os.path.join(tmp, "www", "a.txt"), "w") as f:
            f.write("a\n")
        site = os.path.join(tmp, "site.toml")
        with open(site, "w") as f:
            f.write(f'[site]\nname = "t"\nstate_dir = "var"\n[web]\ndocroot = "www"\napp = "none"\n'
                    f'[[web.node]]\nname = "web-l"\nlisten = "127.0.0.1:{port}"\nthreads = 1\n')
        access = os.path.join(tmp, "web-access.log")
        events = os.path.join(tmp, "web-events.log")
        proc = Process([FULCRUM, "--log-file", events, "web", "--site", site, "--node", "web-l", "--access-log",
                        access, "--access-log-format", "json"], os.path.join(tmp, "web.out"))
        self.addCleanup(proc.stop)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(base + "/healthz")[0] == 200, what="the web node")
        self.assertEqual(http_get(base + "/a.txt?v=7")[0], 200)
        entry = wait_until(lambda: [json.loads(l) for l in lines_of(access) if "a.txt" in l], what="access")[0]
        self.assertEqual((entry["path"], entry["status"], entry["node"]), ("/a.txt?v=7", 200, "web-l"))
        wait_until(lambda: any("web-l" in l for l in lines_of(events)), what="events in --log-file")
        self.assertFalse(any("access" in l for l in lines_of(events)))

        os.rename(access, access + ".1")
        os.rename(events, events + ".1")
        proc.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(access) and os.path.exists(events), what="both files reopened")
        self.assertEqual(http_get(base + "/a.txt?v=8")[0], 200)
        wait_until(lambda: any("v=8" in l for l in lines_of(access)), what="the next line in the new file")
        self.assertFalse(any("v=8" in l for l in lines_of(access + ".1")))


@needs(missing_requirement())
class UpLogsTest(unittest.TestCase):
    def test_rotation_reopen_and_the_postgresql_log(self):
        site = Site(app="guestbook")
        self.addCleanup(site.cleanup)
        with open(site.file) as f:
            text = f.read()
        with open(site.file, "w") as f:
            f.write(text.replace('state_dir = "var"\n', 'state_dir = "var"\nlog_max_bytes = 4096\nlog_keep = 2\n', 1))
        site.start(self, args=("--log-level", "debug"))
        logs = os.path.join(site.dir, "var", "logs")
        url = f"http://127.0.0.1:{site.lb_http}/"
        # The lb's access lines (~250 bytes) in its own file, rotated by the lb past 4 KiB.
        for i in range(40):
            self.assertEqual(http_get(f"{url}?n={i}")[0], 200)
        access = os.path.join(logs, "lb-1.access.log")
        wait_until(lambda: os.path.exists(access + ".1"), what="lb-1.access.log rotated")
        self.assertFalse(os.path.exists(access + ".3"))  # log_keep = 2
        self.assertFalse(any(" access " in l for l in lines_of(os.path.join(logs, "lb-1.log"))))
        # At debug, the nodes' event logs pass 4 KiB within seconds: `up` rotated them, never mid-line.
        names = ["lb-1", "web-1", "web-2", "db-1", "db-2", "etcd"]
        rotated = wait_until(lambda: [n for n in names if os.path.exists(os.path.join(logs, f"{n}.log.1"))],
                             timeout=30, what="a node's log rotated by up")
        for name in rotated:
            base = os.path.join(logs, f"{name}.log")
            self.assertLessEqual(os.path.getsize(base + ".1"), 4096 + 64 * 1024)
            self.assertFalse(os.path.exists(base + ".3"))
            for path in (base, base + ".1"):
                for line in lines_of(path)[:1]:
                    self.assertRegex(line, r"^(\d{4}-\d\d-\d\dT|\{|----)", path)
        # PostgreSQL's own log next to its agent's, and none of it in the agent's.
        pg_log = os.path.join(logs, "db-1.postgresql.log")
        wait_until(lambda: any("ready to accept" in l for l in lines_of(pg_log)), what="PostgreSQL's log")
        agent = [l for name in os.listdir(logs) if name.startswith("db-1.log") for l in lines_of(os.path.join(logs, name))]
        self.assertFalse(any("ready to accept" in l for l in agent))
        self.assertTrue(any("PostgreSQL's own log: " + pg_log in l for l in agent))
        # A WARNING the server sends the web node's connection: one pg_notice event at debug, not
        # libpq's raw line.
        primary = wait_until(site.primary, timeout=30, what="a primary")
        wait_until(lambda: http_get(f"http://127.0.0.1:{site.lb_http}/api/messages")[0] == 200, timeout=30,
                   what="the guestbook")
        made = site.psql(primary, "CREATE FUNCTION warn_test() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                                  "RAISE WARNING 'seen by the test'; RETURN NEW; END $$; CREATE TRIGGER warn_test "
                                  "AFTER INSERT ON guestbook_messages FOR EACH ROW EXECUTE FUNCTION warn_test();")
        self.assertEqual(made.returncode, 0, made.stderr)
        posted = http_get(f"http://127.0.0.1:{site.lb_http}/api/messages", method="POST",
                          data=json.dumps({"author": "logs", "text": "hi"}).encode(),
                          headers={"Content-Type": "application/json"})
        self.assertEqual(posted[0], 201)

        def notice_lines():
            return [l for n in ("web-1", "web-2") for f in os.listdir(logs) if f.startswith(f"{n}.log")
                    for l in lines_of(os.path.join(logs, f)) if "seen by the test" in l]
        found = wait_until(notice_lines, what="the pg_notice event")
        self.assertRegex(found[0], r" debug \[web-\d\] pg_notice node=db-\d severity=WARNING sqlstate=01000 "
                                   r"message=\"seen by the test\"$")
        # SIGUSR1 to `up`: its files and its nodes' files are reopened after a move.
        os.rename(access, access + ".moved")
        web_log = os.path.join(logs, "web-1.log")
        os.rename(web_log, web_log + ".moved")
        site.up.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(web_log), what="web-1.log reopened by up")
        wait_until(lambda: os.path.exists(access), what="lb-1.access.log reopened by the lb")
        self.assertEqual(http_get(f"{url}?after=1")[0], 200)
        wait_until(lambda: any("after=1" in l for l in lines_of(access)), what="the next access line in the new file")
        site.stop(self)


if __name__ == "__main__":
    unittest.main()
