"""[monitoring] under `fulcrum up`: Prometheus and Alertmanager run as supervised children on the
configured loopback addresses, scrape every node of a small site (managed etcd, two database
agents, two web nodes, one load balancer) labelled job = role and node = name, and a web node
killed under `up --no-restart` shows up as FulcrumServerDown in Alertmanager's API. Waits are
bounded polls; `up` stops both, and nothing is left running."""
import json
import os
import shutil
import signal
import time
import unittest
import urllib.parse

from harness import free_port, http_get, needs, wait_until
from test_db import missing_requirement, processes_mentioning
from test_up import DB, WEB, Site


def missing():
    for program in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(program) is None:
            return f"{program} is not installed (scripts/deps.sh installs it)"
    return missing_requirement()


def get_json(url):
    code, _, body = http_get(url, timeout=3)
    if code != 200:
        raise AssertionError(f"{url}: HTTP {code}")
    return json.loads(body)


def listening(pid):
    """The TCP addresses ("127.0.0.1:9090", "[::1]:9090") process `pid` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                hex_ip, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_ip)
                if v6:
                    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
                    ip = "[" + ":".join(b"".join(words)[i:i + 2].hex() for i in range(0, 16, 2)) + "]"
                else:
                    ip = ".".join(str(b) for b in raw[::-1])
                out.append(f"{ip}:{int(hex_port, 16)}")
    return sorted(out)


@needs(missing())
class MonitoringTest(unittest.TestCase):
    def test_prometheus_scrapes_the_site_and_a_dead_web_node_fires_server_down(self):
        prom, am = free_port(), free_port()
        site = Site(extra=f'[monitoring]\nprometheus = "127.0.0.1:{prom}"\nalertmanager = "127.0.0.1:{am}"\n'
                          f"interval_ms = 1000\n")
        self.addCleanup(site.cleanup)
        # --log-format json: up's progress is one JSON object per line, as its log is.
        site.start(self, args=("--no-restart", "--log-format", "json"))
        events = [json.loads(line) for line in site.up.output().splitlines() if line.strip()]
        up = {e["node"]: e for e in events if e.get("event") == "up.node_up"}
        self.assertEqual(up["prometheus"]["role"], "monitoring")
        self.assertEqual(up["alertmanager"]["role"], "monitoring")
        ready = [e for e in events if e.get("event") == "up.ready"]
        self.assertEqual(len(ready), 1, events)
        offers = {o["where"] for o in ready[0]["offers"]}
        self.assertIn(f"http://127.0.0.1:{prom}/", offers)
        self.assertIn(f"http://127.0.0.1:{am}/", offers)

        # Prometheus and Alertmanager listen on their configured addresses and nowhere else
        # (no Alertmanager cluster port).
        for program, port in (("prometheus.yml", prom), ("alertmanager.yml", am)):
            pids = [p for p in processes_mentioning(site.dir) if p in processes_mentioning(program)]
            self.assertEqual(len(pids), 1, program)
            self.assertEqual(listening(pids[0]), [f"127.0.0.1:{port}"], program)

        # Every node is a target, up, labelled job = role and node = name.
        expected = {("etcd", "etcd"), ("lb", "lb-1"), ("prometheus", "prometheus"), ("alertmanager", "alertmanager")}
        expected |= {("web", n) for n in WEB} | {("db", n) for n in DB}

        def all_up():
            targets = get_json(f"http://127.0.0.1:{prom}/api/v1/targets?state=active")["data"]["activeTargets"]
            seen = {(t["labels"]["job"], t["labels"]["node"]): t["health"] for t in targets}
            return seen if set(seen) == expected and all(h == "up" for h in seen.values()) else None
        started = time.monotonic()
        wait_until(all_up, timeout=30, interval=0.25, what="every target up in Prometheus")
        targets_up = time.monotonic() - started

        # A node's own `node` label is kept (honor_labels): no exported_node.
        query = urllib.parse.quote('fulcrum_lb_server_up{server="web-2"}')
        result = get_json(f"http://127.0.0.1:{prom}/api/v1/query?query={query}")["data"]["result"]
        self.assertEqual(len(result), 1, result)
        self.assertEqual({k: v for k, v in result[0]["metric"].items() if k != "instance"},
                         {"__name__": "fulcrum_lb_server_up", "job": "lb", "node": "lb-1", "server": "web-2"})

        # `status` shows both.
        rows = wait_until(lambda: (lambda r: r[1] if r[0] == 0 else None)(site.status()), timeout=30,
                          interval=0.5, what="`status` exit 0")
        mon = {r["name"]: r for r in rows if r["role"] == "monitoring"}
        self.assertEqual(set(mon), {"prometheus", "alertmanager"}, rows)
        self.assertEqual(mon["prometheus"]["health"], f"{len(expected)}/{len(expected)} targets up")
        self.assertRegex(mon["alertmanager"]["health"], r"^\d+ alerts? firing$")

        # Kill web-2; `up --no-restart` leaves it down. The load balancer marks it down, and the
        # alert fires once that has lasted its `for`.
        pid = site.pid_of("web-2")
        self.assertIsNotNone(pid)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        def server_down():
            alerts = get_json(f"http://127.0.0.1:{am}/api/v2/alerts?active=true")
            return [a for a in alerts if a["labels"].get("alertname") == "FulcrumServerDown"]
        firing = wait_until(server_down, timeout=60, interval=0.5, what="FulcrumServerDown in Alertmanager")
        fired_after = time.monotonic() - killed
        self.assertEqual(len(firing), 1, firing)
        labels = firing[0]["labels"]
        self.assertEqual((labels["job"], labels["node"], labels["server"], labels["severity"]),
                         ("lb", "lb-1", "web-2", "warning"), labels)
        self.assertEqual(firing[0]["status"]["state"], "active")
        print(f"\nevery target up in Prometheus {targets_up:.1f} s after the site; FulcrumServerDown in "
              f"Alertmanager {fired_after:.1f} s after web-2 was killed")
        # Nothing else is wrong with this site: no leader or etcd alert.
        names = {a["labels"]["alertname"] for a in get_json(f"http://127.0.0.1:{am}/api/v2/alerts?active=true")}
        self.assertLessEqual(names, {"FulcrumServerDown", "FulcrumTargetDown"}, names)

        site.stop(self)  # `up` exits 0 and no process mentioning the directory is left
        events = [json.loads(line) for line in site.up.output().splitlines() if line.strip()]
        self.assertEqual(events[-1]["event"], "up.stopped", events[-3:])
        self.assertIn("up.node_stopped", {e.get("event") for e in events})
        for port in (prom, am):
            with self.assertRaises(OSError):
                http_get(f"http://127.0.0.1:{port}/-/ready", timeout=1)


if __name__ == "__main__":
    unittest.main()
