"""The load during a trial, and the evidence it leaves.

Writer: THREADS clients, each committing single-row INSERTs (autocommit) as fast as it can through
its own connection to "the current primary" -- the node whose agent answers /primary 200 -- and
reconnecting (asking the agents again) on any failure. Every acknowledged id is recorded with the
time it was sent, the time the commit came back, the node, and when that connection was opened.

Probes: one client per node writing a tiny row to that node directly every PROBE_INTERVAL s, so a
node that accepts writes is seen even if no agent points the writer at it.

No statement_timeout on purpose: cancelling a commit that waits for a synchronous standby makes
PostgreSQL report success with only a WARNING, which would count a write that no replica has.
"""
import itertools
import threading
import time

import psycopg2

PROBE_INTERVAL = 0.05
RETRY_PAUSE = 0.01  # between failed attempts: fine resolution without spinning a core
_ids = itertools.count(1)  # unique ids for the whole run (next() is atomic under the GIL)


class Ack:
    __slots__ = ("id", "sent", "acked", "node", "opened")

    def __init__(self, id_, sent, acked, node, opened):
        self.id, self.sent, self.acked, self.node, self.opened = id_, sent, acked, node, opened


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


class Writer:
    def __init__(self, cluster, nodes, threads):
        self.cluster = cluster
        self.finder = PrimaryFinder(cluster, nodes)
        self.stopping = threading.Event()
        self.acks = [[] for _ in range(threads)]
        self.mark = float("inf")  # time of the fault
        self.first_after = None  # first commit on a connection opened after the fault
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()

    def count(self):
        return sum(len(a) for a in self.acks)

    def set_mark(self, t):
        self.mark = t

    def stop(self, timeout=10):
        """Stops the clients; a client stuck in a commit is abandoned (its later acks are ignored)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [a for acks in self.acks for a in list(acks)]

    def _run(self, index):
        acks = self.acks[index]
        node = None
        while not self.stopping.is_set():
            node = self.finder.find(stale=node)
            if node is None:
                time.sleep(RETRY_PAUSE)
                continue
            try:
                conn = self.cluster.connect(node, timeout=2)
            except psycopg2.Error:
                time.sleep(RETRY_PAUSE)
                continue
            opened = time.monotonic()
            try:
                with conn.cursor() as cur:
                    while not self.stopping.is_set():
                        id_ = next(_ids)
                        sent = time.monotonic()
                        cur.execute("INSERT INTO bench_w (id) VALUES (%s)", (id_,))
                        acked = time.monotonic()
                        if self.stopping.is_set():
                            break
                        acks.append(Ack(id_, sent, acked, node, opened))
                        if opened > self.mark and self.first_after is None:
                            self.first_after = acked
            except psycopg2.Error:
                time.sleep(RETRY_PAUSE)
            finally:
                conn.close()


class Probes:
    def __init__(self, cluster, nodes):
        self.cluster = cluster
        self.stopping = threading.Event()
        self.acks = {n: [] for n in nodes}
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in nodes]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self, timeout=10):
        self.stopping.set()
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
                with conn.cursor() as cur:
                    sent = time.monotonic()
                    cur.execute("INSERT INTO bench_probe (node) VALUES (%s)", (node,))
                    acked = time.monotonic()
                if not self.stopping.is_set():
                    self.acks[node].append(Ack(None, sent, acked, node, opened))
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if conn is not None:
                    conn.close()
                conn = None
            except psycopg2.Error:
                pass  # a replica refuses (read-only); the connection stays usable
        if conn is not None:
            conn.close()


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
