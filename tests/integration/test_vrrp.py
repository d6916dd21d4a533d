"""VRRPv3 in `fulcrum lb` ([lb.vip]) on a real Ethernet segment: each host is a network namespace
whose eth0 sits on one bridge (in a namespace of its own), a client namespace probes the virtual
IP, and the holder is read from `ip -n HOST addr`. As root only (namespaces, raw sockets); every
namespace goes away with the test, even when it fails. Also a keepalived in the same VRID."""
import json
import os
import shutil
import signal
import subprocess
import time
import unittest

from harness import FULCRUM, Process, TempDir, needs, wait_until

NET = "10.199.51"
VIP = f"{NET}.100"
VRID = 51
ADVERT_MS = 100
PORT = 8080
HOSTS = {"a": 1, "b": 2, "c": 9}  # c is the client


def missing_requirement():
    if os.geteuid() != 0:
        return "needs root: network namespaces, a bridge and raw VRRP sockets"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    if shutil.which("curl") is None:
        return "needs curl"
    return None


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Segment:
    """A bridge and one namespace per host (fvr-<pid>-<name>), each with eth0 on the bridge.
    `test` is anything with addCleanup (bench/vip_failover.py passes its own, and a prefix)."""

    def __init__(self, test, prefix=None):
        self.prefix = prefix or f"fvr-{os.getpid()}-"
        self.switch = self.prefix + "sw"
        self.namespaces = [self.switch]
        test.addCleanup(self.cleanup)
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for name, last in HOSTS.items():
            ns = self.ns(name)
            ip("netns", "add", ns)
            self.namespaces.append(ns)
            ip("-n", self.switch, "link", "add", f"p{name}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", self.switch, "link", "set", f"p{name}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{NET}.{last}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def ns(self, name):
        return self.prefix + name

    def holds(self, name):
        out = subprocess.run(["ip", "-n", self.ns(name), "-4", "-o", "addr", "show", "dev", "eth0"],
                             capture_output=True, text=True, timeout=10).stdout
        return f" {VIP}/" in out

    def holders(self):
        return [n for n in ("a", "b") if self.holds(n)]

    def client(self, url, timeout=1.0):
        """GET from the client namespace: the status code (0 when nothing answered) and the body."""
        run = subprocess.run(["ip", "netns", "exec", self.ns("c"), "curl", "-s", "-m", str(timeout),
                              "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=10)
        body, _, code = run.stdout.rpartition("\n")
        return int(code or 0), body

    def cleanup(self):
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@needs(missing_requirement())
class VrrpTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.net = Segment(self)
        self.procs = []
        self.addCleanup(self.stop_all)
        self.tmp.write("www/healthz", "ok\n")
        # A tiny backend on each lb host.
        for name in ("a", "b"):
            self.run_in(name, ["python3", "-m", "http.server", "8000", "--bind", f"{NET}.{HOSTS[name]}",
                               "--directory", os.path.join(self.tmp.path, "www")], f"web-{name}")

    def stop_all(self):
        for p in reversed(self.procs):
            p.signal(signal.SIGCONT)
            p.stop(timeout=5)
        if os.environ.get("FULCRUM_VRRP_LOGS"):  # a debugging aid: every process's output
            for p in self.procs:
                print(f"--- {p.log_path}\n{p.output()[-3000:]}")

    def run_in(self, host, args, label):
        p = Process(["ip", "netns", "exec", self.net.ns(host), *args],
                    os.path.join(self.tmp.path, f"{label}-{len(self.procs)}.log"))
        self.procs.append(p)
        return p

    def write_site(self, priorities, vip_extra=""):
        text = f"""[site]
name = "vrrp-test"
state_dir = "var"
[lb.health]
path = "/healthz"
interval_ms = 100
timeout_ms = 1000
rise = 1
fall = 2
[lb.vip]
address = "{VIP}/24"
interface = "eth0"
vrid = {VRID}
advert_interval_ms = {ADVERT_MS}
{vip_extra}"""
        for name, priority in priorities.items():
            text += f"""[[lb.node]]
name = "lb-{name}"
http = "{VIP}:{PORT}"
stats = "{NET}.{HOSTS[name]}:8404"
threads = 1
priority = {priority}
"""
        text += '[web]\ndocroot = "www"\napp = "none"\n'
        for name in ("a", "b"):
            text += f'[[web.node]]\nname = "web-{name}"\nlisten = "{NET}.{HOSTS[name]}:8000"\n'
        return self.tmp.write("site.toml", text)

    def start_lb(self, name, site):
        return self.run_in(name, [FULCRUM, "lb", "--site", site, "--node", f"lb-{name}"], f"lb-{name}")

    def state(self, name):
        code, body = self.net.client(f"http://{NET}.{HOSTS[name]}:8404/api/state")
        self.assertEqual(code, 200, body)
        return json.loads(body)["vrrp"]

    def wait_holders(self, expected, timeout=10.0, what=None):
        return wait_until(lambda: self.net.holders() == expected, timeout=timeout, interval=0.02,
                          what=what or f"holders {expected} (now {self.net.holders()})")

    def watch_never_two(self, done, timeout, what):
        """Polls the holders until `done()`: never both lbs at once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holders = self.net.holders()
            self.assertLessEqual(len(holders), 1, f"two holders while waiting for {what}")
            if done(holders):
                return
            time.sleep(0.02)
        self.fail(f"timed out waiting for {what}; holders {self.net.holders()}")

    def assert_steady(self, expected, seconds):
        """The holders stay `expected` for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.assertEqual(self.net.holders(), expected)
            time.sleep(0.02)

    def assert_served(self):
        code = wait_until(lambda: self.net.client(f"http://{VIP}:{PORT}/healthz")[0] == 200, timeout=5,
                          what="an answer through the virtual IP")
        self.assertTrue(code)

    def test_failover_pair(self):
        site = self.write_site({"a": 200, "b": 100})
        lb = {"a": self.start_lb("a", site), "b": self.start_lb("b", site)}
        self.wait_holders(["a"], what="the higher priority holding the virtual IP")
        self.assert_served()
        a, b = self.state("a"), self.state("b")
        self.assertEqual((a["state"], a["priority"], a["holds_address"]), ("master", 200, True))
        self.assertEqual((b["state"], b["master_ip"]), ("backup", f"{NET}.1"))
        self.assertGreater(b["adverts_received"], 0)
        self.assertEqual(b["invalid_total"], 0, b["invalid"])
        code, metrics = self.net.client(f"http://{NET}.1:8404/metrics")
        self.assertIn(f'fulcrum_lb_vrrp_state{{node="lb-a",vrid="{VRID}",state="master"}} 1', metrics)
        self.assertIn("fulcrum_lb_vrrp_master_transitions_total", metrics)

        # kill -9 the master: the backup takes over within Master_Down_Interval (~3 adverts).
        lb["a"].proc.kill()
        lb["a"].wait()
        killed = time.monotonic()
        wait_until(lambda: self.net.holds("b"), timeout=5, what="the backup taking the virtual IP")
        takeover = time.monotonic() - killed
        self.assertLess(takeover, 2.0)
        self.assert_served()
        print(f"\nkill -9: backup holds the VIP after {takeover * 1000:.0f} ms", flush=True)

        # The killed node comes back: the stale address goes first, then it preempts once its
        # servers are up, and never two holders.
        lb["a"] = self.start_lb("a", site)
        wait_until(lambda: not self.net.holds("a"), timeout=5, what="the restarted node removing its stale VIP")
        self.watch_never_two(lambda h: h == ["a"], 10, "the restarted node to preempt")
        self.assert_served()
        # The address is seen before the log line that says so is written (the log has a thread).
        wait_until(lambda: "backup -> master" in lb["a"].output(), timeout=5, what="the takeover logged")
        log = lb["a"].output()
        self.assertIn("was still on eth0", log)
        self.assertLess(log.index("priority 1 -> 200"), log.index("backup -> master"), log)

        # SIGSTOP the master: the backup takes over; SIGCONT: the resumed node releases at once
        # and takes the address back (preempt) without two holders.
        self.wait_holders(["a"])
        lb["a"].signal(signal.SIGSTOP)
        wait_until(lambda: self.net.holds("b"), timeout=5, what="the backup taking over from a stopped master")
        self.assert_served()
        lb["a"].signal(signal.SIGCONT)
        wait_until(lambda: len(self.net.holders()) <= 1, timeout=2, what="the resumed node releasing")
        self.watch_never_two(lambda h: h == ["a"], 10, "the resumed node to preempt again")
        self.assertIn("frozen for", lb["a"].output())
        self.assert_served()

        # A graceful stop advertises priority 0: the backup takes over after its Skew_Time.
        stopped = time.monotonic()
        lb["a"].signal(signal.SIGTERM)
        self.watch_never_two(lambda h: h == ["b"], 5, "the backup after a graceful stop")
        print(f"graceful stop: backup holds the VIP after {(time.monotonic() - stopped) * 1000:.0f} ms", flush=True)
        self.assertEqual(lb["a"].wait(timeout=15), 0)
        self.assert_served()

    def test_unicast_peers(self):
        # The same election with unicast adverts (one peer list for both: each skips itself).
        site = self.write_site({"a": 200, "b": 100}, f'unicast_peers = ["{NET}.1", "{NET}.2"]\n')
        lb = {"a": self.start_lb("a", site), "b": self.start_lb("b", site)}
        self.wait_holders(["a"], what="the higher priority holding the virtual IP")
        self.assert_served()
        wait_until(lambda: self.state("b")["adverts_received"] > 0, timeout=5, what="unicast adverts at the backup")
        lb["a"].proc.kill()
        lb["a"].wait()
        wait_until(lambda: self.net.holds("b"), timeout=5, what="the backup taking the virtual IP")
        self.assert_served()
        lb["a"] = self.start_lb("a", site)
        wait_until(lambda: not self.net.holds("a"), timeout=5, what="the restarted node removing its stale VIP")
        self.watch_never_two(lambda h: h == ["a"], 10, "the restarted node to preempt")

    @needs(None if shutil.which("keepalived") else "needs keepalived (Debian keepalived)")
    def test_keepalived_interop(self):
        conf = self.tmp.write("keepalived.conf", f"""global_defs {{
  router_id fvr_b
  vrrp_version 3
}}
vrrp_instance VI_1 {{
  state BACKUP
  interface eth0
  virtual_router_id {VRID}
  priority 150
  advert_int {ADVERT_MS / 1000}
  virtual_ipaddress {{
    {VIP}/24 dev eth0
  }}
}}
""")

        def start_keepalived():
            return self.run_in("b", ["keepalived", "-n", "-l", "-P", "-f", conf,
                                     "-p", os.path.join(self.tmp.path, "keepalived.pid"),
                                     "-r", os.path.join(self.tmp.path, "keepalived-vrrp.pid")], "keepalived")

        site = self.write_site({"a": 200})
        fulcrum = self.start_lb("a", site)
        keepalived = start_keepalived()
        # fulcrum (200) is master; keepalived takes its adverts (else it would take over too).
        self.wait_holders(["a"], what="fulcrum (priority 200) holding the virtual IP")
        self.assert_steady(["a"], 1.0)
        self.assert_served()

        # kill fulcrum: keepalived takes the address.
        fulcrum.proc.kill()
        fulcrum.wait()
        wait_until(lambda: self.net.holds("b"), timeout=5, what="keepalived taking over from a killed fulcrum")

        # fulcrum comes back with the higher priority: removes its stale address, then preempts.
        fulcrum = self.start_lb("a", site)
        wait_until(lambda: not self.net.holds("a"), timeout=5, what="fulcrum removing its stale VIP")
        self.watch_never_two(lambda h: h == ["a"], 10, "fulcrum preempting keepalived")
        self.assert_served()

        # fulcrum stops gracefully (priority 0) and returns below keepalived: it stays backup,
        # taking keepalived's adverts (checksum and all).
        fulcrum.signal(signal.SIGTERM)
        self.watch_never_two(lambda h: h == ["b"], 5, "keepalived after fulcrum's priority-0 advert")
        fulcrum.wait(timeout=15)
        site = self.write_site({"a": 50})
        fulcrum = self.start_lb("a", site)
        wait_until(lambda: self.state("a")["adverts_received"] > 5, timeout=10, what="keepalived's adverts at fulcrum")
        state = self.state("a")
        self.assertEqual(state["state"], "backup")
        self.assertEqual(state["master_ip"], f"{NET}.2")
        self.assertEqual(state["invalid_total"], 0, state["invalid"])
        self.assert_steady(["b"], 1.0)

        # kill -9 keepalived's VRRP process (its parent stopped first, so it neither restarts it
        # nor is noticed gone): fulcrum takes the address after Master_Down_Interval.
        with open(os.path.join(self.tmp.path, "keepalived-vrrp.pid")) as f:
            vrrp_child = int(f.read().strip())
        keepalived.signal(signal.SIGSTOP)
        os.kill(vrrp_child, signal.SIGKILL)
        killed = time.monotonic()
        keepalived.proc.kill()
        keepalived.wait()
        wait_until(lambda: self.net.holds("a"), timeout=5, what="fulcrum taking over from a killed keepalived")
        print(f"\nkill -9 keepalived: fulcrum holds the VIP after {(time.monotonic() - killed) * 1000:.0f} ms",
              flush=True)
        self.assert_served()
        # keepalived killed -9 leaves its address behind (as a killed fulcrum does until it
        # restarts): remove it by hand.
        if self.net.holds("b"):
            ip("-n", self.net.ns("b"), "addr", "del", f"{VIP}/24", "dev", "eth0")
        self.assertEqual(self.net.holders(), ["a"])
        self.assertEqual(self.state("a")["state"], "master")


if __name__ == "__main__":
    unittest.main()
