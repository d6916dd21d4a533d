"""Shared helpers for integration tests: free ports, temporary sites, real processes on
loopback, bounded polling (never fixed sleeps), and cleanup even when a test fails."""
import atexit
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

FULCRUM = os.environ.get("FULCRUM_BIN", os.path.join(os.path.dirname(__file__), "../../build/fulcrum"))
SOURCE_DIR = os.environ.get("FULCRUM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))


def promtool_problems(text):
    """`promtool check metrics` on a /metrics body (bytes or str): "" when it passes with no
    lint warning, else what promtool said. None when promtool is not installed."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return None
    data = text if isinstance(text, bytes) else text.encode()
    run = subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True, timeout=30)
    said = (run.stdout + run.stderr).decode(errors="replace").strip()
    if run.returncode != 0 or said:
        return f"promtool exit {run.returncode}: {said}"
    return ""


def assert_valid_metrics(test, text):
    """Fails `test` unless promtool accepts the exposition without a lint warning (a missing
    promtool fails under CI=true, skips elsewhere)."""
    problems = promtool_problems(text)
    if problems is None:
        if under_ci():
            test.fail("promtool is not installed (scripts/deps.sh installs prometheus)")
        test.skipTest("promtool is not installed")
    test.assertEqual(problems, "", problems)


def under_ci():
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def needs(missing):
    """unittest.skipIf for a missing requirement (`missing`: why, or None) on a developer's
    machine; under CI=true the test fails instead, so a green CI always means it ran."""
    if missing is None:
        return lambda obj: obj
    if not under_ci():
        return unittest.skip(missing)

    def fail(obj):
        message = "required under CI=true, but: " + missing
        if isinstance(obj, type):
            def set_up_class(cls):
                raise AssertionError(message)
            obj.setUpClass = classmethod(set_up_class)
            return obj

        def failing(*args, **kwargs):
            raise AssertionError(message)
        failing.__name__ = obj.__name__
        failing.__doc__ = obj.__doc__
        return failing
    return fail


_handed_out = set()
# Test processes run side by side (ctest -j): a port one of them picked but has not bound yet
# must not go to another. Each claim is a file named by the port holding the owner's pid,
# written under one lock; a claim whose owner is gone is taken over.
_PORT_CLAIMS = os.path.join(tempfile.gettempdir(), "fulcrum-test-ports")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(port):
    """True when no other live process claimed `port`; it is then claimed for this one."""
    os.makedirs(_PORT_CLAIMS, exist_ok=True)
    with open(os.path.join(_PORT_CLAIMS, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(_PORT_CLAIMS, str(port))
        try:
            with open(path) as f:
                owner = int(f.read().strip() or 0)
        except (OSError, ValueError):
            owner = 0
        if owner and owner != os.getpid() and _pid_alive(owner):
            return False
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        return True


def _release_claims():
    for port in _handed_out:
        path = os.path.join(_PORT_CLAIMS, str(port))
        try:
            with open(path) as f:
                mine = f.read().strip() == str(os.getpid())
            if mine:
                os.unlink(path)
        except OSError:
            pass


atexit.register(_release_claims)


def free_port():
    """A port the kernel just handed out on 127.0.0.1; closed again so a server can bind it.
    Never one this process handed out before: the ports of one test are picked before any server
    binds them, and the kernel may offer a released port again. Never one another live test
    process picked either (see _claim)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out and _claim(port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh loopback port after 1000 tries")


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Polls `predicate` until it returns a truthy value, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - the condition may fail while a server starts
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error}")


def read_reload_report(state_dir, node):
    """A node's report of its last reload (state_dir/run/NODE.reload.json), or None."""
    try:
        with open(os.path.join(state_dir, "run", node + ".reload.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def wait_reload_report(state_dir, node, sequence, timeout=10.0):
    """Waits for the report of a node's `sequence`-th reload (1 for its first) and returns it."""
    def written():
        report = read_reload_report(state_dir, node)
        return report if report is not None and report["sequence"] == sequence else None

    return wait_until(written, timeout=timeout, what=f"{node}'s reload report {sequence}")


class TempDir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="fulcrum-test-")

    def write(self, relative, content, mode="w"):
        path = os.path.join(self.path, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, mode) as f:
            f.write(content)
        return path

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


class Process:
    """A child process whose output goes to a log file; stop() always reaps it."""

    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout=15.0):
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=15.0):
        """SIGTERM, then SIGKILL if it does not exit within `timeout`; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        return self.proc.returncode

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def http_get(url, headers=None, method="GET", timeout=5.0, data=None, context=None):
    """Returns (status, headers dict, body bytes) without raising on HTTP errors. `context`: an
    ssl.SSLContext for https URLs (a client certificate, the site CA)."""
    req = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw_exchange(port, payload, timeout=5.0, read_until_close=True, host="127.0.0.1"):
    """Sends raw bytes, returns everything the server sends back until it closes (or timeout)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
            if not read_until_close:
                break
        return b"".join(chunks)


def status_of(raw):
    """Status code of the first response in raw bytes."""
    line = raw.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def vm_rss_kib(pid):
    """Resident set size of a process, in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def read_head(f, keep_fields=False):
    """Reads one message head from a buffered binary socket file: (start line, {lower name: value}),
    plus the fields as sent ([name, value] in order) when `keep_fields`. Repeated fields are joined
    with ", ". Raises EOFError if the peer closed before a head."""
    start = f.readline(65536)
    if not start:
        raise EOFError("connection closed before a message head")
    headers = {}
    fields = []
    while True:
        line = f.readline(65536)
        if not line:
            raise EOFError("connection closed inside a message head")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        fields.append([name, value.strip()])
        name, value = name.strip().lower(), value.strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    start = start.rstrip(b"\r\n").decode("latin-1")
    return (start, headers, fields) if keep_fields else (start, headers)


def read_body(f, headers, bodiless=False, sink=None):
    """Reads a message body framed by `headers` (Content-Length, chunked, or until close).
    Returns the body, or when `sink(bytes)` is given feeds it the pieces and returns the length."""
    pieces = []
    total = 0

    def take(data):
        nonlocal total
        total += len(data)
        if sink is not None:
            sink(data)
        else:
            pieces.append(data)

    if bodiless:
        pass
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = f.readline(1024)
            if not size_line:
                raise EOFError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                break
            remaining = size
            while remaining > 0:
                data = f.read(min(remaining, 1 << 20))
                if not data:
                    raise EOFError("connection closed inside a chunk")
                take(data)
                remaining -= len(data)
            f.readline(16)
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = f.read(min(remaining, 1 << 20))
            if not data:
                raise EOFError(f"connection closed with {remaining} body bytes missing")
            take(data)
            remaining -= len(data)
    else:
        while True:
            data = f.read1(1 << 20)
            if not data:
                break
            take(data)
    return total if sink is not None else b"".join(pieces)


def read_response(f, method="GET", sink=None):
    """Reads one response (skipping interim 1xx except 101): (status, {lower name: value}, body)."""
    while True:
        start, headers = read_head(f)
        status = int(start.split(" ")[1])
        if status >= 200 or status == 101:
            break
    bodiless = method == "HEAD" or status in (101, 204, 304)
    return status, headers, read_body(f, headers, bodiless=bodiless, sink=sink)


class ThreadedServer:
    """A raw TCP server on 127.0.0.1 (port chosen by the kernel, so known at once) calling
    `handler(conn, server)` in a thread per connection. stop() closes the listener and every
    connection and joins the threads, so nothing outlives the test."""

    def __init__(self, handler, host="127.0.0.1"):
        self.handler = handler
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(512)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.connections = set()
        self.threads = []
        self.accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.accept_thread.start()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            conn.settimeout(None)
            with self.lock:
                if self.stopping.is_set():
                    conn.close()
                    break
                self.connections.add(conn)
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self.threads = [t for t in self.threads if t.is_alive()]
                self.threads.append(thread)
            thread.start()

    def _serve(self, conn):
        try:
            self.handler(conn, self)
        except (OSError, EOFError, ValueError):
            pass  # the peer (or stop()) closed the connection
        finally:
            with self.lock:
                self.connections.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self.stopping.set()
        self.accept_thread.join(timeout=5)
        self.listener.close()
        with self.lock:
            connections = list(self.connections)
            threads = list(self.threads)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout=5)
