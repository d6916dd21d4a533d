"""`fulcrum lab` end to end, as root: a small site (etcd, one database agent with its PostgreSQL,
two web nodes, one load balancer) with each node on its own host, a network namespace on a bridge
in 10.199.77.0/24, reached from this machine through the bridge's address. Faults from another
process while `lab up` runs, then `lab down` (also after `lab up` itself was killed -9).

Every namespace and link carries the site's tag (from its temporary state_dir), and the cleanup
removes them whatever happened. Waits are bounded polls."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import FULCRUM, Process, http_get, needs, wait_until
from test_db import missing_requirement, processes_mentioning

NET = "10.199.77"
LB = f"{NET}.11"
WEB = {"web-01": f"{NET}.21", "web-02": f"{NET}.22"}


def missing():
    if os.geteuid() != 0:
        return "the lab creates network namespaces: needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"iproute2's `{tool}` is not installed"
    return missing_requirement()


def site_text(with_db):
    text = (f'[site]\nname = "labtest"\nstate_dir = "var"\n'
            f'[lb]\nretries = 2\n'
            f'[lb.health]\ninterval_ms = 200\ntimeout_ms = 300\nrise = 1\nfall = 2\n'
            f'[lb.timeouts]\nconnect_ms = 300\nserver_ms = 1000\n'
            f'[[lb.node]]\nname = "lb-01"\nhttp = "{LB}:80"\nstats = "{LB}:8404"\nthreads = 1\n')
    if with_db:
        text += f'db_write = "{LB}:5000"\n'
    text += f'[web]\ndocroot = "www"\napp = "{"guestbook" if with_db else "none"}"\n'
    for name, ip in WEB.items():
        text += f'[[web.node]]\nname = "{name}"\nlisten = "{ip}:80"\nthreads = 1\n'
    if with_db:
        text += (f'[db]\nleader_ttl_ms = 3000\n[[db.node]]\nname = "db-01"\npg = "{NET}.31:5432"\n'
                 f'agent = "{NET}.31:8008"\n[etcd]\nendpoints = ["{NET}.41:2379"]\nmanaged = true\n')
    return text


def netns_list():
    return sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []


def links():
    return sorted(os.listdir("/sys/class/net"))


class Lab:
    """A topology file in a temporary directory, its `lab up` and the lab commands."""

    def __init__(self, with_db=True, text=None):
        self.dir = tempfile.mkdtemp(prefix="fulcrum-lab-", dir="/tmp")
        os.chmod(self.dir, 0o755)  # the postgres user must traverse it
        os.makedirs(os.path.join(self.dir, "www"))
        with open(os.path.join(self.dir, "www", "hello.txt"), "w") as f:
            f.write("hello from the lab\n")
        self.file = os.path.join(self.dir, "lab.toml")
        with open(self.file, "w") as f:
            f.write(text if text is not None else site_text(with_db))
        self.up = None
        self.tag = None  # from `lab status`, for the cleanup's last resort

    def start(self, test, timeout=120):
        # FULCRUM_TEST_LOG_LEVEL=debug: every node logs at that level (chasing a rare failure).
        level = os.environ.get("FULCRUM_TEST_LOG_LEVEL")
        self.up = Process([FULCRUM] + (["--log-level", level] if level else []) + ["lab", "up", self.file],
                          os.path.join(self.dir, "lab-up.out"))
        try:
            wait_until(lambda: self.status()[0] == 0 or not self.up.alive(), timeout=timeout, interval=0.1,
                       what="`lab status` to say the lab is up")
        except AssertionError:
            test.fail("lab not up:\n" + self.up.output()[-4000:] + self.logs())
        test.assertTrue(self.up.alive(), self.up.output()[-4000:] + self.logs())
        state = self.status()[1]
        self.tag = state["bridge"].removeprefix("flbr-")
        return state

    def run(self, *args):
        return subprocess.run([FULCRUM, "lab", *args], capture_output=True, text=True, timeout=180)

    def status(self):
        run = self.run("status", self.file, "--json")
        return run.returncode, json.loads(run.stdout)

    def node(self, name):
        return next(n for n in self.status()[1]["nodes"] if n["name"] == name)

    def host(self, name):
        return next(h for h in self.status()[1]["hosts"] if name in h["nodes"])

    def leftovers(self):
        if self.tag is None:
            return []
        return ([n for n in netns_list() if n.startswith(f"fl-{self.tag}-")] +
                [l for l in links() if l.startswith(f"fl{self.tag}-") or l == f"flbr-{self.tag}"])

    def logs(self):
        out = []
        logs = os.path.join(self.dir, "var", "logs")
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            with open(os.path.join(logs, name), errors="replace") as f:
                # Events only: the access lines of a loaded site would crowd them out.
                events = "".join(line for line in f if " access " not in line and '"access"' not in line)
                out.append(f"--- {name} ---\n{events[-2500:]}")
        return "\n" + "\n".join(out)

    def cleanup(self):
        try:
            self.run("down", self.file)
        finally:
            if self.up is not None:
                self.up.stop(timeout=60)
            for name in self.leftovers():
                if name.startswith("fl-"):
                    subprocess.run(["ip", "netns", "del", name], capture_output=True)
                else:
                    subprocess.run(["ip", "link", "del", name], capture_output=True)
            for pid in processes_mentioning(self.dir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(self.dir, ignore_errors=True)


def served(site, times=5):
    """`times` requests in a row answered 200 (each within 3 s)."""
    for _ in range(times):
        if http_get(site + "hello.txt", timeout=3)[0] != 200:
            return False
    return True


def answers(url):
    try:
        return http_get(url, timeout=1)[0] == 200
    except OSError:
        return False


# Run in a namespace: connects to every HOST:PORT argument at once (1 s each), prints
# {"HOST:PORT": "open" | "refused" | "silent" | error}.
REACH = """
import concurrent.futures, json, socket, sys
def one(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "silent"
    except OSError as e:
        return str(e)
with concurrent.futures.ThreadPoolExecutor(len(sys.argv)) as pool:
    print(json.dumps(dict(zip(sys.argv[1:], pool.map(one, sys.argv[1:])))))
"""


def reach(netns, targets):
    run = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", REACH, *targets], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def vip_site_text():
    """Two lbs on a virtual IP (http and https there, db frontends too), a web node, a database, etcd:
    examples/lab.toml in small."""
    return (f'[site]\nname = "fwtest"\nstate_dir = "var"\n'
            f'[lb]\nretries = 2\n[lb.health]\ninterval_ms = 200\ntimeout_ms = 300\nrise = 1\nfall = 2\n'
            f'[lb.vip]\naddress = "{NET}.100/24"\ninterface = "eth0"\nvrid = 77\nadvert_interval_ms = 200\n'
            + "".join(f'[[lb.node]]\nname = "lb-0{i}"\nhttp = "{NET}.100:80"\nhttps = "{NET}.100:443"\n'
                      f'stats = "{NET}.1{i}:8404"\ndb_write = "{NET}.100:5000"\nthreads = 1\npriority = {200 - i}\n'
                      for i in (1, 2))
            + f'[web]\ndocroot = "www"\napp = "guestbook"\n'
            f'[[web.node]]\nname = "web-01"\nlisten = "{NET}.21:80"\nthreads = 1\n'
            f'[db]\nleader_ttl_ms = 3000\n[[db.node]]\nname = "db-01"\npg = "{NET}.31:5432"\n'
            f'agent = "{NET}.31:8008"\n[etcd]\nendpoints = ["{NET}.41:2379"]\nmanaged = true\n')


def netns_inode(path):
    return os.stat(path).st_ino


@needs(missing())
class LabTest(unittest.TestCase):
    def test_lab_serves_survives_faults_and_goes_away(self):
        lab = Lab(with_db=True)
        self.addCleanup(lab.cleanup)
        state = lab.start(self)
        self.assertEqual(state["this_machine"], f"{NET}.254/24")
        site = f"http://{LB}/"

        # The site answers from this machine through the load balancer's host address, and a
        # guestbook write crosses web -> database -> etcd, each in its own namespace.
        status, _, body = http_get(site + "hello.txt", timeout=5)
        self.assertEqual((status, body), (200, b"hello from the lab\n"))
        status, _, body = http_get(site + "api/messages", method="POST", timeout=10,
                                   headers={"Content-Type": "application/json"},
                                   data=json.dumps({"author": "lab", "text": "across hosts"}).encode())
        self.assertEqual(status, 201, body)

        # One namespace per host, and each node runs in its own host's.
        self.assertEqual(len(state["hosts"]), 5)
        ours = netns_inode("/proc/self/ns/net")
        for node in state["nodes"]:
            self.assertIn(node["host"], netns_list())
            inode = netns_inode(f"/proc/{node['pid']}/ns/net")
            self.assertNotEqual(inode, ours, node["name"])
            self.assertEqual(inode, netns_inode(f"/run/netns/{node['host']}"), node["name"])
        self.assertEqual({n["name"] for n in state["nodes"]}, {"etcd", "db-01", "web-01", "web-02", "lb-01"})

        # pause: web-01 stops answering; the load balancer takes it out and the site still answers.
        run = lab.run("pause", lab.file, "web-01")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(lab.node("web-01")["state"], "paused")
        wait_until(lambda: served(site), timeout=20, interval=0.1, what="the site to answer with web-01 paused")
        self.assertEqual(lab.run("resume", lab.file, "web-01").returncode, 0)
        wait_until(lambda: lab.node("web-01")["answers"], timeout=10, what="web-01 to answer once resumed")

        # cut: web-02's host is off the network both ways; the site still answers; heal brings it back.
        run = lab.run("cut", lab.file, "web-02")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertFalse(lab.host("web-02")["link_up"])
        self.assertFalse(answers(f"http://{WEB['web-02']}/healthz"))
        wait_until(lambda: served(site), timeout=20, interval=0.1, what="the site to answer with web-02 cut")
        self.assertEqual(lab.run("heal", lab.file, "web-02").returncode, 0)
        wait_until(lambda: answers(f"http://{WEB['web-02']}/healthz"), timeout=10, what="web-02 back after heal")

        # A one-way cut: nothing gets into web-02's host; heal undoes it.
        self.assertEqual(lab.run("cut", lab.file, "web-02", "--oneway", "in").returncode, 0)
        self.assertTrue(lab.host("web-02")["cut_in"])
        self.assertFalse(answers(f"http://{WEB['web-02']}/healthz"))
        self.assertEqual(lab.run("heal", lab.file, "web-02").returncode, 0)
        self.assertFalse(lab.host("web-02")["cut_in"])
        wait_until(lambda: answers(f"http://{WEB['web-02']}/healthz"), timeout=10, what="web-02 back after heal")

        # kill: `lab up` restarts the node, in its namespace, as `up` does.
        old = lab.node("web-01")["pid"]
        run = lab.run("kill", lab.file, "web-01")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("restarts it", run.stdout)
        wait_until(lambda: lab.node("web-01")["pid"] not in (0, old) and lab.node("web-01")["answers"],
                   timeout=15, what="web-01 restarted")
        new = lab.node("web-01")["pid"]
        self.assertEqual(netns_inode(f"/proc/{new}/ns/net"), netns_inode(f"/run/netns/{lab.node('web-01')['host']}"))

        # kill --hold keeps it down until resume.
        self.assertEqual(lab.run("kill", lab.file, "web-02", "--hold").returncode, 0)
        deadline = time.monotonic() + 2.0  # the first restart would come after 0.5 s
        while time.monotonic() < deadline:
            self.assertEqual(lab.node("web-02")["state"], "down, held")
            time.sleep(0.1)
        self.assertEqual(lab.run("resume", lab.file, "web-02").returncode, 0)
        wait_until(lambda: lab.node("web-02")["answers"], timeout=10, what="web-02 back after resume")

        # down: `lab up` stops every node and removes the network; nothing is left. A paused
        # database (and its PostgreSQL) is resumed to stop at once, not SIGKILLed after 30 s.
        self.assertEqual(lab.run("pause", lab.file, "db-01").returncode, 0)
        began = time.monotonic()
        run = lab.run("down", lab.file)
        took = time.monotonic() - began
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertLess(took, 20, lab.up.output()[-3000:])
        self.assertNotIn("SIGKILL", lab.up.output())
        self.assertEqual(lab.up.wait(timeout=60), 0, lab.up.output()[-3000:])
        self.assertEqual(lab.leftovers(), [])
        self.assertEqual(processes_mentioning(lab.dir), [])
        self.assertFalse(os.path.exists(os.path.join(lab.dir, "var", "lab.json")))
        run = lab.run("down", lab.file)
        self.assertEqual(run.returncode, 0)
        self.assertIn("nothing to do", run.stdout)
        self.assertEqual(lab.status()[0], 1)

    def test_firewall_lets_in_only_what_the_topology_needs(self):
        lab = Lab(text=vip_site_text())
        self.addCleanup(lab.cleanup)
        state = lab.start(self)
        self.assertIn("firewall loaded on 5 hosts", lab.up.output())
        vip = f"{NET}.100"
        wait_until(lambda: answers(f"http://{vip}/hello.txt"), timeout=20, what="the VIP to answer")

        # An outside machine on the lab's segment: a namespace of ours on its bridge, at .200.
        outside, veth = f"fwout-{os.getpid()}", f"fwo{os.getpid()}"[:15]

        def remove_outside():
            subprocess.run(["ip", "netns", "del", outside], capture_output=True)
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
        self.addCleanup(remove_outside)
        for args in (["netns", "add", outside], ["-n", outside, "link", "set", "lo", "up"],
                     ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", outside],
                     ["link", "set", veth, "master", state["bridge"], "up"],
                     ["-n", outside, "addr", "add", f"{NET}.200/24", "dev", "eth0"],
                     ["-n", outside, "link", "set", "eth0", "up"]):
            run = subprocess.run(["ip", *args], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, f"ip {' '.join(args)}: {run.stderr}")

        public = [f"{vip}:80", f"{vip}:443"]
        internal = [f"{vip}:5000", f"{NET}.11:8404", f"{NET}.12:8404", f"{NET}.21:80", f"{NET}.31:5432",
                    f"{NET}.31:8008", f"{NET}.41:2379", f"{NET}.41:2380"]
        # The bridge forwards once the new port leaves the listening state: poll the public port.
        wait_until(lambda: reach(outside, public[:1])[public[0]] == "open", timeout=10,
                   what="the VIP to answer the outside namespace")
        seen = reach(outside, public + internal)
        self.assertEqual({t: seen[t] for t in public}, {t: "open" for t in public}, seen)
        self.assertEqual({t: seen[t] for t in internal}, {t: "silent" for t in internal}, seen)
        # Through the VIP, the whole site works from outside: a guestbook write and its read.
        run = subprocess.run(["ip", "netns", "exec", outside, "curl", "-sS", "-m", "10", "-o", "/dev/null", "-w",
                              "%{http_code}", "-H", "Content-Type: application/json", "-d",
                              json.dumps({"author": "fw", "text": "through the firewall"}),
                              f"http://{vip}/api/messages"], capture_output=True, text=True, timeout=30)
        self.assertEqual(run.stdout, "201", run.stderr)
        run = subprocess.run(["ip", "netns", "exec", outside, "curl", "-sS", "-m", "10", f"http://{vip}/api/messages"],
                             capture_output=True, text=True, timeout=30)
        self.assertIn("through the firewall", run.stdout, run.stderr)

        # The web host reaches PostgreSQL, not etcd; the database host reaches etcd.
        web_host = lab.host("web-01")["netns"]
        self.assertEqual(reach(web_host, [f"{NET}.31:5432", f"{NET}.41:2379"]),
                         {f"{NET}.31:5432": "open", f"{NET}.41:2379": "silent"})
        self.assertEqual(reach(lab.host("db-01")["netns"], [f"{NET}.41:2379"]), {f"{NET}.41:2379": "open"})
        # What was loaded is what `fulcrum firewall` prints (with this machine as --admin).
        listed = subprocess.run(["ip", "netns", "exec", web_host, "nft", "list", "table", "inet", "fulcrum"],
                                capture_output=True, text=True, timeout=30)
        self.assertIn("policy drop", listed.stdout, listed.stderr)
        self.assertIn(f"ip saddr {{ {NET}.11, {NET}.12 }} tcp dport 80 accept", listed.stdout)

    def test_down_cleans_up_after_lab_up_was_killed(self):
        lab = Lab(with_db=False)
        self.addCleanup(lab.cleanup)
        lab.start(self, timeout=60)
        self.assertNotEqual(lab.leftovers(), [])
        lab.up.signal(signal.SIGKILL)
        lab.up.wait(timeout=10)
        code, state = lab.status()
        self.assertEqual(code, 1)
        self.assertFalse(state["running"])
        self.assertNotEqual(state["leftovers"], [])
        run = lab.run("down", lab.file)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("deleted namespace", run.stdout)
        self.assertEqual(lab.leftovers(), [])
        wait_until(lambda: processes_mentioning(lab.dir) == [], timeout=10, what="no process of the lab left")
        run = lab.run("down", lab.file)
        self.assertEqual((run.returncode, "nothing to do" in run.stdout), (0, True), run.stdout)

    def test_refuses_loopback_addresses_and_non_root(self):
        lab = Lab(text=site_text(False).replace(NET + ".", "127.0.0."))
        self.addCleanup(lab.cleanup)
        before = netns_list()
        run = lab.run("up", lab.file)
        self.assertEqual(run.returncode, 2)
        self.assertIn("loopback address", run.stderr)
        self.assertIn("10.77.0.0/24", run.stderr)
        self.assertEqual(netns_list(), before)
        self.assertFalse(os.path.exists(os.path.join(lab.dir, "var")), "nothing is created for a refused file")
        if shutil.which("setpriv"):
            run = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", FULCRUM, "lab",
                                  "status", lab.file], capture_output=True, text=True, timeout=30)
            self.assertEqual(run.returncode, 1)
            self.assertIn("needs root", run.stderr)


if __name__ == "__main__":
    unittest.main()
