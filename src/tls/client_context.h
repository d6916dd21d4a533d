#pragma once
// The client side of internal TLS (`[security] internal_tls`): the lb's connections to web nodes
// and its health checks of them. One ClientContext per lb, shared by its workers, makes a
// non-blocking TlsTransport for each connected socket.
//
// The lb presents its node certificate (web nodes require one from the site CA), and accepts a
// server only if its certificate chains to the site CA and names the IP address it dialled.
// TLS 1.3 only (both ends are ours); ALPN http/1.1. The last session ticket of each server is
// kept, so a new connection to it resumes without a signature or a certificate check.
#include <openssl/ssl.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "config/config.h"
#include "core/address.h"
#include "core/transport.h"
#include "tls/server_context.h"
#include "tls/tls_transport.h"

namespace fulcrum::tls {

class ClientContext final : public core::ClientTransportFactory {
 public:
  // Null with `error` naming the file and the reason.
  static std::unique_ptr<ClientContext> create(const std::filesystem::path& ca, const CertFiles& own,
                                               std::string& error);
  // The context of `holder` (a node of the site, or "operator") from the site's PKI
  // (site_pki.h: nodeTls), or null with its error: the control plane's clients (the agents'
  // etcd calls and watch, `status`, `up`'s probes) hold it shared.
  static std::shared_ptr<ClientContext> forHolder(const config::Site& site, std::string_view holder,
                                                  std::string& error);
  // New files (a renewed or reissued pair, a new CA): new connections present and verify with
  // them, open ones keep theirs. On failure nothing changes and `error` names the file.
  bool reload(const std::filesystem::path& ca, const CertFiles& own, std::string& error);
  ~ClientContext() override;
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  // A TLS client on `fd`, a socket connected (or connecting) to `peer`; the handshake starts at
  // the transport's first handshake() call. Null when OpenSSL cannot make one.
  std::unique_ptr<TlsTransport> newTransport(int fd, const core::SocketAddress& peer);
  // The same, for clients that see transports as core::ClientTransportFactory (http does not
  // depend on tls).
  std::unique_ptr<core::Transport> newClientTransport(int fd, const core::SocketAddress& server) override {
    return newTransport(fd, server);
  }
  // A handshake with `server` failed: a warning naming the server and the reason, at most one a
  // second (with how many were not logged); the server's kept session is forgotten.
  void reportFailure(std::string_view server, const core::SocketAddress& peer, const TlsTransport& transport);
  TlsStats& stats() { return stats_; }

 private:
  ClientContext() = default;
  SSL_CTX* newCtx(const std::filesystem::path& ca, const CertFiles& own, std::string& error);
  static int onNewSession(SSL* ssl, SSL_SESSION* session);
  void keep(const std::string& peer, SSL_SESSION* session);
  void forget(const std::string& peer);

  std::mutex mutex_;  // ctx_ and sessions_: taken once per new connection and once per ticket
  SSL_CTX* ctx_ = nullptr;
  std::unordered_map<std::string, SSL_SESSION*> sessions_;  // by the server's "ip:port"
  TlsStats stats_;
  LogThrottle log_throttle_;
};

}  // namespace fulcrum::tls
