#!/usr/bin/env python3
"""CPU cost of request heads that arrive in small pieces: CLIENTS clients each send a HEAD_BYTES
request head PIECE bytes at a time (TCP_NODELAY, a short pause between writes so each piece is
its own read), to `fulcrum web` directly and through `fulcrum lb`. Reports the CPU time each
process spent (utime and stime from /proc, and the scheduler's run time summed over its
threads). A parser that re-reads the head from its first byte on every read costs O(n²) user
time here; the system time is the kernel's per-read cost (recv, epoll, wakeups), linear.
Reports only; nothing passes or fails.
Usage: bench/slow_heads.py [--fulcrum build/fulcrum] [--clients 4] [--head-bytes 14848] [--piece 4]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu(pid):
    """(utime, stime in ms, scheduler run time in ms summed over threads) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    run_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                run_ns += int(f.read().split()[0])
        except OSError:
            pass
    return int(fields[11]) * tick_ms, int(fields[12]) * tick_ms, run_ns / 1e6


def head_of(size):
    head = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: slow_heads\r\n"
    fields = 100
    per_field = (size - len(head) - 2) // fields
    for i in range(fields):
        name = b"X-Slow-%03d: " % i
        value = (size - len(head) - 2 if i == fields - 1 else per_field) - len(name) - 2
        head += name + b"v" * value + b"\r\n"
    return head + b"\r\n"


def wait_listening(port, proc, what):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} is not listening")


def client(port, head, piece, results, index):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(head), piece):
        s.sendall(head[i:i + piece])
        time.sleep(0.0002)
    s.settimeout(30)
    reply = s.recv(200)
    s.close()
    results[index] = reply.split(b"\r\n", 1)[0].decode(errors="replace")


def run(port, pids, clients, head, piece):
    before = {name: cpu(pid) for name, pid in pids.items()}
    results = [None] * clients
    threads = [threading.Thread(target=client, args=(port, head, piece, results, i)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    time.sleep(0.2)
    after = {name: cpu(pid) for name, pid in pids.items()}
    for name in pids:
        user, system, run_ms = (a - b for a, b in zip(after[name], before[name]))
        print(f"  {name:4}: {user:5.0f} ms user + {system:5.0f} ms system, {run_ms:7.1f} ms on CPU "
              f"({run_ms / clients:.2f} ms per request)")
    print(f"  answers: {sorted(set(results))}, wall {wall:.1f} s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fulcrum", default=os.path.join(HERE, "..", "build", "fulcrum"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--head-bytes", type=int, default=14848)
    parser.add_argument("--piece", type=int, default=4)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="slowheads.")
    os.makedirs(os.path.join(work, "www"))
    with open(os.path.join(work, "www", "index.html"), "w") as f:
        f.write("<h1>home</h1>\n")
    web_port, lb_port = free_port(), free_port()
    site = os.path.join(work, "site.toml")
    with open(site, "w") as f:
        f.write(f"""[site]
name = "slowheads"
state_dir = "var"
[lb]
algorithm = "roundrobin"
[[lb.node]]
name = "lb"
http = "127.0.0.1:{lb_port}"
threads = 1
[web]
docroot = "www"
app = "none"
[[web.node]]
name = "web"
listen = "127.0.0.1:{web_port}"
threads = 1
""")
    log = open(os.path.join(work, "log"), "w")
    web = subprocess.Popen([args.fulcrum, "web", "--site", site, "--node", "web"], stdout=log, stderr=log)
    lb = subprocess.Popen([args.fulcrum, "lb", "--site", site, "--node", "lb"], stdout=log, stderr=log)
    try:
        wait_listening(web_port, web, "fulcrum web")
        wait_listening(lb_port, lb, "fulcrum lb")
        time.sleep(1.5)  # the lb's first health checks
        head = head_of(args.head_bytes)
        print(f"{args.clients} clients, a {len(head)}-byte head {args.piece} bytes at a time ({args.fulcrum})")
        print("straight to fulcrum web:")
        run(web_port, {"web": web.pid}, args.clients, head, args.piece)
        print("through fulcrum lb:")
        run(lb_port, {"lb": lb.pid, "web": web.pid}, args.clients, head, args.piece)
    finally:
        for proc in (lb, web):
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
