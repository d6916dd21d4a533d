#pragma once
// One X509v3 extension from its OpenSSL config text ("critical,CA:FALSE", "IP:10.0.0.1"), shared
// by the certificates Fulcrum makes (self-signed, the site CA and its nodes').
#include <openssl/x509v3.h>

#include <string>

namespace fulcrum::tls {

// `issuer` is the signing certificate (`cert` itself when self-signed): authorityKeyIdentifier
// reads it. False when OpenSSL refuses the text.
inline bool addExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) {
    return false;
  }
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

}  // namespace fulcrum::tls
