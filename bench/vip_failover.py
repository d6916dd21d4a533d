#!/usr/bin/env python3
"""Virtual-IP failover: `fulcrum lb` ([lb.vip], VRRPv3) against keepalived + HAProxy at the same
advert interval, on a namespace segment (tests/integration/test_vrrp.py's Segment: a bridge in
its own namespace, lb hosts a and b, client c; VIP 10.199.51.100). Issue 15, "Benchmark".

A client in c probes http://VIP:8080/healthz every 50 ms (each probe a new connection in its own
thread, 1 s timeout). Outage = from the start of the first failed probe after the fault to the
start of the first good one after it (50 ms granularity). Faults on the active node (a, priority
200; b is 100):
  a  kill -9 of the node: fulcrum's lb process; keepalived (parent stopped, VRRP child and
     parent killed) and haproxy of that host.
  c  only its proxy dead: haproxy killed -9, keepalived stays and must notice through its
     vrrp_script (a pid check of that host's haproxy, interval 1 s: keepalived's minimum, so it
     cannot match a 100 ms advert). fulcrum is one process: its "proxy dead" is (a), reported
     as such and not measured twice.
  b  link cut: `ip link set pa down` (a's bridge port), restored for the failback.
Failback: the killed node (or proxy) is started again; every failed probe and 503 from then until
a holds the VIP alone for 1 s is counted, and whether both hosts held the VIP at once (from 1 s
after the restart: a kill -9 leaves the address on the dead host until its agent is back).

As root, from the repository root:  python3 bench/vip_failover.py [--trials 10]
    [--adverts 1000,100] [--peers fulcrum,keepalived] [--faults a,c] [--fulcrum BIN]
Nothing is built; FULCRUM_BIN or --fulcrum names the binary (default build/fulcrum).
"""
import argparse
import atexit
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

PROBE_EVERY = 0.05
PROBE_TIMEOUT = 1.0


def probe_main(url):
    """Runs in the client namespace: one line per probe, `start_monotonic code` (0 = no answer)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    out = threading.Lock()

    def one(start):
        code = 0
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=PROBE_TIMEOUT)
            c.request("GET", u.path, headers={"Connection": "close"})
            code = c.getresponse().status
            c.close()
        except Exception:  # noqa: BLE001 - refused, reset, timed out: all a failed probe
            pass
        with out:
            sys.stdout.write(f"{start:.6f} {code}\n")
            sys.stdout.flush()

    next_at = time.monotonic()
    while True:
        threading.Thread(target=one, args=(time.monotonic(),), daemon=True).start()
        next_at += PROBE_EVERY
        time.sleep(max(0.0, next_at - time.monotonic()))


if len(sys.argv) == 3 and sys.argv[1] == "--probe":
    try:
        probe_main(sys.argv[2])
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    sys.exit(0)

import test_vrrp  # noqa: E402
from harness import Process, TempDir  # noqa: E402
from test_vrrp import HOSTS, NET, PORT, VIP, VRID, Segment  # noqa: E402


class Cleanups:
    """What Segment wants from a test: addCleanup. Runs them last-first, once."""

    def __init__(self):
        self.items = []

    def addCleanup(self, fn, *args):
        self.items.append((fn, args))

    def run(self):
        while self.items:
            fn, args = self.items.pop()
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001
                print(f"cleanup: {e}", file=sys.stderr)


def addr(host):
    return f"{NET}.{HOSTS[host]}"


class Bench:
    def __init__(self, fulcrum):
        self.fulcrum = fulcrum
        self.cleanups = Cleanups()
        self.tmp = TempDir()
        self.cleanups.addCleanup(self.tmp.cleanup)
        self.net = Segment(self.cleanups, prefix=f"fvb-{os.getpid()}-")
        self.procs = []
        self.cleanups.addCleanup(self.stop_procs)
        self.records = []  # (start, code), appended by the probe reader
        self.lock = threading.Lock()
        self.tmp.write("www/healthz", "ok\n")
        for h in ("a", "b"):
            subprocess.run(["ip", "netns", "exec", self.net.ns(h), "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"],
                           check=True)
            self.run_in(h, ["python3", "-m", "http.server", "8000", "--bind", addr(h),
                            "--directory", os.path.join(self.tmp.path, "www")], f"web-{h}")
        probe = self.run_in("c", ["python3", "-u", os.path.abspath(__file__), "--probe",
                                  f"http://{VIP}:{PORT}/healthz"], "probe", log=False)
        threading.Thread(target=self.read_probes, args=(probe,), daemon=True).start()

    def run_in(self, host, args, label, log=True):
        path = os.path.join(self.tmp.path, f"{label}-{len(self.procs)}.log")
        if log:
            p = Process(["ip", "netns", "exec", self.net.ns(host), *args], path)
        else:  # the probe: its stdout is read here
            p = Process.__new__(Process)
            p.log_path = path
            p.log = open(path, "wb")
            p.proc = subprocess.Popen(["ip", "netns", "exec", self.net.ns(host), *args], stdout=subprocess.PIPE,
                                      stderr=p.log, stdin=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        return p

    def read_probes(self, p):
        for line in p.proc.stdout:
            start, code = line.split()
            with self.lock:
                self.records.append((float(start), int(code)))

    def stop_procs(self):
        for p in reversed(self.procs):
            p.signal(signal.SIGCONT)
            p.stop(timeout=5)
        self.procs = []

    def probes(self, since, until=None):
        with self.lock:
            rs = [r for r in self.records if r[0] >= since and (until is None or r[0] <= until)]
        return sorted(rs)

    def cleanup(self):
        self.cleanups.run()

    def del_vip(self, host):
        subprocess.run(["ip", "-n", self.net.ns(host), "addr", "del", f"{VIP}/24", "dev", "eth0"],
                       capture_output=True, timeout=10)


class FulcrumPeer:
    name = "fulcrum"

    def __init__(self, bench, advert_ms):
        self.b, self.advert_ms = bench, advert_ms
        self.lb = {}
        text = f"""[site]
name = "vip-bench"
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
advert_interval_ms = {advert_ms}
"""
        for h, prio in (("a", 200), ("b", 100)):
            text += f"""[[lb.node]]
name = "lb-{h}"
http = "{VIP}:{PORT}"
stats = "{addr(h)}:8404"
threads = 1
priority = {prio}
"""
        text += '[web]\ndocroot = "www"\napp = "none"\n'
        for h in ("a", "b"):
            text += f'[[web.node]]\nname = "web-{h}"\nlisten = "{addr(h)}:8000"\n'
        self.site = bench.tmp.write(f"site-{advert_ms}.toml", text)

    def start(self, h):
        self.lb[h] = self.b.run_in(h, [self.b.fulcrum, "lb", "--site", self.site, "--node", f"lb-{h}"], f"lb-{h}")

    def kill(self, h):
        self.lb[h].proc.kill()
        self.lb[h].wait()

    kill_proxy = None  # one process: "proxy dead" is kill

    def stop(self, h):
        if h in self.lb:
            self.lb[h].stop(timeout=5)


class KeepalivedPeer:
    name = "keepalived+haproxy"

    def __init__(self, bench, advert_ms):
        self.b, self.advert_ms = bench, advert_ms
        self.ka, self.hap = {}, {}
        t = bench.tmp
        for h, prio in (("a", 200), ("b", 100)):
            t.write(f"haproxy-{h}.cfg", f"""global
  maxconn 2000
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend fe
  bind {VIP}:{PORT}
  default_backend be
backend be
  option httpchk GET /healthz
  server web-{h} {addr(h)}:8000 check inter 100
""")
            # killall -0 haproxy would see the other host's haproxy (one pid namespace): the
            # check is kill -0 of this host's haproxy, whose pid start() writes.
            t.write(f"check-{h}.sh", f'kill -0 "$(cat {t.path}/haproxy-{h}.pid)"\n')
            t.write(f"keepalived-{h}-{advert_ms}.conf", f"""global_defs {{
  router_id fvb_{h}
  vrrp_version 3
  script_user root
}}
vrrp_script chk_haproxy {{
  script "/bin/sh {t.path}/check-{h}.sh"
  interval 1
  timeout 1
  fall 1
  rise 1
}}
vrrp_instance VI_1 {{
  state BACKUP
  interface eth0
  virtual_router_id {VRID}
  priority {prio}
  advert_int {advert_ms / 1000}
  virtual_ipaddress {{
    {VIP}/24 dev eth0
  }}
  track_script {{
    chk_haproxy
  }}
}}
""")

    def path(self, name):
        return os.path.join(self.b.tmp.path, name)

    def start_proxy(self, h):
        self.hap[h] = self.b.run_in(h, ["/usr/sbin/haproxy", "-db", "-f", self.path(f"haproxy-{h}.cfg")], f"haproxy-{h}")
        with open(self.path(f"haproxy-{h}.pid"), "w") as f:
            f.write(f"{self.hap[h].proc.pid}\n")

    def start(self, h):
        self.start_proxy(h)
        self.ka[h] = self.b.run_in(h, ["/usr/sbin/keepalived", "-n", "-l", "-P",
                                       "-f", self.path(f"keepalived-{h}-{self.advert_ms}.conf"),
                                       "-p", self.path(f"keepalived-{h}.pid"),
                                       "-r", self.path(f"keepalived-vrrp-{h}.pid")], f"keepalived-{h}")

    def vrrp_child(self, h):
        try:
            with open(self.path(f"keepalived-vrrp-{h}.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def kill(self, h):
        # Parent stopped first so that it neither restarts its VRRP child nor outlives it.
        self.ka[h].signal(signal.SIGSTOP)
        child = self.vrrp_child(h)
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.ka[h].proc.kill()
        self.hap[h].proc.kill()
        self.ka[h].wait()
        self.hap[h].wait()

    def kill_proxy(self, h):
        self.hap[h].proc.kill()
        self.hap[h].wait()

    def stop(self, h):
        if h in self.ka:
            self.ka[h].signal(signal.SIGCONT)
            self.ka[h].stop(timeout=5)
            child = self.vrrp_child(h)
            if child:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if h in self.hap:
            self.hap[h].stop(timeout=5)


def outage(bench, t0):
    """(outage seconds or None if not recovered, recovered?) from the probes since t0."""
    rs = bench.probes(t0)
    first_fail = next((s for s, c in rs if c != 200), None)
    if first_fail is None:
        return 0.0, True
    good = next((s for s, c in rs if s > first_fail and c == 200), None)
    return (None, False) if good is None else (good - first_fail, True)


def wait(pred, timeout, every=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return False


def ready(bench, settle=1.0):
    """a alone holds the VIP and the last `settle` seconds of probes were good."""
    if bench.net.holders() != ["a"]:
        return False
    rs = bench.probes(time.monotonic() - settle - PROBE_TIMEOUT, time.monotonic() - PROBE_TIMEOUT)
    return len(rs) >= settle / PROBE_EVERY * 0.6 and all(c == 200 for _, c in rs)


def reset(bench, peer):
    for h in ("a", "b"):
        peer.stop(h)
        bench.del_vip(h)
    subprocess.run(["ip", "-n", bench.net.switch, "link", "set", "pa", "up"], capture_output=True)
    peer.start("b")
    peer.start("a")
    if not wait(lambda: ready(bench), 30 + 6 * peer.advert_ms / 1000):
        raise RuntimeError(f"{peer.name} at {peer.advert_ms} ms: a never held the VIP alone and served")


def trial(bench, peer, fault):
    adv = peer.advert_ms / 1000
    t0 = time.monotonic()
    if fault == "a":
        peer.kill("a")
    elif fault == "c":
        peer.kill_proxy("a")
    elif fault == "b":
        subprocess.run(["ip", "-n", bench.net.switch, "link", "set", "pa", "down"], check=True)
    wait(lambda: outage(bench, t0)[0] is not None and time.monotonic() - t0 > 2, 15 + 5 * adv)
    time.sleep(PROBE_TIMEOUT + 0.2)  # every probe of the window answered or timed out
    out, recovered = outage(bench, t0)
    time.sleep(0.5)

    t_r = time.monotonic()
    if fault == "a":
        peer.start("a")
    elif fault == "c":
        peer.start_proxy("a")
    elif fault == "b":
        subprocess.run(["ip", "-n", bench.net.switch, "link", "set", "pa", "up"], check=True)
    two = False
    end = time.monotonic() + 20 + 6 * adv
    alone_since = None
    while time.monotonic() < end:
        hs = bench.net.holders()
        # Two holders counted once the agent has had 1 s to start (a kill -9 leaves the
        # address on a until then).
        two = two or (len(hs) > 1 and time.monotonic() - t_r > 1.0)
        if hs == ["a"]:
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since >= 1.0:
                break
        else:
            alone_since = None
        time.sleep(0.1)
    converged = alone_since is not None and time.monotonic() - alone_since >= 1.0
    time.sleep(PROBE_TIMEOUT + 0.2)
    rs = bench.probes(t_r, time.monotonic() - PROBE_TIMEOUT - 0.1)
    fails = sum(1 for _, c in rs if c != 200)
    e503 = sum(1 for _, c in rs if c == 503)
    took = (alone_since - t_r) if converged else None
    return {"outage": out if recovered else None, "fails": fails, "503": e503, "two": two,
            "failback_s": took, "ok": recovered and converged}


def fmt(s):
    return "-" if s is None else f"{s:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--adverts", default="1000,100", help="advert intervals, ms")
    ap.add_argument("--peers", default="fulcrum,keepalived")
    ap.add_argument("--faults", default="a,c", help="a (kill -9 node), c (proxy only), b (link cut)")
    ap.add_argument("--fulcrum", default=test_vrrp.FULCRUM)
    ap.add_argument("--keep-logs", action="store_true", help="print where the logs are and keep them")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, raw VRRP sockets)")

    bench = None

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    rows = []
    try:
        bench = Bench(os.path.abspath(args.fulcrum))
        atexit.register(bench.cleanup)
        if args.keep_logs:
            bench.cleanups.items = [i for i in bench.cleanups.items if i[0] != bench.tmp.cleanup]
            print(f"logs in {bench.tmp.path}", flush=True)
        for advert in [int(x) for x in args.adverts.split(",")]:
            for pname in args.peers.split(","):
                peer = (FulcrumPeer if pname == "fulcrum" else KeepalivedPeer)(bench, advert)
                for fault in args.faults.split(","):
                    if fault == "c" and peer.kill_proxy is None:
                        rows.append((peer.name, advert, "c", None))
                        continue
                    results = []
                    reset(bench, peer)
                    for i in range(args.trials):
                        if not ready(bench, 0.5):
                            reset(bench, peer)
                        r = trial(bench, peer, fault)
                        results.append(r)
                        print(f"{peer.name:18} {advert:5} ms  fault {fault}  #{i + 1}: outage {fmt(r['outage'])} s, "
                              f"failback {r['fails']} failed ({r['503']} x 503) in {fmt(r['failback_s'])} s"
                              f"{', two holders seen' if r['two'] else ''}", flush=True)
                    rows.append((peer.name, advert, fault, results))
                for h in ("a", "b"):
                    peer.stop(h)
                    bench.del_vip(h)
    finally:
        print_table(rows)
        if bench:
            bench.cleanup()


def print_table(rows):
    names = {"a": "kill -9 node", "b": "link cut", "c": "proxy dead"}
    print("\npeer                advert  fault         n  median s  min-max s    failback: failed probes (503s)"
          "  two holders  not recovered")
    for peer, advert, fault, results in rows:
        if results is None:
            print(f"{peer:19} {advert:4} ms  {names[fault]:12}  = kill -9 node (one process)")
            continue
        outs = [r["outage"] for r in results if r["outage"] is not None]
        fails = [r["fails"] for r in results]
        e503 = sum(r["503"] for r in results)
        med = statistics.median(outs) if outs else None
        rng = f"{min(outs):.2f}-{max(outs):.2f}" if outs else "-"
        fb = f"median {statistics.median(fails):g}, max {max(fails)} ({e503})" if fails else "-"
        print(f"{peer:19} {advert:4} ms  {names[fault]:12} {len(results):2}  {fmt(med):8}  {rng:11}  {fb:32}"
              f"  {sum(r['two'] for r in results):11}  {sum(not r['ok'] for r in results)}")


if __name__ == "__main__":
    main()
