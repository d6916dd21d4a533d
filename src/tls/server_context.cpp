#include "tls/server_context.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <system_error>

#include "core/fd.h"
#include "tls/acme.h"
#include "tls/openssl_error.h"
#include "tls/tls_transport.h"
#include "tls/x509_ext.h"

namespace fulcrum::tls {

namespace {

// Mozilla "intermediate" (TLS 1.2 part); TLS 1.3's three suites are OpenSSL's defaults, named here.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kTls13Suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:P-256:P-384";
constexpr long kTicketLifetimeSeconds = 3600;  // keys rotate every hour: a ticket opens for 1-2 h
// What ALPN offers, in our order of preference: h2 first when [lb.tls] http2 is on.
constexpr unsigned char kAlpnH2[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kAlpnH1[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

int selectAlpn(SSL* ssl, const unsigned char** out, unsigned char* out_len, const unsigned char* in,
               unsigned int in_len, void*) {
  auto* self = static_cast<const ServerContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  bool h2 = self != nullptr && self->offersHttp2();
  const unsigned char* ours = h2 ? kAlpnH2 : kAlpnH1;
  unsigned int ours_len = h2 ? sizeof kAlpnH2 : sizeof kAlpnH1;
  unsigned char* selected = nullptr;
  // SSL_select_next_proto walks the first list and picks the first of it the second lists: the
  // server's list goes first, so that h2 wins whatever order the client wrote.
  if (SSL_select_next_proto(&selected, out_len, ours, ours_len, in, in_len) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no common protocol: go on without ALPN (HTTP/1.1)
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

// Whether an ALPN extension's body (a 2-byte length, then length-prefixed names) lists `protocol`.
bool offersProtocol(std::string_view ext, std::string_view protocol) {
  if (ext.size() < 2) {
    return false;
  }
  size_t total = static_cast<unsigned char>(ext[0]) << 8 | static_cast<unsigned char>(ext[1]);
  std::string_view list = ext.substr(2, total);
  while (!list.empty()) {
    size_t n = static_cast<unsigned char>(list[0]);
    if (n + 1 > list.size()) {
      return false;
    }
    if (list.substr(1, n) == protocol) {
      return true;
    }
    list.remove_prefix(n + 1);
  }
  return false;
}

// The host name of a server_name extension's body (RFC 6066 §3), or "" when there is none.
std::string_view hostNameOf(std::string_view ext) {
  if (ext.size() < 2) {
    return {};
  }
  size_t total = static_cast<unsigned char>(ext[0]) << 8 | static_cast<unsigned char>(ext[1]);
  std::string_view list = ext.substr(2, total);
  while (list.size() >= 3) {
    auto type = static_cast<unsigned char>(list[0]);
    size_t n = static_cast<unsigned char>(list[1]) << 8 | static_cast<unsigned char>(list[2]);
    if (n + 3 > list.size()) {
      return {};
    }
    if (type == TLSEXT_NAMETYPE_host_name) {
      return list.substr(3, n);
    }
    list.remove_prefix(n + 3);
  }
  return {};
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Exact, or "*.example.com" for exactly one more label (RFC 6125 §6.4.3).
bool nameMatches(std::string_view pattern, std::string_view host) {
  if (pattern.size() > 2 && pattern.substr(0, 2) == "*.") {
    size_t dot = host.find('.');
    return dot != std::string_view::npos && dot > 0 && host.substr(dot + 1) == pattern.substr(2);
  }
  return pattern == host;
}

std::vector<std::string> certificateNames(X509* cert) {
  std::vector<std::string> names;
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans, i);
      if (name->type == GEN_DNS) {
        const ASN1_IA5STRING* dns = name->d.dNSName;
        names.push_back(lower(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                                               static_cast<size_t>(ASN1_STRING_length(dns)))));
      }
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {
    char cn[256];
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0) {
      names.push_back(lower(cn));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

}  // namespace

// ---------------------------------------------------------------------------------------------
// The context

std::unique_ptr<ServerContext> ServerContext::create(const std::vector<CertFiles>& pairs, std::string& error,
                                                     const std::filesystem::path& client_ca,
                                                     ClientCertificates clients) {
  if (pairs.empty()) {
    error = "no certificate";
    return nullptr;
  }
  std::unique_ptr<ServerContext> self(new ServerContext());
  self->client_ca_ = client_ca;
  self->clients_ = clients;
  self->certs_ = self->loadSet(pairs, error);
  if (!self->certs_) {
    return nullptr;
  }
  self->rotateTicketKeys();
  self->have_previous_ = false;
  return self;
}

ServerContext::~ServerContext() = default;

ServerContext::CertSet::~CertSet() {
  for (Named& n : named) {
    SSL_CTX_free(n.ctx);
  }
}

std::shared_ptr<ServerContext::CertSet> ServerContext::loadSet(const std::vector<CertFiles>& pairs,
                                                               std::string& error) {
  if (pairs.empty()) {
    error = "no certificate";
    return nullptr;
  }
  auto set = std::make_shared<CertSet>();
  for (const CertFiles& pair : pairs) {
    if (!load(*set, pair, error)) {
      return nullptr;
    }
  }
  return set;
}

bool ServerContext::reload(const std::vector<CertFiles>& pairs, std::string& error) {
  std::shared_ptr<CertSet> fresh = loadSet(pairs, error);
  if (!fresh) {
    return false;
  }
  std::lock_guard lock(certs_mutex_);
  certs_ = std::move(fresh);  // the old set goes when its last handshake has taken its context
  return true;
}

std::shared_ptr<ServerContext::CertSet> ServerContext::current() const {
  std::lock_guard lock(certs_mutex_);
  return certs_;
}

std::vector<std::string> ServerContext::describe() const {
  return current()->descriptions;
}

std::vector<CertificateInfo> ServerContext::certificates() const {
  return current()->certificates;
}

SSL_CTX* ServerContext::newCtx(std::string& error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) {
    error = lastSslError();
    return nullptr;
  }
  bool ok = SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
            SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1 &&
            SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) == 1 &&
            SSL_CTX_set_ciphersuites(ctx, kTls13Suites) == 1 && SSL_CTX_set1_groups_list(ctx, kGroups) == 1;
  if (!ok) {
    error = "TLS policy: " + lastSslError();
    SSL_CTX_free(ctx);
    return nullptr;
  }
  // A bare EOF (no close_notify, as browsers often end) reads as an end, not an error.
  // The server's order of suites wins (the strongest and cheapest first), as HAProxy and nginx
  // are commonly set up; clients all support the first ones anyway.
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Partial writes from a buffer that may move between tries (cout_ compacts), and record
  // buffers given back while a connection is idle.
  SSL_CTX_set_mode(
      ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  // Stateless tickets only: no per-session state to share between the workers.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 1);
  SSL_CTX_set_timeout(ctx, kTicketLifetimeSeconds);
  SSL_CTX_set_app_data(ctx, this);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &ServerContext::onTicketKey);
  SSL_CTX_set_alpn_select_cb(ctx, selectAlpn, nullptr);
  SSL_CTX_set_tlsext_servername_callback(ctx, &ServerContext::onServerName);
  SSL_CTX_set_tlsext_servername_arg(ctx, this);
  SSL_CTX_set_client_hello_cb(ctx, &ServerContext::onClientHello, this);
  if (!client_ca_.empty() && !verifyClientCertificates(ctx, error)) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  return ctx;
}

bool ServerContext::verifyClientCertificates(SSL_CTX* ctx, std::string& error) const {
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(client_ca_.c_str());
  if (names == nullptr || SSL_CTX_load_verify_locations(ctx, client_ca_.c_str(), nullptr) != 1) {
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    error = client_ca_.string() + ": " + lastSslError();
    return false;
  }
  SSL_CTX_set_client_CA_list(ctx, names);
  // Without FAIL_IF_NO_PEER_CERT a client may send no certificate; one it sends must still verify
  // (no callback: OpenSSL's verdict stands).
  SSL_CTX_set_verify(ctx,
                     clients_ == ClientCertificates::Required
                         ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                         : SSL_VERIFY_PEER,
                     nullptr);
  // A resumed session keeps the verified client; OpenSSL refuses resumption with verification
  // on unless the sessions are tied to a context.
  static constexpr unsigned char kSessionContext[] = "fulcrum-internal";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  return true;
}

bool ServerContext::load(CertSet& set, const CertFiles& pair, std::string& error) {
  File cert_file(std::fopen(pair.cert.c_str(), "r"));
  if (!cert_file) {
    error = pair.cert.string() + ": " + std::strerror(errno);
    return false;
  }
  X509* cert = PEM_read_X509(cert_file.get(), nullptr, nullptr, nullptr);
  if (cert == nullptr) {
    error = pair.cert.string() + ": not a PEM certificate (" + lastSslError() + ")";
    return false;
  }
  std::vector<std::string> names = certificateNames(cert);
  struct tm end_tm {};
  int64_t not_after = 0;
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &end_tm) == 1) {
    not_after = static_cast<int64_t>(timegm(&end_tm));
  }
  X509_free(cert);
  File key_file(std::fopen(pair.key.c_str(), "r"));
  if (!key_file) {
    error = pair.key.string() + ": " + std::strerror(errno);
    return false;
  }
  EVP_PKEY* key = PEM_read_PrivateKey(key_file.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) {
    error = pair.key.string() + ": not a PEM private key (" + lastSslError() + ")";
    return false;
  }
  int type = EVP_PKEY_get_base_id(key);
  int bit = type == EVP_PKEY_RSA ? 1 : type == EVP_PKEY_EC ? 2 : 4;
  // An ECDSA and an RSA certificate for the same names go in one context.
  Named* target = nullptr;
  for (Named& n : set.named) {
    if (n.names == names && (n.key_types & bit) == 0) {
      target = &n;
      break;
    }
  }
  if (target == nullptr) {
    SSL_CTX* ctx = newCtx(error);
    if (ctx == nullptr) {
      EVP_PKEY_free(key);
      return false;
    }
    set.named.push_back(Named{names, ctx, 0});
    target = &set.named.back();
  }
  bool ok = SSL_CTX_use_certificate_chain_file(target->ctx, pair.cert.c_str()) == 1;
  if (!ok) {
    error = pair.cert.string() + ": " + lastSslError();
  } else if (SSL_CTX_use_PrivateKey(target->ctx, key) != 1 || SSL_CTX_check_private_key(target->ctx) != 1) {
    error = pair.key.string() + ": does not match " + pair.cert.string() + " (" + lastSslError() + ")";
    ok = false;
  }
  EVP_PKEY_free(key);
  if (!ok) {
    return false;
  }
  target->key_types |= bit;
  std::string joined;
  for (const std::string& n : names) {
    joined += (joined.empty() ? "" : ",") + n;
  }
  set.certificates.push_back(CertificateInfo{pair.cert.string(),
                                             type == EVP_PKEY_RSA  ? "rsa"
                                             : type == EVP_PKEY_EC ? "ecdsa"
                                                                   : "other",
                                             not_after});
  set.descriptions.push_back(fmt::format("{} ({}; {})", pair.cert.string(),
                                         type == EVP_PKEY_RSA  ? "RSA"
                                         : type == EVP_PKEY_EC ? "ECDSA"
                                                               : "other key",
                                         joined.empty() ? "no DNS name" : joined));
  return true;
}

SSL_CTX* ServerContext::ctxFor(const CertSet& set, std::string_view server_name) {
  std::string host = lower(server_name);
  for (const Named& n : set.named) {
    for (const std::string& pattern : n.names) {
      if (nameMatches(pattern, host)) {
        return n.ctx;
      }
    }
  }
  return set.named.front().ctx;  // the default certificate
}

int ServerContext::onClientHello(SSL* ssl, int* alert, void* arg) {
  auto* self = static_cast<ServerContext*>(arg);
  if (self->alpn_challenges_ == nullptr) {
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  const unsigned char* alpn = nullptr;
  size_t alpn_len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &alpn, &alpn_len) !=
          1 ||
      !offersProtocol(std::string_view(reinterpret_cast<const char*>(alpn), alpn_len),
                      kAcmeTlsAlpnProtocol)) {
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  // A CA validating TLS-ALPN-01 (browsers never offer acme-tls/1): the name's validation
  // certificate, or nothing.
  const unsigned char* sni = nullptr;
  size_t sni_len = 0;
  std::string name;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &sni, &sni_len) == 1) {
    name = lower(hostNameOf(std::string_view(reinterpret_cast<const char*>(sni), sni_len)));
  }
  ChallengeStore::TlsContext answer = self->alpn_challenges_->findTlsAlpn(name);
  if (!answer) {
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
  }
  SSL_set_SSL_CTX(ssl, answer.get());  // the SSL holds its own reference
  // Options and ticket counts stay those of the SSL's first context: a validation gets no ticket.
  SSL_set_options(ssl, SSL_OP_NO_TICKET);
  SSL_set_num_tickets(ssl, 0);
  return SSL_CLIENT_HELLO_SUCCESS;
}

int ServerContext::onServerName(SSL* ssl, int*, void* arg) {
  auto* self = static_cast<ServerContext*>(arg);
  if (SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) == nullptr) {
    return SSL_TLSEXT_ERR_OK;  // a TLS-ALPN-01 validation: its context is chosen already
  }
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  std::shared_ptr<CertSet> set = self->current();
  if (set->named.size() == 1 && SSL_get_SSL_CTX(ssl) == set->named.front().ctx) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  SSL_CTX* ctx = ctxFor(*set, name);
  if (ctx != SSL_get_SSL_CTX(ssl)) {
    SSL_set_SSL_CTX(ssl, ctx);
  }
  return SSL_TLSEXT_ERR_OK;
}

std::unique_ptr<core::Transport> ServerContext::newTransport(int fd) {
  SSL* ssl = SSL_new(current()->named.front().ctx);
  if (ssl == nullptr) {
    ERR_clear_error();
    return nullptr;
  }
  auto transport = std::make_unique<TlsTransport>(ssl, fd, stats_, TlsTransport::Side::Accept);
  if (!client_ca_.empty()) {
    transport->logRefusals(&refusals_);
  }
  return transport;
}

void ServerContext::rotateTicketKeys() {
  TicketKey fresh;
  if (RAND_bytes(fresh.name.data(), static_cast<int>(fresh.name.size())) != 1 ||
      RAND_bytes(fresh.aes.data(), static_cast<int>(fresh.aes.size())) != 1 ||
      RAND_bytes(fresh.hmac.data(), static_cast<int>(fresh.hmac.size())) != 1) {
    ERR_clear_error();
    return;  // keep the keys we have
  }
  std::lock_guard lock(ticket_mutex_);
  previous_ = current_;
  have_previous_ = true;
  current_ = fresh;
}

int ServerContext::onTicketKey(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                               EVP_MAC_CTX* mac, int encrypt) {
  auto* self = static_cast<ServerContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (self == nullptr) {
    return 0;  // a TLS-ALPN-01 validation's context: no ticket made, none opened
  }
  return self->ticketKey(key_name, iv, cipher, mac, encrypt);
}

int ServerContext::ticketKey(unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                             EVP_MAC_CTX* mac, int encrypt) {
  std::lock_guard lock(ticket_mutex_);
  const TicketKey* key = &current_;
  int result = 1;
  if (encrypt == 1) {
    std::memcpy(key_name, current_.name.data(), current_.name.size());
    if (RAND_bytes(iv, 16) != 1 ||
        EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, current_.aes.data(), iv) != 1) {
      return -1;
    }
  } else {
    if (std::memcmp(key_name, current_.name.data(), current_.name.size()) != 0) {
      if (!have_previous_ || std::memcmp(key_name, previous_.name.data(), previous_.name.size()) != 0) {
        return 0;  // an unknown or expired key: a full handshake
      }
      key = &previous_;
      result = 2;  // valid, but the client gets a ticket under the current key
    }
    if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key->aes.data(), iv) != 1) {
      return -1;
    }
  }
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key->hmac.data()),
                                        key->hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  return EVP_MAC_CTX_set_params(mac, params) == 1 ? result : -1;
}

// ---------------------------------------------------------------------------------------------
// Self-signed certificate

namespace {

bool stillValid(const std::filesystem::path& cert_path) {
  File f(std::fopen(cert_path.c_str(), "r"));
  if (!f) {
    return false;
  }
  X509* cert = PEM_read_X509(f.get(), nullptr, nullptr, nullptr);
  if (cert == nullptr) {
    ERR_clear_error();
    return false;
  }
  // Remade a month before it ends.
  time_t soon = time(nullptr) + 30L * 24 * 3600;
  bool ok = X509_cmp_time(X509_get0_notAfter(cert), &soon) > 0;
  X509_free(cert);
  return ok;
}

}  // namespace

CertFiles ensureSelfSigned(const std::filesystem::path& dir, const std::vector<std::string>& names,
                           const std::vector<std::string>& ips, std::string& error) {
  CertFiles out{dir / "self-signed.crt", dir / "self-signed.key"};
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    error = dir.string() + ": " + ec.message();
    return {};
  }
  // Two lbs of one site starting at once share the pair: one makes it while the other waits,
  // then finds it whole (never a certificate beside a key still being written).
  const std::filesystem::path lock_path = dir / "self-signed.lock";
  core::Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX) != 0) {
    error = lock_path.string() + ": " + std::strerror(errno);
    return {};
  }
  if (std::filesystem::exists(out.key, ec) && stillValid(out.cert)) {
    return out;
  }
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  std::string san;
  for (const std::string& n : names) {
    san += (san.empty() ? "DNS:" : ",DNS:") + n;
  }
  for (const std::string& ip : ips) {
    san += (san.empty() ? "IP:" : ",IP:") + ip;
  }
  uint64_t serial = 0;
  bool ok = key != nullptr && cert != nullptr &&
            RAND_bytes(reinterpret_cast<unsigned char*>(&serial), sizeof serial) == 1;
  if (ok) {
    X509_NAME* subject = X509_get_subject_name(cert);
    std::string cn = names.empty() ? std::string("fulcrum") : names.front();
    ok = X509_set_version(cert, X509_VERSION_3) == 1 &&
         ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert), serial >> 1) == 1 &&
         X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != nullptr &&
         X509_gmtime_adj(X509_getm_notAfter(cert), 397L * 24 * 3600) != nullptr &&
         X509_set_pubkey(cert, key) == 1 &&
         X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                    reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0) == 1 &&
         X509_set_issuer_name(cert, subject) == 1 &&
         addExtension(cert, cert, NID_basic_constraints, "critical,CA:FALSE") &&
         addExtension(cert, cert, NID_key_usage, "critical,digitalSignature") &&
         addExtension(cert, cert, NID_ext_key_usage, "serverAuth") &&
         addExtension(cert, cert, NID_subject_key_identifier, "hash") &&
         (san.empty() || addExtension(cert, cert, NID_subject_alt_name, san)) &&
         X509_sign(cert, key, EVP_sha256()) > 0;
  }
  if (ok) {
    // The key is written 0600 before a byte of it exists on disk.
    int fd = ::open(out.key.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    File key_out(fd >= 0 ? ::fdopen(fd, "w") : nullptr);
    File cert_out(std::fopen(out.cert.c_str(), "w"));
    ok = key_out && cert_out &&
         PEM_write_PrivateKey(key_out.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1 &&
         PEM_write_X509(cert_out.get(), cert) == 1;
    if (!ok && !key_out) {
      error = out.key.string() + ": " + std::strerror(errno);
    }
  }
  if (!ok && error.empty()) {
    error = "making a self-signed certificate: " + lastSslError();
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return ok ? out : CertFiles{};
}

}  // namespace fulcrum::tls
