#pragma once
// The site's own certificate authority for `[security] internal_tls`: one CA per site, one
// certificate per node, all in `<state_dir>/tls` unless the topology names another CA.
//
// A node's certificate is its identity on every internal link, as server and as client
// (extendedKeyUsage serverAuth + clientAuth): its subject CN is the node's name (what
// PostgreSQL's cert auth maps to a role, and what logs name), its SANs the hosts of every
// address the topology gives it (IP SANs for IP addresses), so a peer verifies it by the address
// it dialled. ECDSA P-256 throughout; keys are written 0600 before a byte of them exists.
//
// Who writes: only `fulcrum up`, `fulcrum lab up` and `fulcrum certs` make the CA and issue or
// renew certificates (ensureSiteCertificates). A role only loads its pair (nodeTls), so two
// roles starting at once never make two CAs, and a host without the CA key never makes one.
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "core/result.h"

namespace fulcrum::tls {

// Where the files are. With [security] ca_cert/ca_key the CA is the user's; else it is made in
// `dir` (ca.crt, ca.key).
struct SitePaths {
  std::filesystem::path dir;      // <state_dir>/tls
  std::filesystem::path ca_cert;  // PEM
  std::filesystem::path ca_key;   // PEM, 0600
  std::filesystem::path nodeCert(std::string_view node) const { return dir / (std::string(node) + ".crt"); }
  std::filesystem::path nodeKey(std::string_view node) const { return dir / (std::string(node) + ".key"); }
};
SitePaths sitePaths(const config::Site& site);

// A holder of a certificate: a node of the topology (lb, web, db, an etcd member named as
// `fulcrum etcd --node` names it: "etcd" alone, else "etcd-N" from 1 in endpoint order), or
// "operator", a client-only identity for `fulcrum status` and the operator's own tools (no SANs).
struct Identity {
  std::string name;
  std::vector<std::string> hosts;  // SANs: IP addresses and DNS names, de-duplicated, in order
};
std::vector<Identity> siteIdentities(const config::Site& site);

// Node certificates live this long and are renewed when less than kRenewBefore is left.
inline constexpr auto kNodeLifetime = std::chrono::hours(24 * 90);
inline constexpr auto kRenewBefore = std::chrono::hours(24 * 30);
inline constexpr auto kCaLifetime = std::chrono::hours(24 * 3650);

struct IssueReport {
  bool ca_created = false;
  std::vector<std::string> issued;   // identities given a first or replacement certificate
  std::vector<std::string> renewed;  // identities whose certificate was close to expiry
};

// Makes the CA if there is none (never over a configured one: its absence is an error), then
// gives every identity of the site a certificate unless it has one from this CA, for exactly its
// hosts, with more than kRenewBefore left. Idempotent; safe to run at every `fulcrum up`.
core::Result<IssueReport> ensureSiteCertificates(const config::Site& site,
                                                 std::chrono::system_clock::time_point now =
                                                     std::chrono::system_clock::now());

// What a role loads: the CA to verify peers with, and its own pair.
struct NodeTls {
  std::filesystem::path ca_cert;
  std::filesystem::path cert;
  std::filesystem::path key;
};
// The pair of `node`, checked: present, readable, signed by the site CA, matching its key, valid
// now. The error says what is wrong and how to fix it ("run `fulcrum certs SITE`").
core::Result<NodeTls> nodeTls(const config::Site& site, std::string_view node,
                              std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

// A running role's own files over time: `fulcrum up` renews certificates in place on a timer
// (and `fulcrum certs`, or the user's own CA tooling, may replace them) while the node runs.
// The role polls changed() on a timer and reloads its TLS contexts with what it returns.
class NodeTlsWatch {
 public:
  // How often a role looks (three stat() calls).
  static constexpr std::chrono::seconds kInterval{5};

  // Takes the files as they are now as the ones loaded at start.
  NodeTlsWatch(const config::Site& site, std::string node);
  // The files, checked by nodeTls(), when they changed since they were last taken. Files that
  // do not check (a pair caught half-written, a wrong key, a certificate of another CA) are
  // skipped and, still so at the next look, named in one warning: the loaded ones keep serving.
  std::optional<NodeTls> changed();
  const std::string& node() const { return node_; }

 private:
  std::string stamp() const;

  config::Site site_;
  std::string node_;
  std::string taken_;   // the stamp of the files in use
  std::string failed_;  // a stamp that did not check at the last look
  bool warned_ = false;
};

}  // namespace fulcrum::tls
