"""The hostile battery (hostile_battery.py) through `fulcrum lb` in front of a raw recording
upstream: for every request case, the status of each response, whether the client connection
closes (a connection left open must still answer a probe request in sync), and exactly what the
upstream received; for every hostile response, a 502 (or the valid first response) to the client
and a server connection that is closed, never reused. One lb and one upstream serve the class;
each case is its own test method, so a failure names its case."""
import os
import unittest

import hostile_battery as hb
from harness import FULCRUM, Process, TempDir, free_port, wait_until
from test_lb import Server, lb_site_text

# TCP connect checks: health checks send no byte the recording upstream would have to tell apart.
# fall = 100: each hostile response counts as a server failure; the only server stays up.
TCP_HEALTH = {"path": "", "interval_ms": 500, "timeout_ms": 2000, "rise": 1, "fall": 100}


class HostileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.addClassCleanup(cls.tmp.cleanup)
        os.makedirs(os.path.join(cls.tmp.path, "www"), exist_ok=True)
        cls.upstream = hb.RecordingUpstream()
        cls.addClassCleanup(cls.upstream.stop)
        cls.port = free_port()
        site = cls.tmp.write("lb.toml", lb_site_text(cls.port, [Server("rec", cls.upstream.port)],
                                                       health=TCP_HEALTH, retries=0))
        cls.lb = Process([FULCRUM, "lb", "--site", site, "--node", "lb-t"], site + ".log")
        cls.addClassCleanup(cls._stop_lb)

        def answers():
            assert cls.lb.alive(), cls.lb.output()
            out = hb.run_request(cls.port, hb.PROBE, expect_count=1, expect_close=False, timeout=2)
            return out.statuses() == [hb.FWD]
        wait_until(answers, timeout=20, what="the lb relaying to the recording upstream")

    @classmethod
    def _stop_lb(cls):
        running = cls.lb.alive()
        code = cls.lb.stop()
        output = cls.lb.output()
        for report in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            assert report not in output, output[-6000:]
        assert not running or code == 0, output[-3000:]

    def setUp(self):
        self.assertTrue(self.lb.alive(), "lb exited:\n" + self.lb.output()[-3000:])
        self.upstream.wait_quiet()
        self.mark = self.upstream.mark()

    def tearDown(self):
        self.assertTrue(self.lb.alive(), "lb exited:\n" + self.lb.output()[-3000:])

    def received(self):
        self.upstream.wait_quiet()
        return self.upstream.since(self.mark)

    def check_request_case(self, case):
        out = hb.run_request(self.port, case.raw, expect_count=len(case.status), expect_close=case.close)
        self.assertEqual(out.statuses(), case.status, out)
        self.assertEqual(out.closed, case.close, out)
        if not case.close:
            # Still in sync: the next request on the connection is answered by the upstream.
            self.assertIsNotNone(out.probe, "the connection stayed open but the probe got no answer")
            self.assertTrue(out.probe.from_upstream and out.probe.status == 200, out.probe)
        got = self.received()
        requests = [r for _, r in got["requests"]]
        if not case.close:
            self.assertTrue(requests and requests[-1]["target"] == "/__probe", requests)
            requests = requests[:-1]
        if case.upstream == hb.NOTHING:
            self.assertEqual(got["bytes"], {}, "the upstream received bytes")
            return
        if case.upstream == hb.TRUNCATED:
            self.assertEqual(requests, [], "a complete request reached the upstream")
            for cid in got["bytes"]:
                wait_until(lambda: self.upstream.conns[cid].closed, timeout=5,
                           what="the lb to close the upstream connection of a truncated request")
            return
        self.assertEqual(got["leftover"], {}, "bytes the upstream could not parse as requests")
        self.assertEqual(len(requests), len(case.upstream), [r["raw"] for r in requests])
        lb_authority = f"127.0.0.1:{self.port}"
        for want, have in zip(case.upstream, requests):
            self.assertEqual(hb.check_forwarded(want, have, lb_authority), [], have["raw"])
            self.assertEqual(have["version"], "HTTP/1.1")
            # The head is rebuilt: nothing but the client's own fields and the proxy's.
            sent = case.raw.lower()
            for name, _ in have["fields"]:
                lower = name.lower()
                if lower not in hb.OUR_FIELDS | {"host", "content-length", "transfer-encoding"}:
                    self.assertIn(lower.encode() + b":", sent, f"{name} was not sent by the client")

    def check_response_case(self, name):
        raw, status = hb.RESPONSES[name]
        client = hb.RawClient(self.port)
        try:
            client.send(f"GET /__resp/{name} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode())
            responses = client.responses(count=1)
            self.assertEqual([r.status for r in responses], [status])
            got = self.received()
            carriers = [cid for cid, r in got["requests"] if r["target"] == f"/__resp/{name}"]
            self.assertEqual(len(carriers), 1, got["requests"])
            bad_conn = carriers[0]
            wait_until(lambda: self.upstream.conns[bad_conn].closed, timeout=5,
                       what="the lb to close the server connection that sent a bad response")
            if status == 502:
                self.assertNotIn(b"smuggled", client.buf.lower())
            # The next request (on the same client connection if it is still open) goes to the
            # server on another connection.
            if client.eof or responses[0].headers.get("connection", "").lower() == "close":
                self.assertTrue(client.wait_eof(5), "a Connection: close answer left the connection open")
                client.close()
                client = hb.RawClient(self.port)
            mark = self.upstream.mark()
            client.send(b"GET /after HTTP/1.1\r\nHost: h.test\r\n\r\n")
            after = client.responses(count=1)
            self.assertEqual([r.status for r in after], [200])
            self.assertTrue(after[0].from_upstream, after[0])
            self.assertNotIn("x-smuggled", after[0].headers)
            self.upstream.wait_quiet()
            later = self.upstream.since(mark)["requests"]
            self.assertEqual([r["target"] for _, r in later], ["/after"])
            self.assertNotEqual(later[0][0], bad_conn, "a server connection that sent a bad response was reused")
        finally:
            client.close()


def _request_test(case):
    def test(self):
        self.check_request_case(case)
    test.__doc__ = f"{case.name}: {case.ref} {case.why}".strip()
    return test


def _response_test(name):
    def test(self):
        self.check_response_case(name)
    test.__doc__ = f"response {name}: {hb.RESPONSE_REFS[name]}"
    return test


for _case in hb.REQUESTS:
    setattr(HostileTest, "test_request_" + _case.name.replace("-", "_"), _request_test(_case))
for _name in hb.RESPONSES:
    setattr(HostileTest, "test_response_" + _name.replace("-", "_"), _response_test(_name))


if __name__ == "__main__":
    unittest.main()
