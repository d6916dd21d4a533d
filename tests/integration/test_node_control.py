"""`fulcrum stop|start|restart NODE` under a running `fulcrum up` (its control socket,
state_dir/up.sock): a stopped database primary stays down while the other node takes over, `status`
shows it stopped on purpose, `start` brings it back as a replica, `restart` cycles a web node; and
what goes wrong says so: an unknown node, no `up` running, garbage on the socket. Waits are bounded
polls; everything is removed even when the test fails. Skipped when etcd, PostgreSQL or root is
missing."""
import json
import os
import signal
import socket
import stat
import subprocess
import time
import unittest

from harness import FULCRUM, http_get, needs, wait_until
from test_db import missing_requirement
from test_up import Site


def fulcrum(*args, timeout=120):
    return subprocess.run([FULCRUM, *args], capture_output=True, text=True, timeout=timeout)


def ask(path, payload, timeout=10):
    """Writes `payload` to up's control socket and returns what it answers before closing."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(payload)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return out
            out += chunk


@needs(missing_requirement())
class NodeControlTest(unittest.TestCase):
    def listed(self, site):
        answer = json.loads(ask(site.socket, b'{"op":"list"}\n'))
        self.assertTrue(answer["ok"], answer)
        return {n["name"]: n for n in answer["nodes"]}

    def test_stop_keeps_a_node_down_through_a_failover_until_start(self):
        site = Site()
        self.addCleanup(site.cleanup)
        site.start(self)
        site.socket = os.path.join(site.dir, "var", "up.sock")
        self.assertTrue(stat.S_ISSOCK(os.stat(site.socket).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(site.socket).st_mode), 0o600)
        # A client that connects and says nothing is closed by `up` after its timeout (checked at the end).
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(stalled.close)
        stalled.connect(site.socket)
        stalled.sendall(b'{"op":')

        # What goes wrong says so, and `up` lives on.
        run = fulcrum("stop", site.file, "db-9")
        self.assertEqual(run.returncode, 2, run)
        self.assertIn("no node named 'db-9'", run.stderr)
        self.assertIn("db-1, db-2", run.stderr)
        for garbage in (b"\x00\xff garbage\n", b"stop db-1\n", b'{"op":"stop"}\n', b"x" * 10000):
            answer = json.loads(ask(site.socket, garbage))
            self.assertFalse(answer["ok"], answer)
            self.assertTrue(answer["error"].startswith("bad request: ") or "longer than" in answer["error"], answer)
        nodes = self.listed(site)
        self.assertEqual(sorted(nodes), sorted(["etcd", "db-1", "db-2", "web-1", "web-2", "lb-1"]))
        self.assertTrue(all(n["state"] == "running" and n["pid"] for n in nodes.values()), nodes)

        # Stop the primary: it exits and stays down; the other node takes over with `up` running.
        primary = wait_until(site.primary, timeout=30, what="a primary")
        other = next(n for n in ("db-1", "db-2") if n != primary)
        old_pid = site.pid_of(primary)
        run = fulcrum("stop", site.file, primary)
        self.assertEqual(run.returncode, 0, run)
        self.assertIn(f"stopped {primary} (pid {old_pid}", run.stdout)
        self.assertIn(f"kept down until `fulcrum start {primary}`", run.stdout)
        self.assertIsNone(site.pid_of(primary))
        self.assertIn(f"{primary} stopped by operator (fulcrum stop)", site.up.output())
        wait_until(lambda: site.primary() == other, timeout=30, what=f"{other} to take over")

        # Down on purpose: not restarted within a window several restart delays (0.5 s) long, even
        # after a SIGHUP reload of `up`.
        site.up.signal(signal.SIGHUP)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            node = self.listed(site)[primary]
            self.assertEqual((node["state"], node["pid"]), ("stopped", None), node)
            self.assertIsNone(site.pid_of(primary))
            time.sleep(0.2)
        run = fulcrum("stop", site.file, primary)
        self.assertEqual(run.returncode, 0, run)
        self.assertIn(f"{primary} is already stopped (by an operator at ", run.stdout)

        # status: `stopped` (not `down`), and not a failure once the other node is primary.
        def stopped_and_healthy():
            code, rows = site.status()
            row = next(r for r in rows if r["name"] == primary)
            return rows if code == 0 and row["state"] == "stopped" else None

        rows = wait_until(stopped_and_healthy, timeout=30, interval=0.5, what="status: stopped, exit 0")
        row = next(r for r in rows if r["name"] == primary)
        self.assertIn("stopped by operator at ", row["health"])
        self.assertIsInstance(row["stopped_at"], float)
        table = fulcrum("status", site.file)
        self.assertRegex(table.stdout, rf"db +{primary} +127\.0\.0\.1:\d+ +stopped ")

        # start: returns once it answers its probe; it rejoins as a replica of the new primary.
        run = fulcrum("start", site.file, primary)
        self.assertEqual(run.returncode, 0, run)
        self.assertRegex(run.stdout, rf"started {primary} \(pid \d+\): answers http://")
        self.assertEqual(self.listed(site)[primary]["state"], "running")
        self.assertIn(f"{primary} started by operator (fulcrum start)", site.up.output())
        wait_until(lambda: any(r["name"] == primary and r["health"].startswith("replica")
                               for r in site.status()[1]), timeout=60, interval=0.5, what=f"{primary} a replica")
        self.assertEqual(site.primary(), other)

        # restart of a web node: a new process, serving again when the command returns.
        old_web = site.pid_of("web-1")
        run = fulcrum("restart", "--site", site.file, "web-1")
        self.assertEqual(run.returncode, 0, run)
        self.assertIn(f"stopped web-1 (pid {old_web}", run.stdout)
        self.assertIn("started web-1 (pid", run.stdout)
        self.assertNotIn(site.pid_of("web-1"), (None, old_web))
        self.assertEqual(http_get(f"http://127.0.0.1:{site.web['web-1']}/healthz", timeout=2)[0], 200)
        run = fulcrum("start", site.file, "web-1")
        self.assertEqual(run.returncode, 0, run)
        self.assertIn("web-1 is already running", run.stdout)

        # The stalled client was closed long ago (5 s); `up` is still there.
        stalled.settimeout(5)
        self.assertEqual(stalled.recv(4096), b"")
        self.assertTrue(site.up.alive())

        # With no `up`: a clear message, exit 1; the socket is gone with it.
        site.stop(self)
        self.assertFalse(os.path.exists(site.socket))
        run = fulcrum("stop", site.file, "web-1")
        self.assertEqual(run.returncode, 1, run)
        self.assertIn("no `fulcrum up` runs site uptest here", run.stderr)


if __name__ == "__main__":
    unittest.main()
