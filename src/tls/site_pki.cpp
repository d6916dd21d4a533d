#include "tls/site_pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <set>

#include "core/log.h"
#include "tls/openssl_error.h"
#include "tls/x509_ext.h"

namespace fulcrum::tls {

namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(FILE* p) const { std::fclose(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Free>;
using Cert = std::unique_ptr<X509, Free>;
using File = std::unique_ptr<FILE, Free>;

using Clock = std::chrono::system_clock;

core::Result<Cert> readCert(const std::filesystem::path& path) {
  File f(std::fopen(path.c_str(), "r"));
  if (!f) {
    return core::Result<Cert>::failure(path.string() + ": " + std::strerror(errno));
  }
  Cert cert(PEM_read_X509(f.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return core::Result<Cert>::failure(path.string() + ": not a PEM certificate (" + lastSslError() + ")");
  }
  return core::Result<Cert>::success(std::move(cert));
}

core::Result<Key> readKey(const std::filesystem::path& path) {
  File f(std::fopen(path.c_str(), "r"));
  if (!f) {
    return core::Result<Key>::failure(path.string() + ": " + std::strerror(errno));
  }
  Key key(PEM_read_PrivateKey(f.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return core::Result<Key>::failure(path.string() + ": not a PEM private key (" + lastSslError() + ")");
  }
  return core::Result<Key>::success(std::move(key));
}

// Written beside the target and renamed over it: a role reading the file sees the old content
// or the new, never half of one, and a key file has mode 0600 before a byte of the key is in it.
core::Status writeAtomically(const std::filesystem::path& path, mode_t mode,
                             const std::function<bool(FILE*)>& write) {
  const std::filesystem::path temp = path.string() + ".new";
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    return core::Status::failure(temp.string() + ": " + std::strerror(errno));
  }
  ::fchmod(fd, mode);  // an older temp file may have had another mode
  File f(::fdopen(fd, "w"));
  if (!f) {
    ::close(fd);
    return core::Status::failure(temp.string() + ": " + std::strerror(errno));
  }
  bool ok = write(f.get());
  ok = std::fflush(f.get()) == 0 && ok;
  ok = ::fsync(::fileno(f.get())) == 0 && ok;
  f.reset();
  if (!ok || std::rename(temp.c_str(), path.c_str()) != 0) {
    std::string reason = ok ? std::strerror(errno) : "writing failed (" + lastSslError() + ")";
    ::unlink(temp.c_str());
    return core::Status::failure(path.string() + ": " + reason);
  }
  return core::Status::success();
}

core::Status writeKey(const std::filesystem::path& path, EVP_PKEY* key) {
  return writeAtomically(path, 0600, [key](FILE* f) {
    return PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
}

core::Status writeCerts(const std::filesystem::path& path, const std::vector<X509*>& chain) {
  return writeAtomically(path, 0644, [&chain](FILE* f) {
    return std::all_of(chain.begin(), chain.end(), [f](X509* c) { return PEM_write_X509(f, c) == 1; });
  });
}

bool addName(X509_NAME* name, const char* field, const std::string& value) {
  return X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value.c_str()),
                                    -1, -1, 0) == 1;
}

// A random positive serial of 127 bits: unique without a register of issued serials.
bool setRandomSerial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return false;
  }
  bytes[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(bytes, sizeof bytes, nullptr);
  bool ok = bn != nullptr && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != nullptr;
  BN_free(bn);
  return ok;
}

bool setValidity(X509* cert, Clock::time_point now, Clock::duration lifetime) {
  // An hour back: a peer whose clock runs a little behind still accepts a fresh certificate.
  const time_t from = Clock::to_time_t(now) - 3600;
  const time_t until = Clock::to_time_t(now + lifetime);
  return ASN1_TIME_set(X509_getm_notBefore(cert), from) != nullptr &&
         ASN1_TIME_set(X509_getm_notAfter(cert), until) != nullptr;
}

std::optional<time_t> timeOf(const ASN1_TIME* t) {
  struct tm parts {};
  if (ASN1_TIME_to_tm(t, &parts) != 1) {
    return std::nullopt;
  }
  return timegm(&parts);
}

std::string caSubject(const config::Site& site) {
  return "Fulcrum internal CA of site " + site.site.name;
}

core::Result<std::pair<Cert, Key>> makeCa(const config::Site& site, Clock::time_point now) {
  using R = core::Result<std::pair<Cert, Key>>;
  Key key(EVP_EC_gen("P-256"));
  Cert cert(X509_new());
  bool ok = key && cert && X509_set_version(cert.get(), X509_VERSION_3) == 1 && setRandomSerial(cert.get()) &&
            setValidity(cert.get(), now, kCaLifetime) && X509_set_pubkey(cert.get(), key.get()) == 1;
  if (ok) {
    X509_NAME* subject = X509_get_subject_name(cert.get());
    ok = addName(subject, "O", "Fulcrum") && addName(subject, "CN", caSubject(site)) &&
         X509_set_issuer_name(cert.get(), subject) == 1 &&
         // Signs node certificates only: no intermediate below it.
         addExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
         addExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign") &&
         addExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash") &&
         X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  }
  if (!ok) {
    return R::failure("making the site CA: " + lastSslError());
  }
  return R::success({std::move(cert), std::move(key)});
}

std::string sanText(const std::vector<std::string>& hosts) {
  std::string san;
  for (const std::string& host : hosts) {
    san += (san.empty() ? "" : ",") + std::string(core::IpAddress::parse(host) ? "IP:" : "DNS:") + host;
  }
  return san;
}

core::Result<std::pair<Cert, Key>> issue(const config::Site& site, X509* ca, EVP_PKEY* ca_key,
                                         const Identity& who, Clock::time_point now) {
  using R = core::Result<std::pair<Cert, Key>>;
  Key key(EVP_EC_gen("P-256"));
  Cert cert(X509_new());
  bool ok = key && cert && X509_set_version(cert.get(), X509_VERSION_3) == 1 && setRandomSerial(cert.get()) &&
            setValidity(cert.get(), now, kNodeLifetime) && X509_set_pubkey(cert.get(), key.get()) == 1 &&
            X509_set_issuer_name(cert.get(), X509_get_subject_name(ca)) == 1;
  if (ok) {
    X509_NAME* subject = X509_get_subject_name(cert.get());
    ok = addName(subject, "O", "Fulcrum site " + site.site.name) && addName(subject, "CN", who.name) &&
         addExtension(cert.get(), ca, NID_basic_constraints, "critical,CA:FALSE") &&
         addExtension(cert.get(), ca, NID_key_usage, "critical,digitalSignature") &&
         addExtension(cert.get(), ca, NID_ext_key_usage, "serverAuth,clientAuth") &&
         addExtension(cert.get(), ca, NID_subject_key_identifier, "hash") &&
         addExtension(cert.get(), ca, NID_authority_key_identifier, "keyid") &&
         (who.hosts.empty() || addExtension(cert.get(), ca, NID_subject_alt_name, sanText(who.hosts))) &&
         X509_sign(cert.get(), ca_key, EVP_sha256()) > 0;
  }
  if (!ok) {
    return R::failure("issuing the certificate of " + who.name + ": " + lastSslError());
  }
  return R::success({std::move(cert), std::move(key)});
}

// The SANs of `cert`, in the same text forms as Identity::hosts.
std::set<std::string> sansOf(X509* cert) {
  std::set<std::string> out;
  std::unique_ptr<GENERAL_NAMES, Free> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) {
    return out;
  }
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type == GEN_DNS) {
      const ASN1_IA5STRING* dns = name->d.dNSName;
      out.emplace(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)), ASN1_STRING_length(dns));
    } else if (name->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = name->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = "";
      int family = ASN1_STRING_length(ip) == 4 ? AF_INET : AF_INET6;
      if (ASN1_STRING_length(ip) == 4 || ASN1_STRING_length(ip) == 16) {
        inet_ntop(family, ASN1_STRING_get0_data(ip), text, sizeof text);
        out.emplace(core::IpAddress::parse(text) ? core::IpAddress::parse(text)->toString() : text);
      }
    }
  }
  return out;
}

// "" when `cert` (with `key`) is a good certificate of `ca` at `now`; else why not.
std::string verify(X509* cert, EVP_PKEY* key, X509* ca, Clock::time_point now) {
  std::unique_ptr<X509_STORE, Free> store(X509_STORE_new());
  std::unique_ptr<X509_STORE_CTX, Free> ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert, nullptr) != 1) {
    return "checking it: " + lastSslError();
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, Clock::to_time_t(now));
  // The user's CA may be an intermediate: what matters here is that it signed this certificate.
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
  if (X509_verify_cert(ctx.get()) != 1) {
    ERR_clear_error();
    return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
  }
  if (key != nullptr && X509_check_private_key(cert, key) != 1) {
    ERR_clear_error();
    return "its key file holds another key";
  }
  return "";
}

bool selfSigned(X509* cert) {
  return X509_check_issued(cert, cert) == X509_V_OK;
}

std::string addHostOf(const core::SocketAddress& address, std::vector<std::string>& hosts) {
  const core::IpAddress ip = address.ip();
  // A wildcard listen address names no host a peer could dial.
  if (std::all_of(ip.bytes.begin(), ip.bytes.begin() + static_cast<long>(ip.length()), [](uint8_t b) { return b == 0; })) {
    return "";
  }
  std::string text = ip.toString();
  if (std::find(hosts.begin(), hosts.end(), text) == hosts.end()) {
    hosts.push_back(text);
  }
  return text;
}

}  // namespace

SitePaths sitePaths(const config::Site& site) {
  SitePaths paths;
  paths.dir = site.site.state_dir / "tls";
  const bool own = !site.security.ca_cert.empty();
  paths.ca_cert = own ? site.security.ca_cert : paths.dir / "ca.crt";
  paths.ca_key = own ? site.security.ca_key : paths.dir / "ca.key";
  return paths;
}

std::vector<Identity> siteIdentities(const config::Site& site) {
  std::vector<Identity> out;
  for (const config::LbNode& node : site.lb.nodes) {
    Identity& who = out.emplace_back(Identity{node.name, {}});
    addHostOf(node.http, who.hosts);
    for (const auto* address : {&node.https, &node.stats, &node.db_write, &node.db_read}) {
      if (*address) {
        addHostOf(**address, who.hosts);
      }
    }
    if (site.lb.vip) {
      addHostOf(core::SocketAddress(site.lb.vip->ip, 0), who.hosts);
    }
  }
  for (const config::WebNode& node : site.web.nodes) {
    Identity& who = out.emplace_back(Identity{node.name, {}});
    addHostOf(node.listen, who.hosts);
  }
  for (const config::DbNode& node : site.db.nodes) {
    Identity& who = out.emplace_back(Identity{node.name, {}});
    addHostOf(node.pg, who.hosts);
    addHostOf(node.agent, who.hosts);
  }
  const auto& endpoints = site.etcd.endpoints;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    Identity& who = out.emplace_back(Identity{endpoints.size() == 1 ? "etcd" : "etcd-" + std::to_string(i + 1), {}});
    addHostOf(endpoints[i], who.hosts);
  }
  out.push_back(Identity{"operator", {}});
  return out;
}

core::Result<IssueReport> ensureSiteCertificates(const config::Site& site, Clock::time_point now) {
  using R = core::Result<IssueReport>;
  const SitePaths paths = sitePaths(site);
  IssueReport report;
  std::error_code ec;
  std::filesystem::create_directories(paths.dir, ec);
  if (ec) {
    return R::failure(paths.dir.string() + ": " + ec.message());
  }
  ::chmod(paths.dir.c_str(), 0755);  // the certificates are public; each key file is 0600

  Cert ca;
  Key ca_key;
  const bool own = !site.security.ca_cert.empty();
  if (!own && !std::filesystem::exists(paths.ca_cert) && !std::filesystem::exists(paths.ca_key)) {
    auto made = makeCa(site, now);
    if (!made.ok) {
      return R::failure(made.error);
    }
    // The key first: a certificate without its key would be a CA nobody can issue from.
    if (auto s = writeKey(paths.ca_key, made.value.second.get()); !s.ok) {
      return R::failure(s.error);
    }
    if (auto s = writeCerts(paths.ca_cert, {made.value.first.get()}); !s.ok) {
      return R::failure(s.error);
    }
    ca = std::move(made.value.first);
    ca_key = std::move(made.value.second);
    report.ca_created = true;
  } else {
    auto cert = readCert(paths.ca_cert);
    if (!cert.ok) {
      return R::failure("the site CA: " + cert.error);
    }
    auto key = readKey(paths.ca_key);
    if (!key.ok) {
      return R::failure("the site CA: " + key.error);
    }
    if (X509_check_private_key(cert.value.get(), key.value.get()) != 1) {
      ERR_clear_error();
      return R::failure("the site CA: " + paths.ca_key.string() + " is not the key of " + paths.ca_cert.string());
    }
    if (X509_check_ca(cert.value.get()) == 0) {
      return R::failure("the site CA: " + paths.ca_cert.string() + " is not a CA certificate (basicConstraints)");
    }
    ca = std::move(cert.value);
    ca_key = std::move(key.value);
  }
  const time_t ca_end = timeOf(X509_get0_notAfter(ca.get())).value_or(0);
  if (ca_end <= Clock::to_time_t(now)) {
    return R::failure("the site CA " + paths.ca_cert.string() + " has expired: replace it (or remove ca.crt and "
                      "ca.key to have a new one made, then every node needs its new certificate)");
  }

  const std::vector<Identity> identities = siteIdentities(site);
  std::set<std::string> names;
  for (const Identity& who : identities) {
    if (!names.insert(who.name).second) {
      return R::failure("two holders of the name " + who.name + " (a node may not be named \"operator\" or like an "
                        "etcd member): rename the node");
    }
  }
  for (const Identity& who : identities) {
    const std::filesystem::path cert_path = paths.nodeCert(who.name);
    const std::filesystem::path key_path = paths.nodeKey(who.name);
    bool renewal = false;
    bool needed = true;
    if (std::filesystem::exists(cert_path) && std::filesystem::exists(key_path)) {
      auto cert = readCert(cert_path);
      auto key = readKey(key_path);
      if (cert.ok && key.ok && verify(cert.value.get(), key.value.get(), ca.get(), now).empty()) {
        const bool same_hosts = sansOf(cert.value.get()) == std::set<std::string>(who.hosts.begin(), who.hosts.end());
        const time_t end = timeOf(X509_get0_notAfter(cert.value.get())).value_or(0);
        const bool fresh = end > Clock::to_time_t(now + kRenewBefore);
        needed = !same_hosts || !fresh;
        renewal = same_hosts && !fresh;
      }
    }
    if (!needed) {
      continue;
    }
    auto made = issue(site, ca.get(), ca_key.get(), who, now);
    if (!made.ok) {
      return R::failure(made.error);
    }
    if (auto s = writeKey(key_path, made.value.second.get()); !s.ok) {
      return R::failure(s.error);
    }
    // A CA that is not self-signed (the user's intermediate) travels with the certificate.
    std::vector<X509*> chain{made.value.first.get()};
    if (!selfSigned(ca.get())) {
      chain.push_back(ca.get());
    }
    if (auto s = writeCerts(cert_path, chain); !s.ok) {
      return R::failure(s.error);
    }
    (renewal ? report.renewed : report.issued).push_back(who.name);
  }
  return R::success(std::move(report));
}

core::Result<NodeTls> nodeTls(const config::Site& site, std::string_view node, Clock::time_point now) {
  using R = core::Result<NodeTls>;
  const SitePaths paths = sitePaths(site);
  NodeTls out{paths.ca_cert, paths.nodeCert(node), paths.nodeKey(node)};
  const std::string fix = " (internal_tls: `fulcrum certs " + site.display_path +
                          "` makes the site CA and every node's certificate in " + paths.dir.string() +
                          "; copy the CA certificate and this node's pair to its host)";
  auto ca = readCert(out.ca_cert);
  if (!ca.ok) {
    return R::failure("the site CA: " + ca.error + fix);
  }
  auto cert = readCert(out.cert);
  if (!cert.ok) {
    return R::failure("the certificate of " + std::string(node) + ": " + cert.error + fix);
  }
  auto key = readKey(out.key);
  if (!key.ok) {
    return R::failure("the key of " + std::string(node) + ": " + key.error + fix);
  }
  if (std::string why = verify(cert.value.get(), key.value.get(), ca.value.get(), now); !why.empty()) {
    return R::failure("the certificate of " + std::string(node) + " (" + out.cert.string() + "): " + why + fix);
  }
  return R::success(std::move(out));
}

NodeTlsWatch::NodeTlsWatch(const config::Site& site, std::string node)
    : site_(site), node_(std::move(node)), taken_(stamp()) {}

std::string NodeTlsWatch::stamp() const {
  const SitePaths paths = sitePaths(site_);
  std::string out;
  for (const std::filesystem::path& file : {paths.ca_cert, paths.nodeCert(node_), paths.nodeKey(node_)}) {
    struct stat st{};
    if (::stat(file.c_str(), &st) != 0) {
      out += "-;";
      continue;
    }
    out += std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) +
           "." + std::to_string(st.st_mtim.tv_nsec) + ";";
  }
  return out;
}

std::optional<NodeTls> NodeTlsWatch::changed() {
  const std::string now = stamp();
  if (now == taken_) {
    return std::nullopt;
  }
  core::Result<NodeTls> files = nodeTls(site_, node_);
  if (files.ok) {
    taken_ = now;
    failed_.clear();
    warned_ = false;
    return std::move(files.value);
  }
  if (now != failed_) {
    failed_ = now;  // maybe a renewal between its key and its certificate: look again
    warned_ = false;
  } else if (!warned_) {
    warned_ = true;
    log::warn("internal_tls: new certificate files for {} not taken: {}; the loaded ones keep serving", node_,
              files.error);
  }
  return std::nullopt;
}

}  // namespace fulcrum::tls
