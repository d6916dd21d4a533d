#include "lb/health/health_checker.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "test_server.h"

// Real loopback sockets, one EventLoop on the test thread (the test server shares it). Every
// wait is bounded and every assertion is about transitions and counts, never about timing.
namespace fulcrum::lb {
namespace {

using std::chrono::milliseconds;
using testing::runUntil;
using testing::TestServer;

struct Change {
  uint32_t id;
  bool up;
  std::string reason;
  int server_requests;  // what the test server had answered when the change was reported
};

HealthOptions fastOptions(std::string path = "/healthz") {
  HealthOptions options;
  options.path = std::move(path);
  options.interval = milliseconds(20);
  // Generous: only the tests of a silent server wait for a timeout, and they set a short one.
  // A loaded machine may stall the loop for a while; that must not fail a healthy check.
  options.timeout = milliseconds(2000);
  options.rise = 2;
  options.fall = 3;
  return options;
}

class HealthCheckerTest : public ::testing::Test {
 protected:
  // A checker of one server (id 7, "web-02") whose changes are recorded in changes_.
  std::unique_ptr<HealthChecker> makeChecker(const core::SocketAddress& address, HealthOptions options,
                                             HealthChecker::OnChange extra = nullptr) {
    std::vector<HealthTarget> targets{HealthTarget{7, "web-02", address}};
    return std::make_unique<HealthChecker>(
        loop_, std::move(targets), std::move(options),
        [this, extra](uint32_t id, bool up, std::string_view reason) {
          changes_.push_back(Change{id, up, std::string(reason), server_.requests()});
          if (extra) {
            extra(id, up, reason);
          }
        });
  }

  core::EventLoop loop_;
  TestServer server_{loop_};
  std::vector<Change> changes_;
};

TEST_F(HealthCheckerTest, HealthyServerStaysUpWithoutChanges) {
  auto checker = makeChecker(server_.address(), fastOptions());
  EXPECT_EQ(checker->size(), 1u);
  EXPECT_TRUE(checker->isUp(7));  // up from the start, like HAProxy
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return server_.requests() >= 5; }));
  EXPECT_TRUE(changes_.empty());
  EXPECT_TRUE(checker->isUp(7));
  EXPECT_EQ(server_.lastRequest(), "GET /healthz HTTP/1.1\r\nHost: " + server_.address().toString() +
                                       "\r\nUser-Agent: fulcrum-health\r\nConnection: close\r\n"
                                       "Accept: */*\r\n\r\n");
}

TEST_F(HealthCheckerTest, RedirectAndInterimResponsesCountAsSuccess) {
  server_.setRawResponse(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n");
  HealthOptions options = fastOptions();
  options.fall = 1;
  auto checker = makeChecker(server_.address(), options);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return server_.requests() >= 4; }));
  EXPECT_TRUE(changes_.empty());
  EXPECT_TRUE(checker->isUp(7));
}

TEST_F(HealthCheckerTest, ServerAnswering503GoesDownAfterExactlyFallChecks) {
  server_.setStatus(503);
  auto checker = makeChecker(server_.address(), fastOptions());
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  ASSERT_EQ(changes_.size(), 1u);
  EXPECT_EQ(changes_[0].id, 7u);
  EXPECT_FALSE(changes_[0].up);
  EXPECT_EQ(changes_[0].reason, "HTTP 503");
  EXPECT_EQ(changes_[0].server_requests, 3);
  EXPECT_FALSE(checker->isUp(7));
  CheckStats s = checker->stats(7);
  EXPECT_EQ(s.last_result, "L7STS");
  EXPECT_EQ(s.last_status, 503);
  EXPECT_EQ(s.last_reason, "HTTP 503");
  // Further failures keep it down without more changes.
  ASSERT_TRUE(runUntil(loop_, [&] { return server_.requests() >= 6; }));
  EXPECT_EQ(changes_.size(), 1u);
}

TEST_F(HealthCheckerTest, ComesBackUpAfterExactlyRiseSuccesses) {
  server_.setStatus(500);
  int requests_when_fixed = -1;
  auto checker = makeChecker(server_.address(), fastOptions(), [&](uint32_t, bool up, std::string_view) {
    if (!up) {
      server_.setStatus(200);  // fixed as soon as it is taken out
      requests_when_fixed = server_.requests();
    }
  });
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return changes_.size() >= 2; }));
  ASSERT_EQ(changes_.size(), 2u);
  EXPECT_FALSE(changes_[0].up);
  EXPECT_EQ(changes_[0].reason, "HTTP 500");
  EXPECT_TRUE(changes_[1].up);
  EXPECT_EQ(changes_[1].reason, "HTTP 200");
  EXPECT_EQ(changes_[1].server_requests - requests_when_fixed, 2);
  EXPECT_TRUE(checker->isUp(7));
}

TEST_F(HealthCheckerTest, StatsCountChecksChangesAndPassiveFailures) {
  server_.setStatus(500);
  auto checker = makeChecker(server_.address(), fastOptions(), [&](uint32_t, bool up, std::string_view) {
    if (!up) {
      server_.setStatus(200);
    }
  });
  EXPECT_FALSE(checker->stats(7).checked);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return changes_.size() >= 2; }));
  CheckStats s = checker->stats(7);
  EXPECT_TRUE(s.checked);
  EXPECT_TRUE(s.last_ok);
  EXPECT_EQ(s.last_result, "L7OK");
  EXPECT_EQ(s.last_status, 200);
  EXPECT_EQ(s.last_reason, "HTTP 200");
  // Down from the 3rd check to the 5th; up since, so the total no longer grows.
  EXPECT_GT(s.downtime_s, 0.0);
  EXPECT_GE(s.since_change_s, 0.0);
  ASSERT_TRUE(runUntil(loop_, [&] { return server_.requests() >= 7; }));
  EXPECT_EQ(checker->stats(7).downtime_s, s.downtime_s);
  EXPECT_GT(checker->stats(7).since_change_s, s.since_change_s);
  EXPECT_GE(s.last_duration_s, 0.0);
  EXPECT_LT(s.last_duration_s, 2.0);
  EXPECT_EQ(s.failed, 3u);  // fall
  EXPECT_EQ(s.passed, 2u);  // rise
  EXPECT_EQ(s.went_down, 1u);
  EXPECT_EQ(s.went_up, 1u);
  EXPECT_EQ(s.passive_failures, 0u);
  checker->reportFailure(7, "reset");
  EXPECT_EQ(checker->stats(7).passive_failures, 1u);
  EXPECT_EQ(checker->stats(7).failed, 3u);  // passive failures are not active checks
  EXPECT_FALSE(checker->stats(99).checked);
}

TEST_F(HealthCheckerTest, ExpectedStatusOnlyPasses) {
  server_.setStatus(204);  // a 2xx, but not the 200 a database agent gives its primary
  HealthOptions options = fastOptions();
  options.expect_status = 200;
  options.fall = 1;
  auto checker = makeChecker(server_.address(), options);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  EXPECT_FALSE(changes_[0].up);
  EXPECT_EQ(changes_[0].reason, "HTTP 204");
}

TEST_F(HealthCheckerTest, StartDownComesUpOnTheFirstPassingCheckWithItsOwnPath) {
  HealthOptions options = fastOptions();
  options.start_down = true;
  options.rise = 3;
  std::vector<HealthTarget> targets{HealthTarget{4, "db-01 (replica)", server_.address(), "/replica?lag=16"}};
  HealthChecker checker(loop_, std::move(targets), options, [&](uint32_t id, bool up, std::string_view reason) {
    changes_.push_back(Change{id, up, std::string(reason), server_.requests()});
  });
  EXPECT_FALSE(checker.isUp(4));  // nothing reaches it before its first check
  checker.start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  EXPECT_TRUE(changes_[0].up);
  EXPECT_EQ(changes_[0].server_requests, 1);
  EXPECT_TRUE(server_.lastRequest().starts_with("GET /replica?lag=16 HTTP/1.1\r\n"));
}

TEST_F(HealthCheckerTest, ClosedPortIsRefused) {
  HealthOptions options = fastOptions();
  options.fall = 2;
  auto checker = makeChecker(testing::closedPort(), options);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  EXPECT_FALSE(changes_[0].up);
  EXPECT_EQ(changes_[0].reason, "connect: Connection refused");
  EXPECT_FALSE(checker->isUp(7));
  EXPECT_EQ(checker->stats(7).last_result, "L4CON");
  EXPECT_EQ(checker->stats(7).last_status, 0);
}

TEST_F(HealthCheckerTest, ServerThatNeverAnswersTimesOut) {
  server_.setMode(TestServer::Mode::Silent);
  HealthOptions options = fastOptions();
  options.timeout = milliseconds(100);
  options.fall = 2;
  auto checker = makeChecker(server_.address(), options);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  EXPECT_FALSE(changes_[0].up);
  EXPECT_EQ(changes_[0].reason, "timeout after 100 ms");
  EXPECT_EQ(checker->stats(7).last_result, "L7TOUT");  // connected, then no answer
  EXPECT_EQ(server_.accepted(), 2);  // one check at a time: the next starts after the timeout
  // The checker closed the connections it gave up on.
  ASSERT_TRUE(runUntil(loop_, [&] { return server_.clientCloses() >= 2; }));
}

TEST_F(HealthCheckerTest, ConnectionClosedBeforeAResponse) {
  server_.setMode(TestServer::Mode::CloseAfterRequest);
  HealthOptions options = fastOptions();
  options.fall = 1;
  auto checker = makeChecker(server_.address(), options);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  EXPECT_FALSE(changes_[0].up);
  EXPECT_EQ(changes_[0].reason, "connection closed before a response");
}

TEST_F(HealthCheckerTest, ConnectionClosedAtOnceFails) {
  server_.setMode(TestServer::Mode::CloseAtOnce);
  HealthOptions options = fastOptions();
  options.fall = 1;
  auto checker = makeChecker(server_.address(), options);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  EXPECT_FALSE(changes_[0].up);
  // Whether the FIN or the RST for the unread request comes first is up to the kernel.
  EXPECT_TRUE(changes_[0].reason == "connection closed before a response" ||
              changes_[0].reason == "read: Connection reset by peer" ||
              changes_[0].reason == "send: Connection reset by peer" ||
              changes_[0].reason == "connect: Connection reset by peer" ||
              changes_[0].reason == "send: Broken pipe")
      << changes_[0].reason;
}

TEST_F(HealthCheckerTest, MalformedResponseIsABadResponse) {
  server_.setRawResponse("SPDY/3 200 OK\r\n\r\n");
  HealthOptions options = fastOptions();
  options.fall = 1;
  auto checker = makeChecker(server_.address(), options);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  EXPECT_FALSE(changes_[0].up);
  EXPECT_TRUE(changes_[0].reason.starts_with("bad response: ")) << changes_[0].reason;
  EXPECT_GT(changes_[0].reason.size(), std::string("bad response: ").size());
  EXPECT_EQ(checker->stats(7).last_result, "L7RSP");
}

TEST_F(HealthCheckerTest, ResponseCutShortIsReported) {
  server_.setRawResponse("HTTP/1.1 200 OK\r\nContent-Le");
  HealthOptions options = fastOptions();
  options.fall = 1;
  auto checker = makeChecker(server_.address(), options);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  EXPECT_EQ(changes_[0].reason, "connection closed before the end of the response head");
}

TEST_F(HealthCheckerTest, TcpCheckFollowsTheListener) {
  auto checker = makeChecker(server_.address(), fastOptions(""));
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return server_.accepted() >= 4; }));
  EXPECT_TRUE(changes_.empty());
  EXPECT_EQ(server_.requests(), 0);  // a TCP check sends nothing
  EXPECT_EQ(checker->stats(7).last_result, "L4OK");

  server_.stopListening();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes_.empty(); }));
  EXPECT_FALSE(changes_[0].up);
  EXPECT_EQ(changes_[0].reason, "connect: Connection refused");

  ASSERT_TRUE(server_.listenAgain());
  ASSERT_TRUE(runUntil(loop_, [&] { return changes_.size() >= 2; }));
  ASSERT_EQ(changes_.size(), 2u);
  EXPECT_TRUE(changes_[1].up);
  EXPECT_EQ(changes_[1].reason, "connected");
  EXPECT_TRUE(checker->isUp(7));
}

TEST_F(HealthCheckerTest, PassiveFailuresCountTowardFall) {
  auto checker = makeChecker(server_.address(), fastOptions());  // never started: passive only
  checker->reportFailure(7, "connect: Connection reset by peer");
  checker->reportFailure(7, "connect: Connection reset by peer");
  EXPECT_TRUE(changes_.empty());
  EXPECT_TRUE(checker->isUp(7));
  checker->reportFailure(7, "read: Connection reset by peer");
  ASSERT_EQ(changes_.size(), 1u);
  EXPECT_FALSE(changes_[0].up);
  EXPECT_EQ(changes_[0].reason, "read: Connection reset by peer");
  EXPECT_FALSE(checker->isUp(7));
  checker->reportFailure(7, "again");
  EXPECT_EQ(changes_.size(), 1u);
}

TEST_F(HealthCheckerTest, ActiveSuccessResetsPassiveFailures) {
  auto checker = makeChecker(server_.address(), fastOptions());
  checker->reportFailure(7, "reset");
  checker->reportFailure(7, "reset");
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return server_.requests() >= 2; }));  // a check has passed
  checker->reportFailure(7, "reset");
  checker->reportFailure(7, "reset");
  EXPECT_TRUE(changes_.empty());
  EXPECT_TRUE(checker->isUp(7));
}

TEST_F(HealthCheckerTest, ActiveChecksBringBackAServerTakenOutPassively) {
  auto checker = makeChecker(server_.address(), fastOptions());
  for (int i = 0; i < 3; ++i) {
    checker->reportFailure(7, "reset");
  }
  ASSERT_FALSE(checker->isUp(7));
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return checker->isUp(7); }));
  ASSERT_EQ(changes_.size(), 2u);
  EXPECT_EQ(changes_[1].reason, "HTTP 200");
  EXPECT_EQ(changes_[1].server_requests, 2);
}

TEST_F(HealthCheckerTest, UnknownIdsAreIgnored) {
  auto checker = makeChecker(server_.address(), fastOptions());
  checker->reportFailure(99, "nobody");
  EXPECT_FALSE(checker->isUp(99));
  EXPECT_TRUE(checker->isUp(7));
  EXPECT_TRUE(changes_.empty());
}

TEST_F(HealthCheckerTest, ServersAreCheckedIndependently) {
  TestServer failing(loop_);
  failing.setStatus(503);
  std::vector<Change> changes;
  std::vector<HealthTarget> targets{HealthTarget{0, "web-01", server_.address()},
                                    HealthTarget{1, "web-02", failing.address()}};
  HealthChecker checker(loop_, targets, fastOptions(), [&](uint32_t id, bool up, std::string_view reason) {
    changes.push_back(Change{id, up, std::string(reason), failing.requests()});
  });
  checker.start();
  ASSERT_TRUE(runUntil(loop_, [&] { return !changes.empty() && server_.requests() >= 4; }));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].id, 1u);
  EXPECT_EQ(changes[0].reason, "HTTP 503");
  EXPECT_TRUE(checker.isUp(0));
  EXPECT_FALSE(checker.isUp(1));
}

TEST_F(HealthCheckerTest, LogsEachChangeWithNameReasonAndCount) {
  server_.setStatus(503);
  log::setLevel(log::Level::Info);
  auto checker = makeChecker(server_.address(), fastOptions(), [&](uint32_t, bool up, std::string_view) {
    if (!up) {
      server_.setStatus(200);
    }
  });
  ::testing::internal::CaptureStderr();
  checker->start();
  bool done = runUntil(loop_, [&] { return changes_.size() >= 2; });
  log::flush();  // lines reach stderr from the log's own thread
  std::string logged = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(done);
  EXPECT_NE(logged.find("server web-02 is DOWN: HTTP 503 (3 consecutive failures)"), std::string::npos)
      << logged;
  EXPECT_NE(logged.find("server web-02 is UP: HTTP 200 (2 consecutive successes)"), std::string::npos)
      << logged;
}

// Simulated time: which servers have had their first check is a function of the clock alone.
TEST(HealthCheckerSpreadTest, FirstChecksAreSpreadOverTheFirstInterval) {
  core::ManualClock clock;
  core::EventLoop loop(clock);
  loop.updateTime();
  std::vector<HealthTarget> targets;
  for (uint32_t i = 0; i < 4; ++i) {
    targets.push_back(HealthTarget{i, "web-0" + std::to_string(i), testing::closedPort()});
  }
  HealthOptions options = fastOptions("");
  options.interval = milliseconds(400);
  options.fall = 1;
  std::vector<uint32_t> down;
  HealthChecker checker(loop, targets, options,
                        [&](uint32_t id, bool up, std::string_view) { down.push_back(up ? 100 + id : id); });
  checker.start();
  for (uint32_t i = 0; i < 4; ++i) {
    // Server i is checked at 100 ms * i: the refusal comes back through the loop.
    ASSERT_TRUE(runUntil(loop, [&] { return down.size() == i + 1; })) << i;
    EXPECT_EQ(down.back(), i);
    for (int spin = 0; spin < 5; ++spin) {
      loop.runOnce(milliseconds(0));
    }
    EXPECT_EQ(down.size(), i + 1);  // nobody else before the clock moves
    clock.advance(milliseconds(99));
    loop.runOnce(milliseconds(0));
    EXPECT_EQ(down.size(), i + 1);
    clock.advance(milliseconds(1));
  }
}

TEST_F(HealthCheckerTest, DestroyingWithChecksInFlightClosesThem) {
  server_.setMode(TestServer::Mode::Silent);
  HealthOptions options = fastOptions();
  options.timeout = milliseconds(50);
  options.fall = 1;
  auto checker = makeChecker(server_.address(), options);
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return server_.requests() >= 1; }));
  checker.reset();
  ASSERT_TRUE(runUntil(loop_, [&] { return server_.clientCloses() >= 1; }));
  for (int i = 0; i < 30; ++i) {
    loop_.runOnce(milliseconds(5));  // past the timeout and the next interval: nothing fires
  }
  EXPECT_TRUE(changes_.empty());
  EXPECT_EQ(server_.requests(), 1);
}

TEST_F(HealthCheckerTest, DestroyingWhileConnectingIsClean) {
  auto checker = makeChecker(server_.address(), fastOptions());
  checker->start();
  loop_.runExpiredTimers();  // the first check starts its connect...
  checker.reset();           // ...and is cancelled before the loop sees it complete
  for (int i = 0; i < 10; ++i) {
    loop_.runOnce(milliseconds(5));
  }
  EXPECT_TRUE(changes_.empty());
}

TEST_F(HealthCheckerTest, CheckerMayBeDestroyedFromItsCallback) {
  std::unique_ptr<HealthChecker> checker;
  TestServer other(loop_);
  other.setMode(TestServer::Mode::Silent);
  std::vector<HealthTarget> targets{HealthTarget{0, "web-01", testing::closedPort()},
                                    HealthTarget{1, "web-02", other.address()}};
  HealthOptions options = fastOptions();
  options.fall = 1;
  int calls = 0;
  checker = std::make_unique<HealthChecker>(loop_, targets, options, [&](uint32_t, bool, std::string_view) {
    ++calls;
    checker.reset();
  });
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return calls > 0; }));
  EXPECT_EQ(checker, nullptr);
  for (int i = 0; i < 30; ++i) {
    loop_.runOnce(milliseconds(5));
  }
  EXPECT_EQ(calls, 1);
}

TEST_F(HealthCheckerTest, CheckerMayBeDestroyedFromACallbackDuringIo) {
  // A 503 is seen in an I/O event (not at connect time): the callback runs inside onIoEvents.
  server_.setStatus(503);
  std::unique_ptr<HealthChecker> checker;
  HealthOptions options = fastOptions();
  options.fall = 1;
  int calls = 0;
  checker = std::make_unique<HealthChecker>(
      loop_, std::vector<HealthTarget>{HealthTarget{3, "web-04", server_.address()}}, options,
      [&](uint32_t id, bool up, std::string_view reason) {
        ++calls;
        EXPECT_EQ(id, 3u);
        EXPECT_FALSE(up);
        EXPECT_EQ(reason, "HTTP 503");
        checker.reset();
      });
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return calls > 0; }));
  for (int i = 0; i < 10; ++i) {
    loop_.runOnce(milliseconds(5));
  }
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(server_.requests(), 1);
}

TEST_F(HealthCheckerTest, ResultCarriesTheBodyWhenAsked) {
  server_.setRawResponse(
      "HTTP/1.1 200 OK\r\nContent-Length: 18\r\nConnection: close\r\n\r\n{\"role\":\"replica\"}");
  HealthOptions options = fastOptions("/status");
  options.max_body_bytes = 1024;
  auto checker = makeChecker(server_.address(), options);
  std::vector<std::string> bodies;
  std::vector<int> statuses;
  checker->setOnResult([&](uint32_t id, bool ok, std::string_view, int status, std::string_view body) {
    EXPECT_EQ(id, 7u);
    EXPECT_TRUE(ok);
    statuses.push_back(status);
    bodies.emplace_back(body);
  });
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return bodies.size() >= 2; }));
  EXPECT_EQ(bodies[0], "{\"role\":\"replica\"}");
  EXPECT_EQ(bodies[1], bodies[0]);  // each check reads afresh, nothing appended
  EXPECT_EQ(statuses[0], 200);
}

TEST_F(HealthCheckerTest, ABodyOverTheLimitDoesNotFailTheCheck) {
  // The status decides, as without max_body_bytes; the caller gets no body.
  server_.setRawResponse("HTTP/1.1 200 OK\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n" +
                         std::string(2000, 'x'));
  HealthOptions options = fastOptions("/status");
  options.max_body_bytes = 1024;
  options.fall = 1;
  auto checker = makeChecker(server_.address(), options);
  std::vector<std::string> bodies;
  checker->setOnResult([&](uint32_t, bool ok, std::string_view reason, int status, std::string_view body) {
    EXPECT_TRUE(ok);
    EXPECT_EQ(reason, "HTTP 200");
    EXPECT_EQ(status, 200);
    bodies.emplace_back(body);
  });
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return bodies.size() >= 2; }));
  EXPECT_EQ(bodies[0], "");
  EXPECT_TRUE(changes_.empty());
  EXPECT_EQ(checker->stats(7).last_result, "L7OK");
}

TEST_F(HealthCheckerTest, ResultWithoutAnAnswerHasNoStatusNorBody) {
  HealthOptions options = fastOptions();
  options.max_body_bytes = 1024;
  options.fall = 1;
  auto checker = makeChecker(server_.address(), options);
  server_.stopListening();
  std::vector<int> statuses;
  checker->setOnResult([&](uint32_t, bool ok, std::string_view reason, int status, std::string_view body) {
    EXPECT_FALSE(ok);
    EXPECT_TRUE(body.empty());
    EXPECT_NE(reason.find("connect"), std::string_view::npos);
    statuses.push_back(status);
  });
  checker->start();
  ASSERT_TRUE(runUntil(loop_, [&] { return statuses.size() >= 2; }));
  EXPECT_EQ(statuses[0], 0);
}

}  // namespace
}  // namespace fulcrum::lb
