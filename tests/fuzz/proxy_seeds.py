#!/usr/bin/env python3
"""Writes the proxy fuzzer's hand-made seeds (tests/fuzz/corpus/proxy/) from readable scripts.

The script format is proxy_fuzz.cpp's: one opcode byte, some followed by a length byte and data.
Seeds the fuzzer found (crashes, minimized inputs) are checked in as files, not listed here.
"""
import os
import sys

CLIENT_SEND, RUN, SERVER_READ, SERVER_SEND, CLIENT_SHUT, SERVER_SHUT, SERVER_CLOSE, CLIENT_READ, TIME = range(9)


def send(op, data):
    out = b""
    while data:  # a length byte of 0 means "the rest of the input": never emit it
        piece, data = data[:255], data[255:]
        out += bytes([op, len(piece)]) + piece
    return out


def client(data):
    return send(CLIENT_SEND, data)


def server(data):
    return send(SERVER_SEND, data)


def run(n=3):
    return bytes([RUN] * n)


GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"

SEEDS = {
    "get": client(GET) + run() + bytes([SERVER_READ]) + server(OK) + run() + bytes([CLIENT_READ]),
    "post_length_split": client(b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n") + run()
    + client(b"hello") + run() + bytes([SERVER_READ])
    + server(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n") + run() + bytes([CLIENT_READ]),
    "pipelined": client(GET + b"GET /b?x=1 HTTP/1.1\r\nHost: a\r\n\r\n") + run() + bytes([SERVER_READ])
    + server(OK) + run() + bytes([SERVER_READ]) + server(OK) + run() + bytes([CLIENT_READ]),
    "keepalive_reuse": client(GET) + run() + bytes([SERVER_READ]) + server(OK) + run()
    + client(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n") + run() + bytes([SERVER_READ])
    + server(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n") + run() + bytes([CLIENT_READ]),
    "http10_close": client(b"GET /old HTTP/1.0\r\n\r\n") + run() + bytes([SERVER_READ])
    + server(b"HTTP/1.1 200 OK\r\n\r\nuntil close") + bytes([SERVER_CLOSE]) + run() + bytes([CLIENT_READ]),
    "server_resets": client(GET) + run() + bytes([SERVER_READ, SERVER_CLOSE]) + run(6) + bytes([CLIENT_READ]),
    "client_half_close": client(b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    + bytes([CLIENT_SHUT]) + run() + bytes([SERVER_READ]) + server(OK) + run() + bytes([CLIENT_READ]),
    "server_timeout": client(GET) + run() + bytes([SERVER_READ, TIME, 3]) + run() + bytes([CLIENT_READ]),
    "chunked_upload_split": client(b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r")
    + run() + client(b"\nabc\r\n0\r\nX-T: 1\r\n") + run() + client(b"\r\n") + run() + bytes([SERVER_READ])
    + server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n") + run()
    + bytes([CLIENT_READ]),
    "early_answer": client(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 900\r\n\r\n" + b"x" * 100) + run()
    + bytes([SERVER_READ]) + server(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    + bytes([SERVER_CLOSE]) + run() + client(b"y" * 200) + run() + bytes([CLIENT_READ]),
    "expect_continue": client(b"PUT /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    + run() + bytes([SERVER_READ]) + server(b"HTTP/1.1 100 Continue\r\n\r\n") + run() + bytes([CLIENT_READ])
    + client(b"abc") + run() + bytes([SERVER_READ]) + server(b"HTTP/1.1 204 No Content\r\n\r\n") + run()
    + bytes([CLIENT_READ]),
    "websocket": client(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    + run() + bytes([SERVER_READ])
    + server(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n") + run()
    + client(b"GET /not-a-request HTTP/1.1\r\n\r\n") + run() + bytes([SERVER_READ]) + server(b"frames")
    + bytes([CLIENT_SHUT]) + run() + bytes([SERVER_SHUT]) + run() + bytes([CLIENT_READ]),
    "bad_head": client(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + GET) + run() + bytes([CLIENT_READ]),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "proxy")
    os.makedirs(out, exist_ok=True)
    for name, script in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(script)


if __name__ == "__main__":
    main()
