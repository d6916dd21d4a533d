#include "tls/acme.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <netdb.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "http/parser.h"
#include "tls/openssl_error.h"

namespace fulcrum::tls {

namespace {

using json = nlohmann::json;
constexpr int kExchangeSeconds = 30;  // one HTTPS exchange with the CA, connect included
constexpr int kPollSeconds = 120;     // how long an authorization or an order may stay pending

std::string base64url(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = at(i) << 16 | at(i + 1) << 8 | at(i + 2);
    out += {kAlphabet[v >> 18], kAlphabet[v >> 12 & 63], kAlphabet[v >> 6 & 63], kAlphabet[v & 63]};
  }
  if (i + 1 == bytes.size()) {
    uint32_t v = at(i) << 16;
    out += {kAlphabet[v >> 18], kAlphabet[v >> 12 & 63]};
  } else if (i + 2 == bytes.size()) {
    uint32_t v = at(i) << 16 | at(i + 1) << 8;
    out += {kAlphabet[v >> 18], kAlphabet[v >> 12 & 63], kAlphabet[v >> 6 & 63]};
  }
  return out;  // no padding (RFC 7515 §2)
}

std::string sha256(std::string_view data) {
  unsigned char digest[32];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), len);
}

struct Url {
  std::string host;
  std::string port = "443";
  std::string path = "/";
};

bool parseUrl(std::string_view text, Url& out) {
  constexpr std::string_view kScheme = "https://";
  if (!text.starts_with(kScheme)) {
    return false;
  }
  text.remove_prefix(kScheme.size());
  size_t slash = text.find('/');
  std::string_view authority = text.substr(0, slash);
  out.path = slash == std::string_view::npos ? "/" : std::string(text.substr(slash));
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return false;
    }
    out.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size() && authority[close + 1] == ':') {
      out.port = std::string(authority.substr(close + 2));
    }
  } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    out.host = std::string(authority.substr(0, colon));
    out.port = std::string(authority.substr(colon + 1));
  } else {
    out.host = std::string(authority);
  }
  return !out.host.empty() && !out.port.empty();
}

struct HttpsResponse {
  int status = 0;
  std::string location;
  std::string nonce;
  std::string content_type;
  std::string body;
};

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

// One request on a new TLS connection (Connection: close), the whole response read. The CA's
// certificate is verified against `ca_file` or the system's store, for the URL's host name.
bool httpsRequest(const std::string& method, const std::string& url_text, const std::string& body,
                  const std::filesystem::path& ca_file, HttpsResponse& out, std::string& error) {
  Url url;
  if (!parseUrl(url_text, url)) {
    error = "not an https URL: " + url_text;
    return false;
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &found); rc != 0) {
    error = url.host + ": " + ::gai_strerror(rc);
    return false;
  }
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      continue;
    }
    timeval tv{kExchangeSeconds, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) {
    error = fmt::format("{}:{}: cannot connect: {}", url.host, url.port, std::strerror(errno));
    return false;
  }
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
  bool trusted = ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx.get()) == 1
                                 : SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) == 1;
  if (!trusted) {
    ::close(fd);
    error = "trust store " + (ca_file.empty() ? std::string("(system)") : ca_file.string()) + ": " +
            lastSslError();
    return false;
  }
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
  SSL_set_fd(ssl.get(), fd);
  in6_addr probe{};
  bool literal = ::inet_pton(AF_INET, url.host.c_str(), &probe) == 1 ||
                 ::inet_pton(AF_INET6, url.host.c_str(), &probe) == 1;
  if (literal) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), url.host.c_str());  // no SNI for an address
  } else {
    SSL_set_tlsext_host_name(ssl.get(), url.host.c_str());
    SSL_set1_host(ssl.get(), url.host.c_str());
  }
  std::string request = fmt::format(
      "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fulcrum-acme\r\nAccept: application/json\r\n"
      "Connection: close\r\n",
      method, url.path, url.port == "443" ? url.host : url.host + ":" + url.port);
  if (method == "POST") {
    request += fmt::format("Content-Type: application/jose+json\r\nContent-Length: {}\r\n", body.size());
  }
  request += "\r\n";
  request += body;
  std::string raw;
  bool ok = SSL_connect(ssl.get()) == 1;
  if (!ok) {
    error = fmt::format("{}: TLS: {}", url.host, lastSslError());
  } else {
    size_t written = 0;
    ok = SSL_write_ex(ssl.get(), request.data(), request.size(), &written) == 1;
    char buf[16384];
    size_t n = 0;
    while (ok && SSL_read_ex(ssl.get(), buf, sizeof buf, &n) == 1) {
      raw.append(buf, n);
      if (raw.size() > (4u << 20)) {
        ok = false;
      }
    }
    ERR_clear_error();
    if (!ok) {
      error = url.host + ": the exchange failed";
    }
  }
  ::close(fd);
  if (!ok) {
    return false;
  }
  http::Limits limits;
  limits.max_header_bytes = 64 * 1024;
  http::ResponseHead head;
  http::Method m = method == "HEAD" ? http::Method::Head : http::Method::Post;
  http::ParseResult parsed = http::parseResponseHead(raw, limits, m, head);
  if (parsed.state != http::ParseState::Complete) {
    error = url.host + ": bad response from the ACME server";
    return false;
  }
  out.status = head.status;
  out.location = std::string(head.find("location").value_or(""));
  out.nonce = std::string(head.find("replay-nonce").value_or(""));
  out.content_type = std::string(head.find("content-type").value_or(""));
  http::BodyDecoder decoder;
  decoder.reset(head.body_kind, head.content_length, 0);
  std::string_view rest = std::string_view(raw).substr(parsed.consumed);
  while (!decoder.done()) {
    http::BodyStep step = decoder.step(rest);
    if (step.error_status != 0) {
      error = url.host + ": bad response body";
      return false;
    }
    out.body.append(step.payload);
    rest.remove_prefix(step.consumed);
    if (step.done || (step.consumed == 0 && head.body_kind == http::BodyKind::UntilClose)) {
      break;
    }
    if (step.consumed == 0) {
      error = url.host + ": response body cut short";
      return false;
    }
  }
  return true;
}

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

// Writes `text` to `path` through a temporary file renamed into place, with `mode`.
bool writeWhole(const std::filesystem::path& path, std::string_view text, mode_t mode, std::string& error) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  if (fd >= 0) {
    ::close(fd);
  }
  ok = ok && ::rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) {
    error = path.string() + ": " + std::strerror(errno);
  }
  return ok;
}

std::string keyPem(EVP_PKEY* key) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

// The account key: made once (P-256), kept 0600.
Key accountKey(const std::filesystem::path& path, std::string& error) {
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    Key key(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
    std::fclose(f);
    if (!key) {
      error = path.string() + ": not a PEM private key";
    }
    return key;
  }
  Key key(EVP_EC_gen("P-256"));
  if (!key || !writeWhole(path, keyPem(key.get()), 0600, error)) {
    return nullptr;
  }
  return key;
}

std::string coordinate(EVP_PKEY* key, const char* name) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  unsigned char buf[32] = {};
  if (bn != nullptr) {
    BN_bn2binpad(bn, buf, sizeof buf);
    BN_free(bn);
  }
  return base64url(std::string_view(reinterpret_cast<const char*>(buf), sizeof buf));
}

// The account's public key as a JWK, members in the lexicographic order RFC 7638 hashes.
std::string jwkOf(EVP_PKEY* key) {
  return fmt::format(R"({{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}})",
                     coordinate(key, OSSL_PKEY_PARAM_EC_PUB_X), coordinate(key, OSSL_PKEY_PARAM_EC_PUB_Y));
}

// ES256 over `input`: the DER signature OpenSSL makes, as the 64 raw bytes r || s JWS wants.
std::string es256(EVP_PKEY* key, std::string_view input) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t len = 0;
  if (EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                     input.size()) != 1) {
    return {};
  }
  std::string der(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(der.data()), &len,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
    return {};
  }
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> sig(
      d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(len)), ECDSA_SIG_free);
  if (!sig) {
    return {};
  }
  unsigned char raw[64];
  BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), raw, 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), raw + 32, 32);
  return std::string(reinterpret_cast<const char*>(raw), sizeof raw);
}

// A CSR for `domains` (the first is the subject), signed by `key`, DER.
std::string csrDer(EVP_PKEY* key, const std::vector<std::string>& domains) {
  std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> req(X509_REQ_new(), X509_REQ_free);
  X509_REQ_set_version(req.get(), 0);
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(domains.front().c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key);
  std::string san;
  for (const std::string& d : domains) {
    san += (san.empty() ? "DNS:" : ",DNS:") + d;
  }
  STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str());
  if (ext != nullptr) {
    sk_X509_EXTENSION_push(exts, ext);
  }
  X509_REQ_add_extensions(req.get(), exts);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  if (X509_REQ_sign(req.get(), key, EVP_sha256()) <= 0) {
    return {};
  }
  int len = i2d_X509_REQ(req.get(), nullptr);
  std::string der(static_cast<size_t>(std::max(len, 0)), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  i2d_X509_REQ(req.get(), &p);
  return der;
}

// One conversation with the CA: signed requests with a fresh nonce each (RFC 8555 §6).
class AcmeSession {
 public:
  AcmeSession(const AcmeSettings& settings, EVP_PKEY* account) : settings_(settings), account_(account) {}

  bool start(std::string& error) {
    HttpsResponse r;
    if (!httpsRequest("GET", settings_.directory, "", settings_.ca_file, r, error)) {
      return false;
    }
    if (r.status != 200) {
      error = fmt::format("directory {}: status {}", settings_.directory, r.status);
      return false;
    }
    directory_ = json::parse(r.body, nullptr, false);
    if (!directory_.is_object() || !directory_.contains("newNonce") || !directory_.contains("newAccount") ||
        !directory_.contains("newOrder")) {
      error = "directory " + settings_.directory + ": not an ACME directory";
      return false;
    }
    return true;
  }

  std::string url(const char* name) const { return directory_.value(name, ""); }

  // A signed POST (`payload` empty: POST-as-GET). Retries once on badNonce (§6.5).
  bool post(const std::string& target, const std::string& payload, HttpsResponse& r, std::string& error) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      if (nonce_.empty() && !freshNonce(error)) {
        return false;
      }
      std::string protected_header =
          kid_.empty()
              ? fmt::format(R"({{"alg":"ES256","jwk":{},"nonce":"{}","url":"{}"}})", jwkOf(account_), nonce_,
                            target)
              : fmt::format(R"({{"alg":"ES256","kid":"{}","nonce":"{}","url":"{}"}})", kid_, nonce_, target);
      std::string protected64 = base64url(protected_header);
      std::string payload64 = payload.empty() ? std::string() : base64url(payload);
      std::string signature = es256(account_, protected64 + "." + payload64);
      if (signature.empty()) {
        error = "signing: " + lastSslError();
        return false;
      }
      std::string body =
          json{{"protected", protected64}, {"payload", payload64}, {"signature", base64url(signature)}}
              .dump();
      nonce_.clear();
      r = HttpsResponse{};
      if (!httpsRequest("POST", target, body, settings_.ca_file, r, error)) {
        return false;
      }
      nonce_ = r.nonce;
      if (r.status >= 400) {
        json problem = json::parse(r.body, nullptr, false);
        std::string type = problem.is_object() ? problem.value("type", "") : "";
        if (type == "urn:ietf:params:acme:error:badNonce") {
          continue;
        }
        error = fmt::format("{}: {} {}", target, r.status,
                            problem.is_object() ? problem.value("detail", type) : r.body.substr(0, 200));
        return false;
      }
      return true;
    }
    error = target + ": the server kept refusing our nonces";
    return false;
  }

  void setKid(std::string kid) { kid_ = std::move(kid); }

 private:
  bool freshNonce(std::string& error) {
    HttpsResponse r;
    if (!httpsRequest("HEAD", url("newNonce"), "", settings_.ca_file, r, error)) {
      return false;
    }
    if (r.nonce.empty()) {
      error = "newNonce: no Replay-Nonce";
      return false;
    }
    nonce_ = r.nonce;
    return true;
  }

  const AcmeSettings& settings_;
  EVP_PKEY* account_;
  json directory_;
  std::string nonce_;
  std::string kid_;
};

// POST-as-GET `target` until its status leaves `pending`/`processing` (bounded); the final object.
bool pollUntilDone(AcmeSession& session, const std::string& target, json& object, std::string& error,
                   const std::atomic<bool>* stop) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kPollSeconds);
  for (int i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
    if (stop != nullptr && stop->load()) {
      error = "stopping";
      return false;
    }
    HttpsResponse r;
    if (!session.post(target, "", r, error)) {
      return false;
    }
    object = json::parse(r.body, nullptr, false);
    std::string status = object.is_object() ? object.value("status", "") : "";
    if (status != "pending" && status != "processing") {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(200 * (i + 1), 2000)));
  }
  error = target + ": still pending after " + std::to_string(kPollSeconds) + " s";
  return false;
}

std::string problemOf(const json& object) {
  if (object.contains("error") && object["error"].is_object()) {
    return object["error"].value("detail", object["error"].value("type", ""));
  }
  if (object.contains("challenges")) {
    for (const json& c : object["challenges"]) {
      if (c.contains("error") && c["error"].is_object()) {
        return c["error"].value("detail", "");
      }
    }
  }
  return object.value("status", "unknown status");
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void ChallengeStore::put(const std::string& token, const std::string& key_authorization) {
  std::lock_guard lock(mutex_);
  answers_[token] = key_authorization;
}

void ChallengeStore::erase(const std::string& token) {
  std::lock_guard lock(mutex_);
  answers_.erase(token);
}

std::optional<std::string> ChallengeStore::find(std::string_view token) const {
  std::lock_guard lock(mutex_);
  auto it = answers_.find(token);
  if (it == answers_.end()) {
    return std::nullopt;
  }
  return it->second;
}

void ChallengeStore::putTlsAlpn(const std::string& domain, TlsContext context) {
  std::lock_guard lock(mutex_);
  tls_alpn_[domain] = std::move(context);
}

void ChallengeStore::eraseTlsAlpn(const std::string& domain) {
  std::lock_guard lock(mutex_);
  tls_alpn_.erase(domain);
}

ChallengeStore::TlsContext ChallengeStore::findTlsAlpn(std::string_view domain) const {
  std::lock_guard lock(mutex_);
  auto it = tls_alpn_.find(domain);
  return it == tls_alpn_.end() ? nullptr : it->second;
}

namespace {

int selectAcmeTls(SSL*, const unsigned char** out, unsigned char* out_len, const unsigned char* in,
                  unsigned int in_len, void*) {
  static constexpr unsigned char kOnly[] = {10, 'a', 'c', 'm', 'e', '-', 't', 'l', 's', '/', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, out_len, kOnly, sizeof kOnly, in, in_len) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

ChallengeStore::TlsContext tlsAlpnContext(const std::string& domain, const std::string& key_authorization,
                                          std::string& error) {
  Key key(EVP_EC_gen("P-256"));
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  if (!key || !cert) {
    error = "TLS-ALPN-01 certificate: " + lastSslError();
    return nullptr;
  }
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn(BN_bin2bn(serial, sizeof serial, nullptr), BN_free);
  X509_set_version(cert.get(), 2);
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 7 * 86400);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(domain.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  X509_set_pubkey(cert.get(), key.get());
  bool ok = true;
  std::string san = "DNS:" + domain;
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str());
  ok = ext != nullptr && X509_add_ext(cert.get(), ext, -1) == 1;
  X509_EXTENSION_free(ext);
  // id-pe-acmeIdentifier (RFC 8737 §6.1), critical: an OCTET STRING holding the SHA-256 of the
  // key authorization, itself DER inside the extension's value.
  std::string digest = sha256(key_authorization);
  std::unique_ptr<ASN1_OCTET_STRING, decltype(&ASN1_OCTET_STRING_free)> inner(ASN1_OCTET_STRING_new(),
                                                                              ASN1_OCTET_STRING_free);
  std::unique_ptr<ASN1_OCTET_STRING, decltype(&ASN1_OCTET_STRING_free)> value(ASN1_OCTET_STRING_new(),
                                                                              ASN1_OCTET_STRING_free);
  std::unique_ptr<ASN1_OBJECT, decltype(&ASN1_OBJECT_free)> oid(OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1),
                                                                ASN1_OBJECT_free);
  unsigned char* der = nullptr;
  int der_len = -1;
  if (ok && inner && value && oid &&
      ASN1_OCTET_STRING_set(inner.get(), reinterpret_cast<const unsigned char*>(digest.data()),
                            static_cast<int>(digest.size())) == 1) {
    der_len = i2d_ASN1_OCTET_STRING(inner.get(), &der);
  }
  ok = der_len > 0 && ASN1_OCTET_STRING_set(value.get(), der, der_len) == 1;
  OPENSSL_free(der);
  if (ok) {
    X509_EXTENSION* acme = X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), 1, value.get());
    ok = acme != nullptr && X509_add_ext(cert.get(), acme, -1) == 1;
    X509_EXTENSION_free(acme);
  }
  ok = ok && X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  ChallengeStore::TlsContext ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  ok = ok && ctx && SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) == 1 &&
       SSL_CTX_use_certificate(ctx.get(), cert.get()) == 1 &&
       SSL_CTX_use_PrivateKey(ctx.get(), key.get()) == 1;
  if (!ok) {
    error = "TLS-ALPN-01 certificate for " + domain + ": " + lastSslError();
    return nullptr;
  }
  // A validation handshake only: no tickets, nothing to resume.
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_num_tickets(ctx.get(), 0);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_alpn_select_cb(ctx.get(), selectAcmeTls, nullptr);
  return ctx;
}

namespace {
bool obtainOnce(const AcmeSettings& settings, ChallengeStore& challenges, std::string& error,
                const std::atomic<bool>* stop);
}  // namespace

bool obtainCertificate(const AcmeSettings& settings, ChallengeStore& challenges, std::string& error,
                       const std::atomic<bool>* stop) {
  // Whatever the CA sends, a JSON document of the wrong shape is a failed issuance, not a crash.
  try {
    return obtainOnce(settings, challenges, error, stop);
  } catch (const json::exception& e) {
    error = std::string("unexpected answer from the ACME server: ") + e.what();
    return false;
  }
}

namespace {
bool obtainOnce(const AcmeSettings& settings, ChallengeStore& challenges, std::string& error,
                const std::atomic<bool>* stop) {
  std::error_code ec;
  std::filesystem::create_directories(settings.dir, ec);
  ::chmod(settings.dir.c_str(), 0700);
  Key account = accountKey(settings.dir / "account.key", error);
  if (!account) {
    return false;
  }
  AcmeSession session(settings, account.get());
  if (!session.start(error)) {
    return false;
  }
  // The account: created, or found again by its key (200 with its URL).
  json account_request = {{"termsOfServiceAgreed", true}};
  if (!settings.email.empty()) {
    account_request["contact"] = json::array({"mailto:" + settings.email});
  }
  HttpsResponse r;
  if (!session.post(session.url("newAccount"), account_request.dump(), r, error)) {
    return false;
  }
  if (r.location.empty()) {
    error = "newAccount: no account URL";
    return false;
  }
  session.setKid(r.location);

  json identifiers = json::array();
  for (const std::string& d : settings.domains) {
    identifiers.push_back({{"type", "dns"}, {"value", d}});
  }
  if (!session.post(session.url("newOrder"), json{{"identifiers", identifiers}}.dump(), r, error)) {
    return false;
  }
  std::string order_url = r.location;
  json order = json::parse(r.body, nullptr, false);
  if (!order.is_object() || !order.contains("authorizations") || !order.contains("finalize")) {
    error = "newOrder: not an order";
    return false;
  }
  std::string thumbprint = base64url(sha256(jwkOf(account.get())));

  // A challenge of the chosen type for every authorization still pending: the answer goes in
  // the store first.
  const char* type = settings.challenge == AcmeChallenge::TlsAlpn01 ? "tls-alpn-01" : "http-01";
  std::vector<std::string> tokens;
  std::vector<std::string> alpn_names;
  bool ok = true;
  for (const json& authz_url : order["authorizations"]) {
    if (!session.post(authz_url.get<std::string>(), "", r, error)) {
      ok = false;
      break;
    }
    json authz = json::parse(r.body, nullptr, false);
    if (!authz.is_object()) {
      error = "authorization " + authz_url.get<std::string>() + ": not a JSON object (" +
              std::to_string(r.status) + ", " + std::to_string(r.body.size()) + " bytes)";
      ok = false;
      break;
    }
    if (authz.value("status", "") == "valid") {
      continue;
    }
    const json* chosen = nullptr;
    if (authz.contains("challenges") && authz["challenges"].is_array()) {
      for (const json& c : authz["challenges"]) {
        if (c.is_object() && c.value("type", "") == type) {
          chosen = &c;
        }
      }
    }
    std::string name = authz.contains("identifier") && authz["identifier"].is_object()
                           ? authz["identifier"].value("value", "?")
                           : "?";
    if (chosen == nullptr) {
      error = fmt::format("no {} challenge offered for {}", type, name);
      ok = false;
      break;
    }
    std::string token = chosen->value("token", "");
    if (settings.challenge == AcmeChallenge::TlsAlpn01) {
      ChallengeStore::TlsContext answer = tlsAlpnContext(name, token + "." + thumbprint, error);
      if (!answer) {
        ok = false;
        break;
      }
      challenges.putTlsAlpn(name, std::move(answer));
      alpn_names.push_back(name);
    } else {
      challenges.put(token, token + "." + thumbprint);
      tokens.push_back(token);
    }
    json done;
    if (!session.post(chosen->value("url", ""), "{}", r, error) ||
        !pollUntilDone(session, authz_url.get<std::string>(), done, error, stop)) {
      ok = false;
      break;
    }
    if (done.value("status", "") != "valid") {
      error = "authorization for " + name + ": " + problemOf(done);
      ok = false;
      break;
    }
  }
  for (const std::string& t : tokens) {
    challenges.erase(t);
  }
  for (const std::string& n : alpn_names) {
    challenges.eraseTlsAlpn(n);
  }
  if (!ok) {
    return false;
  }

  // The certificate's key is new each time; the CSR names every domain.
  Key cert_key(EVP_EC_gen("P-256"));
  std::string csr = cert_key ? csrDer(cert_key.get(), settings.domains) : std::string();
  if (csr.empty()) {
    error = "making the CSR: " + lastSslError();
    return false;
  }
  if (!session.post(order["finalize"].get<std::string>(), json{{"csr", base64url(csr)}}.dump(), r, error)) {
    return false;
  }
  json final_order;
  if (!pollUntilDone(session, order_url, final_order, error, stop)) {
    return false;
  }
  if (final_order.value("status", "") != "valid" || !final_order.contains("certificate")) {
    error = "order: " + problemOf(final_order);
    return false;
  }
  if (!session.post(final_order["certificate"].get<std::string>(), "", r, error)) {
    return false;
  }
  if (r.body.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    error = "certificate download: not a PEM chain";
    return false;
  }
  // The key first: a reader that sees the new certificate finds its key in place.
  return writeWhole(settings.dir / "key.pem", keyPem(cert_key.get()), 0600, error) &&
         writeWhole(settings.dir / "cert.pem", r.body, 0644, error);
}
}  // namespace

std::optional<long> secondsUntilRenewal(const std::filesystem::path& cert_path) {
  FILE* f = std::fopen(cert_path.c_str(), "r");
  if (f == nullptr) {
    return std::nullopt;
  }
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (cert == nullptr) {
    ERR_clear_error();
    return std::nullopt;
  }
  int days = 0, secs = 0;
  int life_days = 0, life_secs = 0;
  bool ok = ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(cert)) == 1 &&
            ASN1_TIME_diff(&life_days, &life_secs, X509_get0_notBefore(cert), X509_get0_notAfter(cert)) == 1;
  X509_free(cert);
  if (!ok) {
    return std::nullopt;
  }
  long remaining = days * 86400L + secs;
  long lifetime = life_days * 86400L + life_secs;
  return remaining - lifetime / 3;  // renew with a third of the lifetime left
}

// ---------------------------------------------------------------------------------------------

AcmeRenewer::AcmeRenewer(AcmeSettings settings, ChallengeStore& challenges)
    : settings_(std::move(settings)), challenges_(challenges) {}

AcmeRenewer::~AcmeRenewer() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void AcmeRenewer::start() {
  thread_ = std::thread([this] { run(); });
}

void AcmeRenewer::wake() {
  {
    std::lock_guard lock(mutex_);
    recheck_ = true;
  }
  wake_.notify_all();
}

bool AcmeRenewer::sleepFor(long seconds) {
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, std::chrono::seconds(std::max(seconds, 0L)), [this] { return stop_ || recheck_; });
  recheck_ = false;
  return !stop_;
}

void AcmeRenewer::run() {
  std::error_code ec;
  std::filesystem::create_directories(settings_.dir, ec);
  // One node of a state_dir obtains and renews; the others use its files, and take over when it
  // goes (the kernel drops the lock with its process).
  int lock_fd = ::open((settings_.dir / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  long backoff = 10;
  bool holding = false;
  while (true) {
    if (!holding) {
      holding = lock_fd >= 0 && ::flock(lock_fd, LOCK_EX | LOCK_NB) == 0;
      if (!holding) {
        if (!sleepFor(30)) {
          break;
        }
        continue;
      }
    }
    std::optional<long> wait = secondsUntilRenewal(certFile());
    if (wait && *wait > 0) {
      log::info("acme: certificate for {} valid; renewal in {} s", settings_.domains.front(), *wait);
      if (!sleepFor(std::min(*wait, 24L * 3600))) {
        break;
      }
      continue;
    }
    log::info("acme: {} a certificate for {} from {}", wait ? "renewing" : "obtaining",
              fmt::join(settings_.domains, ", "), settings_.directory);
    std::string error;
    if (obtainCertificate(settings_, challenges_, error, &stopping_)) {
      issued_.fetch_add(1, std::memory_order_relaxed);
      backoff = 10;
      log::info("acme: certificate for {} written to {}", settings_.domains.front(), certFile().string());
      continue;
    }
    failures_.fetch_add(1, std::memory_order_relaxed);
    log::warn("acme: {}; retrying in {} s{}", error, backoff,
              wait ? " (the current certificate keeps serving)" : "");
    if (!sleepFor(backoff)) {
      break;
    }
    backoff = std::min(backoff * 2, 3600L);
  }
  if (lock_fd >= 0) {
    ::close(lock_fd);
  }
}

}  // namespace fulcrum::tls
