"""`fulcrum db` end to end: a real etcd and three real database agents, each supervising its own
PostgreSQL, on free loopback ports under a temporary directory the postgres user can traverse.
Conditions are awaited by bounded polling; every process is reaped and every data directory
removed, even when a test fails. Skipped when etcd, PostgreSQL or its OS user is missing."""
import glob
import json
import os
import re
import pwd
import select
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (FULCRUM, Process, assert_valid_metrics, free_port, http_get, wait_reload_report, wait_until,
                     needs)

LEADER_TTL_MS = 3000
NODES = ["db-1", "db-2", "db-3"]


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def missing_requirement():
    if shutil.which("etcd") is None:
        return "etcd is not installed"
    if pg_bin() is None:
        return "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` OS user"
    if os.geteuid() != 0:
        return "the agent runs PostgreSQL as the postgres user: needs root"
    return None


def processes_mentioning(text):
    """Pids of live processes whose command line contains `text`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


def site_text(etcd_port, ports, failover=False, synchronous=False, strict=False, max_lag_bytes=1048576):
    text = '[site]\nname = "dbtest"\nstate_dir = "var"\n'
    text += (f"[db]\nfailover = {'true' if failover else 'false'}\nleader_ttl_ms = {LEADER_TTL_MS}\n"
             f"max_lag_bytes = {max_lag_bytes}\n"
             f"synchronous = {'true' if synchronous else 'false'}\n"
             f"synchronous_strict = {'true' if strict else 'false'}\n")
    for name in NODES:
        pg, agent = ports[name]
        text += f'[[db.node]]\nname = "{name}"\npg = "127.0.0.1:{pg}"\nagent = "127.0.0.1:{agent}"\n'
    text += f'[etcd]\nendpoints = ["127.0.0.1:{etcd_port}"]\nmanaged = false\n'
    return text


class Cluster:
    """A temporary directory (0755 under /tmp), an etcd, and the agents' processes."""

    def __init__(self, failover=False, synchronous=False, strict=False):
        self.dir = tempfile.mkdtemp(prefix="fulcrum-db-", dir="/tmp")
        os.chmod(self.dir, 0o755)  # the postgres user must traverse it
        self.etcd = None
        self.etcd_tls = None
        self.agents = {}
        self.etcd_port = free_port()
        self.ports = {name: (free_port(), free_port()) for name in NODES}
        self.site = os.path.join(self.dir, "site.toml")
        with open(self.site, "w") as f:
            f.write(site_text(self.etcd_port, self.ports, failover=failover, synchronous=synchronous,
                              strict=strict))

    def start_etcd(self):
        # Under [security] internal_tls (etcd_tls: the directory `fulcrum certs` filled) the agents
        # speak TLS to etcd with their certificates: clients over https, site certificates only.
        client = f"{'https' if self.etcd_tls else 'http'}://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{free_port()}"
        tls_flags, context = [], None
        if self.etcd_tls:
            t = self.etcd_tls
            tls_flags = [f"--cert-file={t}/etcd.crt", f"--key-file={t}/etcd.key", "--client-cert-auth",
                         f"--trusted-ca-file={t}/ca.crt"]
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(f"{t}/ca.crt")
            context.load_cert_chain(f"{t}/operator.crt", f"{t}/operator.key")
        self.etcd = Process(["etcd", "--name=fulcrum-db-test", "--data-dir=" + os.path.join(self.dir, "etcd"),
                             "--listen-client-urls=" + client, "--advertise-client-urls=" + client,
                             "--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
                             "--initial-cluster=fulcrum-db-test=" + peer, "--heartbeat-interval=50",
                             "--election-timeout=500", "--logger=zap", "--log-level=warn", *tls_flags],
                            os.path.join(self.dir, "etcd.log"))
        wait_until(lambda: http_get(client + "/health", timeout=1, context=context)[0] == 200, timeout=15,
                   what="etcd healthy")

    def start_agent(self, name):
        self.agents[name] = Process([FULCRUM, "db", "--site", self.site, "--node", name],
                                    os.path.join(self.dir, name + ".log"))

    def start(self, test, timeout=60):
        """etcd and every agent; returns (primary, replicas) once the roles are settled."""
        self.start_etcd()
        for name in NODES:
            self.start_agent(name)
        return self.wait_roles(test, NODES, timeout=timeout)

    def url(self, name, path):
        return f"{'https' if self.etcd_tls else 'http'}://127.0.0.1:{self.ports[name][1]}{path}"

    def agent_context(self, holder="operator"):
        """Under internal_tls the agents' API is https only: an ssl context that verifies it with the
        site CA and presents `holder`'s certificate (None: none; a (cert, key) pair: those files).
        None without internal_tls."""
        if not self.etcd_tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(os.path.join(self.etcd_tls, "ca.crt"))
        if isinstance(holder, tuple):
            context.load_cert_chain(*holder)
        elif holder is not None:
            context.load_cert_chain(os.path.join(self.etcd_tls, holder + ".crt"),
                                    os.path.join(self.etcd_tls, holder + ".key"))
        return context

    def code(self, name, path, method="GET"):
        try:
            return http_get(self.url(name, path), method=method, timeout=2, context=self.agent_context())[0]
        except OSError:
            return None

    def status(self, name):
        # Generous: an agent's loop may be busy for seconds (a promotion, a loaded machine).
        code, _, body = http_get(self.url(name, "/status"), timeout=10, context=self.agent_context())
        assert code == 200, code
        return json.loads(body)

    def wait_roles(self, test, names, timeout):
        """Waits until exactly one of `names` answers /primary 200 and every other /replica 200."""
        def roles():
            primaries = [n for n in names if self.code(n, "/primary") == 200]
            replicas = [n for n in names if self.code(n, "/replica") == 200]
            ok = len(primaries) == 1 and len(replicas) == len(names) - 1 and primaries[0] not in replicas
            return (primaries[0], replicas) if ok else None

        try:
            return wait_until(roles, timeout=timeout, interval=0.2, what="one primary, the others replicas")
        except AssertionError:
            test.fail(f"no primary and {len(names) - 1} replicas among {names}:\n" + self.logs())

    def has_rows(self, name, expected):
        return self.psql(name, "SELECT v FROM t ORDER BY v").stdout.split() == expected

    def stop_all(self, test):
        """SIGTERM: every agent exits 0 and leaves no PostgreSQL behind; and no agent ever made a
        state change its table does not allow."""
        for name, agent in self.agents.items():
            test.assertNotIn("unexpected state change", agent.output(), name)
        for agent in self.agents.values():
            agent.signal(signal.SIGTERM)
        for name, agent in self.agents.items():
            test.assertEqual(agent.wait(timeout=45), 0, f"{name}:\n{agent.output()[-3000:]}")
        wait_until(lambda: processes_mentioning(os.path.join(self.dir, "var")) == [], timeout=10,
                   what="no PostgreSQL left")

    def psql_command(self, name, sql):
        """(args, env) of psql over TCP as the application role, with the generated password."""
        with open(os.path.join(self.dir, "var", "db.password")) as f:
            password = f.readline().strip()
        env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="3")
        return [os.path.join(pg_bin(), "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                "-p", str(self.ports[name][0]), "-U", "site", "-d", "site", "-c", sql], env

    def psql(self, name, sql):
        args, env = self.psql_command(name, sql)
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=10)

    def primary(self):
        """The node answering /primary 200, or None."""
        for name in NODES:
            if self.code(name, "/primary") == 200:
                return name
        return None

    def token(self):
        with open(os.path.join(self.dir, "var", "admin.token")) as f:
            return f.readline().strip()

    def switchover(self, name, body, token=None, timeout=60, holder="operator"):
        """POST /switchover (under internal_tls as `holder`, see agent_context); returns (status,
        decoded JSON body)."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        code, _, raw = http_get(self.url(name, "/switchover"), method="POST", data=data, headers=headers,
                                timeout=timeout, context=self.agent_context(holder))
        try:
            return code, json.loads(raw)
        except ValueError:
            return code, raw

    def planned_switchover(self, leader, target, token):
        """POST /switchover to `target`, again while refused with 409 or 503 because a status query
        on a loaded machine timed out (a node then looks stopped for a moment; a refusal changes
        nothing); returns (status, body, seconds the accepted call took)."""
        deadline = time.monotonic() + 20
        while True:
            started = time.monotonic()
            code, body = self.switchover(leader, {"to": target}, token=token)
            if code not in (409, 503) or time.monotonic() > deadline:
                return code, body, time.monotonic() - started
            time.sleep(0.2)

    def wait_for(self, test, predicate, timeout, what):
        """wait_until, failing the test with the agents' logs."""
        try:
            return wait_until(predicate, timeout=timeout, interval=0.1, what=what)
        except AssertionError as e:
            test.fail(f"{e}\n{self.logs()}")

    def ids(self, name):
        out = self.psql(name, "SELECT id FROM acked")
        assert out.returncode == 0, out.stderr
        return {int(v) for v in out.stdout.split()}

    def postmaster_pid(self, name):
        with open(os.path.join(self.dir, "var", name, "data", "postmaster.pid")) as f:
            return int(f.readline())

    def logs(self):
        out = []
        for name, agent in self.agents.items():
            out.append(f"--- {name} ---\n{agent.output()[-4000:]}")
        return "\n".join(out)

    def data_dir(self, name):
        return os.path.join(self.dir, "var", name, "data")

    def cleanup(self):
        if os.environ.get("FULCRUM_TEST_LOGS"):
            print(self.logs())
        for agent in self.agents.values():
            agent.stop(timeout=30)
        if self.etcd is not None:
            self.etcd.proc.kill()
            self.etcd.stop()
        # A postmaster an agent failed to stop (it should never happen) dies with the test.
        for pid in processes_mentioning(self.dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Writers:
    """Threads committing rows as fast as they can, each through its own psql sessions (one
    statement per transaction, ten per session) to whichever node answers /primary 200. An id
    counts as acknowledged once psql printed it: its commit returned."""

    def __init__(self, cluster, threads=4):
        self.cluster = cluster
        self.acked = set()
        self.failed_batches = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        with open(os.path.join(cluster.dir, "var", "db.password")) as f:
            self.env = dict(os.environ, PGPASSWORD=f.readline().strip(), PGCONNECT_TIMEOUT="2")
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, writer):
        batch = f"INSERT INTO acked (writer) VALUES ({writer}) RETURNING id;\n" * 10
        while not self.stopping.is_set():
            primary = self.cluster.primary()
            if primary is None:
                time.sleep(0.05)
                continue
            try:
                out = subprocess.run([os.path.join(pg_bin(), "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                                      "-h", "127.0.0.1", "-p", str(self.cluster.ports[primary][0]), "-U", "site",
                                      "-d", "site", "-f", "-"], input=batch, env=self.env, capture_output=True,
                                     text=True, timeout=30)
            except subprocess.TimeoutExpired:
                continue
            ids = {int(v) for v in out.stdout.split() if v.isdigit()}
            with self.lock:
                self.acked |= ids
                self.failed_batches += out.returncode != 0

    def count(self):
        with self.lock:
            return len(self.acked)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=40)
        return set(self.acked)


def children_of(parent):
    """Pids of the direct children of `parent` (every PostgreSQL process is the postmaster's)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            pids.append(int(entry))
    return pids


def first_line(text):
    lines = text.strip().splitlines()
    return lines[0] if lines else "(nothing)"


class Frozen:
    """Processes stopped with SIGSTOP, in order; thaw() resumes them in reverse order. Registered
    as a cleanup, so a failing test never leaves a frozen agent that ignores SIGTERM."""

    def __init__(self, test):
        self.pids = []
        test.addCleanup(self.thaw)

    def freeze(self, pid):
        os.kill(pid, signal.SIGSTOP)
        self.pids.append(pid)

    def thaw(self):
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
        self.pids = []


class PsqlSession:
    """One psql process holding one connection to a node: statements are fed one at a time, so
    a session opened before a failure is used after it, as a client's pooled connection would."""

    def __init__(self, cluster, name):
        with open(os.path.join(cluster.dir, "var", "db.password")) as f:
            env = dict(os.environ, PGPASSWORD=f.readline().strip(), PGCONNECT_TIMEOUT="2")
        self.proc = subprocess.Popen([os.path.join(pg_bin(), "psql"), "-X", "-A", "-t", "-q", "-h", "127.0.0.1",
                                      "-p", str(cluster.ports[name][0]), "-U", "site", "-d", "site"],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.pending = b""

    def run(self, sql, timeout=10):
        """(True, output) when `sql` printed `ok` (write it with RETURNING 'ok'), else (False, output):
        an error, a lost connection (psql exits), or no answer within `timeout`."""
        try:
            self.proc.stdin.write(sql.rstrip(";").encode() + b";\n\\echo __end__\n")
            self.proc.stdin.flush()
        except OSError as e:
            return False, f"psql gone: {e}"
        deadline = time.monotonic() + timeout
        while b"__end__\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return False, "no answer within %ss: %r" % (timeout, self.pending.decode(errors="replace"))
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                out, self.pending = self.pending.decode(errors="replace"), b""
                return False, out
            self.pending += data
        out, _, self.pending = self.pending.partition(b"__end__\n")
        out = out.decode(errors="replace")
        return "ok" in out.split(), out

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass  # unwritten input to a psql that is gone


class NodeWriter:
    """A client that writes to one node directly and never asks who the primary is: one INSERT
    at a time, alternately on a session kept open (reopened once lost) and on a new connection.
    Each write is recorded as (monotonic time sent, acknowledged)."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.writes = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        session = None
        sql = f"INSERT INTO w (node) VALUES ('{self.name}') RETURNING 'ok'"
        while not self.stopping.is_set():
            sent = time.monotonic()
            if len(self.writes) % 2 == 0:
                if session is None:
                    session = PsqlSession(self.cluster, self.name)
                ok, _ = session.run(sql, timeout=5)
                if not ok and session.proc.poll() is not None:
                    session.close()
                    session = None
            else:
                try:
                    ok = "ok" in self.cluster.psql(self.name, sql).stdout.split()
                except subprocess.TimeoutExpired:
                    ok = False
            with self.lock:
                self.writes.append((sent, ok))
            if not ok:
                time.sleep(0.02)
        if session is not None:
            session.close()

    def acknowledged(self):
        with self.lock:
            return sum(ok for _, ok in self.writes)

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=30)
        with self.lock:
            return list(self.writes)


@needs(missing_requirement())
class DbAgentTest(unittest.TestCase):
    def test_synchronous_is_accepted(self):
        cluster = Cluster(synchronous=True)
        self.addCleanup(cluster.cleanup)
        check = subprocess.run([FULCRUM, "check", cluster.site], capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertNotIn("db.synchronous", check.stderr)

    def test_strict_synchronous_commits_wait_for_a_replica(self):
        """synchronous_strict: with every replica stopped a commit waits (never acknowledged by the
        primary alone) until one is back; and a replica promoted by failover makes its very first
        commits wait for a replica too."""
        cluster = Cluster(failover=True, synchronous=True, strict=True)
        self.addCleanup(cluster.cleanup)
        primary, replicas = cluster.start(self)
        cluster.wait_for(self, lambda: all(cluster.code(n, "/sync") == 200 for n in replicas), 30,
                         "both replicas synchronous")
        made = cluster.psql(primary, "CREATE TABLE strict_t (v int); INSERT INTO strict_t VALUES (1)")
        self.assertEqual(made.returncode, 0, made.stderr)

        def commit_waits(node, value):
            """Starts an INSERT on `node` and returns its psql once PostgreSQL shows it waiting for a
            synchronous replica (statement_timeout cannot show it: it ends before the commit)."""
            args, env = cluster.psql_command(node, f"INSERT INTO strict_t VALUES ({value})")
            proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.addCleanup(lambda: proc.poll() is not None or (proc.kill(), proc.wait()))
            sync_wait = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            cluster.wait_for(self, lambda: cluster.psql(node, sync_wait).stdout.strip() == "1", 15,
                             f"the commit of {value} waiting for a synchronous replica on {node}")
            self.assertIsNone(proc.poll())
            self.assertEqual(cluster.code(node, "/primary"), 200)  # still the leader: only commits wait
            return proc

        def committed(proc):
            _, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, err)

        for name in replicas:  # SIGTERM: each agent stops its PostgreSQL and exits
            cluster.agents[name].signal(signal.SIGTERM)
            self.assertEqual(cluster.agents[name].wait(timeout=45), 0, cluster.logs())
        waiting = commit_waits(primary, 2)
        back, away = replicas
        cluster.start_agent(back)
        cluster.wait_for(self, lambda: cluster.code(back, "/replica") == 200, 60, "a replica back")
        committed(waiting)
        done = cluster.psql(primary, "INSERT INTO strict_t VALUES (3)")
        self.assertEqual(done.returncode, 0, done.stderr)

        # Once only `back` is listed, kill -9 the primary's agent and postgres: `back` promotes, and
        # its first commit waits, for `away` (or the old primary) to follow it.
        cluster.wait_for(self, lambda: cluster.status(primary)["sync"]["key"]["sync"] == [back], 30,
                         f"the sync key narrowed to {back}")
        postmaster = cluster.postmaster_pid(primary)
        cluster.agents[primary].proc.kill()
        os.kill(postmaster, signal.SIGKILL)
        cluster.agents.pop(primary).stop()
        cluster.wait_for(self, lambda: cluster.code(back, "/primary") == 200, 60, f"{back} promoted")
        waiting = commit_waits(back, 4)
        cluster.start_agent(away)
        cluster.wait_for(self, lambda: cluster.code(away, "/replica") == 200, 60, f"{away} following {back}")
        committed(waiting)
        rows = lambda: cluster.psql(away, "SELECT v FROM strict_t ORDER BY v").stdout.split()  # noqa: E731
        cluster.wait_for(self, lambda: rows() == ["1", "2", "3", "4"], 15, f"every row on {away}")
        cluster.stop_all(self)

    def test_manual_failover_without_automatic_failover(self):
        """failover = false: nobody takes a dead leader's key until POST /failover names a replica;
        the other replica follows it, and the old primary, back, is rewound and follows too."""
        cluster = Cluster()
        self.addCleanup(cluster.cleanup)
        primary, replicas = cluster.start(self)
        token = cluster.token()
        candidate, other = sorted(replicas)

        def failover(name, body, token=None):
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers["Authorization"] = "Bearer " + token
            code, _, raw = http_get(cluster.url(name, "/failover"), method="POST", data=json.dumps(body).encode(),
                                    headers=headers, timeout=30)
            return code, json.loads(raw)

        self.assertEqual(failover(candidate, {})[0], 401)
        code, body = failover(candidate, {}, token)
        self.assertEqual(code, 409, body)
        self.assertIn(f"{primary} holds the leader key", body["error"])
        self.assertEqual(failover(candidate, {"to": other}, token)[0], 409)
        self.assertEqual(failover(candidate, {"to": "nobody"}, token)[0], 400)
        self.assertEqual(cluster.primary(), primary)  # refusals changed nothing
        made = cluster.psql(primary, "CREATE TABLE mf (v int); INSERT INTO mf VALUES (1)")
        self.assertEqual(made.returncode, 0, made.stderr)
        rows = lambda name: cluster.psql(name, "SELECT v FROM mf ORDER BY v").stdout.split()  # noqa: E731
        cluster.wait_for(self, lambda: rows(candidate) == ["1"] and rows(other) == ["1"], 15, "row 1 replicated")

        postmaster = cluster.postmaster_pid(primary)
        cluster.agents[primary].proc.kill()
        os.kill(postmaster, signal.SIGKILL)
        cluster.agents[primary].stop()
        cluster.wait_for(self, lambda: cluster.status(candidate)["leader"] is None, 15, "the leader key expired")
        self.assertIsNone(cluster.primary())  # failover = false: nobody took it

        # Only a replica that replayed as far as any other may lead (the others could not follow
        # a timeline forked off before their position): usually both are level; else the further.
        def replayed(name):
            high, low = cluster.status(name)["lsn"].split("/")
            return int(high, 16) << 32 | int(low, 16)

        if replayed(other) > replayed(candidate):
            code, body = failover(candidate, {}, token)
            self.assertEqual(code, 409, body)
            self.assertIn(f"{other} has replayed further", body["error"])
            candidate, other = other, candidate
        code, body = failover(candidate, {"to": candidate}, token)
        self.assertEqual(code, 200, f"{body}\n{cluster.logs()}")
        self.assertEqual(body["leader"], candidate)
        self.assertEqual(cluster.code(candidate, "/primary"), 200)
        wrote = cluster.psql(candidate, "INSERT INTO mf VALUES (2)")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        cluster.wait_for(self, lambda: rows(other) == ["1", "2"], 30, f"{other} following {candidate}")

        cluster.start_agent(primary)
        cluster.wait_for(self, lambda: cluster.code(primary, "/replica") == 200, 60, "the old primary rejoined")
        cluster.wait_for(self, lambda: rows(primary) == ["1", "2"], 15, "row 2 on the old primary")
        self.assertEqual(cluster.primary(), candidate)
        cluster.stop_all(self)

    def test_bootstrap_replicate_fence_and_stop(self):
        cluster = Cluster()
        self.addCleanup(cluster.cleanup)
        cluster.start_etcd()
        for name in NODES:
            cluster.start_agent(name)

        primary, replicas = cluster.wait_roles(self, NODES, timeout=60)
        self.assertNotIn(primary, replicas)
        for name in NODES:
            self.assertEqual(cluster.code(name, "/health"), 200)
        self.assertEqual(cluster.code(primary, "/replica"), 503)
        for name in replicas:
            self.assertEqual(cluster.code(name, "/primary"), 503)

        # A row written on the primary reaches both replicas.
        wrote = cluster.psql(primary, "CREATE TABLE t (v text); INSERT INTO t VALUES ('hello from the primary')")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        for name in replicas:
            wait_until(lambda n=name: cluster.psql(n, "SELECT v FROM t").stdout.strip() == "hello from the primary",
                       timeout=15, interval=0.2, what=f"the row on {name}")
            refused = cluster.psql(name, "INSERT INTO t VALUES ('no')")
            self.assertNotEqual(refused.returncode, 0)
            self.assertIn("read-only", refused.stderr)

        # /status shape, on every node, once every member record is published.
        def published():
            return all(len(cluster.status(n)["members"]) == 3 and cluster.status(n)["leader"] == primary
                       for n in NODES)

        wait_until(published, timeout=10, interval=0.2, what="three members and the leader in /status")
        for name in NODES:
            st = cluster.status(name)
            for key in ("role", "timeline", "lsn", "lag_bytes", "leader", "members"):
                self.assertIn(key, st)
            self.assertEqual(st["role"], "primary" if name == primary else "replica")
            self.assertEqual(st["timeline"], 1)
            self.assertRegex(st["lsn"], r"^[0-9A-F]+/[0-9A-F]+$")
            self.assertIsInstance(st["lag_bytes"], int)
            self.assertEqual(sorted(m["name"] for m in st["members"]), NODES)
        wait_until(lambda: all(cluster.code(n, "/replica?lag=1048576") == 200 for n in replicas), timeout=10,
                   what="replicas within the lag bound")
        self.assertEqual(cluster.code(replicas[0], "/replica?lag=oops"), 400)
        # Patroni's other checks, for HAProxy configs written for Patroni (asynchronous mode).
        expected = {"/read-write": {primary}, "/read-only": set(NODES), "/read-only?lag=1048576": set(NODES),
                    "/async": set(replicas), "/asynchronous": set(replicas), "/sync": set(), "/synchronous": set(),
                    "/liveness": set(NODES), "/readiness": set(NODES)}
        for path, ok in expected.items():
            self.assertEqual({n for n in NODES if cluster.code(n, path) == 200}, ok, path)
        self.assertEqual(cluster.code(replicas[0], "/read-only?lag=-1"), 400)

        # Status only for HEAD and OPTIONS; metrics; switchover not built yet.
        code, _, body = http_get(cluster.url(primary, "/primary"), method="HEAD")
        self.assertEqual((code, body), (200, b""))
        code, _, body = http_get(cluster.url(replicas[0], "/primary"), method="OPTIONS")
        self.assertEqual((code, body), (503, b""))
        code, headers, body = http_get(cluster.url(primary, "/metrics"))
        self.assertEqual(code, 200)
        self.assertIn(b'fulcrum_db_primary{node="%s"} 1' % primary.encode(), body)
        assert_valid_metrics(self, body)

        def series(node, pattern):
            found = re.search(pattern + r" (\S+)\n", http_get(cluster.url(node, "/metrics"), timeout=2)[2].decode())
            return float(found.group(1)) if found else None

        # Replay lag in seconds: each replica's own, and the primary's view of every replica.
        def measured(value):
            return value is not None and value >= 0

        for r in replicas:
            wait_until(lambda: measured(series(primary, rf'fulcrum_db_lag_seconds\{{node="{primary}",replica="{r}"\}}')),
                       timeout=5, what=f"the primary's view of {r}'s replay lag")
            self.assertGreaterEqual(series(r, rf'fulcrum_db_lag_seconds\{{node="{r}"\}}'), 0)
            self.assertIsNotNone(series(primary, rf'fulcrum_db_replica_lag_bytes\{{node="{primary}",replica="{r}"\}}'))
            assert_valid_metrics(self, http_get(cluster.url(r, "/metrics"))[2])
        renewals = rf'fulcrum_db_lease_renewals_total\{{node="{primary}",result="ok"\}}'
        renewed = series(primary, renewals)
        wait_until(lambda: series(primary, renewals) > renewed, timeout=LEADER_TTL_MS / 1000, what="a lease renewal")
        self.assertGreater(series(primary, r"\nprocess_resident_memory_bytes"), 0)
        code, body = cluster.switchover(primary, {"to": replicas[0]})
        self.assertEqual(code, 401)
        self.assertIn("Bearer", body["error"])
        self.assertEqual(cluster.code(primary, "/nowhere"), 404)
        self.check_reload(cluster, primary, replicas)

        # The primary's postmaster dies: its agent sees it and restarts it (the lease is still valid).
        with open(os.path.join(cluster.dir, "var", primary, "data", "postmaster.pid")) as f:
            os.kill(int(f.readline()), signal.SIGKILL)
        exits = b'fulcrum_db_postgres_exits_total{node="%s"} 1' % primary.encode()
        wait_until(lambda: exits in http_get(cluster.url(primary, "/metrics"), timeout=2)[2], timeout=10,
                   interval=0.1, what="the dead postmaster noticed")
        wait_until(lambda: cluster.code(primary, "/primary") == 200, timeout=30, interval=0.1,
                   what="the primary restarted")
        wait_until(lambda: cluster.psql(primary, "SELECT count(*) FROM t").stdout.strip() == "1", timeout=10,
                   what="the row kept across the restart")

        # etcd dies: the leader cannot renew its lease and fences itself before it can expire.
        cluster.etcd.proc.kill()
        killed = time.monotonic()
        wait_until(lambda: cluster.code(primary, "/primary") == 503, timeout=LEADER_TTL_MS / 1000, interval=0.05,
                   what="the primary fenced")
        fenced_after = time.monotonic() - killed
        self.assertLess(fenced_after, LEADER_TTL_MS / 1000)
        self.assertGreater(series(primary, rf'fulcrum_db_lease_renewals_total\{{node="{primary}",result="failed"\}}'), 0)
        wait_until(lambda: cluster.psql(primary, "INSERT INTO t VALUES ('after the fence')").returncode != 0,
                   timeout=5, interval=0.1, what="writes refused on the fenced primary")
        wait_until(lambda: cluster.code(primary, "/health") == 503, timeout=5, what="PostgreSQL stopped")
        self.assertGreaterEqual(series(primary, rf'fulcrum_db_fences_total\{{node="{primary}"\}}'), 1)

        cluster.stop_all(self)
        if os.environ.get("FULCRUM_TEST_LOGS"):
            print(cluster.logs())
        print(f"\nfenced {fenced_after * 1000:.0f} ms after etcd died (ttl {LEADER_TTL_MS} ms)")


    def check_reload(self, cluster, primary, replicas):
        """Hot reload (SIGHUP, POST /reload): max_lag_bytes changes with PostgreSQL, the lease and
        the roles untouched; no token or a broken file changes nothing."""
        def max_lag(name):
            return cluster.status(name)["failover"]["max_lag_bytes"]

        def report(name, sequence):
            return wait_reload_report(os.path.join(cluster.dir, "var"), name, sequence)

        postmasters = {n: cluster.postmaster_pid(n) for n in NODES}
        # A second agent of a running node refuses to start (its pid file is held).
        second = subprocess.run([FULCRUM, "db", "--site", cluster.site, "--node", replicas[0]], capture_output=True,
                                timeout=15)
        self.assertEqual(second.returncode, 1)
        self.assertIn(b"already runs here", second.stderr)
        self.assertEqual({max_lag(n) for n in NODES}, {1048576})
        with open(cluster.site, "w") as f:
            f.write(site_text(cluster.etcd_port, cluster.ports, max_lag_bytes=4096).replace(
                f"leader_ttl_ms = {LEADER_TTL_MS}", "leader_ttl_ms = 4000"))
        reload_url = cluster.url(primary, "/reload")
        code, _, _ = http_get(reload_url, method="POST")
        self.assertEqual(code, 401)
        self.assertEqual(max_lag(primary), 1048576)
        code, _, body = http_get(reload_url, method="POST", headers={"Authorization": "Bearer " + cluster.token()})
        self.assertEqual(code, 200, body)
        answer = json.loads(body)
        self.assertEqual((answer["ok"], answer["changes"]), (True, ["db.max_lag_bytes: 1048576 -> 4096"]))
        self.assertEqual(answer["needs_restart"], ["db.leader_ttl_ms: 3000 -> 4000"])
        self.assertEqual(report(primary, 1)["changes"], answer["changes"])
        cluster.agents[replicas[0]].signal(signal.SIGHUP)
        self.assertTrue(report(replicas[0], 1)["ok"])
        self.assertEqual([max_lag(n) for n in (primary, replicas[0], replicas[1])], [4096, 4096, 1048576])

        # A broken file: refused with its position, both by the API and on SIGHUP.
        with open(cluster.site, "w") as f:
            f.write(site_text(cluster.etcd_port, cluster.ports).replace("max_lag_bytes = 1048576",
                                                                       'max_lag_bytes = "lots"'))
        code, _, body = http_get(reload_url, method="POST", headers={"Authorization": "Bearer " + cluster.token()})
        self.assertEqual(code, 400, body)
        self.assertRegex(json.loads(body)["errors"][0], r"site\.toml:\d+:\d+: db\.max_lag_bytes: ")
        cluster.agents[replicas[0]].signal(signal.SIGHUP)
        refused = report(replicas[0], 2)
        self.assertFalse(refused["ok"])
        self.assertRegex(refused["errors"][0], r"site\.toml:\d+:\d+: db\.max_lag_bytes: ")
        self.assertEqual([max_lag(n) for n in (primary, replicas[0])], [4096, 4096])
        with open(cluster.site, "w") as f:
            f.write(site_text(cluster.etcd_port, cluster.ports))

        # Nothing restarted, nobody failed over.
        self.assertEqual({n: cluster.postmaster_pid(n) for n in NODES}, postmasters)
        self.assertEqual(cluster.primary(), primary)
        self.assertEqual({cluster.status(n)["leader"] for n in NODES}, {primary})

    def test_failover_rewind_and_rejoin(self):
        cluster = Cluster(failover=True)
        self.addCleanup(cluster.cleanup)
        primary, replicas = cluster.start(self)
        wrote = cluster.psql(primary, "CREATE TABLE t (v text); INSERT INTO t VALUES ('before')")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        for name in replicas:
            wait_until(lambda n=name: cluster.has_rows(n, ["before"]), timeout=15, interval=0.2,
                       what=f"the row on {name}")

        # The primary's agent dies (its postmaster gets SIGINT with it): once the lease expires, a
        # replica takes the key and promotes, and the other follows it onto the new timeline.
        cluster.agents[primary].proc.kill()
        cluster.agents[primary].stop()
        killed = time.monotonic()
        wait_until(lambda: processes_mentioning(os.path.join(cluster.dir, "var", primary)) == [], timeout=15,
                   what="the old primary's PostgreSQL gone")
        new_primary, others = cluster.wait_roles(self, replicas, timeout=30)
        took_over = time.monotonic() - killed
        self.assertEqual(cluster.status(new_primary)["timeline"], 2)
        wrote = cluster.psql(new_primary, "INSERT INTO t VALUES ('after')")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        wait_until(lambda: cluster.has_rows(others[0], ["after", "before"]), timeout=20, interval=0.2,
                   what="the other replica following the new primary")

        # The old primary comes back: rewound against the new leader, it rejoins as its replica.
        cluster.start_agent(primary)
        wait_until(lambda: cluster.code(primary, "/replica") == 200, timeout=45, interval=0.2,
                   what="the old primary streaming as a replica")
        wait_until(lambda: cluster.has_rows(primary, ["after", "before"]), timeout=15, interval=0.2,
                   what="the old primary caught up")
        self.assertEqual(cluster.status(primary)["timeline"], 2)
        self.assertEqual(cluster.code(primary, "/primary"), 503)
        refused = cluster.psql(primary, "INSERT INTO t VALUES ('no')")
        self.assertIn("read-only", refused.stderr)
        self.assertEqual([n for n in NODES if cluster.code(n, "/primary") == 200], [new_primary])

        cluster.stop_all(self)
        if os.environ.get("FULCRUM_TEST_LOGS"):
            print(cluster.logs())
        print(f"\nnew primary {new_primary} {took_over * 1000:.0f} ms after the old one's agent died "
              f"(ttl {LEADER_TTL_MS} ms)")

    def test_frozen_agent_and_frozen_node_take_no_write_asynchronous(self):
        self.check_frozen_agent_and_frozen_node(synchronous=False)

    def test_frozen_agent_and_frozen_node_take_no_write_synchronous(self):
        self.check_frozen_agent_and_frozen_node(synchronous=True)

    def check_frozen_agent_and_frozen_node(self, synchronous):
        """The fence that holds without the agent (fulcrum_fence.so in every PostgreSQL). First
        the leader's agent alone is frozen (SIGSTOP): its PostgreSQL, left running, stops taking
        writes at the lease's fence deadline and shuts itself down, a replica is promoted, and no
        write sent straight to the old primary after the new one's first commit succeeds; thawed,
        the old node rejoins as a replica. Then the whole new primary (agent and every PostgreSQL
        process) is frozen until another node is promoted, and thawed, its agent last: a write
        sent after the thaw fails, on a session opened before the freeze and on a new one."""
        mode = "synchronous" if synchronous else "asynchronous"
        cluster = Cluster(failover=True, synchronous=synchronous)
        self.addCleanup(cluster.cleanup)
        primary, replicas = cluster.start(self, timeout=90)
        made = cluster.psql(primary, "CREATE TABLE w (id bigserial PRIMARY KEY, node text)")
        self.assertEqual(made.returncode, 0, made.stderr)
        frozen = Frozen(self)

        def promoted(candidates):
            return next((n for n in candidates if cluster.code(n, "/primary") == 200), None)

        def first_commit(name):
            """Sends writes to `name` until one is acknowledged; returns when that one was sent."""
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                sent = time.monotonic()
                if "ok" in cluster.psql(name, "INSERT INTO w (node) VALUES ('first') RETURNING 'ok'").stdout.split():
                    return sent
                time.sleep(0.05)
            self.fail(f"no write acknowledged by {name}:\n{cluster.logs()}")

        # 1. The leader's agent alone is frozen; clients keep writing to its PostgreSQL directly.
        writer = NodeWriter(cluster, primary)
        self.addCleanup(writer.stop)
        cluster.wait_for(self, lambda: writer.acknowledged() >= 10, 30, f"writes acknowledged by {primary}")
        frozen.freeze(cluster.agents[primary].proc.pid)
        froze = time.monotonic()  # the agent
        old_pg = os.path.join(cluster.dir, "var", primary, "data")
        cluster.wait_for(self, lambda: processes_mentioning(old_pg) == [], LEADER_TTL_MS / 1000 + 5,
                         f"{primary}'s PostgreSQL stopping itself")
        pg_gone = time.monotonic() - froze
        new_primary = cluster.wait_for(self, lambda: promoted(replicas), 30, "a replica promoted")
        new_first = first_commit(new_primary)
        time.sleep(1)  # let the writer try the old primary a while longer
        writes = writer.stop()
        acked = [sent for sent, ok in writes if ok]
        late = [sent - new_first for sent in acked if sent >= new_first]
        self.assertEqual(late, [], f"{mode}: writes sent to the old primary after the new primary's first commit "
                                   f"were acknowledged")
        refused_after = len([1 for sent, ok in writes if not ok and sent >= new_first])
        self.assertGreater(refused_after, 0, "the writer kept trying the old primary")
        last_ack = max(acked) - froze
        frozen.thaw()
        rejoined = cluster.wait_roles(self, NODES, timeout=90)
        self.assertEqual(rejoined[0], new_primary)
        if synchronous:
            # No acknowledged write was lost: every one of them is on the new primary.
            count = cluster.psql(new_primary, f"SELECT count(*) FROM w WHERE node = '{primary}'").stdout.strip()
            self.assertGreaterEqual(int(count), len(acked), "acknowledged writes lost")

        # 2. The whole new primary is frozen: its agent, its postmaster and every child.
        others = [n for n in NODES if n != new_primary]
        if synchronous:
            cluster.wait_for(self, lambda: cluster.status(new_primary)["sync"]["standbys"] == sorted(others), 45,
                             "both replicas synchronous again")
        session = PsqlSession(cluster, new_primary)
        self.addCleanup(session.close)
        ok, out = session.run(f"INSERT INTO w (node) VALUES ('{new_primary}') RETURNING 'ok'")
        self.assertTrue(ok, out)
        postmaster = cluster.postmaster_pid(new_primary)
        frozen.freeze(cluster.agents[new_primary].proc.pid)
        frozen_pg = Frozen(self)
        frozen_pg.freeze(postmaster)
        for pid in children_of(postmaster):
            frozen_pg.freeze(pid)
        node_froze = time.monotonic()
        newest = cluster.wait_for(self, lambda: promoted(others), 30, "another node promoted")
        promoted_after = first_commit(newest) - node_froze
        # The thaw with the agent scheduled last, the worst order: its first tick would stop
        # PostgreSQL at once, so only the server's own fence can refuse writes sent before it.
        frozen_pg.thaw()
        ok, out = session.run(f"INSERT INTO w (node) VALUES ('{new_primary}') RETURNING 'ok'")
        self.assertFalse(ok, f"{mode}: a write on a session opened before the freeze was acknowledged after the thaw")
        try:
            fresh = cluster.psql(new_primary, f"INSERT INTO w (node) VALUES ('{new_primary}') RETURNING 'ok'")
            fresh_out = fresh.stdout + fresh.stderr
        except subprocess.TimeoutExpired:
            fresh_out = "no answer"  # e.g. a commit waiting for a synchronous replica that left
        self.assertNotIn("ok", fresh_out.split(), f"{mode}: a new session's write was acknowledged after the thaw")
        frozen.thaw()
        cluster.wait_roles(self, NODES, timeout=90)
        self.assertEqual(cluster.primary(), newest)
        cluster.stop_all(self)
        print(f"\n{mode}: {primary}'s agent frozen: its PostgreSQL stopped itself {pg_gone * 1000:.0f} ms later; "
              f"the last write it acknowledged was sent at {last_ack * 1000:.0f} ms, {new_primary}'s first commit at "
              f"{(new_first - froze) * 1000:.0f} ms, and all {refused_after} writes sent to {primary} after that "
              f"failed. Whole {new_primary} frozen: {newest} committing {promoted_after * 1000:.0f} ms later; after "
              f"the thaw, the old session got \"{first_line(out)}\", a new one \"{first_line(fresh_out)}\" "
              f"(ttl {LEADER_TTL_MS} ms)")

    def test_synchronous_switchover_failover_and_reclone(self):
        """One synchronous cluster (a single bootstrap keeps the file's runtime down): bad
        switchover calls change nothing; a switchover and then a kill -9 of the primary's agent
        and postgres, both under concurrent writers, lose no acknowledged row; the killed node
        comes back unable to rewind and is cloned again."""
        cluster = Cluster(failover=True, synchronous=True)
        self.addCleanup(cluster.cleanup)
        primary, replicas = cluster.start(self, timeout=90)
        wrote = cluster.psql(primary, "CREATE TABLE acked (id bigserial PRIMARY KEY, writer int)")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        token = cluster.token()
        self.assertEqual(os.stat(os.path.join(cluster.dir, "var", "admin.token")).st_mode & 0o777, 0o600)

        def synchronous(leader, names):
            sync = cluster.status(leader)["sync"]
            return (sync["mode"] == "synchronous" and sync["standbys"] == sorted(names) and
                    sync["key"] == {"leader": leader, "sync": sorted(names)})

        cluster.wait_for(self, lambda: synchronous(primary, replicas), 30, "both replicas synchronous")
        # Patroni's /sync and /async: the replicas learn the sync key on their next read of it.
        cluster.wait_for(self, lambda: all(cluster.code(n, "/sync") == 200 for n in replicas), 10,
                         "/sync 200 on both replicas")
        self.assertEqual([n for n in NODES if cluster.code(n, "/async") == 200], [])
        self.assertEqual(cluster.code(primary, "/sync"), 503)

        # Bad calls: each refused with a clear error, and nothing changes.
        target = sorted(replicas)[-1]
        before = cluster.status(primary)
        self.assertEqual(cluster.switchover(primary, {"to": target})[0], 401)
        self.assertEqual(cluster.switchover(primary, {"to": target}, token="x" * len(token))[0], 401)
        self.assertEqual(cluster.switchover(primary, b"{not json", token=token)[0], 400)
        self.assertEqual(cluster.switchover(primary, {"to": 3}, token=token)[0], 400)
        code, body = cluster.switchover(primary, {"to": "db-9"}, token=token)
        self.assertEqual(code, 400)
        self.assertIn("db-9", body["error"])
        self.assertEqual(cluster.switchover(primary, {"to": primary}, token=token)[0], 409)
        # Sent to a replica, a call goes on to the leader, whose answer comes back (here: a
        # switchover to the leader itself, refused).
        code, body = cluster.switchover(target, {"to": primary}, token=token)
        self.assertEqual(code, 409, body)
        self.assertEqual(http_get(cluster.url(primary, "/switchover"))[0], 405)
        after = cluster.status(primary)
        self.assertEqual((after["leader"], after["timeline"], after["switchover"]),
                         (before["leader"], before["timeline"], None))
        self.assertEqual(cluster.primary(), primary)

        # Planned switchover under concurrent writers.
        writers = Writers(cluster)
        self.addCleanup(writers.stop)
        cluster.wait_for(self, lambda: writers.count() >= 20, 60, "writes flowing")
        code, body, took = cluster.planned_switchover(primary, target, token)
        self.assertEqual(code, 200, f"{body}\n{cluster.logs()}")
        self.assertEqual(body["to"], target)
        new_primary, others = cluster.wait_roles(self, NODES, timeout=60)
        self.assertEqual(new_primary, target)
        self.assertIn(primary, others)  # the old primary streams from the new one
        self.assertEqual(cluster.status(target)["timeline"], 2)
        count = writers.count()
        cluster.wait_for(self, lambda: writers.count() >= count + 20, 60, "writes flowing to the new primary")
        switched = set(writers.acked)
        self.assertEqual(switched - cluster.ids(target), set(), "acknowledged rows lost by the switchover")
        cluster.wait_for(self, lambda: synchronous(target, others), 45, "both replicas synchronous again")

        # kill -9 of the primary's agent and postgres together: a synchronous replica takes over.
        old = target
        postmaster = cluster.postmaster_pid(old)
        cluster.agents[old].proc.kill()
        os.kill(postmaster, signal.SIGKILL)
        killed = time.monotonic()
        cluster.agents[old].stop()
        cluster.wait_for(self, lambda: cluster.primary() in others, 60, "a new primary")
        took_over = time.monotonic() - killed
        new_primary, rest = cluster.wait_roles(self, others, timeout=60)
        count = writers.count()
        cluster.wait_for(self, lambda: writers.count() >= count + 20, 60, "writes flowing after the failover")
        acked = writers.stop()
        self.assertEqual(acked - cluster.ids(new_primary), set(), f"acknowledged rows lost:\n{cluster.logs()}")
        self.assertEqual(cluster.status(new_primary)["timeline"], 3)
        cluster.wait_for(self, lambda: synchronous(new_primary, rest), 45, "the last replica synchronous")

        # A node that is down is not a switchover target: 409, nothing changes.
        code, body = cluster.switchover(new_primary, {"to": old}, token=token)
        self.assertEqual(code, 409, body)
        self.assertEqual(cluster.primary(), new_primary)

        # The killed node comes back unable to rewind (its pg_control is damaged): its data is
        # moved aside (kept) and it is cloned again from the new primary.
        with open(os.path.join(cluster.data_dir(old), "global", "pg_control"), "r+b") as f:
            f.truncate(0)
        cluster.start_agent(old)
        cluster.wait_for(self, lambda: cluster.code(old, "/replica") == 200, 90, "the old primary re-cloned")
        self.assertEqual(len(glob.glob(cluster.data_dir(old) + ".failed-*")), 1)
        self.assertIn(b'fulcrum_db_reclones_total{node="%s"} 1' % old.encode(),
                      http_get(cluster.url(old, "/metrics"))[2])
        cluster.wait_for(self, lambda: cluster.ids(old) >= acked, 30, "every acknowledged row on the re-cloned node")
        cluster.stop_all(self)
        print(f"\nsynchronous: switchover {primary} -> {target} answered 200 after {took * 1000:.0f} ms under load; "
              f"new primary {new_primary} {took_over * 1000:.0f} ms after kill -9 of {old}'s agent and postgres "
              f"(ttl {LEADER_TTL_MS} ms); {len(acked)} acknowledged rows, none lost")


if __name__ == "__main__":
    unittest.main()
