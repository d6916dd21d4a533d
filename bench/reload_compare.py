#!/usr/bin/env python3
"""Reloads under load: `fulcrum lb` (hot reload; binary upgrade by --takeover) against HAProxy 2.6
(`-sf OLDPID -x SOCKET` with `stats socket ... expose-fd listeners`), issue 16, "Benchmark".

Backends: three small Python servers a, b, c on loopback (harness.ThreadedServer; HTTP/1.1
keep-alive, `200 hello`, WebSocket echo). For each proxy in turn, in one run:
  1. the proxy starts with server a alone, and WS WebSockets are opened through it (so every one
     is on a, which stays in every later server set: the issue's promise is for a reload that
     does not remove the tunnel's server), each checked with an echo;
  2. wrk (-t1 -c32, keep-alive, GET /) runs against the proxy for the whole span;
  3. fulcrum, hot: RELOADS reloads by SIGHUP ~0.5 s apart, each rewriting the site file with the
     next server set (added, removed, reweighted, made a backup; roundrobin/leastconn alternate),
     each awaited through its report file (STATE_DIR/run/NODE.reload.json);
     fulcrum, takeover: TAKEOVERS binary upgrades (`fulcrum lb --takeover`), each after a server
     set change in the file; after each, the WebSockets are counted while the old process drains,
     again once it has exited (its 10 s grace cuts them), and new ones are opened on the new one;
     HAProxy: RELOADS reloads with the same server sets (the cfg rewritten), each a new haproxy
     started with `-sf OLDPID -x SOCKET`, awaited until it listens (the stats socket answers);
  4. wrk is stopped (SIGINT: it prints its totals) 1 s after the last reload; its requests,
     "Non-2xx or 3xx responses" and "Socket errors" are the row's figures;
  5. the WebSockets are counted (an echo within 2 s) after the last reload, and again when
     HAProxy's hard-stop-after (--hard-stop, 30 s) has passed since the first reload (for fulcrum hot
     at the same time: it has no such limit; for takeover once the old process has exited).

From the repository root:  python3 bench/reload_compare.py [--reloads 20] [--takeovers 3]
    [--websockets 8] [--fulcrum BIN] [--only fulcrum,takeover,haproxy]
Nothing is built; FULCRUM_BIN or --fulcrum names the binary (default build/fulcrum).
"""
import argparse
import atexit
import base64
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from harness import (Process, TempDir, ThreadedServer, free_port, read_body, read_head,  # noqa: E402
                     read_reload_report, wait_until)
from test_lb import Server, lb_site_text  # noqa: E402

WRK = "/usr/bin/wrk"
HAPROXY = "/usr/sbin/haproxy"
RELOAD_EVERY = 0.5
NODE = "lb-t"
HEALTH = {"path": "/healthz", "interval_ms": 100, "timeout_ms": 1000, "rise": 1, "fall": 2}
# The server sets, in turn; a is in every one (the WebSockets are on it). name: weight or
# (weight, backup).
SETS = [
    {"a": 1, "b": 1, "c": 1},
    {"a": 1, "c": 3},
    {"a": 2, "b": 1},
    {"a": 1, "b": (1, True), "c": 1},
    {"a": 1, "b": 1},
]


def algorithm_of(i):
    return "leastconn" if i % 3 == 1 else "roundrobin"


def log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Cleanups:
    """Run last-first, once: at the end of main and, should main not get there, at exit."""

    def __init__(self):
        self.items = []
        atexit.register(self.run)

    def add(self, fn, *args):
        self.items.append((fn, args))

    def run(self):
        while self.items:
            fn, args = self.items.pop()
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001
                print(f"cleanup: {e}", file=sys.stderr)


class Backend:
    """An HTTP/1.1 keep-alive server answering every request `200 hello` with X-Served-By: NAME,
    and a WebSocket upgrade with a proper 101 (Sec-WebSocket-Accept: HAProxy answers 502 to a 101
    without it, which test_lb.PyBackend sends), then echoing raw bytes. One thread per connection."""

    def __init__(self, name):
        self.name = name
        self.server = ThreadedServer(self._handle)
        self.port = self.server.port

    def stop(self):
        self.server.stop()

    def _handle(self, conn, server):
        f = conn.makefile("rb")
        while not server.stopping.is_set():
            try:
                start, headers = read_head(f)
            except EOFError:
                return
            framed = "transfer-encoding" in headers or "content-length" in headers
            read_body(f, headers, bodiless=not framed)
            if headers.get("upgrade", "").lower() == "websocket":
                key = headers.get("sec-websocket-key", "").encode()
                accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\nX-Served-By: " + self.name.encode() +
                             b"\r\n\r\n")
                while data := f.read1(65536):
                    conn.sendall(data)
                return
            close = "close" in headers.get("connection", "").lower()
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Served-By: " + self.name.encode() +
                         b"\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n" +
                         (b"Connection: close\r\n" if close else b"") + b"\r\nhello\n")
            if close:
                return


# -- clients ------------------------------------------------------------------------------------

class WebSocket:
    """A raw upgraded connection through the proxy; the backend echoes bytes back."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"GET /chat HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.file = self.sock.makefile("rb")
        start, headers = read_head(self.file)
        if " 101 " not in start:
            raise RuntimeError(f"no upgrade: {start}")
        self.server = headers.get("x-served-by")
        self.sent = 0

    def echoes(self, timeout=2.0):
        """True when a message comes back whole within `timeout`."""
        self.sent += 1
        text = f"ping {self.sent}\n".encode()
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(text)
            got = b""
            while len(got) < len(text):
                chunk = self.file.read1(65536)
                if not chunk:
                    return False
                got += chunk
            return got == text
        except OSError:
            return False

    def close(self):
        try:
            self.file.close()  # the socket's fd stays open while its makefile() is
            self.sock.close()
        except OSError:
            pass


def open_websockets(port, count, on_a=True):
    sockets = [WebSocket(port) for _ in range(count)]
    servers = {ws.server for ws in sockets}
    if (on_a and servers != {"a"}) or not all(ws.echoes() for ws in sockets):
        raise RuntimeError(f"WebSockets not all echoing (from server a: {on_a}): {servers}")
    return sockets


def count_open(sockets):
    return sum(1 for ws in sockets if ws.echoes())


class Wrk:
    """wrk for as long as it is let run; stop() interrupts it and parses its summary."""

    def __init__(self, port, log_path):
        self.log_path = log_path
        self.out = open(log_path, "wb")
        self.proc = subprocess.Popen([WRK, "-t1", "-c32", "-d3600s", "--timeout", "5s", "--latency",
                                      f"http://127.0.0.1:{port}/"], stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        with open(self.log_path) as f:
            text = f.read()
        requests = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", text)
        if not requests:
            raise RuntimeError("wrk printed no summary:\n" + text)
        seconds = float(requests.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[requests.group(3)]
        result = {"requests": int(requests.group(1)), "seconds": seconds, "non2xx": 0, "connect": 0, "read": 0, "write": 0,
                  "timeout": 0, "p99": None}
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        if m:
            result["non2xx"] = int(m.group(1))
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        if m:
            for key, value in zip(("connect", "read", "write", "timeout"), m.groups()):
                result[key] = int(value)
        m = re.search(r"^\s+99%\s+(\S+)", text, re.M)
        if m:
            result["p99"] = m.group(1)
        result["failed"] = sum(result[k] for k in ("non2xx", "connect", "read", "write", "timeout"))
        return result


# -- the proxies --------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.fulcrum = os.path.abspath(args.fulcrum)
        self.cleanups = Cleanups()
        self.tmp = TempDir()
        if args.keep:
            log(f"logs and files kept in {self.tmp.path}")
        else:
            self.cleanups.add(self.tmp.cleanup)
        self.backends = {}
        for name in ("a", "b", "c"):
            self.backends[name] = Backend(name)
            self.cleanups.add(self.backends[name].stop)

    def servers(self, spec):
        out = []
        for name, value in spec.items():
            weight, backup = value if isinstance(value, tuple) else (value, False)
            out.append(Server(name, self.backends[name].port, weight, backup))
        return out

    def process(self, args, label):
        proc = Process(args, os.path.join(self.tmp.path, label + ".log"))
        self.cleanups.add(proc.stop, 20)
        return proc

    # fulcrum ------------------------------------------------------------------------------------

    def write_fulcrum_site(self, spec, algorithm):
        with open(self.site, "w") as f:
            f.write(lb_site_text(self.port, self.servers(spec), algorithm=algorithm, health=HEALTH,
                                 node_extra={"name": NODE, "stats": f"127.0.0.1:{self.stats_port}"}))

    def start_fulcrum(self, label):
        self.port, self.stats_port = free_port(), free_port()
        # A directory per run: its own state_dir (var/: pid file, reload reports, server state).
        home = os.path.join(self.tmp.path, label)
        os.makedirs(os.path.join(home, "www"))
        self.site = os.path.join(home, f"{label}.toml")
        self.state_dir = os.path.join(home, "var")
        self.write_fulcrum_site({"a": 1}, "roundrobin")
        proc = self.process([self.fulcrum, "lb", "--site", self.site, "--node", NODE], label)
        wait_until(lambda: proc.alive() and socket.create_connection(("127.0.0.1", self.port), 1).close() is None,
                   timeout=20, what=f"fulcrum lb listening ({proc.output()[-2000:]})")
        wait_until(lambda: "a" in self.answering_servers(), timeout=10, what="server a up")
        return proc

    def answering_servers(self):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            return {r.getheader("X-Served-By")} if r.status == 200 else set()
        finally:
            c.close()

    def run_fulcrum_hot(self):
        proc = self.start_fulcrum("fulcrum-hot")
        sockets = open_websockets(self.port, self.args.websockets)
        self.cleanups.add(lambda: [ws.close() for ws in sockets])
        wrk = Wrk(self.port, os.path.join(self.tmp.path, "wrk-fulcrum-hot.log"))
        self.cleanups.add(wrk.stop)
        time.sleep(1.0)  # wrk's connections up before the first reload
        first = None
        refused = 0
        for i in range(self.args.reloads):
            self.write_fulcrum_site(SETS[i % len(SETS)], algorithm_of(i))
            report = read_reload_report(self.state_dir, NODE)
            sequence = report["sequence"] if report else 0
            started = time.monotonic()
            first = first or started
            proc.signal(signal.SIGHUP)
            wait_until(lambda: (read_reload_report(self.state_dir, NODE) or {}).get("sequence", 0) > sequence,
                       timeout=10, what=f"reload {i + 1}'s report")
            if not read_reload_report(self.state_dir, NODE)["ok"]:
                refused += 1
            time.sleep(max(0.0, RELOAD_EVERY - (time.monotonic() - started)))
        time.sleep(1.0)
        result = wrk.stop()
        result.update(proxy="fulcrum lb (hot reload, SIGHUP)", reloads=self.args.reloads - refused,
                      ws_after_last=count_open(sockets), ws_total=len(sockets))
        if refused:
            result["note"] = f"{refused} reload(s) refused"
        self.wait_since(first, self.args.hard_stop + 2)
        result["ws_later"] = count_open(sockets)
        result["later"] = f"{self.args.hard_stop + 2} s after the first reload"
        result["alive"] = proc.alive()
        for ws in sockets:
            ws.close()
        proc.stop(20)
        return result

    def run_fulcrum_takeover(self):
        proc = self.start_fulcrum("fulcrum-takeover")
        sockets = open_websockets(self.port, self.args.websockets)
        opened = list(sockets)
        self.cleanups.add(lambda: [ws.close() for ws in opened])
        wrk = Wrk(self.port, os.path.join(self.tmp.path, "wrk-fulcrum-takeover.log"))
        self.cleanups.add(wrk.stop)
        time.sleep(1.0)
        during, after, drain_s = [], [], []
        for i in range(self.args.takeovers):
            self.write_fulcrum_site(SETS[i % len(SETS)], algorithm_of(i))
            new = self.process([self.fulcrum, "lb", "--site", self.site, "--node", NODE, "--takeover"],
                               f"fulcrum-takeover-{i + 1}")
            started = time.monotonic()
            wait_until(lambda: "--takeover: serving" in new.output() or not new.alive(), timeout=20,
                       what="the new process serving")
            if not new.alive():
                raise RuntimeError("takeover failed:\n" + new.output()[-3000:])
            during.append(count_open(sockets))
            wait_until(lambda: not proc.alive(), timeout=30, what="the old process exiting")
            drain_s.append(time.monotonic() - started)
            after.append(count_open(sockets))
            proc.stop()
            proc = new
            if i + 1 < self.args.takeovers:  # fresh WebSockets for the next one, on the new process
                for ws in sockets:
                    ws.close()
                sockets = open_websockets(self.port, self.args.websockets, on_a=False)
                opened.extend(sockets)
        time.sleep(1.0)
        result = wrk.stop()
        result.update(proxy="fulcrum lb (binary upgrade, --takeover)", reloads=self.args.takeovers,
                      ws_after_last=min(during), ws_total=len(sockets), ws_later=max(after),
                      later="once the old process exited (after its drain)",
                      note=(f"WebSockets open during each drain: {during}; after it: {after}; old process "
                            f"gone {', '.join(f'{s:.1f}' for s in drain_s)} s after each takeover"),
                      alive=proc.alive())
        for ws in sockets:
            ws.close()
        proc.stop(20)
        return result

    # HAProxy ------------------------------------------------------------------------------------

    def write_haproxy_cfg(self, spec, algorithm, idle_close):
        lines = ["global",
                 f"  stats socket {self.haproxy_sock} mode 600 level admin expose-fd listeners",
                 f"  hard-stop-after {self.args.hard_stop}s",
                 "  nbthread 1",
                 "  maxconn 4096",
                 "defaults",
                 "  mode http",
                 "  option http-keep-alive",
                 *(["  option idle-close-on-response"] if idle_close else []),
                 "  timeout connect 2s",
                 "  timeout client 30s",
                 "  timeout server 30s",
                 "  timeout tunnel 1h",
                 "frontend fe",
                 f"  bind 127.0.0.1:{self.port}",
                 "  default_backend be",
                 "backend be",
                 f"  balance {algorithm}",
                 "  retries 2",
                 "  option redispatch",
                 "  option httpchk GET /healthz"]
        for s in self.servers(spec):
            lines.append(f"  server {s.name} 127.0.0.1:{s.port} weight {s.weight} check inter 100 rise 1 fall 2"
                         + (" backup" if s.backup else ""))
        with open(self.haproxy_cfg, "w") as f:
            f.write("\n".join(lines) + "\n")

    def haproxy_socket_answers(self, pid):
        """The stats socket answers `show info` from process `pid` (the new one bound it)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(self.haproxy_sock)
            s.sendall(b"show info\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return f"Pid: {pid}\n".encode() in data

    def start_haproxy(self, label, old=None):
        args = [HAPROXY, "-db", "-f", self.haproxy_cfg]
        if old is not None:
            args += ["-x", self.haproxy_sock, "-sf", str(old.proc.pid)]
        proc = self.process(args, label)
        wait_until(lambda: self.haproxy_socket_answers(proc.proc.pid) or not proc.alive(), timeout=20,
                   what=f"haproxy {label} serving")
        if not proc.alive():
            raise RuntimeError(f"haproxy {label} exited:\n{proc.output()[-3000:]}")
        return proc

    def run_haproxy(self, idle_close=False):
        self.port = free_port()
        label = "haproxy-idle-close" if idle_close else "haproxy"
        self.haproxy_cfg = os.path.join(self.tmp.path, label + ".cfg")
        self.haproxy_sock = os.path.join(self.tmp.path, label + ".sock")
        self.write_haproxy_cfg({"a": 1}, "roundrobin", idle_close)
        procs = [self.start_haproxy(f"{label}-0")]
        wait_until(lambda: "a" in self.answering_servers(), timeout=10, what="server a up")
        sockets = open_websockets(self.port, self.args.websockets)
        self.cleanups.add(lambda: [ws.close() for ws in sockets])
        wrk = Wrk(self.port, os.path.join(self.tmp.path, f"wrk-{label}.log"))
        self.cleanups.add(wrk.stop)
        time.sleep(1.0)
        first = None
        for i in range(self.args.reloads):
            self.write_haproxy_cfg(SETS[i % len(SETS)], algorithm_of(i), idle_close)
            started = time.monotonic()
            first = first or started
            procs.append(self.start_haproxy(f"{label}-{i + 1}", old=procs[-1]))
            time.sleep(max(0.0, RELOAD_EVERY - (time.monotonic() - started)))
        time.sleep(1.0)
        result = wrk.stop()
        lingering = sum(1 for p in procs[:-1] if p.alive())
        name = "HAProxy 2.6 (-sf -x, expose-fd listeners" + (", option idle-close-on-response)" if idle_close else ")")
        result.update(proxy=name, reloads=self.args.reloads,
                      ws_after_last=count_open(sockets), ws_total=len(sockets),
                      note=f"{lingering} old haproxy process(es) still running after the last reload")
        self.wait_since(first, self.args.hard_stop + 2)
        result["ws_later"] = count_open(sockets)
        result["later"] = f"{self.args.hard_stop + 2} s after the first reload (hard-stop-after {self.args.hard_stop}s)"
        result["alive"] = procs[-1].alive()
        lingering = sum(1 for p in procs[:-1] if p.alive())
        result["note"] += f", {lingering} at hard-stop-after + 2 s"
        for ws in sockets:
            ws.close()
        for p in reversed(procs):
            p.stop(20)
        return result

    @staticmethod
    def wait_since(start, seconds):
        left = start + seconds - time.monotonic()
        if left > 0:
            log(f"waiting {left:.0f} s for the WebSockets' second count")
            time.sleep(left)


def table(results):
    rows = ["| proxy | reloads | requests | failed (non-2xx + socket errors) | p99 | WebSockets open after the "
            "last reload | WebSockets open later |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        detail = (f"{r['failed']} ({r['non2xx']} non-2xx; connect {r['connect']}, read {r['read']}, "
                  f"write {r['write']}, timeout {r['timeout']})")
        rows.append(f"| {r['proxy']} | {r['reloads']} | {r['requests']:,} in {r['seconds']:.1f} s | {detail} | {r['p99']} | "
                    f"{r['ws_after_last']} of {r['ws_total']} | {r['ws_later']} of {r['ws_total']} "
                    f"({r['later']}) |")
    notes = [f"- {r['proxy']}: {r['note']}" for r in results if r.get("note")]
    notes += [f"- {r['proxy']}: the proxy had exited by the end!" for r in results if not r["alive"]]
    return "\n".join(rows + [""] + notes)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reloads", type=int, default=20)
    p.add_argument("--takeovers", type=int, default=3)
    p.add_argument("--websockets", type=int, default=8)
    p.add_argument("--fulcrum", default=os.environ.get("FULCRUM_BIN", os.path.join(HERE, "..", "build", "fulcrum")))
    p.add_argument("--hard-stop", type=int, default=30, help="HAProxy's hard-stop-after, seconds")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, files)")
    p.add_argument("--only", default="fulcrum,takeover,haproxy,haproxy-idle")
    args = p.parse_args()
    for tool in (args.fulcrum, WRK, HAPROXY):
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool}: not found or not executable")
    bench = Bench(args)
    results = []
    began = time.monotonic()
    try:
        runs = {"fulcrum": bench.run_fulcrum_hot, "takeover": bench.run_fulcrum_takeover,
                "haproxy": bench.run_haproxy, "haproxy-idle": lambda: bench.run_haproxy(idle_close=True)}
        for name in args.only.split(","):
            log(f"{name} ...")
            results.append(runs[name]())
            log(f"{name}: {results[-1]['requests']} requests, {results[-1]['failed']} failed")
    finally:
        bench.cleanups.run()
    print(f"reload_compare.py, {time.strftime('%Y-%m-%d %H:%M')}, {time.monotonic() - began:.0f} s; "
          f"{args.websockets} WebSockets per proxy, wrk -t1 -c32, backends: 3 Python threaded servers\n")
    print(table(results))


if __name__ == "__main__":
    main()
