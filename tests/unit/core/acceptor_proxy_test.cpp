// The acceptor's PROXY header stage on real loopback sockets: the peer handed on is the one the
// header names, and the bytes after the header stay in the socket for whoever reads next.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <optional>
#include <string>
#include <vector>

#include "core/acceptor.h"
#include "core/clock.h"
#include "core/ip_filter.h"
#include "core/proxy_protocol.h"
#include "core/socket.h"

namespace fulcrum::core {
namespace {

SocketAddress loopback(uint16_t port) {
  return *SocketAddress::parse("127.0.0.1:" + std::to_string(port));
}

struct Accepted {
  Fd fd;
  SocketAddress peer;
};

class AcceptorProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    Fd listener = listenTcp(loopback(0), ListenOptions{.reuse_port = false}, error);
    ASSERT_TRUE(listener.valid()) << error;
    address_ = localAddress(listener.get());
    acceptor_ = std::make_unique<Acceptor>(loop_, std::move(listener), "test",
                                           [this](Fd fd, const SocketAddress& peer) {
                                             accepted_.push_back(Accepted{std::move(fd), peer});
                                           });
    policy_.errors = &errors_;
  }

  // A blocking client connection.
  Fd connectClient() {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_EQ(::connect(fd.get(), address_.sockaddrPtr(), address_.sockaddrLen()), 0);
    return fd;
  }

  void send(const Fd& fd, std::string_view bytes) {
    ASSERT_EQ(::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }

  // Runs the loop until `done` holds (bounded: a few seconds of polling).
  template <typename F>
  bool runUntil(F done) {
    for (int i = 0; i < 200 && !done(); ++i) {
      loop_.runOnce(std::chrono::milliseconds(10));
    }
    return done();
  }

  // Lets whatever has arrived be handled (for checking that nothing happened yet).
  void settle() {
    for (int i = 0; i < 10; ++i) {
      loop_.runOnce(std::chrono::milliseconds(5));
    }
  }

  // Reads `n` bytes from a (non-blocking) accepted socket.
  static std::string readSome(int fd, size_t n) {
    std::string out;
    for (int i = 0; i < 200 && out.size() < n; ++i) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 10);
      char buf[256];
      ssize_t got = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
      if (got > 0) {
        out.append(buf, static_cast<size_t>(got));
      } else if (got == 0) {
        break;
      }
    }
    return out;
  }

  // True once the server side closed the client's connection.
  static bool closedByServer(const Fd& client) {
    pollfd p{client.get(), POLLIN, 2000};
    if (::poll(&p, 1, 2000) != 1) {
      return false;
    }
    char c;
    return ::recv(client.get(), &c, 1, 0) <= 0;
  }

  EventLoop loop_;
  SocketAddress address_;
  std::unique_ptr<Acceptor> acceptor_;
  std::vector<Accepted> accepted_;
  Counter errors_;
  ProxyHeaderPolicy policy_;
};

TEST_F(AcceptorProxyTest, TheHeadersClientIsThePeerAndTheRestStaysInTheSocket) {
  acceptor_->expectProxyHeader(policy_);
  for (const std::string& header :
       {proxy_protocol::encodeV1(*SocketAddress::parse("192.0.2.9:4000"), address_),
        proxy_protocol::encodeV2(*SocketAddress::parse("192.0.2.9:4000"), address_)}) {
    accepted_.clear();
    Fd client = connectClient();
    // The header in two pieces, the second with the request's first bytes.
    send(client, header.substr(0, 7));
    settle();
    EXPECT_TRUE(accepted_.empty());
    send(client, header.substr(7) + "GET / HTTP/1.1\r\n");
    ASSERT_TRUE(runUntil([&] { return !accepted_.empty(); }));
    EXPECT_EQ(accepted_[0].peer.toString(), "192.0.2.9:4000");
    EXPECT_EQ(readSome(accepted_[0].fd.get(), 16), "GET / HTTP/1.1\r\n");
  }
  EXPECT_EQ(errors_.get(), 0u);
}

TEST_F(AcceptorProxyTest, LocalKeepsTheSocketsPeer) {
  acceptor_->expectProxyHeader(policy_);
  Fd client = connectClient();
  send(client, proxy_protocol::encodeV2Local() + "x");
  ASSERT_TRUE(runUntil([&] { return !accepted_.empty(); }));
  EXPECT_EQ(accepted_[0].peer, localAddress(client.get()));
  EXPECT_EQ(readSome(accepted_[0].fd.get(), 1), "x");
}

TEST_F(AcceptorProxyTest, AMalformedHeaderClosesAndCounts) {
  acceptor_->expectProxyHeader(policy_);
  Fd client = connectClient();
  send(client, "GET / HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(runUntil([&] { return errors_.get() == 1; }));
  EXPECT_TRUE(accepted_.empty());
  EXPECT_TRUE(closedByServer(client));
}

TEST_F(AcceptorProxyTest, TheFirewallJudgesTheHeadersClientAndFromJudgesTheSender) {
  IpFilter firewall({}, {IpPrefix{*IpAddress::parse("192.0.2.0"), 24}});
  acceptor_->setFilter(&firewall);
  acceptor_->expectProxyHeader(policy_);
  Fd denied = connectClient();
  send(denied, proxy_protocol::encodeV1(*SocketAddress::parse("192.0.2.9:4000"), address_));
  Fd allowed = connectClient();
  send(allowed, proxy_protocol::encodeV1(*SocketAddress::parse("198.51.100.1:4000"), address_));
  ASSERT_TRUE(runUntil([&] { return accepted_.size() == 1 && firewall.denied() == 1; }));
  EXPECT_EQ(accepted_[0].peer.ip().toString(), "198.51.100.1");
  EXPECT_TRUE(closedByServer(denied));

  // A sender outside accept_proxy_from is closed before its header is read.
  IpFilter from({IpPrefix{*IpAddress::parse("10.0.0.0"), 8}}, {});
  policy_.from = &from;
  acceptor_->expectProxyHeader(policy_);
  Fd stranger = connectClient();
  send(stranger, proxy_protocol::encodeV1(*SocketAddress::parse("198.51.100.1:4000"), address_));
  ASSERT_TRUE(runUntil([&] { return errors_.get() == 1; }));
  EXPECT_TRUE(closedByServer(stranger));
  EXPECT_EQ(accepted_.size(), 1u);
}

TEST_F(AcceptorProxyTest, OptionalTakesAHeaderWhenItComesAndPassesOtherBytesUntouched) {
  policy_.optional = true;
  acceptor_->expectProxyHeader(policy_);
  Fd direct = connectClient();
  send(direct, "PUT /x HTTP/1.1\r\n");
  ASSERT_TRUE(runUntil([&] { return accepted_.size() == 1; }));
  EXPECT_EQ(accepted_[0].peer, localAddress(direct.get()));
  EXPECT_EQ(readSome(accepted_[0].fd.get(), 17), "PUT /x HTTP/1.1\r\n");

  Fd proxied = connectClient();
  std::string header = proxy_protocol::encodeV2(*SocketAddress::parse("192.0.2.9:4000"), address_);
  send(proxied, header.substr(0, 3));  // a prefix of the signature: wait
  settle();
  EXPECT_EQ(accepted_.size(), 1u);
  send(proxied, header.substr(3) + "GET");
  ASSERT_TRUE(runUntil([&] { return accepted_.size() == 2; }));
  EXPECT_EQ(accepted_[1].peer.toString(), "192.0.2.9:4000");
  EXPECT_EQ(readSome(accepted_[1].fd.get(), 3), "GET");
  EXPECT_EQ(errors_.get(), 0u);
}

TEST(AcceptorProxyTimeout, AHeaderNotInWithinTheTimeoutCloses) {
  ManualClock clock;
  EventLoop loop(clock);
  std::string error;
  Fd listener = listenTcp(loopback(0), ListenOptions{.reuse_port = false}, error);
  ASSERT_TRUE(listener.valid()) << error;
  SocketAddress address = localAddress(listener.get());
  int accepted = 0;
  Acceptor acceptor(loop, std::move(listener), "test", [&](Fd, const SocketAddress&) { ++accepted; });
  Counter errors;
  acceptor.expectProxyHeader(ProxyHeaderPolicy{nullptr, std::chrono::seconds(5), 100, &errors});
  Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(client.get(), address.sockaddrPtr(), address.sockaddrLen()), 0);
  ASSERT_EQ(::send(client.get(), "PROXY TCP4", 10, MSG_NOSIGNAL), 10);
  for (int i = 0; i < 10; ++i) {
    loop.runOnce(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(errors.get(), 0u);
  clock.advance(std::chrono::seconds(6));
  loop.runOnce(std::chrono::milliseconds(10));
  EXPECT_EQ(errors.get(), 1u);
  EXPECT_EQ(accepted, 0);
}

}  // namespace
}  // namespace fulcrum::core
