"""`fulcrum import haproxy.cfg`: the topology it prints passes `fulcrum check`, and an lb run from
it balances the servers the haproxy.cfg named."""
import http.server
import os
import ssl
import subprocess
import threading
import unittest

from harness import (FULCRUM, SOURCE_DIR, Process, TempDir, free_port, http_get, raw_exchange, status_of,
                     wait_until)
from test_tls import insecure_context, make_cert


def fulcrum(*args):
    return subprocess.run([FULCRUM, *args], capture_output=True, text=True, timeout=60)


class Backend:
    """An HTTP server on 127.0.0.1 answering every GET with its name."""

    def __init__(self, name):
        body = name.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the standard library's name
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class TestImport(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)

    def test_imported_config_passes_check_and_balances(self):
        backends = [Backend("alpha"), Backend("beta")]
        for b in backends:
            self.addCleanup(b.stop)
        lb_port, stats_port = free_port(), free_port()
        cfg = self.tmp.write("haproxy.cfg", f"""
global
    log /dev/log local0
    maxconn 500

defaults
    mode http
    timeout connect 2s
    timeout client 20s
    timeout server 20s

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /

frontend www
    bind 127.0.0.1:{lb_port}
    acl is_api path_beg /api
    use_backend api if is_api
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /health
    server alpha 127.0.0.1:{backends[0].port} check inter 500ms
    server beta 127.0.0.1:{backends[1].port} check inter 500ms

backend api
    server api1 127.0.0.1:9
""")
        site = os.path.join(self.tmp.path, "site.toml")
        run = fulcrum("import", cfg, "--out", site, "--name", "imported")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout, "")
        self.assertIn(f"{cfg}:3: log /dev/log local0: not translated: logging", run.stderr)
        self.assertIn(f"{cfg}:20: use_backend api if is_api: not translated: ", run.stderr)
        self.assertIn(f"{cfg}:30: server api1 127.0.0.1:9: not translated: ", run.stderr)
        with open(site) as f:
            text = f.read()
        self.assertIn("#   20: use_backend api if is_api: ", text)

        # The web nodes are these servers; the web role's docroot is checked all the same.
        os.mkdir(os.path.join(self.tmp.path, "www"))
        check = fulcrum("check", site)
        self.assertEqual(check.returncode, 0, check.stderr + text)

        lb = Process([FULCRUM, "lb", "--site", site, "--node", "lb-01"], os.path.join(self.tmp.path, "lb.log"))
        self.addCleanup(lb.stop)
        seen = set()

        def both_answer():
            self.assertTrue(lb.alive(), lb.output())
            status, _, body = http_get(f"http://127.0.0.1:{lb_port}/", timeout=2)
            if status == 200:
                seen.add(body.decode())
            return seen == {"alpha", "beta"}

        wait_until(both_answer, timeout=20, what="both servers answering through the imported lb")
        status, _, _ = http_get(f"http://127.0.0.1:{stats_port}/metrics", timeout=2)
        self.assertEqual(status, 200)

    def test_tls_frontend_serves_with_haproxys_combined_pem(self):
        backend = Backend("secure")
        self.addCleanup(backend.stop)
        cert, key = make_cert(self.tmp.path, "site", "localhost")
        with open(cert) as c, open(key) as k:
            combined = self.tmp.write("haproxy/site.pem", c.read() + k.read())  # HAProxy's crt form
        http_port, https_port = free_port(), free_port()
        cfg = self.tmp.write("haproxy.cfg", f"""
global
    crt-base {os.path.dirname(combined)}
defaults
    mode http
frontend www
    bind 127.0.0.1:{http_port}
    bind 127.0.0.1:{https_port} ssl crt site.pem alpn h2,http/1.1
    http-request redirect scheme https unless {{ ssl_fc }}
    default_backend app
backend app
    server s1 127.0.0.1:{backend.port} check
""")
        site = os.path.join(self.tmp.path, "site.toml")
        os.mkdir(os.path.join(self.tmp.path, "www"))
        run = fulcrum("import", cfg, "--out", site)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stderr, "")  # nothing left out, nothing `check` would refuse
        check = fulcrum("check", site)
        self.assertEqual(check.returncode, 0, check.stderr)

        lb = Process([FULCRUM, "lb", "--site", site, "--node", "lb-01"], os.path.join(self.tmp.path, "lb.log"))
        self.addCleanup(lb.stop)

        def served():
            self.assertTrue(lb.alive(), lb.output())
            status, _, body = http_get(f"https://127.0.0.1:{https_port}/", timeout=2, context=insecure_context())
            return status == 200 and body == b"secure"

        wait_until(served, timeout=20, what="the backend through the imported TLS frontend")
        raw = raw_exchange(http_port, b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        self.assertEqual(status_of(raw), 308, raw)
        self.assertIn(b"\r\nLocation: https://localhost", raw)

    def test_patroni_config_passes_check(self):
        cfg = os.path.join(SOURCE_DIR, "tests/unit/config/haproxy/patroni.cfg")
        site = os.path.join(self.tmp.path, "patroni.toml")
        run = fulcrum("import", cfg, "--out", site)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("maxconn 100: the database frontends have no per-server connection limit", run.stderr)
        check = fulcrum("check", site)
        self.assertEqual(check.returncode, 0, check.stderr)
        with open(site) as f:
            text = f.read()
        self.assertIn('name = "patroni"', text)
        self.assertIn('db_write = "0.0.0.0:5000"', text)
        self.assertIn('agent = "10.0.0.31:8008"', text)

        again = fulcrum("import", cfg, "--out", site)
        self.assertEqual(again.returncode, 2)
        self.assertIn("exists: pass --force", again.stderr)
        self.assertEqual(fulcrum("import", cfg, "--out", site, "--force").returncode, 0)

        printed = fulcrum("import", cfg)
        self.assertEqual(printed.returncode, 0, printed.stderr)
        self.assertEqual(printed.stdout, text)

    def test_bad_input_exits_2_with_the_line(self):
        missing = fulcrum("import", os.path.join(self.tmp.path, "nope.cfg"))
        self.assertEqual(missing.returncode, 2)
        self.assertIn("nope.cfg: cannot read: No such file or directory", missing.stderr)

        bad = self.tmp.write("bad.cfg", "frontend f\n    mode http\n    bind '127.0.0.1:80\n")
        run = fulcrum("import", bad)
        self.assertEqual(run.returncode, 2)
        self.assertEqual(run.stderr.strip(), f"{bad}:3: unterminated single quote: bind '127.0.0.1:80")
        self.assertEqual(run.stdout, "")

        empty = self.tmp.write("empty.cfg", "global\n    daemon\n")
        run = fulcrum("import", empty)
        self.assertEqual(run.returncode, 2)
        self.assertIn("no frontend, listen or backend Fulcrum can translate", run.stderr)


if __name__ == "__main__":
    unittest.main()
