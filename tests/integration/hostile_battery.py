"""A battery of hostile HTTP/1.1 requests and responses for a reverse proxy, as data, plus the
raw recording upstream and the raw client that run it. Used by test_hostile.py (against
`fulcrum lb`, asserting every expectation) and bench/hostile-compare.py (the same cases against
`fulcrum lb`, HAProxy and nginx, reported side by side in docs/hostile-requests.md).

Each request case: the raw bytes a client sends, the responses fulcrum gives (FWD: the
upstream's own answer was relayed; a number: the lb answered that status itself), whether the
client connection must then close, and exactly what the upstream must receive: NOTHING, a list
of Fwd (the requests it must parse from its bytes, in order, with no byte left over), or
TRUNCATED (no complete request: at most a prefix of one, and the connection closed).

References: RFC 9110 (semantics), RFC 9112 (HTTP/1.1 syntax), the HTTP Garden differential
fuzzing findings, PortSwigger's request smuggling research (CL.TE, TE.CL, TE.TE obfuscation)."""
import fcntl
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass, field

from harness import ThreadedServer

FWD = "fwd"  # the response is the upstream's (it carries X-Upstream: recorder)
NOTHING = "nothing"
TRUNCATED = "truncated"
ABSENT = object()  # Fwd.fields: this field must not reach the upstream
LB_AUTHORITY = object()  # Fwd.fields value: the lb's own address, "127.0.0.1:PORT"

PROBE = b"GET /__probe HTTP/1.1\r\nHost: probe.test\r\n\r\n"
OUR_FIELDS = {"x-forwarded-for", "x-forwarded-proto", "forwarded", "via", "x-forwarded-host",
              "x-real-ip", "connection"}


@dataclass
class Fwd:
    """One request the upstream must receive: method, target, decoded body, and fields whose
    (combined) value must be exactly this, or ABSENT."""
    method: str
    target: str
    body: bytes = b""
    fields: dict = field(default_factory=dict)


@dataclass
class Case:
    name: str
    raw: bytes
    status: list  # one entry per response: FWD or a status code
    close: bool
    upstream: object  # NOTHING, TRUNCATED or [Fwd, ...]
    ref: str
    why: str = ""


def H(*lines, host=b"h.test"):
    """A request head: the request line, Host (unless host=None), the other lines, CRLF CRLF."""
    out = lines[0] + b"\r\n"
    if host is not None:
        out += b"Host: " + host + b"\r\n"
    for line in lines[1:]:
        out += line + b"\r\n"
    return out + b"\r\n"


GET = b"GET / HTTP/1.1"
POST = b"POST / HTTP/1.1"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n"
CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"
TE = b"Transfer-Encoding: chunked"
HOST = {"host": "h.test"}


def fwd_get(target="/", **fields):
    return [Fwd("GET", target, b"", {"host": "h.test", **fields})]


def fwd_post(body=b"hello", **fields):
    return [Fwd("POST", "/", body, {"host": "h.test", **fields})]


def refused(status, name, raw, ref, why=""):
    """A request the proxy must refuse before anything reaches the upstream, then close."""
    return Case(name, raw, [status], True, NOTHING, ref, why)


def body_refused(status, name, raw, ref, why=""):
    """A request whose head is valid and whose body is not: refused, then closed; no complete
    request reaches the upstream (the head may have been streamed ahead of the bad bytes, and
    that connection is closed)."""
    return Case(name, raw, [status], True, TRUNCATED, ref, why)


REQUESTS = [
    # --- baselines: the battery's own harness works --------------------------------------------
    Case("baseline-get", H(GET), [FWD], False, fwd_get(), "RFC 9112 §3"),
    Case("baseline-post-length", H(POST, b"Content-Length: 5") + b"hello", [FWD], False,
         fwd_post(**{"content-length": "5"}), "RFC 9112 §6.2"),
    Case("baseline-post-chunked", H(POST, TE) + CHUNKED_HELLO, [FWD], False,
         fwd_post(**{"transfer-encoding": "chunked", "content-length": ABSENT}), "RFC 9112 §7.1"),
    Case("pipelined-two", H(b"GET /1 HTTP/1.1") + H(b"GET /2 HTTP/1.1"), [FWD, FWD], False,
         fwd_get("/1") + fwd_get("/2"), "RFC 9112 §9.3.2"),

    # --- CL.TE / TE.CL / TE.TE ---------------------------------------------------------------------
    refused(400, "cl-te", H(POST, b"Content-Length: 6", TE) + b"0\r\n\r\nG", "RFC 9112 §6.1, §6.3",
            "both framings: a proxy must not guess"),
    refused(400, "te-cl", H(POST, TE, b"Content-Length: 4") + b"5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
            "RFC 9112 §6.3"),
    refused(400, "cl-te-smuggle", H(POST, b"Content-Length: 35", TE) + b"0\r\n\r\n" + SMUGGLED,
            "RFC 9112 §6.3", "the classic CL.TE with a request after the last chunk"),
    refused(501, "te-xchunked", H(POST, b"Transfer-Encoding: xchunked") + CHUNKED_HELLO, "RFC 9112 §6.1",
            "an unknown coding: 501 (§6.1), never read as chunked; §6.3 would ask 400"),
    refused(400, "te-space-before-colon", H(POST, b"Transfer-Encoding : chunked") + CHUNKED_HELLO,
            "RFC 9112 §5.1"),
    refused(400, "te-tab-before-colon", H(POST, b"Transfer-Encoding\t: chunked") + CHUNKED_HELLO,
            "RFC 9112 §5.1"),
    refused(400, "te-leading-space-line", H(POST, b"X-A: 1", b" Transfer-Encoding: chunked") + CHUNKED_HELLO,
            "RFC 9112 §5.2", "obs-fold: the line continues X-A"),
    refused(400, "te-value-obs-fold", H(POST, b"Transfer-Encoding:", b" chunked") + CHUNKED_HELLO,
            "RFC 9112 §5.2"),
    refused(501, "te-chunked-identity", H(POST, b"Transfer-Encoding: chunked, identity") + CHUNKED_HELLO,
            "RFC 9112 §6.1, §6.3", "refused and closed; §6.3 asks 400 where chunked is not final"),
    refused(400, "te-chunked-chunked", H(POST, b"Transfer-Encoding: chunked, chunked") + CHUNKED_HELLO,
            "RFC 9112 §6.1", "chunked applied twice"),
    refused(400, "te-two-lines", H(POST, TE, TE) + CHUNKED_HELLO, "RFC 9112 §6.1"),
    refused(501, "te-gzip-chunked", H(POST, b"Transfer-Encoding: gzip, chunked") + CHUNKED_HELLO,
            "RFC 9112 §6.1", "well-formed, but a coding the proxy does not implement"),
    refused(400, "te-quoted", H(POST, b'Transfer-Encoding: "chunked"') + CHUNKED_HELLO, "RFC 9110 §10.1.4"),
    refused(400, "te-vertical-tab", H(POST, b"Transfer-Encoding: chunked\x0b") + CHUNKED_HELLO,
            "RFC 9110 §5.5"),
    refused(400, "te-empty", H(POST, b"Transfer-Encoding: ") + CHUNKED_HELLO, "RFC 9112 §6.1"),
    refused(400, "te-trailing-comma", H(POST, b"Transfer-Encoding: chunked,") + CHUNKED_HELLO,
            "RFC 9110 §5.6.1", "deliberately strict: an odd list on a framing field is refused"),
    Case("te-uppercase", H(POST, b"Transfer-Encoding: CHUNKED") + CHUNKED_HELLO, [FWD], False,
         fwd_post(**{"transfer-encoding": "chunked"}), "RFC 9112 §7",
         "coding names are case-insensitive; forwarded as a normalised `chunked`"),
    refused(400, "te-http10", H(b"POST / HTTP/1.0", TE) + CHUNKED_HELLO, "RFC 9112 §6.1",
            "HTTP/1.0 with Transfer-Encoding: the framing is faulty"),
    Case("te-hidden-by-connection", H(POST, b"Connection: Transfer-Encoding", TE) +
         b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n", [FWD], False,
         fwd_post(SMUGGLED, **{"transfer-encoding": "chunked"}), "RFC 9110 §7.6.1",
         "Connection naming a framing field must not strip it: the body would become a request"),

    # --- Content-Length -----------------------------------------------------------------------------
    refused(400, "cl-plus", H(POST, b"Content-Length: +5") + b"hello", "RFC 9110 §8.6"),
    refused(400, "cl-negative", H(POST, b"Content-Length: -1") + b"hello", "RFC 9110 §8.6"),
    refused(400, "cl-hex", H(POST, b"Content-Length: 0x5") + b"hello", "RFC 9110 §8.6"),
    refused(400, "cl-overflow", H(POST, b"Content-Length: 184467440737095516160") + b"hello", "RFC 9110 §8.6",
            "2^64 * 10: must not wrap to a small number"),
    refused(413, "cl-too-large", H(POST, b"Content-Length: 18446744073709551615") + b"hello", "RFC 9110 §15.5.14"),
    refused(400, "cl-two-different", H(POST, b"Content-Length: 5", b"Content-Length: 6") + b"hello!",
            "RFC 9112 §6.3"),
    refused(400, "cl-list-different", H(POST, b"Content-Length: 5, 6") + b"hello!", "RFC 9112 §6.3"),
    refused(400, "cl-space-inside", H(POST, b"Content-Length: 1 0") + b"0123456789", "RFC 9110 §8.6"),
    refused(400, "cl-empty", H(POST, b"Content-Length: ") + b"hello", "RFC 9110 §8.6"),
    refused(400, "cl-trailing-junk", H(POST, b"Content-Length: 5x") + b"hello", "RFC 9110 §8.6"),
    refused(400, "cl-space-before-colon", H(POST, b"Content-Length : 5") + b"hello", "RFC 9112 §5.1"),
    Case("cl-two-same", H(POST, b"Content-Length: 5", b"Content-Length: 5") + b"hello", [FWD], False,
         fwd_post(**{"content-length": "5"}), "RFC 9110 §8.6", "one Content-Length is forwarded"),
    Case("cl-list-same", H(POST, b"Content-Length: 5, 5") + b"hello", [FWD], False,
         fwd_post(**{"content-length": "5"}), "RFC 9110 §8.6"),
    Case("cl-leading-zeros", H(POST, b"Content-Length: 0005") + b"hello", [FWD], False,
         fwd_post(**{"content-length": "5"}), "RFC 9110 §8.6"),
    Case("cl-hidden-by-connection", H(POST, b"Connection: Content-Length", b"Content-Length: 5") + b"hello",
         [FWD], False, fwd_post(**{"content-length": "5"}), "RFC 9110 §7.6.1",
         "Connection naming Content-Length must not strip it"),
    Case("cl-body-is-a-request", H(POST, b"Content-Length: %d" % len(SMUGGLED)) + SMUGGLED, [FWD], False,
         fwd_post(SMUGGLED), "RFC 9112 §6.2", "the body is data, one request upstream"),
    Case("cl-then-pipelined", H(POST, b"Content-Length: 5") + b"hello" + H(b"GET /2 HTTP/1.1"), [FWD, FWD],
         False, fwd_post() + fwd_get("/2"), "RFC 9112 §9.3.2"),

    # --- chunked framing --------------------------------------------------------------------------
    body_refused(400, "chunk-size-overflow", H(POST, TE) + b"10000000000000005\r\nhello\r\n0\r\n\r\n",
            "RFC 9112 §7.1", "17 hex digits: must not wrap to 5"),
    body_refused(400, "chunk-size-negative", H(POST, TE) + b"-5\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1"),
    body_refused(400, "chunk-size-0x", H(POST, TE) + b"0x5\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1"),
    body_refused(400, "chunk-size-leading-space", H(POST, TE) + b" 5\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1"),
    body_refused(400, "chunk-size-bare-lf", H(POST, TE) + b"5\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1"),
    body_refused(400, "chunk-data-bare-lf", H(POST, TE) + b"5\r\nhello\n0\r\n\r\n", "RFC 9112 §7.1"),
    body_refused(400, "chunk-data-bare-cr", H(POST, TE) + b"5\r\nhello\r0\r\n\r\n", "RFC 9112 §7.1"),
    body_refused(400, "chunk-data-longer-than-size", H(POST, TE) + b"3\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1"),
    body_refused(400, "chunk-ext-nul", H(POST, TE) + b"5;a=\x00\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1.1"),
    body_refused(400, "chunk-ext-bare-lf", H(POST, TE) + b"5;a\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1.1"),
    body_refused(400, "chunk-ext-over-long", H(POST, TE) + b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
            "RFC 9112 §7.1.1", "extensions are bounded (4 KiB line)"),
    Case("chunk-ext-valid", H(POST, TE) + b"5;name=value\r\nhello\r\n0\r\n\r\n", [FWD], False, fwd_post(),
         "RFC 9112 §7.1.1"),
    Case("chunked-body-is-a-request", H(POST, TE) + b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
         [FWD], False, fwd_post(SMUGGLED), "RFC 9112 §7.1"),
    body_refused(400, "trailer-bare-lf", H(POST, TE) + b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n", "RFC 9112 §7.1.2"),
    body_refused(400, "trailer-content-length", H(POST, TE) + b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n",
            "RFC 9110 §6.5.1", "framing in a trailer is refused rather than passed to servers that merge it"),
    body_refused(400, "trailer-transfer-encoding", H(POST, TE) + b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "RFC 9110 §6.5.1"),
    Case("trailer-valid", H(POST, TE) + b"5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n", [FWD], False, fwd_post(),
         "RFC 9112 §7.1.2"),

    # --- field syntax --------------------------------------------------------------------------------
    refused(400, "obs-fold", H(GET, b"X-A: 1", b"  folded"), "RFC 9112 §5.2"),
    refused(400, "nul-in-value", H(GET, b"X-A: a\x00b"), "RFC 9110 §5.5"),
    refused(400, "cr-in-value", H(GET, b"X-A: a\rb"), "RFC 9112 §2.2"),
    refused(400, "bare-lf-field-line", b"GET / HTTP/1.1\r\nHost: h.test\nX-A: 1\r\n\r\n", "RFC 9112 §2.2",
            "deliberately strict: bare LF is refused, never read as a line end"),
    refused(400, "bare-lf-end-of-head", b"GET / HTTP/1.1\r\nHost: h.test\r\n\n", "RFC 9112 §2.2"),
    refused(400, "space-in-name", H(GET, b"X A: 1"), "RFC 9110 §5.1"),
    refused(400, "empty-name", H(GET, b": 1"), "RFC 9110 §5.1"),
    refused(400, "no-colon", H(GET, b"X-A"), "RFC 9112 §5"),
    refused(400, "non-ascii-name", H(GET, b"X-\xc3\xa9: 1"), "RFC 9110 §5.1"),
    refused(431, "over-long-field", H(GET, b"X-A: " + b"a" * 20000), "RFC 6585 §5"),
    refused(431, "too-many-fields", H(GET, *[b"X-%d: 1" % i for i in range(200)]), "RFC 6585 §5"),
    Case("hop-by-hop-named", H(GET, b"Connection: X-Secret", b"X-Secret: 1", b"Keep-Alive: 5"), [FWD], False,
         fwd_get(**{"x-secret": ABSENT, "keep-alive": ABSENT}), "RFC 9110 §7.6.1"),
    Case("host-hidden-by-connection", H(GET, b"Connection: Host"), [FWD], False, fwd_get(), "RFC 9110 §7.6.1",
         "Connection naming Host must not send an HTTP/1.1 request without Host"),

    # --- request line -------------------------------------------------------------------------------
    refused(400, "method-bad-char", H(b"G(ET / HTTP/1.1"), "RFC 9110 §9.1"),
    refused(400, "method-empty", H(b" / HTTP/1.1"), "RFC 9112 §3"),
    refused(400, "double-space", H(b"GET  / HTTP/1.1"), "RFC 9112 §3"),
    refused(400, "tab-separator", H(b"GET\t/ HTTP/1.1"), "RFC 9112 §3"),
    refused(400, "space-after-version", H(b"GET / HTTP/1.1 "), "RFC 9112 §3"),
    refused(400, "lowercase-version", H(b"GET / http/1.1"), "RFC 9112 §2.3"),
    refused(400, "bare-lf-request-line", b"GET / HTTP/1.1\nHost: h.test\n\n", "RFC 9112 §2.2"),
    refused(400, "bare-cr-request-line", b"GET / HTTP/1.1\rHost: h.test\r\n\r\n", "RFC 9112 §2.2"),
    refused(400, "leading-bare-lf", b"\n" + H(GET), "RFC 9112 §2.2"),
    Case("leading-crlf", b"\r\n" + H(GET), [FWD], False, fwd_get(), "RFC 9112 §2.2"),
    refused(400, "http09", b"GET /\r\n\r\n", "RFC 9112 §2.3", "HTTP/0.9 is not spoken"),
    refused(505, "http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "RFC 9113 §3.4"),
    refused(505, "version-2", H(b"GET / HTTP/2.0"), "RFC 9110 §6.2"),
    refused(400, "fragment-in-target", H(b"GET /a#b HTTP/1.1"), "RFC 9112 §3.2"),
    refused(400, "nul-in-target", H(b"GET /a\x00b HTTP/1.1"), "RFC 9112 §3.2"),
    refused(400, "non-ascii-target", H(b"GET /\xff HTTP/1.1"), "RFC 9112 §3.2"),
    refused(414, "over-long-target", H(b"GET /" + b"a" * 9000 + b" HTTP/1.1"), "RFC 9112 §3"),
    Case("method-lowercase", H(b"get / HTTP/1.1"), [FWD], False,
         [Fwd("get", "/", b"", HOST)], "RFC 9110 §9.1", "methods are case-sensitive: an unknown method"),

    # --- request-target forms and Host ------------------------------------------------------------
    refused(400, "host-missing", H(GET, host=None), "RFC 9112 §3.2"),
    refused(400, "host-duplicate", H(GET, b"Host: other.test"), "RFC 9112 §3.2"),
    refused(400, "host-bad-char", H(GET, host=b"h.test/x"), "RFC 9112 §3.2"),
    refused(400, "host-userinfo", H(GET, host=b"user@h.test"), "RFC 9110 §4.2.4"),
    Case("absolute-form", H(b"GET http://h.test/a?b=1 HTTP/1.1"), [FWD], False, fwd_get("/a?b=1"),
         "RFC 9112 §3.2.2", "sent upstream in origin-form"),
    Case("absolute-form-host-mismatch", H(b"GET http://a.test/a HTTP/1.1", host=b"b.test"), [FWD], False,
         [Fwd("GET", "/a", b"", {"host": "a.test"})], "RFC 9112 §3.2.2",
         "the target's authority wins over Host"),
    Case("absolute-form-no-path", H(b"GET http://a.test HTTP/1.1", host=b"a.test"), [FWD], False,
         [Fwd("GET", "/", b"", {"host": "a.test"})], "RFC 9112 §3.2.2"),
    refused(400, "absolute-form-userinfo", H(b"GET http://u@h.test/ HTTP/1.1"), "RFC 9110 §4.2.4"),
    refused(400, "authority-form-get", H(b"GET h.test:80 HTTP/1.1"), "RFC 9112 §3.2.3"),
    refused(400, "asterisk-form-get", H(b"GET * HTTP/1.1"), "RFC 9112 §3.2.4"),
    Case("asterisk-form-options", H(b"OPTIONS * HTTP/1.1"), [FWD], False,
         [Fwd("OPTIONS", "*", b"", HOST)], "RFC 9112 §3.2.4"),
    refused(400, "connect-origin-form", H(b"CONNECT / HTTP/1.1"), "RFC 9112 §3.2.3"),
    Case("http10-no-host", b"GET / HTTP/1.0\r\n\r\n", [FWD], True,
         [Fwd("GET", "/", b"", {"host": LB_AUTHORITY})], "RFC 9112 §3.2",
         "HTTP/1.0 may omit Host; the HTTP/1.1 request upstream may not"),
    Case("http10-keep-alive", b"GET / HTTP/1.0\r\nHost: h.test\r\nConnection: keep-alive\r\n\r\n", [FWD], False,
         fwd_get(), "RFC 9112 §9.3"),

    # --- Expect and Upgrade ------------------------------------------------------------------------
    refused(417, "expect-unknown", H(POST, b"Expect: bogus", b"Content-Length: 5") + b"hello",
            "RFC 9110 §10.1.1"),
    Case("expect-100", H(POST, b"Expect: 100-continue", b"Content-Length: 5") + b"hello", [FWD], False,
         fwd_post(), "RFC 9110 §10.1.1"),
    Case("upgrade-without-101", H(b"GET /ws HTTP/1.1", b"Connection: Upgrade", b"Upgrade: websocket") + SMUGGLED,
         [FWD, FWD], False, fwd_get("/ws", upgrade="websocket") + fwd_get("/smuggled"), "RFC 9110 §7.8",
         "no 101: the bytes after the head are the next request, checked and rebuilt, not a tunnel"),
    Case("upgrade-http10", b"GET / HTTP/1.0\r\nHost: h.test\r\nConnection: Upgrade, keep-alive\r\n"
         b"Upgrade: websocket\r\n\r\n", [FWD], False, fwd_get(upgrade=ABSENT), "RFC 9110 §7.8",
         "Upgrade is not HTTP/1.0: dropped"),
    Case("upgrade-h2c-settings", H(GET, b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                                   b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), [FWD], False,
         fwd_get(upgrade="h2c", **{"http2-settings": ABSENT}), "RFC 9110 §7.6.1",
         "h2c smuggling: forwarded like any upgrade; no tunnel unless the server says 101"),

    # --- smuggling after a refusal --------------------------------------------------------------
    refused(400, "refused-then-smuggled", H(POST, b"Content-Length: x") + SMUGGLED, "RFC 9112 §6.3",
            "nothing after a refused request is processed"),
    body_refused(400, "refused-te-then-smuggled", H(POST, TE) + b"zz\r\n" + SMUGGLED, "RFC 9112 §7.1"),
    Case("valid-then-refused-then-smuggled", H(b"GET /1 HTTP/1.1") + H(GET, b"Host: b.test") + SMUGGLED,
         [FWD, 400], True, fwd_get("/1"), "RFC 9112 §9.3.2"),
]

# Canned upstream responses, keyed by the last segment of the target "/__resp/NAME". Each is
# followed by nothing: the recorder keeps the connection open, so reuse would be visible.
RESPONSES = {
    "two-lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 502),
    "length-and-chunked": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\n", 502),
    "204-with-body": (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", 502),
    "204-chunked": (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 502),
    "304-with-body": (b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\nhello", 502),
    "bad-status-line": (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", 502),
    "no-status-code": (b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n", 502),
    "status-obs-fold": (b"HTTP/1.1 200\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", 502),
    "http10-chunked": (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 502),
    "xchunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 502),
    "length-plus": (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", 502),
    "bare-lf": (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 502),
    "nul-in-field": (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", 502),
    "http2-status": (b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 502),
    "unasked-101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 502),
    "extra-response": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                       b"HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\nContent-Length: 0\r\n\r\n", 200),
}
RESPONSE_REFS = {
    "two-lengths": "RFC 9112 §6.3", "length-and-chunked": "RFC 9112 §6.3", "204-with-body": "RFC 9110 §8.6",
    "204-chunked": "RFC 9112 §6.1", "304-with-body": "RFC 9112 §6.3", "bad-status-line": "RFC 9112 §4",
    "no-status-code": "RFC 9112 §4", "status-obs-fold": "RFC 9112 §5.2", "http10-chunked": "RFC 9112 §6.1",
    "xchunked": "RFC 9112 §6.1", "length-plus": "RFC 9110 §8.6", "bare-lf": "RFC 9112 §2.2",
    "nul-in-field": "RFC 9110 §5.5", "http2-status": "RFC 9112 §2.3", "unasked-101": "RFC 9110 §15.2.2",
    "extra-response": "RFC 9112 §9.3.2",
}
UPSTREAM_OK = b"HTTP/1.1 200 OK\r\nX-Upstream: recorder\r\nContent-Length: 2\r\n\r\nok"


# ---------------------------------------------------------------------------------------------
# The recording upstream


class BadBytes(Exception):
    pass


def _line(buf, pos):
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if b"\n" in buf[pos:]:
            raise BadBytes("bare LF")
        return None, pos
    line = buf[pos:end]
    if b"\n" in line or b"\r" in line:
        raise BadBytes("bare CR or LF")
    return line, end + 2


def parse_request(buf):
    """One strictly framed HTTP/1.1 request from the start of buf: (request dict, bytes used),
    (None, 0) when incomplete. Raises BadBytes for anything that is not a clean request."""
    start, pos = _line(buf, 0)
    if start is None:
        return None, 0
    parts = start.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        raise BadBytes(f"request line {start!r}")
    fields = []
    while True:
        line, pos = _line(buf, pos)
        if line is None:
            return None, 0
        if line == b"":
            break
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in b" \t":
            raise BadBytes(f"field line {line!r}")
        fields.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    names = [n.lower() for n, _ in fields]
    te = [v for n, v in fields if n.lower() == "transfer-encoding"]
    cls = {v for n, v in fields if n.lower() == "content-length"}
    body, trailers = b"", []
    if te:
        if cls or te[-1].split(",")[-1].strip().lower() != "chunked":
            raise BadBytes("ambiguous request framing")
        while True:
            line, pos = _line(buf, pos)
            if line is None:
                return None, 0
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while True:
                    line, pos = _line(buf, pos)
                    if line is None:
                        return None, 0
                    if line == b"":
                        break
                    trailers.append(line)
                break
            if len(buf) < pos + size + 2:
                return None, 0
            body += buf[pos:pos + size]
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise BadBytes("chunk data")
            pos += size + 2
    elif cls:
        if len(cls) > 1 or names.count("content-length") > 1:
            raise BadBytes("several Content-Length")
        length = int(cls.pop())
        if len(buf) < pos + length:
            return None, 0
        body = buf[pos:pos + length]
        pos += length
    request = {"method": parts[0].decode("latin-1"), "target": parts[1].decode("latin-1"),
               "version": parts[2].decode("latin-1"), "fields": fields, "body": body, "trailers": trailers,
               "raw": bytes(buf[:pos])}
    return request, pos


def field_value(request, name):
    """The fields called `name` combined with ", ", or None."""
    values = [v for n, v in request["fields"] if n.lower() == name]
    return ", ".join(values) if values else None


class _Conn:
    def __init__(self, conn_id, sock):
        self.id = conn_id
        self.sock = sock
        self.raw = bytearray()
        self.requests = []  # (offset of the request in raw, request dict)
        self.closed = False  # the proxy closed its side
        self.busy = True  # the handler is between recv calls
        self.bad = None  # why the bytes stopped parsing


class RecordingUpstream:
    """A raw HTTP/1.1 origin on loopback that records every byte of every connection and the
    requests it parses from them. It answers 200 "ok" (X-Upstream: recorder), 405 to CONNECT, and
    for /__resp/NAME the canned RESPONSES[NAME] (then keeps the connection open)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.conns = {}
        self.next_id = 0
        self.seq = 0  # arrival order of requests across connections
        self.server = ThreadedServer(self._handle)
        self.port = self.server.port

    def stop(self):
        self.server.stop()

    def _handle(self, sock, server):
        with self.lock:
            self.next_id += 1
            conn = _Conn(self.next_id, sock)
            self.conns[conn.id] = conn
        try:
            self._serve(conn, sock, server)
        finally:
            conn.closed = True  # also when the proxy reset the connection

    def _serve(self, conn, sock, server):
        pending = b""
        while not server.stopping.is_set():
            conn.busy = False
            try:
                data = sock.recv(65536)
            finally:
                conn.busy = True
            if not data:
                conn.closed = True
                return
            with self.lock:
                offset = len(conn.raw)
                conn.raw += data
            if conn.bad:
                continue
            pending += data
            offset -= len(pending) - len(data)
            while pending:
                try:
                    request, used = parse_request(pending)
                except (BadBytes, ValueError) as e:
                    conn.bad = str(e)
                    break
                if request is None:
                    break
                with self.lock:
                    self.seq += 1
                    request["seq"] = self.seq
                    conn.requests.append((offset, request))
                pending = pending[used:]
                offset += used
                target = request["target"]
                if target.startswith("/__resp/"):
                    sock.sendall(RESPONSES[target.rsplit("/", 1)[1]][0])
                elif request["method"] == "CONNECT":
                    sock.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nX-Upstream: recorder\r\n"
                                 b"Content-Length: 0\r\n\r\n")
                else:
                    sock.sendall(UPSTREAM_OK)
                connection = (field_value(request, "connection") or "").lower()
                if "close" in connection or (request["version"] == "HTTP/1.0" and "keep-alive" not in connection):
                    sock.shutdown(socket.SHUT_WR)

    def quiet(self):
        """True when every open connection's handler is waiting in recv with nothing unread."""
        with self.lock:
            conns = list(self.conns.values())
        for conn in conns:
            if conn.closed:
                continue
            if conn.busy:
                return False
            try:
                unread = struct.unpack("i", fcntl.ioctl(conn.sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                continue
            if unread:
                return False
        return True

    def wait_quiet(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.quiet():
            if time.monotonic() > deadline:
                raise AssertionError("the recording upstream did not go quiet")
            time.sleep(0.005)

    def mark(self):
        with self.lock:
            return {cid: len(c.raw) for cid, c in self.conns.items()}

    def since(self, mark):
        """What arrived after `mark`: {"requests": [(conn id, request)], "bytes": {conn id: bytes},
        "leftover": {conn id: unparsed bytes}, "closed": {conn id: bool}}."""
        out = {"requests": [], "bytes": {}, "leftover": {}, "closed": {}, "bad": {}}
        with self.lock:
            for cid, c in self.conns.items():
                start = mark.get(cid, 0)
                if len(c.raw) == start:
                    continue
                out["bytes"][cid] = bytes(c.raw[start:])
                out["closed"][cid] = c.closed
                parsed_end = start
                for offset, request in c.requests:
                    if offset >= start:
                        out["requests"].append((cid, request))
                        parsed_end = offset + len(request["raw"])
                rest = bytes(c.raw[max(parsed_end, start):])
                if rest:
                    out["leftover"][cid] = rest
                    if c.bad:
                        out["bad"][cid] = c.bad
        out["requests"].sort(key=lambda item: item[1]["seq"])
        return out


# ---------------------------------------------------------------------------------------------
# The raw client


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes
    from_upstream: bool


@dataclass
class Outcome:
    responses: list
    closed: bool
    probe: object = None  # the probe's Response when the connection stayed open, else None
    error: str = ""

    def statuses(self):
        return [FWD if r.from_upstream and r.status == 200 else r.status for r in self.responses]


def parse_responses(buf, eof, with_ends=False):
    """The complete responses at the start of buf (interim 1xx skipped): ([Response], bytes used),
    or with `with_ends` ([Response], [offset just past each])."""
    out, ends = [], []
    pos = 0
    while True:
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return (out, ends) if with_ends else (out, pos)
        lines = buf[pos:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            return (out, ends) if with_ends else (out, pos)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower().decode("latin-1")
            value = value.strip().decode("latin-1")
            headers[key] = headers[key] + ", " + value if key in headers else value
        body_start = end + 4
        if 100 <= status < 200 and status != 101:
            pos = body_start
            continue
        if status in (101, 204, 304):
            body, next_pos = b"", body_start
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body, p = b"", body_start
            while True:
                line_end = buf.find(b"\r\n", p)
                if line_end < 0:
                    return (out, ends) if with_ends else (out, pos)
                size = int(buf[p:line_end].split(b";")[0] or b"0", 16)
                p = line_end + 2
                if size == 0:
                    trailer_end = buf.find(b"\r\n", p)
                    while trailer_end > p:
                        p = trailer_end + 2
                        trailer_end = buf.find(b"\r\n", p)
                    if trailer_end < 0:
                        return (out, ends) if with_ends else (out, pos)
                    next_pos = trailer_end + 2
                    break
                if len(buf) < p + size + 2:
                    return (out, ends) if with_ends else (out, pos)
                body += buf[p:p + size]
                p += size + 2
        elif "content-length" in headers:
            length = int(headers["content-length"].split(",")[0])
            if len(buf) < body_start + length:
                return (out, ends) if with_ends else (out, pos)
            body, next_pos = buf[body_start:body_start + length], body_start + length
        else:
            if not eof:
                return (out, ends) if with_ends else (out, pos)
            body, next_pos = buf[body_start:], len(buf)
        out.append(Response(status, headers, bytes(body), headers.get("x-upstream") == "recorder"))
        pos = next_pos
        ends.append(pos)
        if status == 101:
            return (out, ends) if with_ends else (out, pos)


class RawClient:
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False
        self.used = 0
        self.timeout = timeout

    def close(self):
        self.sock.close()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.eof = True  # the server closed (or reset) before taking all of it

    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def responses(self, count=None, idle=None):
        """Reads until `count` responses are complete (bounded by the timeout), or, with `idle`,
        until no byte came for `idle` seconds; always stops at EOF. Returns the responses read
        (at most `count`); bytes after them stay for the next call."""
        deadline = time.monotonic() + self.timeout
        while True:
            got, _ = parse_responses(self.buf[self.used:], self.eof)
            if self.eof or (count is not None and len(got) >= count):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self._recv(min(left, idle) if idle else left) and idle:
                break
        got, ends = parse_responses(self.buf[self.used:], self.eof, with_ends=True)
        if count is not None:
            got, ends = got[:count], ends[:count]
        if ends:
            self.used += ends[-1]
        return got

    def wait_eof(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._recv(max(0.0, deadline - time.monotonic()))
        return self.eof


def run_request(port, raw, expect_count=None, expect_close=None, idle=0.5, timeout=5.0):
    """Sends one case's bytes on a new connection. With expect_count (a test), reads that many
    responses, then waits for the close when expect_close, else sends the probe on the same
    connection. Without (the comparison), reads until `idle` seconds of silence, then probes
    whatever is still open."""
    client = RawClient(port, timeout)
    try:
        client.send(raw)
        if expect_count is not None:
            responses = client.responses(count=expect_count)
            closed = client.wait_eof(timeout) if expect_close else client.eof
        else:
            responses = client.responses(idle=idle)
            closed = client.eof
        probe = None
        if not closed:
            client.send(PROBE)
            got = client.responses(count=1)
            probe = got[0] if got else None
            closed = client.eof and probe is None
        return Outcome(responses, closed, probe)
    finally:
        client.close()


def check_forwarded(expected, received, lb_authority):
    """Problems (strings) comparing one expected Fwd with one request the upstream parsed."""
    problems = []
    if received["method"] != expected.method:
        problems.append(f"method {received['method']!r} != {expected.method!r}")
    if received["target"] != expected.target:
        problems.append(f"target {received['target']!r} != {expected.target!r}")
    if received["body"] != expected.body:
        problems.append(f"body {received['body']!r} != {expected.body!r}")
    for name, want in expected.fields.items():
        got = field_value(received, name)
        if want is ABSENT:
            if got is not None:
                problems.append(f"{name} forwarded: {got!r}")
        else:
            want = lb_authority if want is LB_AUTHORITY else want
            if got != want:
                problems.append(f"{name}: {got!r} != {want!r}")
    names = [n.lower() for n, _ in received["fields"]]
    for once in ("host", "content-length", "transfer-encoding"):
        if names.count(once) > 1:
            problems.append(f"{once} sent {names.count(once)} times")
    if "host" not in names:
        problems.append("no Host")
    return problems


def describe_upstream(got, probe_sent):
    """A one-line summary of what the upstream received, for the comparison table."""
    requests = [r for _, r in got["requests"]]
    if probe_sent and requests and requests[-1]["target"] == "/__probe":
        requests = requests[:-1]
    parts = []
    for r in requests:
        framing = []
        cl = field_value(r, "content-length")
        te = field_value(r, "transfer-encoding")
        if cl is not None:
            framing.append(f"CL {cl}")
        if te is not None:
            framing.append(f"TE {te}")
        host = field_value(r, "host")
        text = f"`{r['method']} {r['target'][:40]} {r['version']}`"
        if host is None:
            text += " no Host"
        elif host != "h.test":
            text += f" Host {host[:24]}"
        if framing:
            text += " (" + ", ".join(framing) + ")"
        if r["body"]:
            text += f" body {len(r['body'])} B"
        parts.append(text)
    for cid, rest in got["leftover"].items():
        if cid in got["bad"]:
            parts.append(f"+{len(rest)} B it could not parse ({got['bad'][cid]})")
        else:
            parts.append(f"+{len(rest)} B of an unfinished request" +
                         (f" `{rest.split(b' ', 2)[0][:12].decode('latin-1')} …`" if rest else ""))
    return "; ".join(parts) if parts else "nothing"
