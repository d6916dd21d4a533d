#pragma once
// The client side of `[security] internal_tls`: the TLS every internal client (the agents' etcd
// calls and watch, `fulcrum status`, `up`'s probes) opens its connections with. It trusts the
// site CA alone, presents its holder's certificate (a node's, or "operator"), and verifies each
// server for the address it dialled (an IP SAN of the server's certificate).
//
// Policy: TLS 1.2 and 1.3 only, OpenSSL's default suites; no session resumption (a control-plane
// client opens few connections and keeps them).
#include <openssl/ssl.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "config/config.h"
#include "core/transport.h"

namespace fulcrum::tls {

class ClientContext final : public core::ClientTransportFactory {
 public:
  // Trusts `ca_cert` only and presents `cert` with `key`. Null with `error` naming the file and
  // the reason.
  static std::shared_ptr<ClientContext> create(const std::filesystem::path& ca_cert,
                                               const std::filesystem::path& cert,
                                               const std::filesystem::path& key, std::string& error);
  // The context of `holder` (a node of the site, or "operator") from the site's PKI
  // (site_pki.h: nodeTls), or null with its error.
  static std::shared_ptr<ClientContext> forHolder(const config::Site& site, std::string_view holder,
                                                  std::string& error);
  ~ClientContext() override;
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  // A client TLS transport on the connected (or connecting) `fd`, verifying `server`'s IP.
  // Null only when OpenSSL cannot allocate.
  std::unique_ptr<core::Transport> newClientTransport(int fd, const core::SocketAddress& server) override;

 private:
  explicit ClientContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

}  // namespace fulcrum::tls
