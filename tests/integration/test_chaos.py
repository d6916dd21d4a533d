"""The whole site in the lab, as root, under faults with client load through the virtual IP the
whole time: two lbs on a VIP (VRRPv3), two web nodes, three PostgreSQL nodes with synchronous
replication, three etcd members — each on its own host (a network namespace) in 10.199.78.0/24.

One `lab up`, then a sequence of faults, each followed by a bounded wait for the site to be whole
again: the active lb killed, frozen (SIGSTOP) and cut off; a web node killed; the db primary
killed, frozen and cut off (from everything, etcd included); an etcd member killed. Two clients
run throughout: reads (GET a static file) and writes (POST a guestbook message), each through the
VIP every 50 ms. At the end, every write the site acknowledged (201) is read back from the
primary: with `synchronous = true` none may be lost. Two lbs holding the VIP while both run, or
two agents answering /primary, fail the test whenever the sampler sees them.

Each fault's client-visible outage (longest run of failed probes) is printed; docs/chaos.md holds
one run's figures. Waits are bounded polls; the lab is torn down whatever happens."""
import json
import os
import subprocess
import threading
import time
import unittest
import urllib.request

from harness import http_get, needs, wait_until
from test_db import pg_bin
from test_lab import Lab, answers, missing

NET = "10.199.78"
VIP = f"{NET}.100"
LBS = {"lb-01": f"{NET}.11", "lb-02": f"{NET}.12"}
WEB = {"web-01": f"{NET}.21", "web-02": f"{NET}.22"}
DBS = {"db-01": f"{NET}.31", "db-02": f"{NET}.32", "db-03": f"{NET}.33"}
ETCD = [f"{NET}.41", f"{NET}.42", f"{NET}.43"]


def site_text():
    text = (f'[site]\nname = "chaos"\nstate_dir = "var"\n'
            f'[lb]\nretries = 2\n'
            f'[lb.health]\ninterval_ms = 200\ntimeout_ms = 300\nrise = 2\nfall = 2\n'
            f'[lb.timeouts]\nconnect_ms = 300\nserver_ms = 3000\n'
            f'[lb.vip]\naddress = "{VIP}/24"\ninterface = "eth0"\nvrid = 78\nadvert_interval_ms = 200\n')
    for (name, ip), priority in zip(LBS.items(), (150, 100)):
        text += (f'[[lb.node]]\nname = "{name}"\nhttp = "{VIP}:80"\nstats = "{ip}:8404"\n'
                 f'db_write = "{VIP}:5000"\nthreads = 1\npriority = {priority}\n')
    text += '[web]\ndocroot = "www"\napp = "guestbook"\n'
    for name, ip in WEB.items():
        text += f'[[web.node]]\nname = "{name}"\nlisten = "{ip}:80"\nthreads = 1\n'
    text += '[db]\nsynchronous = true\nleader_ttl_ms = 3000\n'
    for name, ip in DBS.items():
        text += f'[[db.node]]\nname = "{name}"\npg = "{ip}:5432"\nagent = "{ip}:8008"\n'
    text += '[etcd]\nendpoints = [' + ", ".join(f'"{ip}:2379"' for ip in ETCD) + ']\nmanaged = true\n'
    return text


class Probes:
    """Two client loops through the VIP (reads and writes), every 50 ms each, recording every
    outcome with its time; and a sampler of who holds the VIP and who answers /primary."""

    def __init__(self, lab):
        self.lab = lab
        self.lock = threading.Lock()
        self.reads = []   # (monotonic, ok)
        self.writes = []
        self.acked = set()
        self.two_primaries = []  # times two agents answered /primary 200 at once
        self.two_holders = []    # times two running, unfrozen lbs held the VIP at once
        self.frozen = set()      # lb names paused or killed by the test: their kernel may keep the VIP
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self.read, self.write, self.sample)]
        for t in self.threads:
            t.start()

    def _loop(self, once):
        while not self.stopping.is_set():
            started = time.monotonic()
            once(started)
            time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))

    def read(self):
        def once(t):
            ok = answers(f"http://{VIP}/hello.txt")
            with self.lock:
                self.reads.append((t, ok))
        self._loop(once)

    def write(self):
        n = [0]

        def once(t):
            n[0] += 1
            text = f"chaos-{n[0]}"
            body = json.dumps({"author": "chaos", "text": text}).encode()
            try:
                status = http_get(f"http://{VIP}/api/messages", method="POST", data=body, timeout=3,
                                  headers={"Content-Type": "application/json"})[0]
            except OSError:
                status = 0
            with self.lock:
                self.writes.append((t, status == 201))
                if status == 201:
                    self.acked.add(text)
        self._loop(once)

    def sample(self):
        def once(t):
            primaries = [name for name, ip in DBS.items() if answers(f"http://{ip}:8008/primary")]
            holders = [name for name in LBS if self.holds(name)]
            with self.lock:
                if len(primaries) > 1:
                    self.two_primaries.append((t, primaries))
                if len([h for h in holders if h not in self.frozen]) > 1:
                    self.two_holders.append((t, holders))
        self._loop(once)

    def holds(self, lb):
        ns = self.lab.host(lb)["netns"]
        out = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                             text=True).stdout
        return f" {VIP}/" in out

    def outage(self, since, series):
        """Longest run of failures after `since`, from its first failed probe to the next good one."""
        with self.lock:
            points = [(t, ok) for t, ok in series if t >= since]
        longest, start = 0.0, None
        for t, ok in points:
            if not ok and start is None:
                start = t
            elif ok and start is not None:
                longest, start = max(longest, t - start), None
        if start is not None:
            longest = max(longest, points[-1][0] - start)
        return longest

    def good_since(self, since, series, count=5):
        with self.lock:
            recent = [ok for t, ok in series if t >= since][-count:]
        return len(recent) == count and all(recent)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=10)


@needs(missing())
class ChaosTest(unittest.TestCase):
    def setUp(self):
        self.lab = Lab(text=site_text())
        self.addCleanup(self.lab.cleanup)
        self.addCleanup(self.keep_logs)

    def keep_logs(self):
        """FULCRUM_TEST_KEEP_LOGS=DIR keeps the whole lab's logs of each run there."""
        keep = os.environ.get("FULCRUM_TEST_KEEP_LOGS")
        if keep:
            subprocess.run(["cp", "-r", os.path.join(self.lab.dir, "var", "logs"),
                            os.path.join(keep, f"chaos-{int(time.time())}")], check=False)

    def primary(self):
        up = [name for name, ip in DBS.items() if answers(f"http://{ip}:8008/primary")]
        return up[0] if len(up) == 1 else None

    def vip_holder(self, probes):
        """The one lb holding the VIP among those running (a frozen or cut-off node's kernel
        keeps the address until it runs and hears the new master again)."""
        held = [name for name in LBS if name not in probes.frozen and probes.holds(name)]
        return held[0] if len(held) == 1 else None

    def whole(self, probes, since, what, timeout=40):
        """The site serves reads and writes through the VIP again, one lb holds it and one
        database answers /primary."""
        try:
            wait_until(lambda: probes.good_since(since, probes.reads) and probes.good_since(since, probes.writes)
                       and self.vip_holder(probes) is not None and self.primary() is not None,
                       timeout=timeout, interval=0.2, what=f"the site whole again after {what}")
        except AssertionError:
            holders = [name for name in LBS if probes.holds(name)]
            self.fail(f"not whole after {what}: reads {probes.good_since(since, probes.reads)}, writes "
                      f"{probes.good_since(since, probes.writes)}, VIP on {holders} (frozen {probes.frozen}), "
                      f"primary {self.primary()}:" + self.lab.logs())

    def redundant(self, what, timeout=120):
        """Every database node is the primary or a streaming replica again. A fault injected
        while the others still rewind or re-clone would find no replica to promote: no
        failover system survives that, and it is not the fault this test means to inject."""
        def streaming():
            return all(answers(f"http://{ip}:8008/primary") or answers(f"http://{ip}:8008/replica")
                       for ip in DBS.values())
        try:
            wait_until(streaming, timeout=timeout, interval=0.5, what=f"every db node streaming after {what}")
        except AssertionError as e:
            self.fail(f"{e}:" + self.lab.logs())

    def test_site_survives_every_fault_without_losing_a_write(self):
        state = self.lab.start(self, timeout=180)
        self.assertEqual(state["bridge"].startswith("flbr-"), True)
        wait_until(lambda: answers(f"http://{VIP}/hello.txt") and self.primary() is not None, timeout=60,
                   interval=0.2, what="the site answering through the VIP")
        probes = Probes(self.lab)
        self.addCleanup(probes.stop)
        report = []

        def fault(what, inject, restore=None, check=None):
            since = time.monotonic()
            inject()
            if check is not None:
                try:
                    check()
                except AssertionError as e:
                    self.fail(f"{what}: {e}:" + self.lab.logs())
            if restore is not None:
                restore()
            self.whole(probes, since, what)
            # Let the restored side settle (preemption, rejoin) before the next fault.
            settle = time.monotonic()
            self.whole(probes, settle, what + " (settled)")
            self.redundant(what)
            report.append((what, probes.outage(since, probes.reads), probes.outage(since, probes.writes)))
            print(f"\n{what}: reads out {report[-1][1]:.2f} s, writes out {report[-1][2]:.2f} s", flush=True)

        def lab(*args):
            run = self.lab.run(*args)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)

        def master():
            # A thawed or healed lb of higher priority may be taking the address back (preempt):
            # for a moment two hold it, then the other. The active lb is the one that has held it
            # alone for a while (longer than an advert interval).
            seen = {"holder": None, "since": time.monotonic()}

            def settled():
                holder = self.vip_holder(probes)
                if holder != seen["holder"]:
                    seen.update(holder=holder, since=time.monotonic())
                return holder is not None and time.monotonic() - seen["since"] >= 1.5

            wait_until(settled, timeout=20, interval=0.05, what="one lb holding the VIP for 1.5 s")
            return seen["holder"]

        def thawed(lb, what):
            # Running and connected again, `lb` gives the address up (or keeps it alone) at
            # once: one holder within 2 s, and from then on the sampler counts it again.
            wait_until(lambda: len([n for n in LBS if probes.holds(n)]) == 1, timeout=2, interval=0.02,
                       what=f"one VIP holder after {what} of {lb}")
            probes.frozen.discard(lb)

        def other(name, group):
            return next(n for n in group if n != name)

        # 1. The active lb killed -9 (held down): the other takes the VIP, and `lab up` releases
        #    the address the dead node left (the sampler would see two holders otherwise).
        active = master()
        fault(f"kill -9 of the active lb ({active})", lambda: lab("kill", "--hold", self.lab.file, active),
              check=lambda: wait_until(lambda: probes.holds(other(active, LBS)), timeout=10, interval=0.05,
                                       what="the standby taking the VIP"))
        lab("resume", self.lab.file, active)
        wait_until(lambda: self.lab.node(active)["state"] == "running", timeout=20, what=f"{active} restarted")
        wait_until(lambda: self.vip_holder(probes) is not None, timeout=20, what="one VIP holder")

        # 2. The active lb frozen: the other takes over; thawed, it never makes two holders.
        active = master()
        probes.frozen.add(active)
        fault(f"SIGSTOP of the active lb ({active})", lambda: lab("pause", self.lab.file, active),
              check=lambda: wait_until(lambda: probes.holds(other(active, LBS)), timeout=10, interval=0.05,
                                       what="the standby taking the VIP"))
        lab("resume", self.lab.file, active)
        thawed(active, "the thaw")

        # 3. The active lb's link cut: the other takes over; healed, one holder again.
        active = master()
        probes.frozen.add(active)  # cut off, it cannot hear the new master: both hold until healed
        fault(f"link cut of the active lb ({active})", lambda: lab("cut", self.lab.file, active),
              check=lambda: wait_until(lambda: probes.holds(other(active, LBS)), timeout=10, interval=0.05,
                                       what="the standby taking the VIP"),
              restore=lambda: (lab("heal", self.lab.file, active), thawed(active, "the heal")))

        # 4. A web node killed: idempotent reads are retried on the other one.
        fault("kill -9 of web-01", lambda: lab("kill", self.lab.file, "web-01"))

        # 5. The db primary killed (held down), then back as a replica.
        old = self.primary()
        fault(f"kill -9 of the db primary ({old})", lambda: lab("kill", "--hold", self.lab.file, old),
              check=lambda: wait_until(lambda: self.primary() not in (None, old), timeout=30, interval=0.1,
                                       what="a replica promoted"),
              restore=lambda: lab("resume", self.lab.file, old))

        # 6. The db primary frozen (its agent and PostgreSQL): a replica takes over; thawed, the
        #    old one rejoins and never answers /primary beside the new one (the sampler checks).
        old = self.primary()
        fault(f"SIGSTOP of the db primary ({old})", lambda: lab("pause", self.lab.file, old),
              check=lambda: wait_until(lambda: self.primary() not in (None, old), timeout=30, interval=0.1,
                                       what="a replica promoted"),
              restore=lambda: lab("resume", self.lab.file, old))

        # 7. The db primary cut off from everything (etcd included): it fences itself, a replica
        #    takes over, the healed node rejoins.
        old = self.primary()
        fault(f"link cut of the db primary ({old})", lambda: lab("cut", self.lab.file, old),
              check=lambda: wait_until(lambda: self.primary() not in (None, old), timeout=30, interval=0.1,
                                       what="a replica promoted"),
              restore=lambda: lab("heal", self.lab.file, old))

        # 8. An etcd member killed: nothing fails over.
        leader = self.primary()
        fault("kill -9 of etcd-1", lambda: lab("kill", self.lab.file, "etcd-1"))
        self.assertEqual(self.primary(), leader, "an etcd member's death is not a database failover")

        probes.stop()
        self.assertEqual(probes.two_primaries, [], "two agents answered /primary at once")
        self.assertEqual(probes.two_holders, [], "two running lbs held the VIP at once")
        self.assertGreater(len(probes.acked), 100, "the writers got writes through")

        # Every acknowledged write is on the primary (through the db_write frontend on the VIP).
        with open(os.path.join(self.lab.dir, "var", "db.password")) as f:
            env = dict(os.environ, PGPASSWORD=f.readline().strip(), PGCONNECT_TIMEOUT="5")
        out = subprocess.run([os.path.join(pg_bin(), "psql"), "-X", "-A", "-t", "-h", VIP, "-p", "5000", "-U",
                              "site", "-d", "site", "-c",
                              "SELECT text FROM guestbook_messages WHERE author = 'chaos'"],
                             env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        stored = set(out.stdout.split())
        lost = probes.acked - stored
        self.assertEqual(lost, set(), f"{len(lost)} acknowledged writes lost of {len(probes.acked)}")
        # The web nodes' access lines of the guestbook's writes (answered after the database,
        # when the connection's input buffer has moved on) name the request, not other bytes.
        posts = []
        for name in WEB:
            with open(os.path.join(self.lab.dir, "var", "logs", f"{name}.access.log"), errors="replace") as f:
                posts += [line for line in f if " access " in line and " status=201 " in line]
        self.assertGreater(len(posts), 0)
        for line in posts:
            self.assertIn(" method=POST path=/api/messages ", line)

        print("\nfault | reads out (s) | writes out (s)", flush=True)
        for what, reads, writes in report:
            print(f"{what} | {reads:.2f} | {writes:.2f}", flush=True)
        print(f"{len(probes.acked)} writes acknowledged, none lost", flush=True)


if __name__ == "__main__":
    unittest.main()
