"""The two systems under test, each a three-node PostgreSQL cluster on loopback with its own etcd
(so nothing one writes can touch the other): `fulcrum db` agents, and Patroni 3 with the etcd3
DCS. Both answer the same REST checks (/primary, /replica?lag=BYTES), which is all the writer and
the trial driver use to find roles."""
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg2

import freeze

HERE = os.path.dirname(os.path.abspath(__file__))
# The integration tests' helpers: free ports, finding PostgreSQL, processes by command line.
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
import test_db  # noqa: E402
from harness import free_port  # noqa: E402

NODES = ["db-1", "db-2", "db-3"]
PYTHON = "/usr/bin/python3"  # Debian's interpreter: Patroni and python3-psycopg2 live there
MAX_LAG = 1048576  # Fulcrum's max_lag_bytes default = Patroni's maximum_lag_on_failover default


class NotSupported(Exception):
    """The build under test refuses a setting (e.g. `[db] synchronous = true` before it lands)."""


def http_code(url, timeout=1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def wait_until(predicate, timeout, interval=0.1, what="condition"):
    """Like the harness's, but an exception from `predicate` (NotSupported) ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def processes_mentioning(text):
    """Pids of live processes, other than this one, whose command line contains `text`."""
    return [pid for pid in test_db.processes_mentioning(text) if pid != os.getpid()]


def pg_bin():
    found = test_db.pg_bin()
    if found is None:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres)")
    return found


def kill_quietly(pid, signo=signal.SIGKILL):
    try:
        os.kill(pid, signo)
    except (ProcessLookupError, PermissionError):
        pass


class Etcd:
    """A single-member etcd 3.4 on free loopback ports, data under `directory`."""

    def __init__(self, directory):
        self.port = free_port()
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{free_port()}"
        self.log = open(os.path.join(directory, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            ["etcd", "--name=bench", "--data-dir=" + os.path.join(directory, "etcd"),
             "--listen-client-urls=" + client, "--advertise-client-urls=" + client,
             "--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
             "--initial-cluster=bench=" + peer, "--heartbeat-interval=50", "--election-timeout=500",
             "--logger=zap", "--log-level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: http_code(client + "/health") == 200, timeout=30, what="etcd healthy")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class Cluster:
    """Three nodes of one system; subclasses say how to start an agent and how to log in."""

    system = ""

    def __init__(self, root, ttl_ms, synchronous):
        self.ttl_ms = ttl_ms
        self.synchronous = synchronous
        mode = "sync" if synchronous else "async"
        self.dir = os.path.join(root, f"{self.system}-{ttl_ms}-{mode}")
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)  # the postgres user must traverse it
        self.ports = {n: (free_port(), free_port()) for n in NODES}  # (postgres, agent REST)
        self.agents = {}
        self.etcd = None
        self.keep_logs = ""  # a directory to copy the logs to before the cluster is removed
        # Every pid the freeze faults SIGSTOP, until thawed; shared with failover.sh's sweep.
        self.frozen_record = os.path.join(root, "frozen.pids")

    # --- per system ---
    def start_agent(self, node):
        raise NotImplementedError

    def agent_pid(self, node):
        raise NotImplementedError

    def data_dir(self, node):
        raise NotImplementedError

    def dsn(self, node):
        raise NotImplementedError

    # --- common ---
    def start(self):
        self.etcd = Etcd(self.dir)
        for node in NODES:
            self.start_agent(node)

    def code(self, node, path, timeout=1.0):
        return http_code(f"http://127.0.0.1:{self.ports[node][1]}{path}", timeout=timeout)

    def connect(self, node, timeout=2):
        conn = psycopg2.connect(self.dsn(node), connect_timeout=timeout)
        conn.autocommit = True
        return conn

    def query(self, node, sql, args=None):
        conn = self.connect(node)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def postmaster_pid(self, node):
        with open(os.path.join(self.data_dir(node), "postmaster.pid")) as f:
            return int(f.readline())

    def check_agents(self):
        """Raises if an agent exited: NotSupported when it refused a setting this build lacks."""
        for node, proc in self.agents.items():
            if proc.poll() is not None:
                log = self.agent_log(node)
                if "not supported yet" in log:
                    raise NotSupported(log.strip().splitlines()[-1])
                raise RuntimeError(f"{self.system} agent {node} exited {proc.returncode}:\n{log[-3000:]}")

    def agent_log(self, node):
        with open(os.path.join(self.dir, node + ".log"), errors="replace") as f:
            return f.read()

    def roles(self):
        """(primary, replicas) when exactly one node is primary, the two others replicas within the
        lag bound, the primary is really out of recovery and, in synchronous mode, has a synchronous
        standby configured; None otherwise."""
        self.check_agents()
        primaries = [n for n in NODES if self.code(n, "/primary") == 200]
        replicas = [n for n in NODES if n not in primaries and self.code(n, f"/replica?lag={MAX_LAG}") == 200]
        if len(primaries) != 1 or len(replicas) != 2:
            return None
        try:
            rows = self.query(primaries[0], "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')")
        except psycopg2.Error:
            return None
        in_recovery, standby_names = rows[0]
        if in_recovery or (self.synchronous and not standby_names):
            return None
        return primaries[0], replicas

    def wait_ready(self, timeout):
        return wait_until(self.roles, timeout=timeout, interval=0.2,
                          what=f"{self.system}: one primary and two streaming replicas")

    def kill_agent(self, node):
        kill_quietly(self.agent_pid(node))

    def pg_processes(self, node):
        """The node's PostgreSQL processes: the postmaster (from postmaster.pid), its descendants,
        and anything else whose command line names the data directory; never the agent."""
        data = self.data_dir(node)
        postmaster = self.postmaster_pid(node)
        pids = [postmaster] + freeze.descendants(postmaster) + processes_mentioning(data)
        agent = self.agent_pid(node)
        seen, ordered = {agent}, []
        for pid in pids:
            if pid not in seen:
                seen.add(pid)
                ordered.append(pid)
        return ordered

    def freeze_agent(self, node):
        """Fault (c): SIGSTOP of the node's agent process only. Returns what to thaw."""
        return freeze.stop(self.frozen_record, [self.agent_pid(node)])

    def freeze_node(self, node):
        """Fault (d): SIGSTOP of the agent, then of every PostgreSQL process of the node (the
        postmaster first, so it forks nothing more) and anything else below the agent. Rescans
        until a pass finds nothing new (a child forked during the pass). Returns what to thaw,
        in stopping order (the agent first)."""
        agent = self.agent_pid(node)
        entries = freeze.stop(self.frozen_record, [agent])
        for _ in range(20):
            done = {pid for pid, _ in entries}
            # dict.fromkeys: in order, once each (Fulcrum's postmaster is also below its agent).
            todo = [p for p in dict.fromkeys(self.pg_processes(node) + freeze.descendants(agent)) if p not in done]
            if not todo:
                break
            entries += freeze.stop(self.frozen_record, todo)
        return entries

    def thaw(self, entries):
        """SIGCONT in the reverse order of the freeze: PostgreSQL first, the agent last."""
        freeze.cont(self.frozen_record, list(reversed(entries)))

    def reap_agent(self, node, timeout=30):
        """Waits for the killed agent's process (Fulcrum's agent; Patroni's reaper wrapper)."""
        self.agents[node].wait(timeout=timeout)

    def reclone(self, node):
        """Stops the node's agent, removes its PostgreSQL data (keeping the logs) and starts the
        agent again, which clones the current primary: the way out when a node cannot rejoin."""
        proc = self.agents[node]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_quietly(proc.pid)
            proc.wait()
        data = self.data_dir(node)
        for pid in processes_mentioning(data):
            kill_quietly(pid)
        wait_until(lambda: not processes_mentioning(data), timeout=15, what=f"{node}'s PostgreSQL gone")
        shutil.rmtree(data)
        self.start_agent(node)

    def stop(self, hard=False):
        """SIGTERM every agent (each stops its PostgreSQL), then kill whatever is left. Anything
        still frozen is thawed first: a stopped agent would not act on SIGTERM, and a stopped
        backend would outlive its killed postmaster."""
        thawed = freeze.thaw_all(self.frozen_record)
        if not hard:
            for proc in self.agents.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self.agents.values():
                try:
                    proc.wait(timeout=45)
                except subprocess.TimeoutExpired:
                    pass
        for proc in self.agents.values():
            kill_quietly(proc.pid)
            proc.wait()
        if self.etcd is not None:
            self.etcd.stop()
        for pid in processes_mentioning(self.dir):
            kill_quietly(pid)
        for entry in thawed:
            if freeze.alive(entry):
                kill_quietly(entry[0])
        try:
            wait_until(lambda: not processes_mentioning(self.dir), timeout=15, what="no process left")
        except TimeoutError:
            pass
        if self.keep_logs:
            into = os.path.join(self.keep_logs, f"{os.path.basename(self.dir)}-{time.strftime('%H%M%S')}")
            os.makedirs(into, exist_ok=True)
            for path in glob.glob(os.path.join(self.dir, "**", "*.log"), recursive=True):
                shutil.copy(path, os.path.join(into, os.path.relpath(path, self.dir).replace("/", "_")))
        shutil.rmtree(self.dir, ignore_errors=True)


class FulcrumCluster(Cluster):
    system = "fulcrum"

    def __init__(self, root, ttl_ms, synchronous, binary):
        super().__init__(root, ttl_ms, synchronous)
        self.binary = binary
        self.site = os.path.join(self.dir, "site.toml")
        self._password = None

    def start(self):
        self.etcd = Etcd(self.dir)
        text = ('[site]\nname = "failover-bench"\nstate_dir = "var"\n'
                f"[db]\nfailover = true\nleader_ttl_ms = {self.ttl_ms}\n"
                f"synchronous = {'true' if self.synchronous else 'false'}\n")
        for node in NODES:
            pg, agent = self.ports[node]
            text += f'[[db.node]]\nname = "{node}"\npg = "127.0.0.1:{pg}"\nagent = "127.0.0.1:{agent}"\n'
        text += f'[etcd]\nendpoints = ["127.0.0.1:{self.etcd.port}"]\nmanaged = false\n'
        with open(self.site, "w") as f:
            f.write(text)
        for node in NODES:
            # One at a time, each once its API answers: agents started together on a fresh
            # state_dir race to create var/admin.token, and the losers exit with "cannot read".
            self.start_agent(node)
            wait_until(lambda n=node: self.check_agents() or self.code(n, "/health") is not None, timeout=30,
                       interval=0.05, what=f"{node}'s API")

    def start_agent(self, node):
        log = open(os.path.join(self.dir, node + ".log"), "ab")
        self.agents[node] = subprocess.Popen([self.binary, "db", "--site", self.site, "--node", node],
                                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
        log.close()

    def agent_pid(self, node):
        return self.agents[node].pid

    def data_dir(self, node):
        return os.path.join(self.dir, "var", node, "data")

    def dsn(self, node):
        if self._password is None:
            with open(os.path.join(self.dir, "var", "db.password")) as f:
                self._password = f.readline().strip()
        return f"host=127.0.0.1 port={self.ports[node][0]} user=site dbname=site password={self._password}"


class PatroniCluster(Cluster):
    """Patroni 3 with ttl 10 s, loop_wait 2 s, retry_timeout 4 s (the tuned setting the issue
    measured), replication slots, the same PostgreSQL settings Fulcrum writes.
    One patroni process per node, as the postgres user, below reaper.py."""

    system = "patroni"

    def __init__(self, root, ttl_ms, synchronous):
        super().__init__(root, ttl_ms, synchronous)
        self.passwords = {role: secrets.token_hex(12) for role in ("superuser", "replication", "rewind")}
        self.user = pwd.getpwnam("postgres")

    def node_dir(self, node):
        return os.path.join(self.dir, node)

    def start(self):
        self.etcd = Etcd(self.dir)
        for node in NODES:
            os.makedirs(self.node_dir(node), mode=0o700)
            os.chown(self.node_dir(node), self.user.pw_uid, self.user.pw_gid)
            with open(os.path.join(self.node_dir(node), "patroni.yml"), "w") as f:
                f.write(self.config(node))
            self.start_agent(node)

    def config(self, node):
        pg, rest = self.ports[node]
        ttl = self.ttl_ms // 1000
        # JSON is YAML: no quoting surprises in generated values.
        cfg = {
            "scope": "failover-bench",
            "namespace": "/bench/",
            "name": node,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"127.0.0.1:{rest}", "connect_address": f"127.0.0.1:{rest}"},
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd.port}"]},
            # No watchdog device, as most installs run (and this machine has no /dev/watchdog):
            # said explicitly so the default "automatic" cannot pick one up somewhere else.
            "watchdog": {"mode": "off"},
            "bootstrap": {
                "dcs": {
                    "ttl": ttl, "loop_wait": 2, "retry_timeout": 4,
                    "maximum_lag_on_failover": MAX_LAG,
                    "synchronous_mode": self.synchronous,
                    "postgresql": {
                        # With use_pg_rewind, Patroni 3.0.2 first runs crash recovery in single-user
                        # mode when the primary's own postgres dies (about 5 s more for fault (a));
                        # a diverged old primary is re-cloned instead, which the trials do not time.
                        "use_pg_rewind": False, "remove_data_directory_on_diverged_timelines": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_level": "replica", "max_wal_senders": 10, "max_replication_slots": 10,
                            "hot_standby": "on", "hot_standby_feedback": "on", "wal_log_hints": "on",
                            "wal_keep_size": "128MB", "max_slot_wal_keep_size": "2GB",
                            "password_encryption": "scram-sha-256",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, "data-checksums"],
                "pg_hba": ["local all all trust",
                           "host replication replicator 127.0.0.1/32 scram-sha-256",
                           "host all all 127.0.0.1/32 scram-sha-256"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{pg}",
                "connect_address": f"127.0.0.1:{pg}",
                "data_dir": self.data_dir(node),
                "bin_dir": pg_bin(),
                "pgpass": os.path.join(self.node_dir(node), "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": self.passwords["superuser"]},
                    "replication": {"username": "replicator", "password": self.passwords["replication"]},
                    "rewind": {"username": "rewinder", "password": self.passwords["rewind"]},
                },
                "parameters": {"unix_socket_directories": self.node_dir(node)},
            },
        }
        return json.dumps(cfg, indent=2) + "\n"

    def start_agent(self, node):
        pidfile = os.path.join(self.node_dir(node), "patroni.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        log = open(os.path.join(self.dir, node + ".log"), "ab")
        env = {"PATH": "/usr/bin:/bin", "HOME": self.node_dir(node), "LANG": "C.UTF-8"}
        self.agents[node] = subprocess.Popen(
            [PYTHON, os.path.join(HERE, "reaper.py"), pidfile, "/usr/bin/patroni",
             os.path.join(self.node_dir(node), "patroni.yml")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=self.node_dir(node), env=env, user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        log.close()

    def agent_pid(self, node):
        """The patroni process itself (the reaper's child), not the wrapper."""
        pidfile = os.path.join(self.node_dir(node), "patroni.pid")
        with open(pidfile) as f:
            return int(f.readline())

    def data_dir(self, node):
        return os.path.join(self.node_dir(node), "data")

    def dsn(self, node):
        return (f"host=127.0.0.1 port={self.ports[node][0]} user=postgres dbname=postgres "
                f"password={self.passwords['superuser']}")
