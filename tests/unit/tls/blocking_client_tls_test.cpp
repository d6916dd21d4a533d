// The control plane's TLS (ClientContext as the core::ClientTransportFactory of http::BlockingClient) against
// a TLS server on a thread that wants a client certificate of the site CA: an exchange with the right
// certificates, and a clear reason for each way it is refused (the server's IP not in its certificate, a
// server of another CA, a client of another CA).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "config/loader.h"
#include "core/socket.h"
#include "http/client.h"
#include "tls/client_context.h"
#include "tls/site_pki.h"

namespace fulcrum::tls {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

// One TLS connection served on a thread: the handshake (a client certificate of `ca` required),
// then `requests` requests each answered "ok" (keep-alive but for the last). Records the client's
// CN. Every wait is bounded.
class TlsServer {
 public:
  TlsServer(const fs::path& ca, const fs::path& cert, const fs::path& key, int requests = 1)
      : requests_(requests) {
    std::string error;
    listener_ =
        core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), core::ListenOptions{false}, error);
    EXPECT_TRUE(listener_) << error;
    address_ = core::localAddress(listener_.get());
    ctx_ = SSL_CTX_new(TLS_server_method());
    EXPECT_EQ(SSL_CTX_use_certificate_chain_file(ctx_, cert.c_str()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx_, key.c_str(), SSL_FILETYPE_PEM), 1);
    EXPECT_EQ(SSL_CTX_load_verify_locations(ctx_, ca.c_str(), nullptr), 1);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    thread_ = std::thread([this] { serveOne(); });
  }
  ~TlsServer() {
    finish();
    SSL_CTX_free(ctx_);
  }
  const core::SocketAddress& address() const { return address_; }
  // The CN of the client's certificate once its connection is over ("" when it had none).
  std::string clientName() {
    finish();
    return client_cn_;
  }

 private:
  void finish() {
    if (thread_.joinable()) {
      thread_.join();
    }
  }

  void serveOne() {
    pollfd p{listener_.get(), POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) {
      return;
    }
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);  // blocking
    if (fd < 0) {
      return;
    }
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      X509* peer = SSL_get1_peer_certificate(ssl);
      if (peer != nullptr) {
        char cn[256] = "";
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
        client_cn_ = cn;
        X509_free(peer);
      }
      for (int i = 0; i < requests_; ++i) {
        std::string in;
        char buf[4096];
        size_t n = 0;
        while (in.find("\r\n\r\n") == std::string::npos && SSL_read_ex(ssl, buf, sizeof buf, &n) == 1) {
          in.append(buf, n);
        }
        const bool last = i + 1 == requests_;
        const std::string reply = std::string("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n") +
                                  (last ? "Connection: close\r\n" : "") + "\r\nok";
        SSL_write_ex(ssl, reply.data(), reply.size(), &n);
      }
      SSL_shutdown(ssl);
    }
    ERR_clear_error();
    SSL_free(ssl);
    ::close(fd);
  }

  const int requests_;
  core::Fd listener_;
  core::SocketAddress address_;
  SSL_CTX* ctx_ = nullptr;
  std::thread thread_;
  std::string client_cn_;
};

class BlockingClientTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/fulcrum-client-tls-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    site_ = makeSite("site");
    other_ = makeSite("other");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A site whose "etcd" holds 127.0.0.1 and whose web-1 holds 127.0.0.21, with its CA and
  // certificates made in `name`/var/tls.
  config::Site makeSite(const std::string& name) {
    fs::create_directories(dir_ / name / "www");
    const std::string text =
        "[site]\nname = \"" + name + "\"\nstate_dir = \"" + (dir_ / name / "var").string() +
        "\"\n[web]\napp = \"none\"\n"
        "[[web.node]]\nname = \"web-1\"\nlisten = \"127.0.0.21:9001\"\n"
        "[[db.node]]\nname = \"db-1\"\npg = \"127.0.0.31:5432\"\nagent = \"127.0.0.31:8008\"\n"
        "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\n[security]\ninternal_tls = true\n";
    auto loaded = config::loadSiteString(text, (dir_ / name / "site.toml").string());
    EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors[0].toString());
    auto made = ensureSiteCertificates(loaded.site);
    EXPECT_TRUE(made.ok) << made.error;
    return loaded.site;
  }

  static http::ClientOutcome get(const std::shared_ptr<ClientContext>& tls, const core::SocketAddress& to) {
    http::ClientOptions options;
    options.tls = tls;
    http::ClientRequest request;
    request.path = "/health";
    return http::fetchOnce(to, request, std::chrono::steady_clock::now() + std::chrono::seconds(5), options);
  }

  static std::shared_ptr<ClientContext> client(const config::Site& site, const std::string& holder) {
    std::string error;
    auto ctx = ClientContext::forHolder(site, holder, error);
    EXPECT_NE(ctx, nullptr) << error;
    return ctx;
  }

  fs::path dir_;
  config::Site site_;
  config::Site other_;
};

TEST_F(BlockingClientTlsTest, ExchangeWithBothCertificatesOfTheSiteCa) {
  const SitePaths pki = sitePaths(site_);
  TlsServer server(pki.ca_cert, pki.nodeCert("etcd"), pki.nodeKey("etcd"));
  http::ClientOutcome got = get(client(site_, "db-1"), server.address());
  ASSERT_TRUE(got.response.ok) << got.response.error;
  EXPECT_EQ(got.response.value.status, 200);
  EXPECT_EQ(got.response.value.body, "ok");
  EXPECT_EQ(server.clientName(), "db-1");
}

TEST_F(BlockingClientTlsTest, KeepAliveReusesOneTlsConnection) {
  const SitePaths pki = sitePaths(site_);
  TlsServer server(pki.ca_cert, pki.nodeCert("etcd"), pki.nodeKey("etcd"), /*requests=*/3);
  http::ClientOptions options;
  options.tls = client(site_, "db-1");
  http::BlockingClient blocking(server.address(), options);
  http::ClientRequest request;
  request.path = "/health";
  for (int i = 0; i < 3; ++i) {
    http::ClientOutcome got =
        blocking.exchange(request, std::chrono::steady_clock::now() + std::chrono::seconds(5));
    ASSERT_TRUE(got.response.ok) << i << ": " << got.response.error;
    EXPECT_EQ(got.response.value.body, "ok");
  }
  // The session tickets a TLS 1.3 server sends after its handshake do not make the idle
  // connection look closed.
  EXPECT_EQ(blocking.connectionsOpened(), 1u);
}

TEST_F(BlockingClientTlsTest, ServerWhoseCertificateIsNotForTheAddressDialledIsRefused) {
  const SitePaths pki = sitePaths(site_);
  TlsServer server(pki.ca_cert, pki.nodeCert("web-1"), pki.nodeKey("web-1"));  // 127.0.0.21, not .1
  http::ClientOutcome got = get(client(site_, "operator"), server.address());
  ASSERT_FALSE(got.response.ok);
  EXPECT_THAT(got.response.error,
              HasSubstr("TLS with " + server.address().toString() + ": IP address mismatch"));
  EXPECT_FALSE(got.request_sent);
}

TEST_F(BlockingClientTlsTest, ServerOfAnotherCaIsRefused) {
  const SitePaths theirs = sitePaths(other_);
  TlsServer server(sitePaths(site_).ca_cert, theirs.nodeCert("etcd"), theirs.nodeKey("etcd"));
  http::ClientOutcome got = get(client(site_, "operator"), server.address());
  ASSERT_FALSE(got.response.ok);
  EXPECT_THAT(got.response.error, HasSubstr("TLS with " + server.address().toString() +
                                            ": unable to get local issuer certificate"));
}

TEST_F(BlockingClientTlsTest, ClientOfAnotherCaIsRefusedByTheServer) {
  const SitePaths pki = sitePaths(site_);
  TlsServer server(pki.ca_cert, pki.nodeCert("etcd"), pki.nodeKey("etcd"));
  // Trusts this site's CA (the server verifies), presents the other site's operator.
  const SitePaths theirs = sitePaths(other_);
  std::string error;
  std::shared_ptr<ClientContext> foreign = ClientContext::create(
      pki.ca_cert, CertFiles{theirs.nodeCert("operator"), theirs.nodeKey("operator")}, error);
  ASSERT_NE(foreign, nullptr) << error;
  http::ClientOutcome got = get(foreign, server.address());
  ASSERT_FALSE(got.response.ok);
  // TLS 1.3: the client's side of the handshake is over before the server judges its certificate,
  // and the request goes out. The server's alert ends the exchange on the first read, or, when the
  // server closed with the request unread, the reset that follows it.
  EXPECT_THAT(got.response.error, HasSubstr(server.address().toString()));
  EXPECT_THAT(got.response.error,
              ::testing::AnyOf(HasSubstr("alert"), HasSubstr("no client certificate"),
                               HasSubstr("Connection reset by peer"), HasSubstr("Protocol error")));
  EXPECT_EQ(server.clientName(), "");
}

TEST_F(BlockingClientTlsTest, MissingPairNamesTheFix) {
  fs::remove(sitePaths(site_).nodeKey("operator"));
  std::string error;
  EXPECT_EQ(ClientContext::forHolder(site_, "operator", error), nullptr);
  EXPECT_THAT(error, HasSubstr("fulcrum certs"));
}

}  // namespace
}  // namespace fulcrum::tls
