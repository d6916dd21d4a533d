#include "tls/client_context.h"

#include <openssl/err.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>

#include "core/log.h"
#include "tls/openssl_error.h"
#include "tls/site_pki.h"

namespace fulcrum::tls {

namespace {

constexpr unsigned char kAlpnH1[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr const char* kGroups = "X25519:P-256:P-384";

// The "ip:port" a client SSL's socket is connected to: the key of its server's session.
std::string peerOf(SSL* ssl) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(SSL_get_fd(ssl), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return {};
  }
  return core::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len).toString();
}

}  // namespace

SSL_CTX* ClientContext::newCtx(const std::filesystem::path& ca, const CertFiles& own, std::string& error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    error = lastSslError();
    return nullptr;
  }
  auto fail = [&](std::string why) {
    error = std::move(why);
    SSL_CTX_free(ctx);
    return nullptr;
  };
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set1_groups_list(ctx, kGroups) != 1 ||
      SSL_CTX_set_alpn_protos(ctx, kAlpnH1, sizeof kAlpnH1) != 0) {
    return fail("TLS policy: " + lastSslError());
  }
  if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
    return fail(ca.string() + ": " + lastSslError());
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, own.cert.c_str()) != 1) {
    return fail(own.cert.string() + ": " + lastSslError());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, own.key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    return fail(own.key.string() + ": " + lastSslError());
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(
      ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  // Sessions are kept here, by server, not in OpenSSL's cache (which a client does not search).
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &ClientContext::onNewSession);
  SSL_CTX_set_app_data(ctx, this);
  return ctx;
}

std::unique_ptr<ClientContext> ClientContext::create(const std::filesystem::path& ca, const CertFiles& own,
                                                     std::string& error) {
  std::unique_ptr<ClientContext> self(new ClientContext());
  self->ctx_ = self->newCtx(ca, own, error);
  return self->ctx_ != nullptr ? std::move(self) : nullptr;
}

bool ClientContext::reload(const std::filesystem::path& ca, const CertFiles& own, std::string& error) {
  SSL_CTX* fresh = newCtx(ca, own, error);
  if (fresh == nullptr) {
    return false;
  }
  std::lock_guard lock(mutex_);
  // Each open connection's SSL holds a reference to the context it began with.
  SSL_CTX_free(ctx_);
  ctx_ = fresh;
  // Sessions of the old identity: a server could resume one without seeing the new certificate.
  for (auto& [peer, session] : sessions_) {
    SSL_SESSION_free(session);
  }
  sessions_.clear();
  return true;
}

std::shared_ptr<ClientContext> ClientContext::forHolder(const config::Site& site, std::string_view holder,
                                                        std::string& error) {
  core::Result<NodeTls> files = nodeTls(site, holder);
  if (!files.ok) {
    error = files.error;
    return nullptr;
  }
  return create(files.value.ca_cert, CertFiles{files.value.cert, files.value.key}, error);
}

ClientContext::~ClientContext() {
  for (auto& [peer, session] : sessions_) {
    SSL_SESSION_free(session);
  }
  SSL_CTX_free(ctx_);
}

std::unique_ptr<TlsTransport> ClientContext::newTransport(int fd, const core::SocketAddress& peer) {
  std::unique_lock lock(mutex_);
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) {
    ERR_clear_error();
    return nullptr;
  }
  // The server must be the one dialled: its certificate names this IP address.
  if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), peer.ip().toString().c_str()) != 1) {
    ERR_clear_error();
    SSL_free(ssl);
    return nullptr;
  }
  if (auto it = sessions_.find(peer.toString()); it != sessions_.end()) {
    SSL_set_session(ssl, it->second);  // takes its own reference
  }
  lock.unlock();
  return std::make_unique<TlsTransport>(ssl, fd, stats_, TlsTransport::Side::Connect);
}

int ClientContext::onNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* self = static_cast<ClientContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  std::string peer = peerOf(ssl);
  if (self == nullptr || peer.empty() || SSL_SESSION_is_resumable(session) != 1) {
    return 0;
  }
  // A copy: OpenSSL marks the connection's own session unresumable when the connection is freed
  // without a close_notify (as a pooled connection is), and the copy must outlive that.
  SSL_SESSION* copy = SSL_SESSION_dup(session);
  if (copy != nullptr) {
    self->keep(peer, copy);
  }
  return 0;  // the connection keeps its own
}

void ClientContext::keep(const std::string& peer, SSL_SESSION* session) {
  std::lock_guard lock(mutex_);
  SSL_SESSION*& slot = sessions_[peer];
  if (slot != nullptr) {
    SSL_SESSION_free(slot);
  }
  slot = session;
}

void ClientContext::forget(const std::string& peer) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(peer);
  if (it != sessions_.end()) {
    SSL_SESSION_free(it->second);
    sessions_.erase(it);
  }
}

void ClientContext::reportFailure(std::string_view server, const core::SocketAddress& peer,
                                  const TlsTransport& transport) {
  forget(peer.toString());
  uint64_t suppressed = 0;
  if (!log_throttle_.admit(suppressed)) {
    return;
  }
  std::string more = suppressed > 0 ? fmt::format(" ({} more TLS failures since the last report)", suppressed)
                                    : std::string();
  if (transport.verifyFailed()) {
    log::warn("server {} ({}): certificate refused: {}{}", server, peer.toString(), transport.failure(),
              more);
  } else {
    log::warn("server {} ({}): TLS handshake failed: {}{}", server, peer.toString(), transport.failure(),
              more);
  }
}

}  // namespace fulcrum::tls
