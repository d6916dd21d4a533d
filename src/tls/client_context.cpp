#include "tls/client_context.h"

#include "tls/openssl_error.h"
#include "tls/site_pki.h"
#include "tls/tls_transport.h"

namespace fulcrum::tls {

std::shared_ptr<ClientContext> ClientContext::create(const std::filesystem::path& ca_cert,
                                                     const std::filesystem::path& cert,
                                                     const std::filesystem::path& key, std::string& error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    error = "TLS: " + lastSslError();
    return nullptr;
  }
  std::shared_ptr<ClientContext> self(new ClientContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  // A bare EOF after a complete response is an end, as on the server side.
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (SSL_CTX_load_verify_locations(ctx, ca_cert.c_str(), nullptr) != 1) {
    error = ca_cert.string() + ": cannot load the CA certificate (" + lastSslError() + ")";
    return nullptr;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    error = cert.string() + ": cannot load the certificate (" + lastSslError() + ")";
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    error = key.string() + ": cannot load the key of " + cert.string() + " (" + lastSslError() + ")";
    return nullptr;
  }
  return self;
}

std::shared_ptr<ClientContext> ClientContext::forHolder(const config::Site& site, std::string_view holder,
                                                        std::string& error) {
  core::Result<NodeTls> files = nodeTls(site, holder);
  if (!files.ok) {
    error = files.error;
    return nullptr;
  }
  return create(files.value.ca_cert, files.value.cert, files.value.key, error);
}

ClientContext::~ClientContext() {
  SSL_CTX_free(ctx_);
}

std::unique_ptr<core::Transport> ClientContext::newClientTransport(int fd,
                                                                   const core::SocketAddress& server) {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) {
    ERR_clear_error();
    return nullptr;
  }
  expectServer(ssl, server.ip().toString());
  return std::make_unique<TlsTransport>(ssl, fd, TlsTransport::Side::Client, nullptr);
}

}  // namespace fulcrum::tls
