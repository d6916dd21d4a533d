// The internal TLS link of an lb and a web node, both ends in this thread over a loopback TCP
// connection: ClientContext verifies the server by the site CA and the address it dialled, and
// ServerContext with a client CA lets in only holders of a certificate from it (or, Optional,
// clients without one too).
#include "tls/client_context.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <string>

#include "core/fd.h"
#include "test_pki.h"
#include "tls/server_context.h"

namespace fulcrum::tls {
namespace {

using testing::Pem;
using testing::TestCa;

class TempDir {
 public:
  TempDir() {
    char templ[] = "/tmp/fulcrum-tls-XXXXXX";
    path_ = ::mkdtemp(templ);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void nonBlocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// A loopback listener; connections to it are accepted one at a time by link().
class Loopback {
 public:
  Loopback() : listener_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(listener_.get(), 8);
    socklen_t len = sizeof a;
    ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    address_ = core::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&a), len);
  }
  const core::SocketAddress& address() const { return address_; }
  // A connected pair: the client's socket and the server's, both non-blocking.
  std::pair<core::Fd, core::Fd> link() {
    core::Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ::connect(client.get(), address_.sockaddrPtr(), address_.sockaddrLen());
    core::Fd server(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    nonBlocking(client.get());
    nonBlocking(server.get());
    return {std::move(client), std::move(server)};
  }

 private:
  core::Fd listener_;
  core::SocketAddress address_;
};

struct Outcome {
  int client = 0;  // 1 done, -1 failed, 0 still going (never, once drive returns)
  int server = 0;
};

// Waits (at most 100 ms) until one of the sockets is readable: loopback bytes may reach the
// peer a little after send returns on a busy machine.
void waitReadable(int a, int b) {
  pollfd fds[] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
  ::poll(fds, 2, 100);
}

constexpr auto kPatience = std::chrono::seconds(5);

// Runs both handshakes to their end (the server's is driven by reads, as a connection does).
Outcome drive(TlsTransport& client, core::Transport& server, int cfd, int sfd) {
  Outcome out;
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while ((out.client == 0 || out.server == 0) && std::chrono::steady_clock::now() < deadline) {
    if (out.client == 0) {
      out.client = client.handshake();
    }
    if (out.server == 0) {
      core::Buffer sink;
      ssize_t n = server.read(sink, 1 << 16);
      if (!server.handshaking()) {
        out.server = 1;
      } else if (n < 0 && errno != EAGAIN) {
        out.server = -1;
      }
    }
    if (out.client == -1 || out.server == -1) {
      break;
    }
    waitReadable(cfd, sfd);
  }
  return out;
}

// Reads what `from` wrote, through `to` whose socket is `to_fd` (the bytes, or "" when the link
// failed).
std::string pass(core::Transport& from, core::Transport& to, int to_fd, std::string_view text) {
  core::Buffer out;
  out.append(text);
  core::Buffer in;
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (in.size() < text.size() && std::chrono::steady_clock::now() < deadline) {
    if (!out.empty() && from.write(out) < 0 && errno != EAGAIN) {
      return {};
    }
    if (to.read(in, 1 << 16) < 0 && errno != EAGAIN) {
      return {};
    }
    waitReadable(to_fd, to_fd);
  }
  return std::string(in.view());
}

class InternalTlsTest : public ::testing::Test {
 protected:
  InternalTlsTest() : ca_(dir_.path() / "site", "site-ca"), other_ca_(dir_.path() / "other", "other-ca") {}

  std::unique_ptr<ServerContext> server(const Pem& pair,
                                        ClientCertificates clients = ClientCertificates::Required) {
    std::string error;
    auto ctx = ServerContext::create({CertFiles{pair.cert, pair.key}}, error, ca_.files().cert, clients);
    EXPECT_TRUE(ctx) << error;
    return ctx;
  }
  std::unique_ptr<ClientContext> client(const Pem& pair) {
    std::string error;
    auto ctx = ClientContext::create(ca_.files().cert, CertFiles{pair.cert, pair.key}, error);
    EXPECT_TRUE(ctx) << error;
    return ctx;
  }

  TempDir dir_;
  TestCa ca_;
  TestCa other_ca_;
  Loopback net_;
};

TEST_F(InternalTlsTest, AGoodChainConnectsAndTheNextConnectionResumes) {
  auto web = server(ca_.issue("web1", {"127.0.0.1"}));
  auto lb = client(ca_.issue("lb1", {"127.0.0.1"}));
  for (int round = 0; round < 2; ++round) {
    auto [cfd, sfd] = net_.link();
    std::unique_ptr<TlsTransport> c = lb->newTransport(cfd.get(), net_.address());
    std::unique_ptr<core::Transport> s = web->newTransport(sfd.get());
    ASSERT_TRUE(c && s);
    Outcome o = drive(*c, *s, cfd.get(), sfd.get());
    ASSERT_EQ(o.client, 1) << c->failure();
    ASSERT_EQ(o.server, 1);
    EXPECT_EQ(c->alpn(), "http/1.1");
    EXPECT_EQ(s->alpn(), "http/1.1");
    // A request, then its answer, whose read also takes the server's ticket: the second
    // connection resumes from it (though the first is gone without a close_notify).
    EXPECT_EQ(pass(*c, *s, sfd.get(), "GET / HTTP/1.1\r\n"), "GET / HTTP/1.1\r\n");
    EXPECT_EQ(pass(*s, *c, cfd.get(), "HTTP/1.1 200 OK\r\n"), "HTTP/1.1 200 OK\r\n");
    EXPECT_EQ(c->resumed(), round == 1);
  }
  EXPECT_EQ(lb->stats().handshakes.load(), 2u);
  EXPECT_EQ(lb->stats().resumed.load(), 1u);
  EXPECT_EQ(web->stats().resumed.load(), 1u);
}

TEST_F(InternalTlsTest, AReloadedClientPresentsItsNewPairAndDropsItsSessions) {
  auto web = server(ca_.issue("web1", {"127.0.0.1"}));
  // Its pair from another CA: refused. The same context reloaded with a good pair: admitted,
  // and a full handshake (no session of the old identity is offered).
  Pem stranger = other_ca_.issue("lb1", {});
  std::string error;
  auto lb = ClientContext::create(ca_.files().cert, CertFiles{stranger.cert, stranger.key}, error);
  ASSERT_TRUE(lb) << error;
  {
    auto [cfd, sfd] = net_.link();
    auto c = lb->newTransport(cfd.get(), net_.address());
    auto s = web->newTransport(sfd.get());
    EXPECT_EQ(drive(*c, *s, cfd.get(), sfd.get()).server, -1);
  }
  Pem good = ca_.issue("lb1", {"127.0.0.1"});
  ASSERT_TRUE(lb->reload(ca_.files().cert, CertFiles{good.cert, good.key}, error)) << error;
  auto [cfd, sfd] = net_.link();
  auto c = lb->newTransport(cfd.get(), net_.address());
  auto s = web->newTransport(sfd.get());
  Outcome o = drive(*c, *s, cfd.get(), sfd.get());
  ASSERT_EQ(o.client, 1) << c->failure();
  ASSERT_EQ(o.server, 1);
  EXPECT_FALSE(c->resumed());
  // A file that does not load changes nothing.
  EXPECT_FALSE(lb->reload(ca_.files().cert, CertFiles{good.cert, dir_.path() / "missing.key"}, error));
  EXPECT_NE(error.find("missing.key"), std::string::npos) << error;
}

TEST_F(InternalTlsTest, AServerFromAnotherCaIsRefused) {
  auto web = server(other_ca_.issue("web1", {"127.0.0.1"}));
  auto lb = client(ca_.issue("lb1", {"127.0.0.1"}));
  auto [cfd, sfd] = net_.link();
  auto c = lb->newTransport(cfd.get(), net_.address());
  auto s = web->newTransport(sfd.get());
  EXPECT_EQ(drive(*c, *s, cfd.get(), sfd.get()).client, -1);
  EXPECT_TRUE(c->verifyFailed());
  EXPECT_EQ(c->failure(), "unable to get local issuer certificate");
  EXPECT_EQ(lb->stats().verify_failures.load(), 1u);
}

TEST_F(InternalTlsTest, AServerWhoseCertificateNamesAnotherAddressIsRefused) {
  auto web = server(ca_.issue("web1", {"127.0.0.2"}));
  auto lb = client(ca_.issue("lb1", {"127.0.0.1"}));
  auto [cfd, sfd] = net_.link();
  auto c = lb->newTransport(cfd.get(), net_.address());
  auto s = web->newTransport(sfd.get());
  EXPECT_EQ(drive(*c, *s, cfd.get(), sfd.get()).client, -1);
  EXPECT_TRUE(c->verifyFailed());
  EXPECT_EQ(c->failure(), "IP address mismatch");
}

TEST_F(InternalTlsTest, AnExpiredServerCertificateIsRefused) {
  auto web = server(ca_.issue("web1", {"127.0.0.1"}, -2 * 86400, -86400));
  auto lb = client(ca_.issue("lb1", {"127.0.0.1"}));
  auto [cfd, sfd] = net_.link();
  auto c = lb->newTransport(cfd.get(), net_.address());
  auto s = web->newTransport(sfd.get());
  EXPECT_EQ(drive(*c, *s, cfd.get(), sfd.get()).client, -1);
  EXPECT_EQ(c->failure(), "certificate has expired");
}

TEST_F(InternalTlsTest, AClientWithACertificateFromAnotherCaIsRefusedByTheServer) {
  auto web = server(ca_.issue("web1", {"127.0.0.1"}));
  std::string error;
  Pem stranger = other_ca_.issue("stranger", {});
  auto lb = ClientContext::create(ca_.files().cert, CertFiles{stranger.cert, stranger.key}, error);
  ASSERT_TRUE(lb) << error;
  auto [cfd, sfd] = net_.link();
  auto c = lb->newTransport(cfd.get(), net_.address());
  auto s = web->newTransport(sfd.get());
  Outcome o = drive(*c, *s, cfd.get(), sfd.get());
  EXPECT_EQ(o.server, -1);
  EXPECT_EQ(web->stats().verify_failures.load(), 1u);
  // TLS 1.3: the client's side was done before the server judged it; its first read fails.
  EXPECT_EQ(pass(*s, *c, cfd.get(), "x"), "");
}

TEST_F(InternalTlsTest, AClientWithoutACertificateIsRefusedByTheServer) {
  auto web = server(ca_.issue("web1", {"127.0.0.1"}));
  SSL_CTX* bare = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(bare, TLS1_3_VERSION);
  auto [cfd, sfd] = net_.link();
  TlsStats stats;
  TlsTransport c(SSL_new(bare), cfd.get(), stats, TlsTransport::Side::Connect);
  auto s = web->newTransport(sfd.get());
  EXPECT_EQ(drive(c, *s, cfd.get(), sfd.get()).server, -1);
  EXPECT_EQ(web->stats().verify_failures.load(), 1u);
  SSL_CTX_free(bare);
}

TEST_F(InternalTlsTest, TheServerNamesTheVerifiedClient) {
  auto web = server(ca_.issue("web1", {"127.0.0.1"}));
  auto lb = client(ca_.issue("lb1", {"127.0.0.1"}));
  auto [cfd, sfd] = net_.link();
  auto c = lb->newTransport(cfd.get(), net_.address());
  auto s = web->newTransport(sfd.get());
  ASSERT_EQ(drive(*c, *s, cfd.get(), sfd.get()).server, 1);
  EXPECT_EQ(s->verifiedPeerName(), "lb1");
}

// A db agent's API: a client certificate is asked for, not required; one that comes must verify.
TEST_F(InternalTlsTest, OptionalClientCertificatesLetInAClientWithoutOne) {
  auto agent = server(ca_.issue("db1", {"127.0.0.1"}), ClientCertificates::VerifiedIfPresented);
  SSL_CTX* bare = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(bare, TLS1_3_VERSION);
  auto [cfd, sfd] = net_.link();
  TlsStats stats;
  TlsTransport c(SSL_new(bare), cfd.get(), stats, TlsTransport::Side::Connect);
  auto s = agent->newTransport(sfd.get());
  Outcome o = drive(c, *s, cfd.get(), sfd.get());
  EXPECT_EQ(o.server, 1);
  EXPECT_EQ(o.client, 1) << c.failure();
  EXPECT_EQ(s->verifiedPeerName(), "");
  EXPECT_EQ(pass(c, *s, sfd.get(), "GET /health"), "GET /health");
  SSL_CTX_free(bare);
}

TEST_F(InternalTlsTest, OptionalClientCertificatesNameTheVerifiedClient) {
  auto agent = server(ca_.issue("db1", {"127.0.0.1"}), ClientCertificates::VerifiedIfPresented);
  auto op = client(ca_.issue("operator", {}));
  auto [cfd, sfd] = net_.link();
  auto c = op->newTransport(cfd.get(), net_.address());
  auto s = agent->newTransport(sfd.get());
  ASSERT_EQ(drive(*c, *s, cfd.get(), sfd.get()).server, 1);
  EXPECT_EQ(s->verifiedPeerName(), "operator");
}

TEST_F(InternalTlsTest, OptionalClientCertificatesStillRefuseABadOne) {
  auto agent = server(ca_.issue("db1", {"127.0.0.1"}), ClientCertificates::VerifiedIfPresented);
  std::string error;
  Pem stranger = other_ca_.issue("operator", {});
  Pem expired = ca_.issue("operator", {}, -2 * 86400, -86400);
  for (const auto& [pair, reason] : {std::pair{stranger, "unable to get local issuer certificate"},
                                     std::pair{expired, "certificate has expired"}}) {
    auto op = ClientContext::create(ca_.files().cert, CertFiles{pair.cert, pair.key}, error);
    ASSERT_TRUE(op) << error;
    auto [cfd, sfd] = net_.link();
    auto c = op->newTransport(cfd.get(), net_.address());
    auto s = agent->newTransport(sfd.get());
    EXPECT_EQ(drive(*c, *s, cfd.get(), sfd.get()).server, -1) << reason;
    EXPECT_EQ(s->failureReason(), reason);
  }
  EXPECT_EQ(agent->stats().verify_failures.load(), 2u);
}

TEST_F(InternalTlsTest, PlaintextIsRefusedByTheServer) {
  auto web = server(ca_.issue("web1", {"127.0.0.1"}));
  auto [cfd, sfd] = net_.link();
  auto s = web->newTransport(sfd.get());
  std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(cfd.get(), request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  core::Buffer in;
  EXPECT_EQ(s->read(in, 1 << 16), -1);
  EXPECT_NE(errno, EAGAIN);
  EXPECT_EQ(web->stats().handshake_failures.load(), 1u);
  EXPECT_EQ(web->stats().verify_failures.load(), 0u);
}

TEST_F(InternalTlsTest, AMissingFileIsNamed) {
  std::string error;
  Pem lb = ca_.issue("lb1", {});
  EXPECT_FALSE(ClientContext::create(dir_.path() / "nope.crt", CertFiles{lb.cert, lb.key}, error));
  EXPECT_NE(error.find("nope.crt"), std::string::npos) << error;
  EXPECT_FALSE(ClientContext::create(ca_.files().cert, CertFiles{lb.cert, dir_.path() / "nope.key"}, error));
  EXPECT_NE(error.find("nope.key"), std::string::npos) << error;
}

}  // namespace
}  // namespace fulcrum::tls
