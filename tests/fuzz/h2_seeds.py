#!/usr/bin/env python3
"""Writes the HTTP/2 fuzzer's hand-made seeds (tests/fuzz/corpus/h2/) from readable scripts.

The script format is h2_fuzz.cpp's: one opcode byte, then its operands. Seeds the fuzzer finds
(crashes, minimized inputs) are checked in as files, not listed here.
"""
import os
import sys

FRAME, REQUEST, RUN, SERVER_READ, SERVER_ANSWER, SERVER_SEND, SERVER_CLOSE, CLIENT_READ, TIME, CLIENT_RAW = range(10)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, END_HEADERS = 0x1, 0x4
GET, POST_LENGTH_5, POST_CHUNKED, CONNECTION, HOST_MISMATCH, NO_PATH, TE_TRAILERS, CR_IN_VALUE = range(8)


def stream(sid):
    """The operand byte for odd stream id `sid` (1..29), or 0 for the connection."""
    return 15 if sid == 0 else (sid - 1) // 2


def frame(ftype, flags, sid, payload=b""):
    assert 0 < len(payload) < 256 or not payload
    # An empty payload takes a length byte of 0, which means "the rest": keep such frames last,
    # or give them a payload.
    return bytes([FRAME, ftype, flags, stream(sid), len(payload)]) + payload


def request(variant, flags, sid):
    return bytes([REQUEST, variant, flags, stream(sid)])


def run(n=3):
    return bytes([RUN] * n)


def served(answer=0):
    return run() + bytes([SERVER_READ, SERVER_ANSWER, answer]) + run() + bytes([CLIENT_READ])


SEEDS = {
    "get": request(GET, END_STREAM | END_HEADERS, 1) + served(0),
    "get_chunked_answer": request(GET, END_STREAM | END_HEADERS, 1) + served(1),
    "post_length": request(POST_LENGTH_5, END_HEADERS, 1) + frame(DATA, END_STREAM, 1, b"hello") + served(0),
    "post_chunked": request(POST_CHUNKED, END_HEADERS, 3) + frame(DATA, 0, 3, b"abc")
    + frame(DATA, END_STREAM, 3, b"de") + served(3),
    "post_short": request(POST_LENGTH_5, END_HEADERS, 1) + frame(DATA, END_STREAM, 1, b"hi") + served(0),
    "strict": request(CONNECTION, 5, 1) + request(HOST_MISMATCH, 5, 3) + request(NO_PATH, 5, 5)
    + request(TE_TRAILERS, 5, 7) + request(CR_IN_VALUE, 5, 9) + served(0),
    "rapid_reset": b"".join(request(GET, 5, sid) + frame(RST_STREAM, 0, sid, b"\0\0\0\x08")
                            for sid in range(1, 30, 2)) + served(0),
    "continuation": request(GET, END_STREAM, 1) + b"".join(frame(CONTINUATION, 0, 1, b"\x84") for _ in range(12))
    + served(0),
    "pings": b"".join(frame(PING, 0, 0, b"12345678") for _ in range(40)) + run() + bytes([CLIENT_READ]),
    "zero_window": frame(SETTINGS, 0, 0, b"\x00\x04\x00\x00\x00\x00") + request(GET, 5, 1) + served(0)
    + bytes([TIME, 3, TIME, 3]) + run(),
    "too_many_streams": b"".join(request(GET, 5, sid) for sid in range(1, 14, 2)) + served(0) + served(0),
    "window_update": request(GET, 5, 1) + frame(WINDOW_UPDATE, 0, 1, b"\x7f\xff\xff\xff")
    + frame(WINDOW_UPDATE, 0, 0, b"\x7f\xff\xff\xff") + served(0),
    "server_dies": request(GET, 5, 1) + run() + bytes([SERVER_READ, SERVER_CLOSE]) + run() + bytes([CLIENT_READ]),
    "idle_timeout": request(GET, 5, 1) + served(0) + bytes([TIME, 3]) + run() + bytes([CLIENT_READ]),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "h2")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
