// The exchange over internal TLS: a real http::HttpServer requiring client certificates (as a
// web node under [security] internal_tls) in the same loop as the exchange, certificates made by
// the test. Keep-alive reuse, large responses, a request body, and servers whose certificate is
// refused (the attempt fails like a refused connect and goes elsewhere).
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "../tls/test_pki.h"
#include "health/test_server.h"
#include "http/server.h"
#include "lb/exchange.h"
#include "lb/proxy.h"
#include "tls/client_context.h"
#include "tls/server_context.h"

namespace fulcrum::lb {
namespace {

using testing::listenLoopback;
using testing::runUntil;
using tls::testing::Pem;
using tls::testing::TestCa;

struct Recorder final : ExchangeClient {
  std::string head_status;
  std::string body;
  int failed = 0;
  bool complete = false;
  void exchangeContinue() override {}
  void exchangeResponseHead(const http::ResponseHead& head) override {
    head_status = std::to_string(head.status);
  }
  void exchangeResponseBody(std::string_view, std::string_view payload) override { body.append(payload); }
  void exchangeComplete() override { complete = true; }
  void exchangeFailed(int status, std::string_view, Termination) override { failed = status; }
  void exchangeAborted(Termination) override { failed = -1; }
  void exchangeTunnelData(std::string_view) override {}
  void exchangeTunnelClosed() override {}
  bool exchangeHasRoom() const override { return true; }
  void exchangeFlush() override {}
  void exchangeWantsBody() override {}
};

// "/big": 1 MiB; anything else: the length of the request body.
struct SizeHandler final : http::Handler {
  void handle(const http::Request& request, http::Response& response) override {
    if (request.head.path == "/big") {
      response.setBody(200, "text/plain", std::string(1 << 20, 'b'));
    } else {
      response.setBody(200, "text/plain", std::to_string(request.body.size()));
    }
  }
};

class TempDir {
 public:
  TempDir() {
    char templ[] = "/tmp/fulcrum-xtls-XXXXXX";
    path_ = ::mkdtemp(templ);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

class ExchangeTlsTest : public ::testing::Test {
 protected:
  ExchangeTlsTest() : ca_(dir_.path() / "site", "ca"), other_(dir_.path() / "other", "other") {
    Pem lb = ca_.issue("lb", {"127.0.0.1"});
    std::string error;
    client_tls_ = tls::ClientContext::create(ca_.files().cert, tls::CertFiles{lb.cert, lb.key}, error);
    EXPECT_TRUE(client_tls_) << error;
  }

  // A web node whose certificate `pair` is; returns its address.
  core::SocketAddress webNode(const Pem& pair) {
    std::string error;
    auto ctx = tls::ServerContext::create({tls::CertFiles{pair.cert, pair.key}}, error, ca_.files().cert);
    EXPECT_TRUE(ctx) << error;
    http::ServerOptions options;
    options.tls = ctx.get();
    core::SocketAddress address;
    core::Fd fd = listenLoopback(address);
    server_stats_.push_back(std::make_unique<http::ServerStats>());
    servers_.push_back(
        std::make_unique<http::HttpServer>(loop_, std::move(fd), handler_, options, *server_stats_.back()));
    contexts_.push_back(std::move(ctx));
    return address;
  }

  void start(const std::vector<core::SocketAddress>& addresses) {
    for (size_t i = 0; i < addresses.size(); ++i) {
      Backend b;
      b.id = static_cast<uint32_t>(i);
      b.name = "web" + std::to_string(i);
      b.address = addresses[i];
      b.address_text = addresses[i].toString();
      backends_.push_back(b);
    }
    pool_ = std::make_unique<WorkerPool>(loop_, backends_, "static-rr", PoolOptions{});
    stats_ = std::make_unique<ProxyStats>(backends_.size());
    core::SocketAddress unused;
    ProxyOptions options;
    options.access_log = false;
    options.upstream_tls = client_tls_.get();
    worker_ = std::make_unique<ProxyWorker>(
        loop_, listenLoopback(unused), *pool_, options, *stats_,
        [this](uint32_t server, const std::string&) { failures_.push_back(server); });
  }

  // One request on a new exchange, to its end; the connection is released for reuse.
  void exchange(std::string_view head, http::Method method = http::Method::Get) {
    client_ = Recorder{};
    x_ = std::make_unique<ProxyExchange>(*worker_);
    x_->client = &client_;
    x_->method = method;
    x_->path = "/";
    x_->replay = head;
    x_->start(true);
    ASSERT_TRUE(runUntil(loop_, [&] { return client_.complete || client_.failed != 0; }));
    if (client_.complete) {
      x_->release();
    }
  }

  void TearDown() override {
    x_.reset();
    worker_.reset();
    pool_.reset();
    servers_.clear();
  }

  TempDir dir_;
  TestCa ca_;
  TestCa other_;
  std::unique_ptr<tls::ClientContext> client_tls_;
  core::EventLoop loop_;
  SizeHandler handler_;
  std::vector<std::unique_ptr<tls::ServerContext>> contexts_;
  std::vector<std::unique_ptr<http::ServerStats>> server_stats_;
  std::vector<std::unique_ptr<http::HttpServer>> servers_;
  std::vector<Backend> backends_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<ProxyStats> stats_;
  std::unique_ptr<ProxyWorker> worker_;
  std::unique_ptr<ProxyExchange> x_;
  Recorder client_;
  std::vector<uint32_t> failures_;
};

TEST_F(ExchangeTlsTest, RequestsGoOverOnePooledConnection) {
  start({webNode(ca_.issue("web", {"127.0.0.1"}))});
  exchange("GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(client_.head_status, "200");
  EXPECT_EQ(client_.body.size(), size_t{1} << 20);
  exchange("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", http::Method::Post);
  EXPECT_EQ(client_.body, "5");
  exchange("GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(client_.body.size(), size_t{1} << 20);
  EXPECT_EQ(stats_->backends[0].connects.get(), 2u);  // the POST took a fresh one (not idempotent)
  EXPECT_EQ(client_tls_->stats().handshakes.load(), 2u);
  EXPECT_EQ(client_tls_->stats().resumed.load(), 1u);  // the second resumed the first's session
  EXPECT_TRUE(failures_.empty());
}

TEST_F(ExchangeTlsTest, AServerFromAnotherCaIsRefusedAndTheRequestGoesElsewhere) {
  start({webNode(other_.issue("rogue", {"127.0.0.1"})), webNode(ca_.issue("web", {"127.0.0.1"}))});
  exchange("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(client_.head_status, "200");
  EXPECT_EQ(x_->attempts(), 2u);
  EXPECT_EQ(failures_, std::vector<uint32_t>{0});
  EXPECT_EQ(client_tls_->stats().verify_failures.load(), 1u);
  EXPECT_EQ(stats_->backends[0].failures.get(), 1u);
}

TEST_F(ExchangeTlsTest, AServerNamingAnotherAddressIsRefused) {
  start({webNode(ca_.issue("web", {"127.0.0.9"}))});
  exchange("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(client_.failed, 503);
  EXPECT_GE(client_tls_->stats().verify_failures.load(), 1u);
}

}  // namespace
}  // namespace fulcrum::lb
