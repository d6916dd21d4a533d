"""The load during a trial, and the evidence it leaves.

Writer: THREADS clients, each committing single-row INSERTs (autocommit) as fast as it can through
its own connection to "the current primary" -- the node whose agent answers /primary 200 -- and
reconnecting (asking the agents again) on any failure. Every acknowledged id is recorded with the
time it was sent, the time the commit came back, the node, and when that connection was opened.

With `follow` (the freeze faults), the writer also leaves a node that is no longer the primary
while its connections still work, as a client behind a proxy that health-checks every agent's
/primary every ROUTE_INTERVAL s and cuts the sessions to a node once another has taken over (a
frozen agent's PostgreSQL keeps serving them, so errors alone would never move the writer).

Probes: one client per node writing a tiny row to that node directly every PROBE_INTERVAL s, so a
node that accepts writes is seen even if no agent points the writer at it.

Direct: clients that write straight to one node's PostgreSQL address whatever the agents say
(the old primary in the freeze faults): HELD connections opened before the fault, kept until
they fail and then reopened, and one client opening a FRESH connection for every commit.

No statement_timeout on purpose: cancelling a commit that waits for a synchronous standby makes
PostgreSQL report success with only a WARNING, which would count a write that no replica has.
"""
import itertools
import os
import socket
import threading
import time

import psycopg2

PROBE_INTERVAL = 0.05
ROUTE_INTERVAL = 0.02  # the follow writer's health checks of every agent's /primary
HELD = 2  # direct clients each keeping one connection
FRESH_PAUSE = 0.02  # between the fresh-connection direct client's commits
RETRY_PAUSE = 0.01  # between failed attempts: fine resolution without spinning a core
_ids = itertools.count(1)  # unique ids for the whole run (next() is atomic under the GIL)


class Ack:
    __slots__ = ("id", "sent", "acked", "node", "opened", "client")

    def __init__(self, id_, sent, acked, node, opened, client="writer"):
        self.id, self.sent, self.acked, self.node, self.opened = id_, sent, acked, node, opened
        self.client = client  # writer, probe, held or fresh


class Sessions:
    """The open connections of a set of clients, so another thread can cut them: shutting down
    the socket ends a commit blocked on a frozen server (the client sees an error), which is what
    a proxy's session cut does. Socket numbers are taken at connect time and a connection is
    closed under the lock, so a cut never touches a reused descriptor."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open = {}  # id(conn) -> (socket fd, node)

    def add(self, conn, node):
        with self.lock:
            self.open[id(conn)] = (conn.fileno(), node)

    def close(self, conn):
        with self.lock:
            self.open.pop(id(conn), None)
            conn.close()

    def cut(self, keep=None):
        """Shuts down every connection except those to `keep`."""
        with self.lock:
            for fd, node in self.open.values():
                if node == keep:
                    continue
                try:
                    s = socket.socket(fileno=os.dup(fd))
                except OSError:
                    continue
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                finally:
                    s.close()


class PrimaryFinder:
    """Asks every agent's /primary; shared by the writer threads, refreshed at most every 20 ms."""

    def __init__(self, cluster, nodes):
        self.cluster, self.nodes = cluster, nodes
        self.lock = threading.Lock()
        self.at, self.node = 0.0, None

    def find(self, stale=None):
        with self.lock:
            now = time.monotonic()
            if self.node is not None and self.node != stale and now - self.at < 0.02:
                return self.node
            self.node = next((n for n in self.nodes if self.cluster.code(n, "/primary", timeout=0.5) == 200), None)
            self.at = time.monotonic()
            return self.node


class Router:
    """The follow writer's view of the primary: one thread per node asks its agent's /primary
    every ROUTE_INTERVAL s. The writer stays on the node it uses while that node still answers
    200; once it does not (an error or no answer within 0.5 s) and another node answers 200, that
    node becomes the current one and every session to any other node is cut."""

    def __init__(self, cluster, nodes, sessions, stopping):
        self.cluster, self.nodes, self.sessions, self.stopping = cluster, nodes, sessions, stopping
        self.lock = threading.Lock()
        self.codes = {n: None for n in nodes}
        self.current = None
        self.threads = [threading.Thread(target=self._poll, args=(n,), daemon=True) for n in nodes]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, deadline):
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _poll(self, node):
        while True:
            code = self.cluster.code(node, "/primary", timeout=0.5)
            with self.lock:
                self.codes[node] = code
                if self.current is None or self.codes[self.current] != 200:
                    chosen = next((n for n in self.nodes if self.codes[n] == 200), None)
                    if chosen is not None and chosen != self.current:
                        self.current = chosen
                        self.sessions.cut(keep=chosen)
            if self.stopping.wait(ROUTE_INTERVAL):
                return


class Writer:
    def __init__(self, cluster, nodes, threads, follow=False):
        self.cluster = cluster
        self.finder = PrimaryFinder(cluster, nodes)
        self.stopping = threading.Event()
        self.sessions = Sessions()
        self.router = Router(cluster, nodes, self.sessions, self.stopping) if follow else None
        self.acks = [[] for _ in range(threads)]
        self.mark = float("inf")  # time of the fault
        self.old = None  # with set_mark(t, old): the first commit after t on any other node counts
        self.first_after = None  # first commit on a connection opened after the fault
        self.first_node = None  # ... and the node that took it
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        if self.router is not None:
            self.router.start()
        for t in self.threads:
            t.start()

    def count(self):
        return sum(len(a) for a in self.acks)

    def set_mark(self, t, old=None):
        """The fault's time. Without `old`, the failover's first commit is the first on a
        connection opened after it; with `old` (a frozen primary keeps serving the connections it
        has), the first after it on any node but `old` -- which only a new primary can take."""
        self.old = old
        self.mark = t

    def stop(self, timeout=10):
        """Stops the clients; a client stuck in a commit is cut loose, and one still stuck is
        abandoned (its later acks are ignored)."""
        self.stopping.set()
        self.sessions.cut()
        deadline = time.monotonic() + timeout
        if self.router is not None:
            self.router.join(deadline)
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [a for acks in self.acks for a in list(acks)]

    def _node(self, stale):
        if self.router is None:
            return self.finder.find(stale=stale)
        return self.router.current

    def _run(self, index):
        acks = self.acks[index]
        node = None
        while not self.stopping.is_set():
            node = self._node(node)
            if node is None:
                time.sleep(RETRY_PAUSE)
                continue
            try:
                conn = self.cluster.connect(node, timeout=2)
            except psycopg2.Error:
                time.sleep(RETRY_PAUSE)
                continue
            opened = time.monotonic()
            self.sessions.add(conn, node)
            try:
                with conn.cursor() as cur:
                    while not self.stopping.is_set():
                        if self.router is not None and self.router.current != node:
                            break  # the router moved on (and cut this session, or is about to)
                        id_ = next(_ids)
                        sent = time.monotonic()
                        cur.execute("INSERT INTO bench_w (id) VALUES (%s)", (id_,))
                        acked = time.monotonic()
                        if self.stopping.is_set():
                            break
                        acks.append(Ack(id_, sent, acked, node, opened))
                        if self.first_after is None and (
                                (self.old is None and opened > self.mark)
                                or (self.old is not None and node != self.old and acked > self.mark)):
                            self.first_after, self.first_node = acked, node
            except psycopg2.Error:
                time.sleep(RETRY_PAUSE)
            finally:
                self.sessions.close(conn)


class Probes:
    def __init__(self, cluster, nodes):
        self.cluster = cluster
        self.stopping = threading.Event()
        self.sessions = Sessions()
        self.acks = {n: [] for n in nodes}
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in nodes]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self, timeout=10):
        self.stopping.set()
        self.sessions.cut()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [a for acks in self.acks.values() for a in list(acks)]

    def _run(self, node):
        conn = None
        while not self.stopping.wait(PROBE_INTERVAL):
            try:
                if conn is None:
                    conn = self.cluster.connect(node, timeout=1)
                    opened = time.monotonic()
                    self.sessions.add(conn, node)
                with conn.cursor() as cur:
                    sent = time.monotonic()
                    cur.execute("INSERT INTO bench_probe (node) VALUES (%s)", (node,))
                    acked = time.monotonic()
                if not self.stopping.is_set():
                    self.acks[node].append(Ack(None, sent, acked, node, opened, "probe"))
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if conn is not None:
                    self.sessions.close(conn)
                conn = None
            except psycopg2.Error:
                pass  # a replica refuses (read-only); the connection stays usable
        if conn is not None:
            self.sessions.close(conn)


class Direct:
    """Writes straight to `node`'s PostgreSQL address, as fast as the server answers, whatever the
    agents say: HELD clients keep one connection each (opened before the fault, reopened only
    after it fails) and one client opens a FRESH connection for every commit. Every commit it
    gets acknowledged is an Ack of `node`, with ids from the writer's sequence (same table)."""

    def __init__(self, cluster, node, held=HELD):
        self.cluster, self.node = cluster, node
        self.stopping = threading.Event()
        self.sessions = Sessions()
        self.acks = [[] for _ in range(held + 1)]
        self.threads = [threading.Thread(target=self._held, args=(i,), daemon=True) for i in range(held)]
        self.threads.append(threading.Thread(target=self._fresh, args=(held,), daemon=True))

    def start(self):
        for t in self.threads:
            t.start()

    def count(self):
        return sum(len(a) for a in self.acks)

    def stop(self, timeout=10):
        self.stopping.set()
        self.sessions.cut()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [a for acks in self.acks for a in list(acks)]

    def _commit(self, cur, acks, opened, client):
        id_ = next(_ids)
        sent = time.monotonic()
        cur.execute("INSERT INTO bench_w (id) VALUES (%s)", (id_,))
        acked = time.monotonic()
        if not self.stopping.is_set():
            acks.append(Ack(id_, sent, acked, self.node, opened, client))

    def _held(self, index):
        acks = self.acks[index]
        while not self.stopping.is_set():
            try:
                conn = self.cluster.connect(self.node, timeout=2)
            except psycopg2.Error:
                self.stopping.wait(RETRY_PAUSE)
                continue
            opened = time.monotonic()
            self.sessions.add(conn, self.node)
            try:
                with conn.cursor() as cur:
                    while not self.stopping.is_set():
                        self._commit(cur, acks, opened, "held")
            except psycopg2.Error:
                self.stopping.wait(RETRY_PAUSE)
            finally:
                self.sessions.close(conn)

    def _fresh(self, index):
        acks = self.acks[index]
        while not self.stopping.wait(FRESH_PAUSE):
            try:
                conn = self.cluster.connect(self.node, timeout=2)
            except psycopg2.Error:
                continue
            opened = time.monotonic()
            self.sessions.add(conn, self.node)
            try:
                with conn.cursor() as cur:
                    self._commit(cur, acks, opened, "fresh")
            except psycopg2.Error:
                pass
            finally:
                self.sessions.close(conn)


def double_writers(acks):
    """Pairs of nodes that were both accepting writes at one moment.

    A commit takes effect somewhere between its send and its ack, so node N certainly accepted
    a write no later than its earliest ack and again no earlier than its latest send. If two
    nodes' spans [earliest ack, latest send] intersect, each accepted a write after the other
    had started accepting them: two writers. Client-side delays cannot produce a false alarm.
    """
    spans = {}
    for a in acks:
        first, last = spans.get(a.node, (a.acked, a.sent))
        spans[a.node] = (min(first, a.acked), max(last, a.sent))
    nodes = sorted(spans)
    return [(x, y) for i, x in enumerate(nodes) for y in nodes[i + 1:]
            if max(spans[x][0], spans[y][0]) < min(spans[x][1], spans[y][1])]
