#pragma once
// TLS termination with OpenSSL 3 for the lb's https listeners: one ServerContext per node, shared
// by its workers, makes a non-blocking TlsTransport for each accepted connection.
//
// Policy (Mozilla "intermediate"): TLS 1.2 and 1.3 only; ECDHE with AES-GCM or ChaCha20-Poly1305
// for 1.2 and the three 1.3 suites; groups X25519, P-256, P-384; no compression, no
// renegotiation; ALPN http/1.1. Sessions resume from stateless tickets whose keys are shared by
// the workers and rotated on a timer (the previous key still opens tickets for one more period).
// Several certificates: SNI picks the one whose names match (exact, or a "*." wildcard for one
// label), the first is the default; an ECDSA and an RSA certificate for the same names share
// one SSL_CTX, and OpenSSL gives each client the one its signature algorithms take.
#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/transport.h"
#include "tls/tls_transport.h"

namespace fulcrum::tls {

struct CertFiles {
  std::filesystem::path cert;  // PEM: the certificate, then its chain
  std::filesystem::path key;   // PEM private key
};

class ChallengeStore;

// One loaded certificate, for metrics and the dashboard.
struct CertificateInfo {
  std::string file;
  std::string key_type;   // ecdsa | rsa | other
  int64_t not_after = 0;  // Unix seconds
};

// What a server with a client CA asks of its clients.
enum class ClientCertificates : uint8_t {
  // Every client presents a certificate the CA signed (a web node under internal_tls lets in the
  // site's lbs only).
  Required,
  // A client may come without one; one that is presented must verify, or the handshake fails (a
  // db agent's health endpoints answer anyone, its admin calls want a site certificate).
  VerifiedIfPresented,
};

class ServerContext final : public core::TransportFactory {
 public:
  // Loads every pair (the first is the default). Null with `error` naming the file and the reason.
  // With `client_ca` (PEM), clients are asked for a certificate that CA signed, as `clients`
  // says; a refused handshake is logged with the peer and the reason.
  static std::unique_ptr<ServerContext> create(const std::vector<CertFiles>& pairs, std::string& error,
                                               const std::filesystem::path& client_ca = {},
                                               ClientCertificates clients = ClientCertificates::Required);
  ~ServerContext() override;
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  std::unique_ptr<core::Transport> newTransport(int fd) override;

  // Loads `pairs` again (new files at the same paths, or other paths): new handshakes use them,
  // open connections keep theirs. On failure nothing changes and `error` names the file.
  bool reload(const std::vector<CertFiles>& pairs, std::string& error);

  // A new ticket key becomes current; the current one is kept to open older tickets. Called on a
  // timer by the node's main thread; handshakes on the workers read the keys under a mutex.
  void rotateTicketKeys();
  TlsStats& stats() { return stats_; }
  // [lb.acme] challenge = "tls-alpn-01": a handshake asking for acme-tls/1 is given the
  // validation certificate `store` holds for its name (RFC 8737), or refused. Set before the
  // workers start; not owned.
  void answerTlsAlpn(const ChallengeStore* store) { alpn_challenges_ = store; }
  // [lb.tls] http2: ALPN offers h2 before http/1.1. Set before the workers start.
  void offerHttp2(bool on) { http2_ = on; }
  bool offersHttp2() const { return http2_; }
  // The names each certificate answers (for logs), in load order.
  std::vector<std::string> describe() const;
  std::vector<CertificateInfo> certificates() const;

 private:
  struct Named {
    std::vector<std::string> names;  // DNS names of the certificate (SAN, else CN), lower case
    SSL_CTX* ctx = nullptr;
    int key_types = 0;  // bit per EVP_PKEY type loaded into ctx (ECDSA and RSA may share one)
  };
  // The certificates in force; a reload swaps in a new set. An SSL holds a reference to its
  // SSL_CTX, so a connection outlives the set it started with.
  struct CertSet {
    ~CertSet();
    std::vector<Named> named;  // named[0] is the default
    std::vector<std::string> descriptions;
    std::vector<CertificateInfo> certificates;
  };
  struct TicketKey {
    std::array<unsigned char, 16> name{};
    std::array<unsigned char, 32> aes{};
    std::array<unsigned char, 32> hmac{};
  };

  ServerContext() = default;
  SSL_CTX* newCtx(std::string& error);
  bool verifyClientCertificates(SSL_CTX* ctx, std::string& error) const;
  std::shared_ptr<CertSet> loadSet(const std::vector<CertFiles>& pairs, std::string& error);
  bool load(CertSet& set, const CertFiles& pair, std::string& error);
  std::shared_ptr<CertSet> current() const;
  static SSL_CTX* ctxFor(const CertSet& set, std::string_view server_name);
  static int onServerName(SSL* ssl, int* alert, void* arg);
  static int onClientHello(SSL* ssl, int* alert, void* arg);
  static int onTicketKey(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                         EVP_MAC_CTX* mac, int encrypt);
  int ticketKey(unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
                int encrypt);

  mutable std::mutex certs_mutex_;  // taken once per connection (and per SNI switch)
  std::shared_ptr<CertSet> certs_;
  std::mutex ticket_mutex_;
  TicketKey current_{};
  TicketKey previous_{};
  bool have_previous_ = false;
  TlsStats stats_;
  const ChallengeStore* alpn_challenges_ = nullptr;
  bool http2_ = false;
  std::filesystem::path client_ca_;  // set: clients are asked for a certificate from this CA
  ClientCertificates clients_ = ClientCertificates::Required;
  LogThrottle refusals_;  // with a client CA, refused handshakes are logged through this
};

// A self-signed ECDSA P-256 certificate for `names` (DNS) and `ips`, made once in `dir` (key
// 0600) and reused while it is there. Returns the pair, or empty paths with `error`.
CertFiles ensureSelfSigned(const std::filesystem::path& dir, const std::vector<std::string>& names,
                           const std::vector<std::string>& ips, std::string& error);

}  // namespace fulcrum::tls
