// The exchange alone, without a client connection: a fake ExchangeClient records what it is
// given, servers are the test's own loopback sockets, one EventLoop on the test thread. What an
// HTTP/2 stream will rely on: the response head and body handed over, retries hidden from the
// client, failures answered or aborted, the body taken only as fast as the server takes it.
#include "lb/exchange.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <vector>

#include "core/socket.h"
#include "health/test_server.h"
#include "lb/proxy.h"

namespace fulcrum::lb {
namespace {

using testing::closedPort;
using testing::HandServer;
using testing::listenLoopback;
using testing::runUntil;

struct FakeClient final : ExchangeClient {
  std::string head_status;
  std::string body;
  int failed = 0;
  bool complete = false;
  bool aborted = false;
  bool room = true;
  int wants_body = 0;
  void exchangeContinue() override {}
  void exchangeResponseHead(const http::ResponseHead& head) override { head_status = std::to_string(head.status); }
  void exchangeResponseBody(std::string_view, std::string_view payload) override { body.append(payload); }
  void exchangeComplete() override { complete = true; }
  void exchangeFailed(int status, std::string_view, Termination) override { failed = status; }
  void exchangeAborted(Termination) override { aborted = true; }
  void exchangeTunnelData(std::string_view) override {}
  void exchangeTunnelClosed() override {}
  bool exchangeHasRoom() const override { return room; }
  void exchangeFlush() override {}
  void exchangeWantsBody() override { ++wants_body; }
};

std::string readAll(int fd) {
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

class ExchangeTest : public ::testing::Test {
 protected:
  void start(std::vector<core::SocketAddress> servers) {
    for (size_t i = 0; i < servers.size(); ++i) {
      Backend b;
      b.id = static_cast<uint32_t>(i);
      b.name = "s" + std::to_string(i);
      b.address = servers[i];
      b.address_text = servers[i].toString();
      backends_.push_back(b);
    }
    pool_ = std::make_unique<WorkerPool>(loop_, backends_, "static-rr", PoolOptions{});
    stats_ = std::make_unique<ProxyStats>(backends_.size());
    core::SocketAddress unused;
    core::Fd listener = listenLoopback(unused);  // the worker's own listener: no client connects
    ProxyOptions options;
    options.access_log = false;
    worker_ = std::make_unique<ProxyWorker>(loop_, std::move(listener), *pool_, options, *stats_,
                                            [this](uint32_t server, const std::string&) { failures_.push_back(server); });
    x_ = std::make_unique<ProxyExchange>(*worker_);
    x_->client = &client_;
  }
  void request(std::string_view head, http::Method method = http::Method::Get, bool done = true) {
    x_->method = method;
    x_->path = "/";
    x_->replay = head;
    x_->start(done);
  }
  void TearDown() override {
    x_.reset();
    worker_.reset();
  }

  core::EventLoop loop_;
  std::vector<Backend> backends_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<ProxyStats> stats_;
  std::unique_ptr<ProxyWorker> worker_;
  std::unique_ptr<ProxyExchange> x_;
  FakeClient client_;
  std::vector<uint32_t> failures_;
};

TEST_F(ExchangeTest, HandsTheResponseToItsClient) {
  HandServer server;
  start({server.address});
  request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  core::Fd conn;
  ASSERT_TRUE(runUntil(loop_, [&] { return (conn = server.accept()).valid(); }));
  std::string got;
  ASSERT_TRUE(runUntil(loop_, [&] { return (got += readAll(conn.get())).find("\r\n\r\n") != std::string::npos; }));
  EXPECT_EQ(got, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
  ASSERT_EQ(::send(conn.get(), answer.data(), answer.size(), 0), static_cast<ssize_t>(answer.size()));
  ASSERT_TRUE(runUntil(loop_, [&] { return client_.complete; }));
  EXPECT_EQ(client_.head_status, "200");
  EXPECT_EQ(client_.body, "hello");
  EXPECT_EQ(x_->responseStatus(), 200);
  EXPECT_EQ(x_->attempts(), 1u);
  x_->release();
  EXPECT_EQ(pool_->idleCount(0), 1u);  // kept for the next request
}

TEST_F(ExchangeTest, ARefusedConnectIsRetriedOnAnotherServerUnseen) {
  HandServer good;
  start({closedPort(), good.address});
  request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  core::Fd conn;
  ASSERT_TRUE(runUntil(loop_, [&] { return (conn = good.accept()).valid(); }));
  std::string answer = "HTTP/1.1 204 No Content\r\n\r\n";
  ASSERT_TRUE(runUntil(loop_, [&] { return !readAll(conn.get()).empty(); }));
  ASSERT_EQ(::send(conn.get(), answer.data(), answer.size(), 0), static_cast<ssize_t>(answer.size()));
  ASSERT_TRUE(runUntil(loop_, [&] { return client_.complete; }));
  EXPECT_EQ(client_.failed, 0);
  EXPECT_EQ(x_->attempts(), 2u);
  EXPECT_EQ(failures_, std::vector<uint32_t>{0});  // the refusing server is reported
}

TEST_F(ExchangeTest, ANonIdempotentRequestIsNotReplayedAfterItWasSent) {
  HandServer a, b;
  start({a.address, b.address});
  request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", http::Method::Post);
  core::Fd conn;
  ASSERT_TRUE(runUntil(loop_, [&] { return (conn = a.accept()).valid(); }));
  ASSERT_TRUE(runUntil(loop_, [&] { return !readAll(conn.get()).empty(); }));
  conn.reset();  // the server closes without an answer: the POST may have been processed
  ASSERT_TRUE(runUntil(loop_, [&] { return client_.failed != 0; }));
  EXPECT_EQ(client_.failed, 502);
  EXPECT_FALSE(b.accept().valid());  // never sent elsewhere
}

TEST_F(ExchangeTest, AServerFailingMidResponseAbortsTheClient) {
  HandServer server;
  start({server.address});
  request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  core::Fd conn;
  ASSERT_TRUE(runUntil(loop_, [&] { return (conn = server.accept()).valid(); }));
  ASSERT_TRUE(runUntil(loop_, [&] { return !readAll(conn.get()).empty(); }));
  std::string part = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf";
  ASSERT_EQ(::send(conn.get(), part.data(), part.size(), 0), static_cast<ssize_t>(part.size()));
  ASSERT_TRUE(runUntil(loop_, [&] { return client_.body == "half"; }));
  conn.reset();
  ASSERT_TRUE(runUntil(loop_, [&] { return client_.aborted; }));
  EXPECT_EQ(client_.failed, 0);
  EXPECT_EQ(x_->term, Termination::ServerAbort);
}

TEST_F(ExchangeTest, NoServerUpIsA503ForTheClientToAnswer) {
  HandServer server;
  start({server.address});
  pool_->setUp(0, false);
  request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(client_.failed, 503);
  EXPECT_EQ(x_->term, Termination::NoServer);
}

TEST_F(ExchangeTest, TheBodyIsTakenOnlyWhileItFitsTheReplayBufferBeforeTheConnect) {
  HandServer server;
  start({server.address});
  request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n", http::Method::Post, false);
  ASSERT_TRUE(x_->connecting());
  size_t room = x_->bodyRoom();
  EXPECT_LT(room, ProxyExchange::kMaxReplayBytes);
  x_->takeBody(std::string(room, 'x'), false);
  EXPECT_EQ(x_->bodyRoom(), 0u);  // the rest waits with the client until the connection is up
  core::Fd conn;
  ASSERT_TRUE(runUntil(loop_, [&] { return (conn = server.accept()).valid(); }));
  ASSERT_TRUE(runUntil(loop_, [&] { return !x_->connecting(); }));
  EXPECT_GT(client_.wants_body, 0);  // and is asked for once it is
  // The held bytes go first; room comes back as the server takes them.
  std::string got;
  ASSERT_TRUE(runUntil(loop_, [&] {
    EXPECT_TRUE(x_->sendBody());
    got += readAll(conn.get());
    return x_->bodyRoom() > 0;
  }));
  EXPECT_EQ(got.size(), std::string_view("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n").size() + room);
}

}  // namespace
}  // namespace fulcrum::lb
