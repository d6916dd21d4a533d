#pragma once
// A CA and certificates made in a temporary directory for the TLS tests: the shapes the site
// PKI issues (ECDSA P-256, IP SANs, serverAuth + clientAuth), with the knobs the refusal cases
// need (another CA, another address, a validity in the past).
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace fulcrum::tls::testing {

struct Pem {
  std::filesystem::path cert;
  std::filesystem::path key;
};

class TestCa {
 public:
  TestCa(const std::filesystem::path& dir, const std::string& name) : dir_(dir), key_(EVP_EC_gen("P-256")) {
    std::filesystem::create_directories(dir_);
    cert_ = X509_new();
    build(cert_, key_, name, nullptr, -3600, 3650L * 86400);
    add(cert_, cert_, NID_basic_constraints, "critical,CA:TRUE");
    add(cert_, cert_, NID_key_usage, "critical,keyCertSign,cRLSign");
    X509_sign(cert_, key_, EVP_sha256());
    files_ = write(name, cert_, key_);
  }
  ~TestCa() {
    X509_free(cert_);
    EVP_PKEY_free(key_);
  }
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  const Pem& files() const { return files_; }

  // A node certificate for `ips`, valid from now + from_s to now + to_s (seconds).
  Pem issue(const std::string& name, const std::vector<std::string>& ips, long from_s = -3600,
            long to_s = 90L * 86400) {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    build(cert, key, name, cert_, from_s, to_s);
    std::string san;
    for (const std::string& ip : ips) {
      san += (san.empty() ? "IP:" : ",IP:") + ip;
    }
    add(cert_, cert, NID_basic_constraints, "critical,CA:FALSE");
    add(cert_, cert, NID_key_usage, "critical,digitalSignature");
    add(cert_, cert, NID_ext_key_usage, "serverAuth,clientAuth");
    if (!san.empty()) {
      add(cert_, cert, NID_subject_alt_name, san);
    }
    X509_sign(cert, key_, EVP_sha256());
    Pem out = write(name, cert, key);
    X509_free(cert);
    EVP_PKEY_free(key);
    return out;
  }

 private:
  void build(X509* cert, EVP_PKEY* key, const std::string& cn, X509* issuer, long from_s, long to_s) {
    X509_set_version(cert, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), ++serial_);
    X509_gmtime_adj(X509_getm_notBefore(cert), from_s);
    X509_gmtime_adj(X509_getm_notAfter(cert), to_s);
    X509_set_pubkey(cert, key);
    X509_NAME* subject = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    X509_set_issuer_name(cert, issuer != nullptr ? X509_get_subject_name(issuer) : subject);
  }
  static void add(X509* issuer, X509* cert, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  Pem write(const std::string& name, X509* cert, EVP_PKEY* key) {
    Pem out{dir_ / (name + ".crt"), dir_ / (name + ".key")};
    FILE* c = std::fopen(out.cert.c_str(), "w");
    PEM_write_X509(c, cert);
    std::fclose(c);
    FILE* k = std::fopen(out.key.c_str(), "w");
    PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(k);
    return out;
  }

  std::filesystem::path dir_;
  EVP_PKEY* key_;
  X509* cert_ = nullptr;
  Pem files_;
  long serial_ = 0;
};

}  // namespace fulcrum::tls::testing
