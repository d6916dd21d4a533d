"""Changing a running load balancer without dropping anything (issue 16): the topology file
re-read on SIGHUP, `POST /api/reload` and `fulcrum reload`, applied in place under client load
with a WebSocket open; a broken file refused with its FILE:LINE:COL errors and nothing changed;
weights set at runtime; admin states and runtime weights kept across a restart (the server state
file) until the file changes that server."""
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import unittest

from harness import FULCRUM, Process, TempDir, free_port, http_get, read_head, wait_until
from test_lb import Client, Load, LbTestCase, Server, get_once, lb_site_text

FAST_HEALTH = {"path": "/healthz", "interval_ms": 100, "timeout_ms": 1000, "rise": 1, "fall": 2}


class ReloadTest(LbTestCase):
    def setUp(self):
        super().setUp()
        self.backends = {name: self.py_backend(name) for name in ("a", "b", "c")}
        self.stats_port = None

    # -- helpers ----------------------------------------------------------------------------

    def servers(self, spec):
        """spec: {name: weight or (weight, backup)} -> [Server]."""
        out = []
        for name, value in spec.items():
            weight, backup = value if isinstance(value, tuple) else (value, False)
            out.append(Server(name, self.backends[name].port, weight, backup))
        return out

    def start(self, spec, **site):
        self.stats_port = free_port()
        self.site_args = dict(health=FAST_HEALTH, node_extra={"stats": f"127.0.0.1:{self.stats_port}"}, **site)
        self.lb = self.start_lb(self.servers(spec), **self.site_args)
        self.site_path = self.lb.proc.args[3]
        self.stats = f"http://127.0.0.1:{self.stats_port}"
        wait_until(lambda: http_get(self.stats + "/api/state")[0] == 200, what="stats listener")
        with open(os.path.join(self.tmp.path, "var", "admin.token")) as f:
            self.token = f.read().strip()
        self.wait_up(spec)

    def write(self, spec, **changes):
        args = dict(self.site_args, **changes)
        with open(self.site_path, "w") as f:
            f.write(lb_site_text(self.lb.port, self.servers(spec), **args))

    def state(self):
        status, _, body = http_get(self.stats + "/api/state")
        self.assertEqual(status, 200)
        return json.loads(body)

    def servers_of(self, state):
        return {s["name"]: (s["weight"], s["backup"]) for s in state["servers"]}

    def wait_up(self, spec):
        wait_until(lambda: {s["name"] for s in self.state()["servers"] if s["health"] == "up"} >= set(spec),
                   timeout=10, what=f"servers {sorted(spec)} up")

    def post(self, path, body=None, token=None):
        headers = {"Content-Type": "application/json"}
        if token is not False:
            headers["Authorization"] = f"Bearer {token or self.token}"
        data = json.dumps(body).encode() if body is not None else b""
        return http_get(self.stats + path, headers=headers, method="POST", data=data)

    def report(self):
        with open(os.path.join(self.tmp.path, "var", "run", "lb-t.reload.json")) as f:
            return json.load(f)

    def open_websocket(self):
        s = socket.create_connection(("127.0.0.1", self.lb.port), timeout=10)
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        f = s.makefile("rb")
        start, headers = read_head(f)
        self.assertIn(" 101 ", start)
        return s, f, headers.get("x-served-by")

    def echo(self, s, f, text):
        s.sendall(text)
        got = b""
        while len(got) < len(text):
            chunk = f.read1(65536)
            self.assertTrue(chunk, "the WebSocket tunnel closed")
            got += chunk
        return got

    # -- tests -------------------------------------------------------------------------------

    def test_twenty_reloads_under_load_drop_nothing(self):
        self.start({"a": 1, "b": 1})
        ws, wsf, ws_server = self.open_websocket()
        self.addCleanup(ws.close)
        self.assertEqual(self.echo(ws, wsf, b"before"), b"before")
        keep = ws_server  # the WebSocket's server stays in every file
        others = [n for n in ("a", "b", "c") if n != keep]
        # A changing server set: added, removed, reweighted, made a backup and back.
        sets = [
            {keep: 1, others[0]: 1, others[1]: 1},
            {keep: 1, others[1]: 3},
            {keep: 2, others[0]: 1},
            {keep: 1, others[0]: (1, True), others[1]: 1},
            {keep: 1, others[0]: 1},
        ]
        load = Load(self.lb.port, threads=4, path="/echo")
        try:
            wait_until(lambda: load.count() > 50, timeout=20, what="load running")
            for i in range(20):
                spec = sets[i % len(sets)]
                algorithm = "leastconn" if i % 3 == 1 else "roundrobin"
                self.write(spec, algorithm=algorithm)
                before = load.count()
                if i % 4 == 0:
                    status, _, body = self.post("/api/reload")
                    self.assertEqual(status, 200, body)
                    self.assertTrue(json.loads(body)["ok"])
                elif i % 4 == 1:
                    out = subprocess.run([FULCRUM, "reload", "--site", self.site_path], capture_output=True,
                                         text=True, timeout=30)
                    self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
                    self.assertRegex(out.stdout, r"lb\s+lb-t\s+reloaded")
                else:
                    sequence = self.report()["sequence"] if i > 0 else 0
                    self.lb.signal(signal.SIGHUP)
                    wait_until(lambda: self.report()["sequence"] > sequence, timeout=10, what="SIGHUP's report")
                    self.assertTrue(self.report()["ok"], self.report())
                want = {n: (v if isinstance(v, tuple) else (v, False)) for n, v in spec.items()}
                self.assertEqual(self.servers_of(self.state()), want)
                self.assertEqual(self.state()["algorithm"], algorithm)
                self.wait_up(spec)
                wait_until(lambda: load.count() > before + 20, timeout=20, what="traffic after the reload")
            self.assertEqual(self.echo(ws, wsf, b"after twenty reloads"), b"after twenty reloads")
        finally:
            failures = load.stop()
        self.assertEqual(failures, [], self.lb.output()[-4000:])
        served = set(load.served)
        self.assertTrue({"a", "b", "c"} <= served, f"every server took traffic at some point: {served}")
        self.assertNotIn("AddressSanitizer", self.lb.output())

    def test_a_removed_server_finishes_its_requests(self):
        self.backends["slow"] = self.py_backend("slow", delay=3.0)  # long enough to see the drain under load
        self.start({"a": 1, "slow": 1}, algorithm="leastconn")
        results = []

        def slow_request():
            results.append(http_get(f"http://127.0.0.1:{self.lb.port}/held", timeout=10))

        threads = [threading.Thread(target=slow_request) for _ in range(4)]
        for t in threads:
            t.start()
        # leastconn: the four spread over both servers; two wait on the slow one.
        wait_until(lambda: self.backends["slow"].in_flight.is_set(), timeout=10, what="a request at the slow server")
        self.write({"a": 1})
        status, _, body = self.post("/api/reload")
        self.assertEqual(status, 200, body)
        self.assertIn("server slow removed (in-flight requests finish)", json.loads(body)["changes"])
        state = self.state()
        self.assertEqual(set(self.servers_of(state)), {"a"})
        # /api/state lists the pending drain until its requests are done.
        self.assertEqual([(d["name"], d["why"]) for d in state["draining"]], [("slow", "removed by a reload")])
        self.assertGreater(state["draining"][0]["inflight"], 0)
        for t in threads:
            t.join(timeout=15)
        self.assertEqual([r[0] for r in results], [200] * 4)
        wait_until(lambda: self.state()["draining"] == [], timeout=5, what="the drain done")
        self.assertIn("slow", [r[1].get("X-Served-By") for r in results])
        # And nothing new goes there.
        for _ in range(5):
            self.assertEqual(http_get(f"http://127.0.0.1:{self.lb.port}/x")[1].get("X-Served-By"), "a")

    def test_a_new_process_takes_the_listeners_over_under_load(self):
        # A binary upgrade: `fulcrum lb --takeover` takes the running node's listening sockets
        # (http, two workers; stats); the old one stops accepting, drains and exits.
        self.start({"a": 1, "b": 1}, threads=2, timeouts={"drain_ms": 3000})
        old = self.lb
        ws, wsf, _ = self.open_websocket()
        self.addCleanup(ws.close)
        load = Load(self.lb.port, threads=4, path="/echo")
        try:
            wait_until(lambda: load.count() > 50, timeout=20, what="load running")
            new = Process([FULCRUM, "lb", "--site", self.site_path, "--node", "lb-t", "--takeover"],
                          self.site_path + ".takeover.log")
            self.addCleanup(self.stop_lb, new)
            wait_until(lambda: "--takeover: serving" in new.output() or not new.alive(), timeout=20,
                       what="the new process serving")
            self.assertTrue(new.alive(), new.output())
            self.assertIn("taken over by pid", old.output())
            # The WebSocket opened on the old process still echoes while it drains.
            self.assertEqual(self.echo(ws, wsf, b"during the handover"), b"during the handover")
            count = load.count()
            wait_until(lambda: load.count() > count + 200, timeout=20, what="traffic through the new process")
            # The old one exits once drained (the tunnel holds it until the drain's grace).
            wait_until(lambda: not old.alive(), timeout=30, what="the old process exiting")
            self.assertEqual(old.proc.returncode, 0, old.output()[-3000:])
            self.assertIn("drain grace period over", old.output())  # [lb.timeouts] drain_ms: the tunnel's end
            count = load.count()
            wait_until(lambda: load.count() > count + 100, timeout=20, what="traffic after the old one left")
        finally:
            failures = load.stop()
        self.assertEqual(failures, [], new.output()[-3000:] + old.output()[-3000:])
        self.assertIn(" access ", new.output())
        # The stats listener moved too, and the pid file is the new process's once the old left.
        self.assertEqual(http_get(self.stats + "/healthz")[0], 200)
        wait_until(lambda: "is this process's now" in new.output(), timeout=10, what="the pid file taken")
        out = subprocess.run([FULCRUM, "reload", "--site", self.site_path], capture_output=True, text=True,
                             timeout=30)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(self.report()["pid"], new.proc.pid)

    def test_a_reload_changes_the_firewall_for_new_connections(self):
        self.start({"a": 1})
        self.assertEqual(get_once(self.lb.port, "/x", source="127.0.0.2")[0], 200)
        kept = Client(self.lb.port, source="127.0.0.2")  # opened before: stays
        self.addCleanup(kept.close)
        self.assertEqual(kept.get("/x")[0], 200)
        self.write({"a": 1}, extra='[lb.firewall]\ndeny = ["127.0.0.2/32"]\n')
        status, _, body = self.post("/api/reload")
        self.assertEqual(status, 200, body)
        self.assertTrue(any(c.startswith("firewall: 0 allow and 1 deny") for c in json.loads(body)["changes"]), body)
        with self.assertRaises((OSError, http.client.HTTPException)):
            get_once(self.lb.port, "/x", source="127.0.0.2", timeout=3)
        self.assertEqual(get_once(self.lb.port, "/x")[0], 200)
        self.assertEqual(kept.get("/x")[0], 200)
        metrics = http_get(self.stats + "/metrics")[2].decode()
        self.assertIn('fulcrum_lb_firewall_refused_total{node="lb-t",reason="deny"} 1', metrics)
        # And off again.
        self.write({"a": 1})
        self.assertEqual(self.post("/api/reload")[0], 200)
        self.assertEqual(get_once(self.lb.port, "/x", source="127.0.0.2")[0], 200)

    def test_a_broken_file_is_refused_and_changes_nothing(self):
        self.start({"a": 1, "b": 2})
        before = self.servers_of(self.state())
        with open(self.site_path) as f:
            good = f.read()
        with open(self.site_path, "w") as f:
            f.write(good.replace('algorithm = "roundrobin"', 'algorithm = "fastest"'))
        status, _, body = self.post("/api/reload")
        self.assertEqual(status, 400, body)
        report = json.loads(body)
        self.assertFalse(report["ok"])
        self.assertRegex(report["errors"][0], r"\.toml:\d+:\d+: lb\.algorithm: ")
        self.assertEqual(self.servers_of(self.state()), before)
        self.assertEqual(self.state()["algorithm"], "roundrobin")
        # The same by signal: the report file says why, and `fulcrum reload` refuses before
        # asking anyone.
        self.lb.signal(signal.SIGHUP)
        wait_until(lambda: self.report()["sequence"] > report["sequence"], timeout=10, what="SIGHUP's report")
        self.assertFalse(self.report()["ok"])
        out = subprocess.run([FULCRUM, "reload", "--site", self.site_path], capture_output=True, text=True,
                             timeout=30)
        self.assertNotEqual(out.returncode, 0)
        self.assertRegex(out.stderr, r"lb\.algorithm")
        self.assertEqual(self.servers_of(self.state()), before)
        for _ in range(6):
            self.assertEqual(http_get(f"http://127.0.0.1:{self.lb.port}/x")[0], 200)
        # Without the token nothing is read or changed.
        self.assertEqual(self.post("/api/reload", token=False)[0], 401)
        # What needs a restart is said, not applied.
        with open(self.site_path, "w") as f:
            f.write(good.replace("threads = 1", "threads = 2"))
        status, _, body = self.post("/api/reload")
        self.assertEqual(status, 200, body)
        self.assertTrue(any("lb.node[0]" in r for r in json.loads(body)["needs_restart"]), body)
        self.assertTrue(self.lb.alive())

    def test_runtime_weights_and_admin_states_survive_a_restart(self):
        self.start({"a": 1, "b": 1})
        self.assertEqual(self.post("/api/servers/b/weight", {"weight": 3})[0], 200)
        self.assertEqual(self.servers_of(self.state())["b"], (3, False))
        for bad in ({"weight": 0}, {"weight": 257}, {"weight": "3"}, {"w": 3}, [3]):
            self.assertEqual(self.post("/api/servers/b/weight", bad)[0], 400, bad)
        self.assertEqual(self.post("/api/servers/zz/weight", {"weight": 3})[0], 404)
        self.assertEqual(self.post("/api/servers/b/weight", {"weight": 9}, token=False)[0], 401)
        self.assertEqual(self.servers_of(self.state())["b"], (3, False))
        # b gets 3 of every 4 requests on one connection (smooth weighted round robin).
        served = [http_get(f"http://127.0.0.1:{self.lb.port}/x")[1].get("X-Served-By") for _ in range(8)]
        self.assertEqual(served.count("b"), 6, served)
        self.assertEqual(self.post("/api/servers/a/state", {"state": "drain"})[0], 200)

        # Restarted: the state file brings both back, and says so in the log.
        self.stop_lb(self.lb)
        self.lb = self.start_lb(self.servers({"a": 1, "b": 1}), **self.site_args)
        wait_until(lambda: http_get(self.stats + "/api/state")[0] == 200, what="stats listener")
        state = {s["name"]: s for s in self.state()["servers"]}
        self.assertEqual(state["b"]["weight"], 3)
        self.assertEqual(state["a"]["admin"], "drain")
        self.assertIn("restored to weight 3", self.lb.output())
        self.assertIn("restored to drain", self.lb.output())

        # The file changes b's weight: the file wins, and the runtime weight is forgotten.
        self.write({"a": 1, "b": 5})
        status, _, body = self.post("/api/reload")
        self.assertEqual(status, 200, body)
        state = {s["name"]: s for s in self.state()["servers"]}
        self.assertEqual(state["b"]["weight"], 5)
        self.assertEqual(state["a"]["admin"], "drain")  # the file has no admin state: kept
        with open(os.path.join(self.tmp.path, "var", "lb-t.server-state.json")) as f:
            kept = {s["name"]: s for s in json.load(f)["servers"]}
        self.assertNotIn("weight", kept.get("b", {}))
        self.assertEqual(kept["a"]["admin"], "drain")


if __name__ == "__main__":
    unittest.main()


class RollTest(unittest.TestCase):
    """`fulcrum roll`: the web nodes of a site under `fulcrum up` restarted one by one under load."""

    def test_roll_restarts_every_web_node_without_a_failed_request(self):
        tmp = TempDir()
        self.addCleanup(tmp.cleanup)
        tmp.write("www/small.txt", "0123456789abcdef" * 64)
        lb_port, stats_port = free_port(), free_port()
        web = {f"web-{i}": free_port() for i in (1, 2, 3)}
        text = (f'[site]\nname = "roll"\nstate_dir = "var"\n'
                f'[lb.health]\ninterval_ms = 200\ntimeout_ms = 1000\nrise = 1\nfall = 2\n'
                f'[[lb.node]]\nname = "lb-1"\nhttp = "127.0.0.1:{lb_port}"\nstats = "127.0.0.1:{stats_port}"\n'
                f'threads = 1\n[web]\ndocroot = "www"\napp = "none"\n')
        for name, port in web.items():
            text += f'[[web.node]]\nname = "{name}"\nlisten = "127.0.0.1:{port}"\nthreads = 1\n'
        site = tmp.write("site.toml", text)
        up = Process([FULCRUM, "up", site], os.path.join(tmp.path, "up.out"))
        self.addCleanup(up.stop, 60)
        wait_until(lambda: "is up" in up.output() or not up.alive(), timeout=60, what="the site up")
        self.assertTrue(up.alive(), up.output()[-3000:])

        def pid(name):
            try:
                with open(os.path.join(tmp.path, "var", "run", f"{name}.pid")) as f:
                    return int(f.read().strip())
            except (OSError, ValueError):
                return None

        before = {name: pid(name) for name in web}
        self.assertTrue(all(before.values()), before)
        load = Load(lb_port, threads=4, path="/small.txt")
        try:
            wait_until(lambda: load.count() > 50, timeout=20, what="load running")
            out = subprocess.run([FULCRUM, "roll", "--site", site], capture_output=True, text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr + up.output()[-3000:])
            self.assertIn("3 of 3 web node(s) restarted", out.stdout)
            count = load.count()
            wait_until(lambda: load.count() > count + 50, timeout=20, what="traffic after the roll")
        finally:
            failures = load.stop()
        self.assertEqual(failures, [], out.stdout)
        after = {name: pid(name) for name in web}
        for name in web:
            self.assertNotEqual(after[name], before[name], f"{name} was not restarted")
        self.assertTrue({"web-1", "web-2", "web-3"} <= set(load.served))
        # Back in rotation everywhere.
        state = json.loads(http_get(f"http://127.0.0.1:{stats_port}/api/state")[2])
        self.assertEqual({s["name"]: s["admin"] for s in state["servers"]},
                         {"web-1": "ready", "web-2": "ready", "web-3": "ready"})
        # A binary upgrade of the lb under `fulcrum up`, under load: up starts the binary with
        # --takeover, the old process drains and exits, up supervises the new one.
        lb_before = pid("lb-1")
        load = Load(lb_port, threads=4, path="/small.txt")
        try:
            wait_until(lambda: load.count() > 50, timeout=20, what="load running")
            out = subprocess.run([FULCRUM, "reload", "--site", site, "--upgrade"], capture_output=True, text=True,
                                 timeout=120)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr + up.output()[-3000:])
            self.assertRegex(out.stdout, rf"lb\s+lb-1\s+upgraded \(pid {lb_before} -> \d+\)")
            count = load.count()
            wait_until(lambda: load.count() > count + 50, timeout=20, what="traffic after the upgrade")
        finally:
            failures = load.stop()
        self.assertEqual(failures, [], out.stdout + up.output()[-3000:])
        self.assertNotEqual(pid("lb-1"), lb_before)
        wait_until(lambda: "is the node now" in up.output(), timeout=10, what="up adopting the new lb")
        # A node that is not a web node, or a role not built yet, is refused with a reason.
        bad = subprocess.run([FULCRUM, "roll", "--site", site, "--role", "db"], capture_output=True, text=True,
                             timeout=30)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("not built yet", bad.stderr)
        # `up` stops the adopted lb with the rest.
        new_lb = pid("lb-1")
        up.signal(signal.SIGTERM)
        self.assertEqual(up.wait(timeout=60), 0, up.output()[-3000:])
        with self.assertRaises(ProcessLookupError):
            os.kill(new_lb, 0)

    def test_roll_under_internal_tls_drains_over_https_as_the_operator(self):
        """[security] internal_tls: the lb's stats listener speaks HTTPS and its admin API wants a
        client certificate; roll presents the operator's (and checks the web nodes' /healthz so)."""
        tmp = TempDir()
        self.addCleanup(tmp.cleanup)
        tmp.write("www/small.txt", "0123456789abcdef" * 64)
        lb_port, stats_port = free_port(), free_port()
        web = {f"web-{i}": free_port() for i in (1, 2)}
        text = (f'[site]\nname = "rolltls"\nstate_dir = "var"\n[security]\ninternal_tls = true\n'
                f'[lb.health]\ninterval_ms = 200\ntimeout_ms = 1000\nrise = 1\nfall = 2\n'
                f'[[lb.node]]\nname = "lb-1"\nhttp = "127.0.0.1:{lb_port}"\nstats = "127.0.0.1:{stats_port}"\n'
                f'threads = 1\n[web]\ndocroot = "www"\napp = "none"\n')
        for name, port in web.items():
            text += f'[[web.node]]\nname = "{name}"\nlisten = "127.0.0.1:{port}"\nthreads = 1\n'
        site = tmp.write("site.toml", text)
        up = Process([FULCRUM, "up", site], os.path.join(tmp.path, "up.out"))
        self.addCleanup(up.stop, 60)
        wait_until(lambda: "is up" in up.output() or not up.alive(), timeout=60, what="the site up")
        self.assertTrue(up.alive(), up.output()[-3000:])
        load = Load(lb_port, threads=2, path="/small.txt")
        try:
            wait_until(lambda: load.count() > 50, timeout=20, what="load running")
            out = subprocess.run([FULCRUM, "roll", "--site", site], capture_output=True, text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr + up.output()[-3000:])
            self.assertIn("2 of 2 web node(s) restarted", out.stdout)
        finally:
            failures = load.stop()
        self.assertEqual(failures, [], out.stdout)
        context = ssl.create_default_context(cafile=os.path.join(tmp.path, "var", "tls", "ca.crt"))
        state = json.loads(http_get(f"https://127.0.0.1:{stats_port}/api/state", context=context)[2])
        self.assertEqual({s["name"]: s["admin"] for s in state["servers"]}, {"web-1": "ready", "web-2": "ready"})
