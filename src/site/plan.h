#pragma once
// What `fulcrum up` runs for a site, worked out from the topology alone (no processes, no
// sockets), so the start order, the arguments and the probes are unit-tested.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "core/address.h"

namespace fulcrum::site {

// Start order is the enum order; `up` stops them in reverse. Prometheus and Alertmanager
// ([monitoring]) come last: they watch the site, so they are stopped first and never alert on
// a shutdown.
enum class Role { Etcd = 0, Db = 1, Web = 2, Lb = 3, Monitoring = 4 };
inline constexpr Role kStartOrder[] = {Role::Etcd, Role::Db, Role::Web, Role::Lb, Role::Monitoring};
std::string_view roleName(Role role);

// How `up` knows a child is ready: an HTTP GET answered 2xx, or (empty path) a TCP connect.
struct Probe {
  core::SocketAddress address;
  std::string path;
  // https, verified against the site CA with the "operator" certificate ([security] internal_tls).
  bool tls = false;
  std::string url() const;  // "http://127.0.0.1:9001/healthz", or "tcp://127.0.0.1:8080"
};

struct ChildSpec {
  Role role = Role::Web;
  std::string name;               // node name; "etcd", "prometheus", "alertmanager" for those
  std::vector<std::string> argv;  // argv[0] is an absolute path
  Probe probe;
  std::filesystem::path log;  // stdout and stderr, appended
  // Time to answer the probe after the start, and from SIGTERM to SIGKILL.
  std::chrono::milliseconds start_timeout{30000};
  std::chrono::milliseconds stop_timeout{10000};
  // `fulcrum lab`: the network namespace (a name under /run/netns) the child runs in; "" = this one.
  std::string netns;
  // Run to completion (in the same namespace, into the same log) after the child exited when
  // it was not asked to: an lb with [lb.vip] releases the address its death left behind.
  std::vector<std::string> after_exit;
};

struct PlanOptions {
  std::string self_exe;          // this binary, for the lb/web/db children
  std::string etcd_exe;          // the etcd binary (when the site has a managed etcd)
  std::string prometheus_exe;    // Debian's prometheus (when the site has managed monitoring)
  std::string alertmanager_exe;  // and prometheus-alertmanager (unless alertmanager = "")
  std::vector<uint16_t> etcd_peer_ports;  // one per [etcd] endpoint (chooseEtcdPeerPorts)
  std::string log_format = "text";
  std::string log_level = "info";
};

// True when this site runs a local etcd under `up`.
bool hasManagedEtcd(const config::Site& site);

// True when this site runs Prometheus (and its Alertmanager) under `up`.
bool hasManagedMonitoring(const config::Site& site);

// The name of etcd endpoint `i` as a node: "etcd" for a single member, else "etcd-1", "etcd-2", ...
// A managed member's child, log (logs/NAME.log) and data dir (state_dir/NAME) have this name.
std::string etcdMemberName(const config::Site& site, size_t i);

// Every child, in start order (etcd members, db agents, web nodes, load balancers, monitoring).
std::vector<ChildSpec> planChildren(const config::Site& site, const PlanOptions& options);

// Every address a child of `up` listens on, with what listens there ("lb-01 http").
struct Listener {
  std::string what;
  core::SocketAddress address;
};
// `etcd_peer_ports` (one per endpoint, or empty) adds each member's peer listener.
std::vector<Listener> siteListeners(const config::Site& site, const std::vector<uint16_t>& etcd_peer_ports);

// The managed etcd cluster's token (`--initial-cluster-token`), derived from the site's name so
// two sites' members never join each other's cluster by mistake.
std::string etcdClusterToken(const config::Site& site);

// The peer port of each managed etcd member, one per [etcd] endpoint: the first port after the
// member's client port that no listener of the site (nor a member's peer port chosen before it)
// uses on the member's IP or a wildcard, and that `is_free` accepts (a bind test in `up`; always
// true in a network namespace of its own). With members on their own IPs that is client port + 1
// for each. Deterministic, so a restart normally picks the same ones (a member's peer URL is
// stored in the cluster's data). Empty when none of the 100 ports after some member's client port
// qualifies, or when etcd is not managed.
std::vector<uint16_t> chooseEtcdPeerPorts(const config::Site& site,
                                          const std::function<bool(const core::SocketAddress&)>& is_free);

}  // namespace fulcrum::site
