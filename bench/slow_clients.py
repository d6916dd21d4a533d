#!/usr/bin/env python3
"""A slow-client flood for bench/slow-clients.sh: TRICKLE connections that each send a request head
one byte a second and never finish it (slowloris), plus IDLE connections that each send one complete
GET, read the answer and then sit idle in keep-alive. One process, one epoll loop.

New connections are opened at most RATE a second (the ramp, and every reopen), so setting up is not
a SYN flood. A trickler the server closes (its head deadline) is counted, with any status it sent
first (408) and its age, and opened again; so is an idle connection the server closes.

Every half second the counters are written to --status as key=value lines (all_open=1 once every
trickler is connected and every idle connection has had its answer). Runs until SIGTERM/SIGINT, or
for --duration seconds, then prints the counters as one line.
usage: slow_clients.py PORT [--trickle 5000] [--idle 5000] [--rate 1000] [--status FILE]
                            [--duration 0] [--sources 1] [--host 127.0.0.1]
"""
import argparse
import errno
import heapq
import os
import resource
import selectors
import signal
import socket
import statistics
import time

TRICKLE_HEAD = b"GET / HTTP/1.1\r\nHost: bench\r\nX-Slow: "  # then b"a" for ever: never complete
IDLE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
CONNECT_TIMEOUT = 10.0  # a connect (or an idle connection's first answer) taking longer is given up
IP_BIND_ADDRESS_NO_PORT = 24


class Conn:
    __slots__ = ("sock", "kind", "started", "state", "sent", "buf", "status")

    def __init__(self, sock, kind, started):
        self.sock, self.kind, self.started = sock, kind, started
        self.state = "connecting"  # -> trickling | asking -> idle ; answered (a trickler given a status)
        self.sent = 0
        self.buf = b""
        self.status = None


class Flood:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.conns = set()
        self.due = []  # (time, seq, conn): tricklers' next byte
        self.seq = 0
        self.to_open = []  # kinds waiting for a connection, opened at RATE a second
        per = max(args.trickle, args.idle, 1)
        for i in range(per):  # interleaved, so both kinds are ready about together
            if i < args.trickle:
                self.to_open.append("trickle")
            if i < args.idle:
                self.to_open.append("idle")
        self.to_open.reverse()  # popped from the end
        self.tokens = 0.0
        self.source = 0
        self.c = dict(trickle_open=0, idle_open=0, connecting=0, opened=0, trickle_closed=0,
                      trickle_408=0, trickle_other_status=0, idle_closed=0, idle_bad_answer=0,
                      connect_failed=0, timed_out=0, bytes_trickled=0)
        self.errors = {}
        self.trickle_ages = []
        self.all_open_at = None
        self.t0 = time.monotonic()

    # ---- opening
    def open_some(self, now, elapsed):
        self.tokens = min(self.tokens + elapsed * self.args.rate, max(1.0, self.args.rate / 20))
        while self.to_open and self.tokens >= 1 and self.c["connecting"] < 1000:
            self.tokens -= 1
            self.connect(self.to_open.pop(), now)

    def connect(self, kind, now):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.args.sources > 1:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                self.source = self.source % self.args.sources + 1
                sock.bind((f"127.0.0.{self.source}", 0))
            err = sock.connect_ex((self.args.host, self.args.port))
        except OSError as e:
            err = e.errno
        if err not in (0, errno.EINPROGRESS):
            self.count_error("connect", err)
            sock.close()
            self.to_open.append(kind)
            return
        conn = Conn(sock, kind, now)
        self.conns.add(conn)
        self.c["connecting"] += 1
        self.c["opened"] += 1
        self.sel.register(sock, selectors.EVENT_WRITE, conn)

    def count_error(self, what, err):
        name = f"{what}_{errno.errorcode.get(err, err)}"
        self.errors[name] = self.errors.get(name, 0) + 1
        if what == "connect":
            self.c["connect_failed"] += 1

    def connected(self, conn, now):
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.c["connecting"] -= 1
        if err:
            self.count_error("connect", err)
            self.drop(conn)
            return
        self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
        if conn.kind == "trickle":
            conn.state = "trickling"
            self.c["trickle_open"] += 1
            self.trickle(conn, now)
        else:
            conn.state = "asking"
            conn.started = now
            try:
                conn.sock.send(IDLE_REQUEST)  # a few dozen bytes into an empty socket buffer
            except OSError as e:
                self.count_error("idle_send", e.errno)
                self.drop(conn)

    # ---- trickling
    def trickle(self, conn, now):
        byte = TRICKLE_HEAD[conn.sent:conn.sent + 1] or b"a"
        try:
            conn.sock.send(byte)
        except OSError as e:  # EPIPE, ECONNRESET: the server closed it
            self.count_error("trickle_send", e.errno)
            try:  # a 408 sent before the close may still be waiting to be read
                self.trickler_reply(conn, conn.sock.recv(65536))
            except OSError:
                pass
            self.trickler_closed(conn, now)
            return
        conn.sent += 1
        self.c["bytes_trickled"] += 1
        self.seq += 1
        heapq.heappush(self.due, (now + 1.0, self.seq, conn))

    def trickler_closed(self, conn, now):
        self.c["trickle_closed"] += 1
        self.trickle_ages.append(now - conn.started)
        if len(self.trickle_ages) > 100000:
            del self.trickle_ages[:50000]
        self.drop(conn)

    def trickler_reply(self, conn, data):
        """Counts the status the server answered a trickler with (408 for a head deadline)."""
        if conn.status is not None or not data:
            return
        conn.buf += data
        if b"\r\n" in conn.buf or len(conn.buf) > 64:
            conn.status = status_of(conn.buf)
            self.c["trickle_408" if conn.status == 408 else "trickle_other_status"] += 1
            conn.state = "answered"  # stops trickling; closed on EOF, or a second later

    # ---- reading
    def readable(self, conn, now):
        try:
            data = conn.sock.recv(65536)
        except OSError as e:
            self.count_error(f"{conn.kind}_recv", e.errno)
            data = b""
        if conn.kind == "trickle":
            if data:
                self.trickler_reply(conn, data)
            else:
                self.trickler_closed(conn, now)
            return
        if not data:  # an idle connection closed by the server
            if conn.state == "idle":
                self.c["idle_closed"] += 1
            else:
                self.c["idle_bad_answer"] += 1
            self.drop(conn)
            return
        if conn.state == "idle":
            return  # nothing is expected; ignore
        conn.buf += data
        head, sep, body = conn.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        if status_of(conn.buf) != 200:
            self.c["idle_bad_answer"] += 1
        conn.buf = b""
        conn.state = "idle"
        self.c["idle_open"] += 1

    def drop(self, conn):
        """Closes a connection and queues a new one of its kind."""
        if conn.state in ("trickling", "answered"):
            self.c["trickle_open"] -= 1
        elif conn.state == "idle":
            self.c["idle_open"] -= 1
        conn.state = "closed"
        self.sel.unregister(conn.sock)
        conn.sock.close()
        self.conns.discard(conn)
        self.to_open.append(conn.kind)

    def sweep(self, now):
        """Connects and first answers that take too long are given up and tried again."""
        for conn in [c for c in self.conns if c.state in ("connecting", "asking")]:
            if now - conn.started > CONNECT_TIMEOUT:
                self.c["timed_out"] += 1
                if conn.state == "connecting":
                    self.c["connecting"] -= 1
                self.drop(conn)

    # ---- reporting
    def counters(self, now):
        c = dict(self.c)
        c["elapsed_s"] = round(now - self.t0, 1)
        c["all_open"] = int(c["trickle_open"] == self.args.trickle and c["idle_open"] == self.args.idle)
        if c["all_open"] and self.all_open_at is None:
            self.all_open_at = now - self.t0
        c["all_open_after_s"] = round(self.all_open_at, 1) if self.all_open_at is not None else -1
        ages = self.trickle_ages
        if ages:
            c["trickle_age_min_s"] = round(min(ages), 1)
            c["trickle_age_median_s"] = round(statistics.median(ages), 1)
            c["trickle_age_max_s"] = round(max(ages), 1)
        c.update(self.errors)
        return c

    def write_status(self, now):
        if not self.args.status:
            return
        tmp = self.args.status + ".tmp"
        with open(tmp, "w") as f:
            for k, v in self.counters(now).items():
                f.write(f"{k}={v}\n")
        os.replace(tmp, self.args.status)

    # ---- the loop
    def run(self):
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        end = self.t0 + self.args.duration if self.args.duration > 0 else None
        last = self.t0
        next_status = next_sweep = self.t0
        while not stop and (end is None or last < end):
            now = time.monotonic()
            self.open_some(now, now - last)
            last = now
            while self.due and self.due[0][0] <= now:
                _, _, conn = heapq.heappop(self.due)
                if conn.state == "trickling":
                    self.trickle(conn, now)
                elif conn.state == "answered":  # answered but not closed a second later: close it
                    self.trickler_closed(conn, now)
            if now >= next_sweep:
                self.sweep(now)
                next_sweep = now + 1.0
            if now >= next_status:
                self.write_status(now)
                next_status = now + 0.5
            timeout = 0.05 if self.to_open else 0.2
            if self.due:
                timeout = min(timeout, max(0.0, self.due[0][0] - now))
            for key, events in self.sel.select(timeout):
                conn = key.data
                now = time.monotonic()
                if conn.state == "connecting":
                    self.connected(conn, now)
                elif conn.state != "closed":
                    self.readable(conn, now)
        now = time.monotonic()
        self.write_status(now)
        print(" ".join(f"{k}={v}" for k, v in self.counters(now).items()), flush=True)
        for conn in list(self.conns):
            conn.sock.close()


def status_of(buf):
    parts = buf.split(b" ", 2)
    try:
        return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else -1
    except ValueError:
        return -1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("port", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--trickle", type=int, default=5000)
    p.add_argument("--idle", type=int, default=5000)
    p.add_argument("--rate", type=float, default=1000.0, help="new connections a second, at most")
    p.add_argument("--status", default="", help="file rewritten every 0.5 s with the counters")
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until SIGTERM")
    p.add_argument("--sources", type=int, default=1, help="client addresses 127.0.0.1..N (ephemeral ports)")
    args = p.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = args.trickle + args.idle + 64
    if hard != resource.RLIM_INFINITY and need > hard:
        p.error(f"{need} descriptors needed, the hard limit is {hard}")
    Flood(args).run()


if __name__ == "__main__":
    main()
