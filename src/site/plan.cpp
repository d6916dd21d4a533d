#include "site/plan.h"

#include <algorithm>

#include "config/values.h"
#include "site/monitoring.h"
#include "tls/site_pki.h"

namespace fulcrum::site {

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A first bootstrap (initdb, then pg_basebackup on every replica) on a busy machine takes a while;
// a restart on existing data takes a few seconds.
constexpr milliseconds kDbStartTimeout = seconds(180);
// An agent's SIGTERM stops PostgreSQL (fast shutdown, a checkpoint) after draining its API.
constexpr milliseconds kDbStopTimeout = seconds(30);
constexpr uint16_t kPeerPortTries = 100;

std::vector<std::string> roleArgs(const PlanOptions& options, const config::Site& site, std::string_view role,
                                  const std::string& node) {
  return {options.self_exe, "--log-format", options.log_format, "--log-level", options.log_level,
          std::string(role), "--site", site.file.string(), "--node", node};
}

std::filesystem::path logPath(const config::Site& site, const std::string& name) {
  return site.site.state_dir / "logs" / (name + ".log");
}

// An lb's or web node's arguments: its access lines in state_dir/logs/NODE.access.log unless the
// topology names a file.
std::vector<std::string> accessRoleArgs(const PlanOptions& options, const config::Site& site,
                                        std::string_view role, const std::string& node,
                                        const config::AccessLog& access) {
  std::vector<std::string> argv = roleArgs(options, site, role, node);
  if (access.file.empty()) {
    argv.insert(argv.end(),
                {"--access-log", (site.site.state_dir / "logs" / (node + ".access.log")).string()});
  }
  return argv;
}

std::string httpUrl(const core::SocketAddress& address, bool tls = false) {
  return (tls ? "https://" : "http://") + address.toString();
}

bool isLoopback(const core::SocketAddress& address) {
  const core::IpAddress ip = address.ip();
  return ip.family == AF_INET ? ip.bytes[0] == 127 : ip == *core::IpAddress::parse("::1");
}

}  // namespace

std::string_view roleName(Role role) {
  switch (role) {
    case Role::Etcd:
      return "etcd";
    case Role::Db:
      return "db";
    case Role::Web:
      return "web";
    case Role::Lb:
      return "lb";
    case Role::Monitoring:
      return "monitoring";
  }
  return "?";
}

std::string Probe::url() const {
  return path.empty() ? "tcp://" + address.toString() : httpUrl(address, tls) + path;
}

bool hasManagedEtcd(const config::Site& site) {
  return site.etcd.managed && !site.etcd.endpoints.empty();
}

bool hasManagedMonitoring(const config::Site& site) {
  return site.monitoring.present && site.monitoring.managed;
}

std::string etcdMemberName(const config::Site& site, size_t i) {
  return site.etcd.endpoints.size() == 1 ? "etcd" : "etcd-" + std::to_string(i + 1);
}

std::vector<ChildSpec> planChildren(const config::Site& site, const PlanOptions& options) {
  std::vector<ChildSpec> out;
  if (hasManagedEtcd(site)) {
    const auto& endpoints = site.etcd.endpoints;
    const bool single = endpoints.size() == 1;
    const bool tls = site.security.internal_tls;
    // A single member keeps the name its data dir was made with before clusters existed.
    auto memberName = [&](size_t i) { return single ? std::string("fulcrum") : etcdMemberName(site, i); };
    auto peerUrl = [&](size_t i) {
      uint16_t port = i < options.etcd_peer_ports.size() ? options.etcd_peer_ports[i] : 0;
      return httpUrl(core::SocketAddress(endpoints[i].ip(), port), tls);
    };
    std::string initial_cluster;
    for (size_t i = 0; i < endpoints.size(); ++i) {
      initial_cluster += (i == 0 ? "" : ",") + memberName(i) + "=" + peerUrl(i);
    }
    for (size_t i = 0; i < endpoints.size(); ++i) {
      const std::string client_url = httpUrl(endpoints[i], tls);
      const std::string peer_url = peerUrl(i);
      ChildSpec etcd;
      etcd.role = Role::Etcd;
      etcd.name = etcdMemberName(site, i);
      // Short heartbeats: a member elects itself (or the members a leader) within a second of
      // starting, and a dead leader is replaced as fast. The initial cluster and its state only
      // matter on an empty data dir; a member restarting on its data rejoins the cluster it knows.
      etcd.argv = {options.etcd_exe,
                   "--name=" + memberName(i),
                   "--data-dir=" + (site.site.state_dir / etcd.name).string(),
                   "--listen-client-urls=" + client_url,
                   "--advertise-client-urls=" + client_url,
                   "--listen-peer-urls=" + peer_url,
                   "--initial-advertise-peer-urls=" + peer_url,
                   "--initial-cluster=" + initial_cluster,
                   "--initial-cluster-state=new",
                   "--initial-cluster-token=" + etcdClusterToken(site),
                   "--heartbeat-interval=50",
                   "--election-timeout=500",
                   "--logger=zap",
                   "--log-level=" + std::string(options.log_level == "debug" ? "debug" : "warn")};
      if (tls) {
        // Clients and peers alike present a certificate of the site CA; the member's own is its
        // server and its client certificate (the gateway inside etcd dials the member with it).
        const tls::SitePaths pki = tls::sitePaths(site);
        const std::string cert = pki.nodeCert(etcd.name).string();
        const std::string key = pki.nodeKey(etcd.name).string();
        const std::string ca = pki.ca_cert.string();
        etcd.argv.insert(etcd.argv.end(),
                         {"--cert-file=" + cert, "--key-file=" + key, "--client-cert-auth",
                          "--trusted-ca-file=" + ca, "--peer-cert-file=" + cert, "--peer-key-file=" + key,
                          "--peer-client-cert-auth", "--peer-trusted-ca-file=" + ca});
        // etcd also checks that a peer's certificate names the address it connects from. Members
        // on one machine's loopback connect from whichever loopback address the kernel picks (on
        // Linux 127.0.0.1 for all of 127/8), not their own: there the CA's signature is the check.
        if (std::all_of(endpoints.begin(), endpoints.end(), isLoopback)) {
          etcd.argv.push_back("--experimental-peer-skip-client-san-verification");
        }
      }
      // A member of a cluster answers /health only once a quorum has a leader: `up` starts every
      // member before it probes any.
      etcd.probe = Probe{endpoints[i], "/health", tls};
      etcd.log = logPath(site, etcd.name);
      out.push_back(std::move(etcd));
    }
  }
  for (const auto& node : site.db.nodes) {
    // Under internal_tls the agent's API speaks TLS only: `up` asks as the operator.
    ChildSpec spec{Role::Db, node.name, roleArgs(options, site, "db", node.name),
                   Probe{node.agent, "/health", site.security.internal_tls}, logPath(site, node.name)};
    spec.start_timeout = kDbStartTimeout;
    spec.stop_timeout = kDbStopTimeout;
    out.push_back(std::move(spec));
  }
  for (const auto& node : site.web.nodes) {
    // Under internal_tls a web node answers only TLS clients with a site certificate: `up` asks
    // as the operator.
    Probe probe{node.listen, "/healthz", site.security.internal_tls};
    out.push_back(ChildSpec{Role::Web, node.name,
                            accessRoleArgs(options, site, "web", node.name, site.web.access_log), probe,
                            logPath(site, node.name)});
  }
  for (const auto& node : site.lb.nodes) {
    // The stats listener answers /healthz once the node runs (over HTTPS under internal_tls);
    // without one, its HTTP port.
    Probe probe =
        node.stats ? Probe{*node.stats, "/healthz", site.security.internal_tls} : Probe{node.http, ""};
    ChildSpec spec{Role::Lb, node.name, accessRoleArgs(options, site, "lb", node.name, site.lb.access_log),
                   probe, logPath(site, node.name)};
    if (site.lb.vip) {
      spec.after_exit = spec.argv;
      spec.after_exit.push_back("--release-vip");
    }
    out.push_back(std::move(spec));
  }
  if (hasManagedMonitoring(site)) {
    const config::MonitoringSection& mon = site.monitoring;
    const std::filesystem::path config_dir = monitoringDir(site);
    // Both log as `up` was asked to (their levels have the same names; text is logfmt).
    const std::string log_flags[] = {"--log.level=" + options.log_level,
                                     "--log.format=" + std::string(options.log_format == "json" ? "json" : "logfmt")};
    if (mon.alertmanager) {
      ChildSpec am{Role::Monitoring, "alertmanager", {options.alertmanager_exe}};
      am.argv.insert(am.argv.end(),
                     {"--config.file=" + (config_dir / "alertmanager.yml").string(),
                      "--storage.path=" + (site.site.state_dir / "alertmanager").string(),
                      "--web.listen-address=" + mon.alertmanager->toString(),
                      // No gossip with other Alertmanagers: it would listen on 0.0.0.0:9094.
                      "--cluster.listen-address=", log_flags[0], log_flags[1]});
      am.probe = Probe{*mon.alertmanager, "/-/ready"};
      am.log = logPath(site, "alertmanager");
      out.push_back(std::move(am));
    }
    ChildSpec prom{Role::Monitoring, "prometheus", {options.prometheus_exe}};
    prom.argv.insert(prom.argv.end(), {"--config.file=" + (config_dir / "prometheus.yml").string(),
                                       "--storage.tsdb.path=" + (site.site.state_dir / "prometheus").string(),
                                       "--web.listen-address=" + mon.prometheus.toString(), log_flags[0],
                                       log_flags[1]});
    prom.probe = Probe{mon.prometheus, "/-/ready"};
    prom.log = logPath(site, "prometheus");
    out.push_back(std::move(prom));
  }
  return out;
}

std::vector<Listener> siteListeners(const config::Site& site, const std::vector<uint16_t>& etcd_peer_ports) {
  std::vector<Listener> out;
  if (hasManagedEtcd(site)) {
    const auto& endpoints = site.etcd.endpoints;
    for (size_t i = 0; i < endpoints.size(); ++i) {
      const std::string prefix = endpoints.size() == 1 ? "etcd" : etcdMemberName(site, i);
      out.push_back({prefix + " client", endpoints[i]});
      if (i < etcd_peer_ports.size() && etcd_peer_ports[i] != 0) {
        out.push_back({prefix + " peer", core::SocketAddress(endpoints[i].ip(), etcd_peer_ports[i])});
      }
    }
  }
  for (const auto& node : site.db.nodes) {
    out.push_back({node.name + " PostgreSQL", node.pg});
    out.push_back({node.name + " agent", node.agent});
  }
  for (const auto& node : site.web.nodes) {
    out.push_back({node.name + " listen", node.listen});
  }
  for (const auto& node : site.lb.nodes) {
    out.push_back({node.name + " http", node.http});
    for (const auto& [what, address] : {std::pair{"https", node.https}, std::pair{"stats", node.stats},
                                        std::pair{"db_write", node.db_write}, std::pair{"db_read", node.db_read}}) {
      if (address) {
        out.push_back({node.name + " " + what, *address});
      }
    }
  }
  if (hasManagedMonitoring(site)) {
    out.push_back({"prometheus", site.monitoring.prometheus});
    if (site.monitoring.alertmanager) {
      out.push_back({"alertmanager", *site.monitoring.alertmanager});
    }
  }
  return out;
}

std::string etcdClusterToken(const config::Site& site) {
  return "fulcrum-" + site.site.name;
}

std::vector<uint16_t> chooseEtcdPeerPorts(const config::Site& site,
                                          const std::function<bool(const core::SocketAddress&)>& is_free) {
  std::vector<uint16_t> chosen;
  if (!hasManagedEtcd(site)) {
    return chosen;
  }
  // Two listeners clash on the same port when on the same IP, or when either is a wildcard.
  auto clash = [](const core::SocketAddress& a, const core::SocketAddress& b) {
    return a.port() == b.port() &&
           (a.ip() == b.ip() || config::isZeroAddress(a.ip()) || config::isZeroAddress(b.ip()));
  };
  for (const core::SocketAddress& client : site.etcd.endpoints) {
    // Every listener of the site, with the peer ports chosen so far.
    const std::vector<Listener> used = siteListeners(site, chosen);
    uint16_t found = 0;
    uint32_t port = client.port();
    for (uint16_t i = 0; i < kPeerPortTries && found == 0; ++i) {
      if (++port > 65535) {
        break;
      }
      const core::SocketAddress peer(client.ip(), static_cast<uint16_t>(port));
      bool taken =
          std::any_of(used.begin(), used.end(), [&](const Listener& l) { return clash(l.address, peer); });
      if (!taken && is_free(peer)) {
        found = static_cast<uint16_t>(port);
      }
    }
    if (found == 0) {
      return {};
    }
    chosen.push_back(found);
  }
  return chosen;
}

}  // namespace fulcrum::site
