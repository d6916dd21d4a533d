"""`fulcrum up` and `fulcrum status` end to end: a whole small site (managed etcd, two database
agents with real PostgreSQL, two web nodes, one load balancer) under one `up`, in a temporary
directory the postgres user can traverse. Waits are bounded polls; every process and directory
is removed even when a test fails. Skipped when etcd, PostgreSQL or root is missing."""
import json
import os
import signal
import ssl
import subprocess
import tempfile
import unittest

from harness import FULCRUM, Process, free_port, http_get, wait_reload_report, wait_until, needs
from test_db import Cluster, missing_requirement, processes_mentioning

WEB = ["web-1", "web-2"]
DB = ["db-1", "db-2"]


class Site:
    """A site file, its `up` process and the state it leaves in its temporary directory."""

    def __init__(self, extra_lb="", app="none", extra_db="", extra="", etcd_members=1, leader_ttl_ms=3000):
        self.dir = tempfile.mkdtemp(prefix="fulcrum-up-", dir="/tmp")
        os.chmod(self.dir, 0o755)  # the postgres user must traverse it
        self.lb_http, self.lb_stats = free_port(), free_port()
        self.etcd_ports = [free_port() for _ in range(etcd_members)]
        self.web = {name: free_port() for name in WEB}
        self.ports = {name: (free_port(), free_port()) for name in DB}
        text = (f'[site]\nname = "uptest"\nstate_dir = "var"\n'
                f'[lb.health]\ninterval_ms = 200\ntimeout_ms = 500\nrise = 1\nfall = 2\n'
                f'[[lb.node]]\nname = "lb-1"\nhttp = "127.0.0.1:{self.lb_http}"\n'
                f'stats = "127.0.0.1:{self.lb_stats}"\nthreads = 1\n{extra_lb}'
                f'[web]\ndocroot = "www"\napp = "{app}"\n')
        for name, port in self.web.items():
            text += f'[[web.node]]\nname = "{name}"\nlisten = "127.0.0.1:{port}"\nthreads = 1\n'
        text += f"[db]\nleader_ttl_ms = {leader_ttl_ms}\n{extra_db}"
        for name, (pg, agent) in self.ports.items():
            text += f'[[db.node]]\nname = "{name}"\npg = "127.0.0.1:{pg}"\nagent = "127.0.0.1:{agent}"\n'
        endpoints = ", ".join(f'"127.0.0.1:{port}"' for port in self.etcd_ports)
        text += f'[etcd]\nendpoints = [{endpoints}]\nmanaged = true\n{extra}'
        os.makedirs(os.path.join(self.dir, "www"))
        with open(os.path.join(self.dir, "www", "index.html"), "w") as f:
            f.write("hello from up\n")
        self.file = os.path.join(self.dir, "site.toml")
        with open(self.file, "w") as f:
            f.write(text)
        self.up = None
        self.runs = 0
        self.agents = {}  # every `up` run, for cleanup
        self.etcd = None  # `up` runs it

    def start(self, test, timeout=150, args=()):
        """Runs `up` (with `args`) and waits for its "is up" line."""
        self.runs += 1
        self.up = Process([FULCRUM, "up", *args, self.file], os.path.join(self.dir, f"up-{self.runs}.out"))
        self.agents[f"up-{self.runs}"] = self.up
        try:
            wait_until(lambda: "is up" in self.up.output() or '"event":"up.ready"' in self.up.output()
                       or not self.up.alive(), timeout=timeout, interval=0.1,
                       what="`fulcrum up` to print that the site is up")
        except AssertionError:
            test.fail("site not up:\n" + self.up.output()[-4000:] + self.logs())
        test.assertTrue(self.up.alive(), self.up.output()[-4000:] + self.logs())

    def stop(self, test):
        """SIGTERM: `up` exits 0 and nothing that mentions the directory is left."""
        self.up.signal(signal.SIGTERM)
        test.assertEqual(self.up.wait(timeout=90), 0, self.up.output()[-4000:])
        self.up.stop()
        test.assertEqual(processes_mentioning(self.dir), [], "processes left behind after `up` stopped")

    def status(self):
        run = subprocess.run([FULCRUM, "status", "--site", self.file, "--json"], capture_output=True, text=True,
                             timeout=30)
        return run.returncode, json.loads(run.stdout)

    def pid_of(self, node):
        pids = processes_mentioning(f"--node\0{node}\0")
        pids = [p for p in pids if p in processes_mentioning(self.file)]
        return pids[0] if len(pids) == 1 else None

    def primary(self):
        # Under internal_tls the agents' API is https only (no client certificate needed to read).
        with open(self.file) as f:
            tls = "internal_tls = true" in f.read()
        context = ssl.create_default_context(cafile=os.path.join(self.dir, "var", "tls", "ca.crt")) if tls else None
        for name, (_, agent) in self.ports.items():
            try:
                if http_get(f"{'https' if tls else 'http'}://127.0.0.1:{agent}/primary", timeout=2,
                            context=context)[0] == 200:
                    return name
            except OSError:
                pass
        return None

    # psql over TCP as the application role (reads self.dir and self.ports like test_db's Cluster).
    psql = Cluster.psql
    psql_command = Cluster.psql_command

    def psql_superuser(self, name, sql):
        """psql as the postgres superuser over the node's unix socket."""
        psql = os.path.join(os.path.dirname(self.psql_command(name, "")[0][0]), "psql")
        return subprocess.run(["runuser", "-u", "postgres", "--", psql, "-X", "-A", "-t", "-h",
                               os.path.join(self.dir, "var", name, "run"), "-p", str(self.ports[name][0]),
                               "-d", "postgres", "-c", sql], capture_output=True, text=True, timeout=20)

    def logs(self):
        out = []
        logs = os.path.join(self.dir, "var", "logs")
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            with open(os.path.join(logs, name), errors="replace") as f:
                out.append(f"--- {name} ---\n{f.read()[-2000:]}")
        return "\n" + "\n".join(out)

    # Stops `up` (self.agents), kills anything still mentioning self.dir, removes the directory.
    cleanup = Cluster.cleanup


@needs(missing_requirement())
class UpTest(unittest.TestCase):
    def test_refuses_settings_not_built_yet(self):
        site = Site(extra_lb='[lb.vip]\naddress = "fd00::64/64"\ninterface = "eth0"\nvrid = 51\n')
        self.addCleanup(site.cleanup)
        run = subprocess.run([FULCRUM, "up", site.file], capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertIn("lb.vip", run.stderr)
        self.assertIn("not supported yet", run.stderr)
        self.assertFalse(os.path.exists(os.path.join(site.dir, "var")), "nothing may be created")
        self.assertEqual(processes_mentioning(site.dir), [])

    def test_up_supervise_status_stop_and_restart(self):
        site = Site()
        self.addCleanup(site.cleanup)
        site.start(self)
        out = site.up.output()
        for name in ["etcd"] + DB + WEB + ["lb-1"]:
            self.assertRegex(out, rf"\d+\.\d s  \w+ +{name} +up", out)
        self.assertIn(f"http://127.0.0.1:{site.lb_http}/", out)
        self.assertIn(f"http://127.0.0.1:{site.lb_stats}/", out)

        # The site answers through the load balancer, from both web nodes.
        served = set()
        for _ in range(10):
            code, headers, body = http_get(f"http://127.0.0.1:{site.lb_http}/", timeout=5)
            self.assertEqual((code, body), (200, b"hello from up\n"))
            served.add(headers.get("X-Served-By"))
        self.assertEqual(served, set(WEB))

        # status: every node up, one writable primary, one replica.
        rows = wait_until(lambda: (lambda r: r[1] if r[0] == 0 else None)(site.status()), timeout=30,
                          interval=0.5, what="`status` exit 0")
        self.assertEqual(sorted(r["name"] for r in rows), sorted(["etcd", "lb-1"] + DB + WEB))
        self.assertTrue(all(r["state"] == "up" for r in rows), rows)
        health = sorted(r["health"].split()[0] for r in rows if r["role"] == "db")
        self.assertEqual(health, ["primary", "replica"], rows)

        primary = site.primary()
        wrote = site.psql(primary, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives a restart')")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)

        # kill -9 of a web node: `up` starts it again.
        old = site.pid_of("web-1")
        self.assertIsNotNone(old)
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: site.pid_of("web-1") not in (None, old), timeout=15, what="web-1 restarted")
        wait_until(lambda: http_get(f"http://127.0.0.1:{site.web['web-1']}/healthz", timeout=1)[0] == 200,
                   timeout=15, what="the new web-1 to answer /healthz")
        self.assertIn("web-1 exited (killed by signal 9", site.up.output())
        wait_until(lambda: "web-1 answers http" in site.up.output(), timeout=15, what="`up` to see web-1 answer")

        # A second `up` on the running site is refused and changes nothing.
        second = subprocess.run([FULCRUM, "up", site.file], capture_output=True, text=True, timeout=30)
        self.assertEqual(second.returncode, 1, second.stderr)
        self.assertIn("already running", second.stderr)
        self.assertIn(str(site.up.proc.pid), second.stderr)
        self.assertEqual(http_get(f"http://127.0.0.1:{site.lb_http}/", timeout=5)[0], 200)

        # SIGHUP: `up` forwards it to its lb, web and db nodes, each reloads itself (web: a new
        # docroot); a node the file adds is named for a restart of `up`, not started.
        with open(site.file) as f:
            original = f.read()
        os.makedirs(os.path.join(site.dir, "www2"))
        with open(os.path.join(site.dir, "www2", "index.html"), "w") as f:
            f.write("hello after the reload\n")
        with open(site.file, "w") as f:
            f.write(original.replace('docroot = "www"', 'docroot = "www2"')
                    + f'[[web.node]]\nname = "web-3"\nlisten = "127.0.0.1:{free_port()}"\n')
        site.up.signal(signal.SIGHUP)
        wait_until(lambda: "reload: web web-3 added: restart `fulcrum up` to apply" in site.up.output(), timeout=10,
                   what="`up` to name the added node")
        self.assertRegex(site.up.output(), r"SIGHUP: forwarded to 5 node\(s\): ")

        reports = {n: wait_reload_report(os.path.join(site.dir, "var"), n, 1) for n in WEB + DB}
        for name in WEB:
            self.assertEqual(len(reports[name]["changes"]), 1, reports[name])
            self.assertIn("web.docroot", reports[name]["changes"][0])
        for name in DB:
            self.assertEqual((reports[name]["ok"], reports[name]["changes"]), (True, []), reports[name])
        self.assertEqual(http_get(f"http://127.0.0.1:{site.lb_http}/", timeout=5)[::2],
                         (200, b"hello after the reload\n"))
        with open(site.file, "w") as f:
            f.write(original)

        site.stop(self)
        code, rows = site.status()
        self.assertEqual(code, 1)
        self.assertTrue(all(r["state"] == "down" for r in rows), rows)

        # Again on the same state: the data is still there.
        site.start(self)
        primary = wait_until(site.primary, timeout=30, interval=0.2, what="a primary after the restart")
        read = site.psql(primary, "SELECT v FROM kept")
        self.assertEqual((read.returncode, read.stdout.strip()), (0, "survives a restart"), read.stderr)
        site.stop(self)


if __name__ == "__main__":
    unittest.main()
