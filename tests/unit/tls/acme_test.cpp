// The TLS-ALPN-01 answer (RFC 8737) checked as a CA checks it: a handshake offering acme-tls/1
// gets that protocol and a certificate for the one name, with a critical acmeIdentifier holding
// the SHA-256 of the key authorization.
#include "tls/acme.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <string>

namespace fulcrum::tls {
namespace {

std::string sha256(std::string_view data) {
  unsigned char digest[32];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), len);
}

// One in-memory handshake: `server` against a client offering `alpn` for `name`.
struct Handshake {
  SSL* client = nullptr;
  SSL* server = nullptr;
  bool ok = false;
  ~Handshake() {
    SSL_free(client);
    SSL_free(server);
  }
};

void handshake(SSL_CTX* server_ctx, const std::string& name, const std::string& alpn, Handshake& h) {
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  h.client = SSL_new(client_ctx);
  SSL_CTX_free(client_ctx);
  h.server = SSL_new(server_ctx);
  BIO *a = nullptr, *b = nullptr;
  BIO_new_bio_pair(&a, 0, &b, 0);
  SSL_set_bio(h.client, a, a);
  SSL_set_bio(h.server, b, b);
  SSL_set_tlsext_host_name(h.client, name.c_str());
  std::string wire(1, static_cast<char>(alpn.size()));
  wire += alpn;
  SSL_set_alpn_protos(h.client, reinterpret_cast<const unsigned char*>(wire.data()),
                      static_cast<unsigned>(wire.size()));
  SSL_set_connect_state(h.client);
  SSL_set_accept_state(h.server);
  for (int i = 0; i < 20; ++i) {
    int c = SSL_do_handshake(h.client);
    int s = SSL_do_handshake(h.server);
    if (c == 1 && s == 1) {
      h.ok = true;
      return;
    }
    if ((c <= 0 && SSL_get_error(h.client, c) != SSL_ERROR_WANT_READ) ||
        (s <= 0 && SSL_get_error(h.server, s) != SSL_ERROR_WANT_READ)) {
      return;
    }
  }
}

TEST(TlsAlpn01, AnswersAsRfc8737Asks) {
  std::string error;
  ChallengeStore::TlsContext ctx = tlsAlpnContext("www.acme.test", "token.thumbprint", error);
  ASSERT_TRUE(ctx) << error;
  Handshake h;
  handshake(ctx.get(), "www.acme.test", "acme-tls/1", h);
  ASSERT_TRUE(h.ok);
  const unsigned char* proto = nullptr;
  unsigned proto_len = 0;
  SSL_get0_alpn_selected(h.client, &proto, &proto_len);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(proto), proto_len), "acme-tls/1");

  X509* cert = SSL_get0_peer_certificate(h.client);
  ASSERT_NE(cert, nullptr);
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  ASSERT_NE(names, nullptr);
  ASSERT_EQ(sk_GENERAL_NAME_num(names), 1);
  const GENERAL_NAME* only = sk_GENERAL_NAME_value(names, 0);
  ASSERT_EQ(only->type, GEN_DNS);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(only->d.dNSName)),
                        static_cast<size_t>(ASN1_STRING_length(only->d.dNSName))),
            "www.acme.test");
  GENERAL_NAMES_free(names);

  ASN1_OBJECT* oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
  int at = X509_get_ext_by_OBJ(cert, oid, -1);
  ASN1_OBJECT_free(oid);
  ASSERT_GE(at, 0);
  X509_EXTENSION* ext = X509_get_ext(cert, at);
  EXPECT_EQ(X509_EXTENSION_get_critical(ext), 1);
  // The value is the DER of an OCTET STRING holding the digest.
  const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(ext);
  const unsigned char* p = ASN1_STRING_get0_data(value);
  ASN1_OCTET_STRING* inner = d2i_ASN1_OCTET_STRING(nullptr, &p, ASN1_STRING_length(value));
  ASSERT_NE(inner, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(inner)),
                        static_cast<size_t>(ASN1_STRING_length(inner))),
            sha256("token.thumbprint"));
  ASN1_OCTET_STRING_free(inner);
}

TEST(TlsAlpn01, RefusesEveryOtherProtocol) {
  std::string error;
  ChallengeStore::TlsContext ctx = tlsAlpnContext("acme.test", "k", error);
  ASSERT_TRUE(ctx) << error;
  Handshake h;
  handshake(ctx.get(), "acme.test", "http/1.1", h);
  EXPECT_FALSE(h.ok);
}

TEST(ChallengeStore, HoldsValidationsUntilErased) {
  ChallengeStore store;
  std::string error;
  store.putTlsAlpn("acme.test", tlsAlpnContext("acme.test", "k", error));
  EXPECT_TRUE(store.findTlsAlpn("acme.test"));
  EXPECT_FALSE(store.findTlsAlpn("other.test"));
  store.eraseTlsAlpn("acme.test");
  EXPECT_FALSE(store.findTlsAlpn("acme.test"));
}

}  // namespace
}  // namespace fulcrum::tls
