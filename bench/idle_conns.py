#!/usr/bin/env python3
"""Memory per idle keep-alive client connection of a server process.

Opens COUNT connections to 127.0.0.1:PORT, sends one GET on each and reads its response, so
every connection has been through a request and sits idle in keep-alive; then reads the
server's VmRSS from /proc and prints the growth per connection in KB.
usage: idle_conns.py PORT COUNT PID [PID...]   (RSS is summed over the PIDs, e.g. nginx workers)
"""
import selectors
import socket
import sys
import time


def rss_kb(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def main():
    port, count, pids = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
    before = rss_kb(pids)
    sel = selectors.DefaultSelector()
    socks = []
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    pending = {}
    deadline = time.monotonic() + 120
    for i in range(count):
        s = socket.socket()
        s.setblocking(True)
        s.connect(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        socks.append(s)
        pending[s] = b""
        sel.register(s, selectors.EVENT_READ)
        # Keep the number of unanswered requests bounded.
        while len(pending) > 256 and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                drain(key.fileobj, pending, sel)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            drain(key.fileobj, pending, sel)
    if pending:
        print(f"{len(pending)} connections never got a complete answer", file=sys.stderr)
    time.sleep(1.0)  # let the server settle after the last answers (it frees buffers when idle)
    after = rss_kb(pids)
    per = (after - before) / count
    print(f"idle_conns={count} rss_before_kb={before} rss_after_kb={after} kb_per_idle_conn={per:.2f}")
    for s in socks:
        s.close()


def drain(s, pending, sel):
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return
    buf = pending.get(s, b"") + data
    head, sep, body = buf.partition(b"\r\n\r\n")
    if sep:
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) >= length:
            pending.pop(s, None)
            sel.unregister(s)
            return
    if not data:
        pending.pop(s, None)
        sel.unregister(s)
        return
    pending[s] = buf


if __name__ == "__main__":
    main()
