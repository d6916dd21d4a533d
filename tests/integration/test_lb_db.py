"""The database frontends of `fulcrum lb` (db_write, db_read): TCP proxies whose servers are
health-checked through each database node's agent, like Patroni's HAProxy configuration.

FakeDbTest controls every answer: tiny HTTP "agents" answer /primary and /replica as the test
says, and TCP echo servers stand in for PostgreSQL (each greets with its node's name, echoes,
and says "bye" after the client's half-close). RealClusterTest runs a real 3-node cluster
(tests/integration/test_db.py's Cluster) behind the load balancer and fails its primary over."""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import FULCRUM, Process, TempDir, ThreadedServer, assert_valid_metrics, free_port, http_get, wait_until, needs

NODES = ["db-1", "db-2", "db-3"]
CHECK_INTERVAL_MS = 200
FALL = 2
MAX_LAG = 4096


class FakeAgent:
    """Answers GET /primary and GET /replica?lag=N with the status codes the test sets, and a body
    carrying the node's role, as a real agent's /status JSON does."""

    def __init__(self):
        self.codes = {"primary": 503, "replica": 503}
        self.role = "stopped"
        self.paths = []
        self.server = ThreadedServer(self._handle)
        self.port = self.server.port

    def set(self, primary, replica, role):
        self.codes = {"primary": primary, "replica": replica}
        self.role = role

    def _handle(self, conn, _server):
        f = conn.makefile("rb")
        line = f.readline()
        while f.readline() not in (b"\r\n", b"\n", b""):
            pass
        path = line.split()[1].decode()
        self.paths.append(path)
        code = self.codes["primary" if path.startswith("/primary") else "replica"]
        body = json.dumps({"name": "fake", "role": self.role}).encode()
        conn.sendall(f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)


def echo_handler(name):
    """A stand-in for PostgreSQL: greets with its name, echoes, says bye after the client's FIN."""

    def handle(conn, _server):
        conn.sendall(name.encode() + b"\n")
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.sendall(b"bye\n")

    return handle


def recv_line(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def greeting(port, timeout=5.0):
    """Connects, returns (socket, the server's name); the caller closes the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return sock, recv_line(sock, timeout)
    except OSError:
        sock.close()
        raise


def greeted_by(port):
    sock, name = greeting(port)
    sock.close()
    return name


def greeting_fails(port):
    """True when a session gets no greeting: closed at once, without a server."""
    try:
        return greeted_by(port) == ""
    except OSError:
        return True


def refuses(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def closed_within(sock, timeout):
    """True when the peer closes (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class FakeDbTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.agents = {}
        self.pg = {}
        self.pg_ports = {}
        for name in NODES:
            agent = FakeAgent()
            self.addCleanup(agent.server.stop)
            self.agents[name] = agent
            self.start_pg(name)
        self.http_port, self.stats_port = free_port(), free_port()
        self.write_port, self.read_port = free_port(), free_port()

    def start_pg(self, name):
        server = ThreadedServer(echo_handler(name))
        self.addCleanup(server.stop)
        self.pg[name] = server
        self.pg_ports[name] = server.port

    def start_lb(self, pg_ports=None):
        pg_ports = pg_ports or self.pg_ports
        text = (f'[site]\nname = "lbdb"\nstate_dir = "var"\n'
                f"[lb]\nretries = 2\n"
                f"[lb.health]\ninterval_ms = {CHECK_INTERVAL_MS}\ntimeout_ms = 500\nrise = 2\nfall = {FALL}\n"
                f"[lb.timeouts]\nconnect_ms = 500\n"
                f'[[lb.node]]\nname = "lb-t"\nhttp = "127.0.0.1:{self.http_port}"\n'
                f'stats = "127.0.0.1:{self.stats_port}"\n'
                f'db_write = "127.0.0.1:{self.write_port}"\ndb_read = "127.0.0.1:{self.read_port}"\nthreads = 2\n'
                f"[db]\nmax_lag_bytes = {MAX_LAG}\n")
        for name in NODES:
            text += (f'[[db.node]]\nname = "{name}"\npg = "127.0.0.1:{pg_ports[name]}"\n'
                     f'agent = "127.0.0.1:{self.agents[name].port}"\n')
        site = self.tmp.write("site.toml", text)
        lb = Process([FULCRUM, "lb", "--site", site, "--node", "lb-t"], os.path.join(self.tmp.path, "lb.log"))
        self.addCleanup(lb.stop)
        self.lb = lb
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.stats_port}/healthz", timeout=1)[0] == 200,
                   timeout=10, what="the load balancer's stats listener")
        return lb

    def roles(self, primary, replicas=(), down=()):
        for name in NODES:
            if name == primary:
                self.agents[name].set(200, 503, "primary")
            elif name in replicas:
                self.agents[name].set(503, 200, "replica")
            else:
                self.agents[name].set(503, 503, "stopped")

    def wait_replicas_up(self, names):
        def up():
            m = self.metrics()
            return all(f'frontend="db_read",server="{n}",role="replica"}} 1' in m for n in names)

        wait_until(up, timeout=10, what=f"{names} up as replicas")

    def wait_log(self, pattern, timeout=10):
        wait_until(lambda: re.search(pattern, self.lb.output()), timeout=timeout, what=pattern)

    def metrics(self):
        return http_get(f"http://127.0.0.1:{self.stats_port}/metrics", timeout=2)[2].decode()

    def test_write_follows_the_primary_and_cuts_sessions_of_the_old_one(self):
        self.roles("db-1", replicas=["db-2", "db-3"])
        self.start_lb()
        wait_until(lambda: greeted_by(self.write_port) == "db-1", timeout=10, what="db_write to db-1")
        old, name = greeting(self.write_port)
        self.addCleanup(old.close)
        self.assertEqual(name, "db-1")
        old.sendall(b"select 1\n")
        self.assertEqual(recv_line(old), "select 1")
        self.assertIn("/primary", self.agents["db-1"].paths)
        wait_until(lambda: f"/replica?lag={MAX_LAG}" in self.agents["db-2"].paths, timeout=5,
                   what="db-2's agent asked /replica with the lag bound")

        # Failover: db-2 is the primary now. The old session is cut (not left talking to a
        # demoted primary) within about fall x interval, and new sessions reach db-2.
        switched = time.monotonic()
        self.roles("db-2", replicas=["db-1", "db-3"])
        self.assertTrue(closed_within(old, 5), "the session to the old primary was not cut")
        cut_after = time.monotonic() - switched
        self.assertLess(cut_after, 5)
        wait_until(lambda: greeted_by(self.write_port) == "db-2", timeout=10, what="db_write to db-2")
        for _ in range(5):
            self.assertEqual(greeted_by(self.write_port), "db-2")
        self.wait_log(r"server db-1 \(primary\) is DOWN: HTTP 503")
        self.wait_log(r"server db-2 \(primary\) is UP: HTTP 200")
        m = self.metrics()
        self.assertRegex(m, r'fulcrum_lb_db_server_up\{node="lb-t",frontend="db_write",server="db-2",'
                            r'role="primary"\} 1')
        # At least the session above (a greeting's session may still have been closing).
        self.assertRegex(m, r'fulcrum_lb_db_server_cut_total\{node="lb-t",frontend="db_write",server="db-1",'
                            r'role="primary"\} [1-9]')
        # Each member's checks: db-1's agent now answers /primary 503, db-2's 200.
        self.assertRegex(m, r'fulcrum_lb_db_server_check_up\{node="lb-t",server="db-1",check="primary"\} 0\n')
        self.assertRegex(m, r'fulcrum_lb_db_server_check_up\{node="lb-t",server="db-2",check="primary"\} 1\n')
        self.assertRegex(m, r'fulcrum_lb_db_server_state_changes_total\{node="lb-t",server="db-1",check="primary",'
                            r'to="down"\} 1\n')
        self.assertRegex(m, r'fulcrum_lb_db_server_checks_total\{node="lb-t",server="db-3",check="replica",'
                            r'result="passed"\} [1-9]')
        assert_valid_metrics(self, m)
        print(f"\nold primary's session cut {cut_after * 1000:.0f} ms after its agent said 503 "
              f"(interval {CHECK_INTERVAL_MS} ms, fall {FALL})")

    def test_read_spreads_over_replicas_and_falls_back_to_the_primary(self):
        self.roles("db-1", replicas=["db-2", "db-3"])
        self.start_lb()
        self.wait_replicas_up(["db-2", "db-3"])
        # The checker's news reaches each worker a moment after /metrics shows it.
        wait_until(lambda: {greeted_by(self.read_port) for _ in range(4)} == {"db-2", "db-3"}, timeout=5,
                   what="db_read to both replicas")
        # leastconn over open sessions, per worker: of four sessions on two workers, one worker
        # holds two or more, so both replicas serve; the primary serves none.
        sessions = []
        for _ in range(4):
            sock, name = greeting(self.read_port)
            self.addCleanup(sock.close)
            sessions.append(name)
        self.assertEqual(set(sessions), {"db-2", "db-3"}, sessions)

        # No replica left: the primary is the last resort; the replicas' sessions are cut.
        self.roles("db-1")
        wait_until(lambda: greeted_by(self.read_port) == "db-1", timeout=10, what="db_read to the primary")
        # And back to a replica as soon as one is up again.
        self.roles("db-1", replicas=["db-3"])
        wait_until(lambda: greeted_by(self.read_port) == "db-3", timeout=10, what="db_read to db-3")
        # Each row shows the member's own role, as its agent last answered, whichever frontend.
        state = json.loads(http_get(f"http://127.0.0.1:{self.stats_port}/api/state", timeout=2)[2])
        rows = {(f["name"], s["name"], s["backup"]): s for f in state["db_frontends"] for s in f["servers"]}
        self.assertEqual({k: s["role"] for k, s in rows.items() if k[0] == "db_write"},
                         {("db_write", "db-1", False): "primary", ("db_write", "db-2", False): "stopped",
                          ("db_write", "db-3", False): "replica"})
        replica_row = rows[("db_write", "db-3", False)]
        self.assertEqual((replica_row["health"], replica_row["serves"]), ("down", "primary"))
        self.assertEqual((replica_row["last_check"]["result"], replica_row["last_check"]["status"]), ("L7STS", 503))
        self.assertGreater(replica_row["downtime_seconds"], 0)
        self.assertEqual(rows[("db_read", "db-3", False)]["last_check"]["result"], "L7OK")
        self.assertEqual(rows[("db_read", "db-3", False)]["role"], "replica")
        # db-2's agent gone: its role is unknown, its checks are refused.
        self.agents["db-2"].server.stop()

        def db2_write_row():
            state = json.loads(http_get(f"http://127.0.0.1:{self.stats_port}/api/state", timeout=2)[2])
            (row,) = [s for f in state["db_frontends"] if f["name"] == "db_write" for s in f["servers"]
                      if s["name"] == "db-2"]
            return row["role"], row["last_check"]["result"]

        wait_until(lambda: db2_write_row() == ("unknown", "L4CON"), timeout=5,
                   what="db-2's role unknown and its checks refused")

    def test_admin_api_takes_a_database_server_out_of_rotation(self):
        self.roles("db-1", replicas=["db-2", "db-3"])
        self.start_lb()
        self.wait_replicas_up(["db-2", "db-3"])
        wait_until(lambda: {greeted_by(self.read_port) for _ in range(4)} == {"db-2", "db-3"}, timeout=5,
                   what="db_read to both replicas")
        held, name = greeting(self.read_port)  # a session open before the drain
        self.addCleanup(held.close)
        with open(os.path.join(self.tmp.path, "var", "admin.token")) as f:
            token = f.readline().strip()

        def admin(server, state, token=token):
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = "Bearer " + token
            code, _, body = http_get(f"http://127.0.0.1:{self.stats_port}/api/servers/{server}/state",
                                     method="POST", data=json.dumps({"state": state}).encode(), headers=headers,
                                     timeout=5)
            return code, json.loads(body)

        def db_admin(frontend, server):
            state = json.loads(http_get(f"http://127.0.0.1:{self.stats_port}/api/state", timeout=2)[2])
            (f,) = [f for f in state["db_frontends"] if f["name"] == frontend]
            return {s["admin"] for s in f["servers"] if s["name"] == server}

        self.assertEqual(admin(name, "drain", token=None)[0], 401)
        self.assertEqual(admin("db-9", "drain")[0], 404)
        self.assertEqual(admin(name, "asleep")[0], 400)
        self.assertEqual(db_admin("db_read", name), {"ready"})  # refusals changed nothing
        self.assertEqual(admin(name, "drain"), (200, {"server": name, "state": "drain", "previous": "ready"}))
        other = ({"db-2", "db-3"} - {name}).pop()
        # Posted to each worker: a moment later every new session goes to the other replica.
        wait_until(lambda: {greeted_by(self.read_port) for _ in range(6)} == {other}, timeout=5,
                   what=f"db_read only to {other}")
        held.sendall(b"still here\n")  # a drain lets open sessions go on
        self.assertEqual(recv_line(held), "still here")
        self.assertEqual(db_admin("db_read", name), {"drain"})

        # The primary in maintenance: db_write has no server left, then has it back.
        self.assertEqual(admin("db-1", "maint")[0], 200)
        self.assertEqual(db_admin("db_write", "db-1"), {"maint"})
        wait_until(lambda: greeting_fails(self.write_port), timeout=5, what="db_write without a server")
        self.assertEqual(admin("db-1", "ready")[0], 200)
        wait_until(lambda: greeted_by(self.write_port) == "db-1", timeout=5, what="db_write to db-1 again")
        self.wait_log(r"admin: database server db-1 set to ready \(was maint\)")

    def test_half_close_and_a_large_transfer_both_ways(self):
        self.roles("db-1")
        self.start_lb()
        wait_until(lambda: greeted_by(self.write_port) == "db-1", timeout=10, what="db_write to db-1")
        sock, name = greeting(self.write_port)
        self.addCleanup(sock.close)
        payload = os.urandom(4 * 1024 * 1024)
        received = bytearray()

        def reader():
            sock.settimeout(20)
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    break
                received.extend(data)

        thread = threading.Thread(target=reader)
        thread.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the echo server answers "bye" only after our FIN
        thread.join(timeout=30)
        self.assertFalse(thread.is_alive())
        self.assertEqual(len(received), len(payload) + 4)
        self.assertTrue(bytes(received) == payload + b"bye\n", "bytes changed on the way")

    def test_connect_failure_is_retried_on_another_server(self):
        # db-2's agent says it is a replica, but nothing listens on its PostgreSQL port.
        dead_port = free_port()
        ports = dict(self.pg_ports, **{"db-2": dead_port})
        self.roles("db-1", replicas=["db-2", "db-3"])
        self.start_lb(ports)
        self.wait_replicas_up(["db-2", "db-3"])
        # The checker's news reaches each worker a moment after /metrics shows it.
        wait_until(lambda: greeted_by(self.read_port) == "db-3", timeout=5, what="db_read to db-3")
        names = [greeted_by(self.read_port) for _ in range(4)]
        self.assertEqual(names, ["db-3"] * 4)
        self.wait_log(r"db_read: server db-2 \(127\.0\.0\.1:%d\): connect: Connection refused" % dead_port)

    def test_nothing_up_closes_clients_promptly(self):
        self.roles(None)
        self.start_lb()
        for port in (self.write_port, self.read_port):
            started = time.monotonic()
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            self.addCleanup(sock.close)
            self.assertTrue(closed_within(sock, 3))
            self.assertLess(time.monotonic() - started, 3)
        self.assertRegex(self.metrics(), r'fulcrum_lb_db_no_server_total\{node="lb-t",frontend="db_write"\} [1-9]')

    def test_sigterm_lets_open_sessions_finish(self):
        self.roles("db-1")
        lb = self.start_lb()
        wait_until(lambda: greeted_by(self.write_port) == "db-1", timeout=10, what="db_write to db-1")
        sock, _ = greeting(self.write_port)
        self.addCleanup(sock.close)
        lb.signal(signal.SIGTERM)
        self.wait_log(r"SIGTERM: draining")
        # The listener is gone, the open session still works; once it ends, the process exits.
        wait_until(lambda: refuses(self.write_port), timeout=5, what="the db_write listener closed")
        sock.sendall(b"still here\n")
        self.assertEqual(recv_line(sock), "still here")
        sock.close()
        self.assertEqual(lb.wait(timeout=5), 0)


def cluster_requirement():
    try:
        from test_db import missing_requirement
    except ImportError as e:
        return f"test_db is not importable: {e}"
    return missing_requirement()


@needs(cluster_requirement())
class RealClusterTest(unittest.TestCase):
    def test_write_and_read_frontends_follow_a_failover(self):
        from test_db import NODES as DB_NODES, Cluster

        cluster = Cluster(failover=True)
        self.addCleanup(cluster.cleanup)
        write_port, read_port, http_port, stats_port = free_port(), free_port(), free_port(), free_port()
        with open(cluster.site) as f:
            db_site = f.read()
        # The load balancer reads its own file: the cluster's [db] and [[db.node]] plus an [lb].
        lb_site = os.path.join(cluster.dir, "lb.toml")
        with open(lb_site, "w") as f:
            f.write(db_site.replace('state_dir = "var"', 'state_dir = "lb-var"', 1))
            f.write(f"[lb.health]\ninterval_ms = 500\ntimeout_ms = 2000\nrise = 1\nfall = 3\n"
                    f'[[lb.node]]\nname = "lb-1"\nhttp = "127.0.0.1:{http_port}"\n'
                    f'stats = "127.0.0.1:{stats_port}"\n'
                    f'db_write = "127.0.0.1:{write_port}"\ndb_read = "127.0.0.1:{read_port}"\nthreads = 1\n')
        cluster.start_etcd()
        for name in DB_NODES:
            cluster.start_agent(name)
        lb = Process([FULCRUM, "lb", "--site", lb_site, "--node", "lb-1"], os.path.join(cluster.dir, "lb.log"))
        self.addCleanup(lb.stop)
        try:
            self.follow_a_failover(cluster, lb, write_port, read_port, stats_port)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- lb ---\n{lb.output()[-5000:]}\n{cluster.logs()}") from None

    def follow_a_failover(self, cluster, lb, write_port, read_port, stats_port):
        from test_db import NODES as DB_NODES, pg_bin, processes_mentioning

        primary, _ = cluster.wait_roles(self, DB_NODES, timeout=60)

        with open(os.path.join(cluster.dir, "var", "db.password")) as f:
            password = f.readline().strip()

        def psql(port, sql):
            env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="3")
            return subprocess.run([os.path.join(pg_bin(), "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                   "-h", "127.0.0.1", "-p", str(port), "-U", "site", "-d", "site", "-c", sql],
                                  env=env, capture_output=True, text=True, timeout=10)

        def answers(port, sql, expected):
            result = psql(port, sql)
            return result.returncode == 0 and result.stdout.strip() == expected

        wait_until(lambda: answers(write_port, "SELECT pg_is_in_recovery()", "f"), timeout=20, interval=0.2,
                   what="db_write reaching the primary")
        wrote = psql(write_port, "CREATE TABLE t (v text); INSERT INTO t VALUES ('via lb')")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        wait_until(lambda: answers(read_port, "SELECT pg_is_in_recovery(), count(*) FROM t", "t|1"), timeout=20,
                   interval=0.2, what="db_read reaching a replica that has the row")

        def write_roles():
            """db_write's rows: each member's role as its agent's last answer gave it."""
            state = json.loads(http_get(f"http://127.0.0.1:{stats_port}/api/state", timeout=2)[2])
            (f,) = [f for f in state["db_frontends"] if f["name"] == "db_write"]
            return {s["name"]: s["role"] for s in f["servers"]}

        # Real agents' answers: the primary's row says primary, the replicas' say replica.
        wait_until(lambda: write_roles() == {n: "primary" if n == primary else "replica" for n in DB_NODES},
                   timeout=10, what="db_write's rows with the members' roles")

        # kill -9 the primary's agent and its PostgreSQL: a replica is promoted, and db_write
        # reaches it (writable) within a bounded wait.
        cluster.agents[primary].proc.kill()
        for pid in processes_mentioning(os.path.join(cluster.dir, "var", primary)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        cluster.agents.pop(primary).stop()  # gone for good: stop_all expects the others to exit 0
        killed = time.monotonic()
        wait_until(lambda: answers(write_port, "INSERT INTO t VALUES ('after') RETURNING pg_is_in_recovery()",
                                   "f"), timeout=45, interval=0.2, what="db_write reaching the new primary")
        took = time.monotonic() - killed
        wait_until(lambda: answers(read_port, "SELECT count(*) FROM t", "2"), timeout=20, interval=0.2,
                   what="db_read serving the new timeline's rows")
        wait_until(lambda: write_roles()[primary] == "unknown" and
                   sorted(write_roles()[n] for n in DB_NODES if n != primary) == ["primary", "replica"],
                   timeout=10, what="the killed member unknown, the promoted one primary")
        lb.signal(signal.SIGTERM)
        self.assertEqual(lb.wait(timeout=20), 0, lb.output()[-3000:])
        cluster.stop_all(self)
        print(f"\nwrites through db_write again {took * 1000:.0f} ms after kill -9 of the primary")


if __name__ == "__main__":
    unittest.main()
