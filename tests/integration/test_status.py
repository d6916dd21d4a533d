"""`fulcrum status` against nodes that answer badly (issue 21): fields of the wrong type, escape
sequences and newlines in what they say, garbage instead of JSON. Each costs its own row (down or
unhealthy, with why), never the report, and nothing a node says reaches the terminal raw."""
import json
import os
import subprocess
import unittest

from harness import FULCRUM, TempDir, ThreadedServer, free_port


def answering(bodies):
    """A server answering GET PATH with bodies[PATH] (200, JSON or text), 404 otherwise."""
    def handler(conn, server):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        path = data.split(b" ", 2)[1].decode().split("?")[0]
        body = bodies.get(path)
        status = b"200 OK" if body is not None else b"404 Not Found"
        body = (body or "").encode()
        conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: " +
                     str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    return handler


class HostileStatusTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)

    def serve(self, bodies):
        server = ThreadedServer(answering(bodies))
        self.addCleanup(server.stop)
        return server.port

    def test_wrong_types_and_escape_codes_cost_one_row_not_the_report(self):
        agent = self.serve({"/status": json.dumps({"role": 1, "timeline": "two", "lease": [],
                                                   "backup": {"archive": {"ok": "no", "ready_segments": -1}}})})
        stats = self.serve({"/api/state": json.dumps({"servers": [{"health": 5}, "x"],
                                                      "totals": {"requests": "many"}})})
        web = self.serve({"/metrics": "fulcrum_web_requests_total \x1b[2J\x1b]0;pwned\x07 12\nnot a metric"})
        etcd = self.serve({"/health": "\x1b[31mred\x1b[0m\nsecond line"})
        path = self.tmp.write("site.toml", f"""[site]
name = "hostile"
state_dir = "var"
[[lb.node]]
name = "lb-1"
http = "127.0.0.1:{free_port()}"
stats = "127.0.0.1:{stats}"
[web]
app = "none"
docroot = "."
[[web.node]]
name = "web-1"
listen = "127.0.0.1:{web}"
[[db.node]]
name = "db-1"
pg = "127.0.0.1:{free_port()}"
agent = "127.0.0.1:{agent}"
[etcd]
endpoints = ["127.0.0.1:{etcd}"]
""")
        table = subprocess.run([FULCRUM, "status", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(table.returncode, 1, table.stderr)  # unhealthy, not a crash (134)
        self.assertNotIn("\x1b", table.stdout)
        self.assertNotIn("\x07", table.stdout)
        lines = table.stdout.splitlines()
        self.assertEqual(len(lines), 6, table.stdout)  # the database line, the header and one line per node
        self.assertEqual(lines[0], "database: no agent answered with the cluster's state")
        self.assertTrue(lines[1].startswith("ROLE"))
        rows = {line.split()[1]: line for line in lines[2:]}
        self.assertIn("unknown", rows["db-1"])
        self.assertIn("0/2 servers up", rows["lb-1"])
        as_json = subprocess.run([FULCRUM, "status", "--site", path, "--json"], capture_output=True, text=True,
                                 timeout=60)
        self.assertEqual(as_json.returncode, 1, as_json.stderr)
        by_name = {row["name"]: row for row in json.loads(as_json.stdout)}
        self.assertEqual(set(by_name), {"etcd", "db-1", "web-1", "lb-1"})
        self.assertFalse(by_name["db-1"]["healthy"])
        self.assertTrue(by_name["db-1"]["state"] == "up")


if __name__ == "__main__":
    unittest.main()
