"""`[security] internal_tls = true` in `fulcrum lab`, as root: every node on its own host (a
network namespace on a bridge in 10.199.79.0/24). The guestbook works through the load balancer
with read-your-writes, survives a database failover and a switchover asked of the agents' https API
(refused without a client certificate), and a packet capture on the bridge of every internal
link (web -> PostgreSQL, replication, agents -> etcd and to each other, lb -> web and -> agents)
holds none of the guestbook's messages, the database password, the admin token or any HTTP or
SQL in clear. The same capture taken with the edge
included (plain http from this machine to the load balancer) does find the messages: the
capture would see plaintext if there were any."""
import json
import os
import shutil
import subprocess
import time
import unittest

from harness import FULCRUM, Process, http_get, needs, wait_until
from test_lab import Lab, missing as lab_missing

NET = "10.199.79"
LB = f"{NET}.11"
THIS_MACHINE = f"{NET}.254"  # `lab up` puts this machine on the bridge at .254
DBS = {"db-01": f"{NET}.31", "db-02": f"{NET}.32"}


def missing():
    return lab_missing() or (None if shutil.which("tcpdump") else "tcpdump is not installed (scripts/deps.sh)")


def site_text():
    text = (f'[site]\nname = "labtls"\nstate_dir = "var"\n'
            f'[security]\ninternal_tls = true\n'
            f'[lb]\nretries = 2\n'
            f'[lb.health]\ninterval_ms = 200\ntimeout_ms = 300\nrise = 1\nfall = 2\n'
            f'[lb.timeouts]\nconnect_ms = 300\nserver_ms = 3000\n'
            f'[[lb.node]]\nname = "lb-01"\nhttp = "{LB}:80"\nstats = "{LB}:8404"\nthreads = 1\n'
            f'[web]\ndocroot = "www"\napp = "guestbook"\n')
    for i in (1, 2):
        text += f'[[web.node]]\nname = "web-0{i}"\nlisten = "{NET}.2{i}:80"\nthreads = 1\n'
    text += '[db]\nleader_ttl_ms = 3000\n'
    for name, ip in DBS.items():
        text += f'[[db.node]]\nname = "{name}"\npg = "{ip}:5432"\nagent = "{ip}:8008"\n'
    text += f'[etcd]\nendpoints = ["{NET}.41:2379"]\nmanaged = true\n'
    return text


class Capture:
    """tcpdump on the lab's bridge into a file, every byte of every packet."""

    def __init__(self, bridge, path, bpf):
        self.path = path
        self.proc = Process(["tcpdump", "-i", bridge, "-s", "0", "-U", "-n", "-w", path] + ([bpf] if bpf else []),
                            path + ".out")

    def wait_listening(self):
        wait_until(lambda: "listening on" in self.proc.output() or not self.proc.alive(), timeout=15,
                   interval=0.05, what="tcpdump listening")
        assert self.proc.alive(), self.proc.output()

    def stop(self):
        self.proc.stop(timeout=10)  # SIGTERM: tcpdump flushes and closes the file
        with open(self.path, "rb") as f:
            return f.read()


def post(text, author="tls"):
    return http_get(f"http://{LB}/api/messages", method="POST", timeout=10,
                    headers={"Content-Type": "application/json"},
                    data=json.dumps({"author": author, "text": text}).encode())


@needs(missing())
class LabTlsTest(unittest.TestCase):
    def test_whole_site_over_internal_tls_leaves_no_plaintext_on_the_wire(self):
        lab = Lab(text=site_text())
        self.addCleanup(lab.cleanup)
        state = lab.start(self, timeout=180)
        self.assertEqual(state["this_machine"], f"{THIS_MACHINE}/24")

        # Inside: every packet on the bridge except this machine's (the edge: plain http to the lb,
        # and `lab status`'s probes). Everything: the control.
        inside = Capture(state["bridge"], os.path.join(lab.dir, "inside.pcap"), f"not host {THIS_MACHINE}")
        everything = Capture(state["bridge"], os.path.join(lab.dir, "everything.pcap"), None)
        self.addCleanup(inside.proc.stop)
        self.addCleanup(everything.proc.stop)
        inside.wait_listening()
        everything.wait_listening()

        status_json = lambda: json.loads(subprocess.run(  # noqa: E731
            [FULCRUM, "status", "--site", lab.file, "--json"], capture_output=True, text=True, timeout=60).stdout)

        def primary():
            rows = [r for r in status_json() if r["role"] == "db" and r["health"].startswith("primary")
                    and r["healthy"]]
            return rows[0]["name"] if len(rows) == 1 else None

        def replica_streaming():
            return any(r["role"] == "db" and r["health"].startswith("replica") for r in status_json())

        wait_until(lambda: primary() is not None and replica_streaming(), timeout=120, interval=0.5,
                   what="a primary and a streaming replica, read over TLS by `status`")

        # Writes through the lb, each read back at once with its read-your-writes cookie.
        stamp = f"{os.getpid()}{int(time.time())}"
        sent = []

        def write_and_read(i):
            text = f"SecretTlsMsg-{stamp}-{i}"
            code, headers, body = post(text)
            if code != 201:
                return False
            sent.append(text)
            cookie = headers.get("Set-Cookie", "").split(";", 1)[0]
            self.assertTrue(cookie.startswith("fulcrum_lsn="), headers)
            code, _, body = http_get(f"http://{LB}/api/messages", headers={"Cookie": cookie}, timeout=10)
            self.assertEqual(code, 200, body)
            self.assertIn(text, [m["text"] for m in json.loads(body)["messages"]])
            return True

        wait_until(lambda: write_and_read(0), timeout=60, interval=0.5, what="a first guestbook write over TLS")
        for i in range(1, 20):
            self.assertTrue(write_and_read(i), f"write {i}")

        # Failover: the primary killed and held down; the replica takes the leader key over TLS
        # to etcd and promotes; writes go on through the same lb.
        old = primary()
        run = lab.run("kill", "--hold", lab.file, old)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        try:
            wait_until(lambda: primary() not in (None, old), timeout=60, interval=0.5, what="the replica promoted")
            wait_until(lambda: write_and_read(100), timeout=60, interval=0.5, what="a write after the failover")
        except AssertionError as e:
            self.fail(f"{e}{lab.logs()}")
        for i in range(101, 110):
            self.assertTrue(write_and_read(i), f"write {i} after the failover")
        # The old primary back: it rejoins over TLS (pg_rewind or a clone, replication with its cert).
        self.assertEqual(lab.run("resume", lab.file, old).returncode, 0)
        wait_until(replica_streaming, timeout=120, interval=0.5, what=f"{old} streaming again")

        # Switchover back to it, asked of the agents' API over https: without a client
        # certificate the token alone is refused (403), with the operator's it happens.
        tls = os.path.join(lab.dir, "var", "tls")
        with open(os.path.join(lab.dir, "var", "admin.token")) as f:
            token = f.read().strip()
        leader = primary()

        def switchover(*cert):
            return subprocess.run(["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
                                   "--cacert", os.path.join(tls, "ca.crt"), *cert, "-H",
                                   f"Authorization: Bearer {token}", "-d", json.dumps({"to": old}),
                                   f"https://{DBS[leader]}:8008/switchover"],
                                  capture_output=True, text=True, timeout=60)
        refused = switchover()
        self.assertEqual(refused.stdout, "403", refused.stderr)
        self.assertEqual(primary(), leader)
        done = switchover("--cert", os.path.join(tls, "operator.crt"), "--key", os.path.join(tls, "operator.key"))
        self.assertEqual(done.stdout, "200", done.stderr)
        try:
            wait_until(lambda: primary() == old, timeout=60, interval=0.5, what=f"{old} leading after the switchover")
            wait_until(lambda: write_and_read(200), timeout=60, interval=0.5, what="a write after the switchover")
        except AssertionError as e:
            self.fail(f"{e}{lab.logs()}")
        for i in range(201, 210):
            self.assertTrue(write_and_read(i), f"write {i} after the switchover")

        inside_bytes, everything_bytes = inside.stop(), everything.stop()
        with open(os.path.join(lab.dir, "var", "db.password")) as f:
            password = f.readline().strip().encode()
        self.assertGreater(len(password), 8)

        # The control: the edge is plain http, so the full capture holds the messages.
        self.assertTrue(sent[0].encode() in everything_bytes, "the control capture misses the edge's plaintext")
        # Inside, much was said (TLS records of every link) and nothing in clear.
        self.assertGreater(len(inside_bytes), 100_000)
        for text in sent:
            self.assertFalse(text.encode() in inside_bytes, f"the guestbook message {text} crossed the lab in clear")
        self.assertFalse(password in inside_bytes, "the database password crossed the lab in clear")
        for clear in (b"guestbook_messages", b"INSERT INTO", b"START_REPLICATION", b"/v3/lease", b"GET /healthz",
                      b"GET /status", b"GET /api/state", b"/switchover", token.encode()):
            self.assertFalse(clear in inside_bytes, f"{clear!r} crossed the lab in clear")


if __name__ == "__main__":
    unittest.main()
