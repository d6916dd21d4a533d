// The TCP proxy on real loopback sockets, one EventLoop on the test thread: the test's own
// blocking-free sockets play client and servers. Waits are bounded; nothing depends on timing.
#include "lb/tcp_proxy.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/socket.h"
#include "health/test_server.h"

namespace fulcrum::lb {
namespace {

using testing::HandServer;
using testing::listenLoopback;
using testing::runUntil;

// Reads what is there now from a non-blocking socket: bytes appended to `out`; returns false at
// EOF or on an error (reset).
bool readSome(int fd, std::string& out) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

class TcpProxyTest : public ::testing::Test {
 protected:
  // A proxy over `servers` (ids in order; the last `backups` are backups), all up.
  void start(std::vector<core::SocketAddress> servers, TcpProxyOptions options = {}, size_t backups = 0) {
    std::vector<Backend> backends;
    for (size_t i = 0; i < servers.size(); ++i) {
      Backend b;
      b.id = static_cast<uint32_t>(i);
      b.name = "db-" + std::to_string(i);
      b.address = servers[i];
      b.address_text = servers[i].toString();
      b.backup = i >= servers.size() - backups;
      backends.push_back(std::move(b));
    }
    stats_ = std::make_unique<TcpProxyStats>(backends.size());
    core::Fd listener = listenLoopback(address_);
    proxy_ = std::make_unique<TcpProxyWorker>(loop_, std::move(listener), backends, "leastconn", options,
                                              *stats_, [this](uint32_t server, const std::string& reason) {
                                                failures_.push_back(std::to_string(server) + ": " + reason);
                                              });
  }

  // A client connected through the proxy, non-blocking.
  core::Fd connectClient() {
    std::string error;
    core::Fd fd = core::connectTcp(address_, error);
    EXPECT_TRUE(fd.valid()) << error;
    return fd;
  }

  // Runs the loop until `server` has a connection to accept.
  core::Fd acceptOn(HandServer& server) {
    core::Fd conn;
    EXPECT_TRUE(runUntil(loop_, [&] {
      conn = server.accept();
      return conn.valid();
    }));
    return conn;
  }

  // Runs the loop until `fd` has received `want` bytes in total (into `got`).
  bool receive(int fd, std::string& got, size_t want) {
    return runUntil(loop_, [&] {
      readSome(fd, got);
      return got.size() >= want;
    });
  }

  // Runs the loop until `fd` sees EOF or a reset.
  bool closedByPeer(int fd) {
    std::string ignored;
    return runUntil(loop_, [&] { return !readSome(fd, ignored); });
  }

  core::EventLoop loop_;
  core::SocketAddress address_;
  std::unique_ptr<TcpProxyStats> stats_;
  std::unique_ptr<TcpProxyWorker> proxy_;
  std::vector<std::string> failures_;
};

TEST_F(TcpProxyTest, StreamsBothWaysAndPassesHalfCloseOn) {
  HandServer server;
  start({server.address});
  core::Fd client = connectClient();
  core::Fd upstream = acceptOn(server);
  ASSERT_EQ(::send(client.get(), "startup", 7, MSG_NOSIGNAL), 7);
  std::string at_server;
  ASSERT_TRUE(receive(upstream.get(), at_server, 7));
  EXPECT_EQ(at_server, "startup");
  ASSERT_EQ(::send(upstream.get(), "ready", 5, MSG_NOSIGNAL), 5);
  std::string at_client;
  ASSERT_TRUE(receive(client.get(), at_client, 5));
  EXPECT_EQ(at_client, "ready");

  // The client finishes its side: the server sees EOF, and can still answer.
  ::shutdown(client.get(), SHUT_WR);
  ASSERT_TRUE(closedByPeer(upstream.get()));
  ASSERT_EQ(::send(upstream.get(), "last words", 10, MSG_NOSIGNAL), 10);
  at_client.clear();
  ASSERT_TRUE(receive(client.get(), at_client, 10));
  EXPECT_EQ(at_client, "last words");
  upstream.reset();
  ASSERT_TRUE(closedByPeer(client.get()));
  ASSERT_TRUE(runUntil(loop_, [&] { return proxy_->sessionCount() == 0; }));
  EXPECT_EQ(stats_->bytes_in.get(), 7u);
  EXPECT_EQ(stats_->bytes_out.get(), 15u);
  EXPECT_EQ(stats_->servers[0].sessions.get(), 1u);
  EXPECT_EQ(stats_->servers[0].active.get(), 0u);
}

TEST_F(TcpProxyTest, LargeTransfersSwitchToSpliceAndKeepEveryByte) {
  HandServer server;
  TcpProxyOptions options;
  options.splice_after = 64 * 1024;
  start({server.address}, options);
  core::Fd client = connectClient();
  core::Fd upstream = acceptOn(server);
  std::string payload;
  for (size_t i = 0; payload.size() < 3 * 1024 * 1024; ++i) {
    payload += std::to_string(i) + ",";
  }
  // The test writes as the sockets accept and reads the other end as it goes.
  size_t sent = 0;
  std::string got;
  ASSERT_TRUE(runUntil(
      loop_,
      [&] {
        if (sent < payload.size()) {
          ssize_t n = ::send(client.get(), payload.data() + sent, payload.size() - sent, MSG_NOSIGNAL);
          if (n > 0) {
            sent += static_cast<size_t>(n);
          }
        }
        readSome(upstream.get(), got);
        return got.size() >= payload.size();
      },
      std::chrono::milliseconds(20000)));
  EXPECT_TRUE(got == payload);
  EXPECT_EQ(stats_->spliced.get(), 1u);  // only the direction that carried the bytes
}

TEST_F(TcpProxyTest, ServerMarkedDownHasItsSessionsCut) {
  HandServer a;
  HandServer b;
  start({a.address, b.address});
  core::Fd c1 = connectClient();
  core::Fd c2 = connectClient();
  core::Fd u1 = acceptOn(a);
  core::Fd u2 = acceptOn(b);  // leastconn: one session on each
  ASSERT_TRUE(runUntil(loop_, [&] { return stats_->servers[1].active.get() == 1; }));

  proxy_->setUp(0, false);
  // Both ends of the session on server 0 are closed at once; the other session lives on.
  ASSERT_TRUE(closedByPeer(u1.get()));
  ASSERT_TRUE(runUntil(loop_, [&] { return proxy_->sessionCount() == 1; }));
  EXPECT_EQ(stats_->servers[0].cut.get(), 1u);
  std::string ignored;
  EXPECT_TRUE(readSome(u2.get(), ignored));  // still open
  // c1 or c2 was cut, not both.
  std::string s1, s2;
  bool open1 = readSome(c1.get(), s1);
  bool open2 = readSome(c2.get(), s2);
  EXPECT_NE(open1, open2);
  // New sessions go to the server still up.
  core::Fd c3 = connectClient();
  core::Fd u3 = acceptOn(b);
  EXPECT_TRUE(u3.valid());
}

TEST_F(TcpProxyTest, ConnectFailureIsRetriedOnAnotherServer) {
  core::SocketAddress dead = testing::closedPort();
  HandServer live;
  start({dead, live.address});
  for (int i = 0; i < 3; ++i) {
    core::Fd client = connectClient();
    core::Fd upstream = acceptOn(live);
    ASSERT_TRUE(upstream.valid());
  }
  ASSERT_FALSE(failures_.empty());  // leastconn tried the dead one at least once
  EXPECT_EQ(failures_[0], "0: connect: Connection refused");
  EXPECT_GE(stats_->retries.get(), 1u);
  EXPECT_EQ(stats_->no_server.get(), 0u);
}

TEST_F(TcpProxyTest, BackupServesOnlyWhileNoActiveServerIsUp) {
  HandServer active;
  HandServer backup;
  start({active.address, backup.address}, {}, /*backups=*/1);
  core::Fd c1 = connectClient();
  EXPECT_TRUE(acceptOn(active).valid());
  proxy_->setUp(0, false);
  core::Fd c2 = connectClient();
  EXPECT_TRUE(acceptOn(backup).valid());
}

TEST_F(TcpProxyTest, NoServerUpClosesTheClientAtOnce) {
  HandServer server;
  start({server.address});
  proxy_->setUp(0, false);
  core::Fd client = connectClient();
  ASSERT_TRUE(closedByPeer(client.get()));
  EXPECT_EQ(stats_->no_server.get(), 1u);
  EXPECT_EQ(proxy_->sessionCount(), 0u);
}

TEST_F(TcpProxyTest, IdleSessionsAreClosed) {
  HandServer server;
  TcpProxyOptions options;
  options.idle_timeout = std::chrono::milliseconds(50);
  start({server.address}, options);
  core::Fd client = connectClient();
  core::Fd upstream = acceptOn(server);
  ASSERT_TRUE(closedByPeer(client.get()));
  ASSERT_TRUE(closedByPeer(upstream.get()));
}

TEST_F(TcpProxyTest, MaxConnectionsRefusesTheNextClient) {
  HandServer server;
  TcpProxyOptions options;
  options.max_connections = 1;
  start({server.address}, options);
  core::Fd c1 = connectClient();
  core::Fd u1 = acceptOn(server);
  core::Fd c2 = connectClient();
  ASSERT_TRUE(closedByPeer(c2.get()));
  EXPECT_EQ(stats_->refused.get(), 1u);
}

TEST_F(TcpProxyTest, DrainWaitsForTheLastSession) {
  HandServer server;
  start({server.address});
  core::Fd client = connectClient();
  core::Fd upstream = acceptOn(server);
  bool idle = false;
  proxy_->drain([&] { idle = true; });
  loop_.runOnce(std::chrono::milliseconds(0));
  EXPECT_FALSE(idle);
  client.reset();  // the client leaves: EOF both ways
  upstream.reset();
  ASSERT_TRUE(runUntil(loop_, [&] { return idle; }));
}

}  // namespace
}  // namespace fulcrum::lb
