#include "site/plan.h"

#include <algorithm>

#include "site/monitoring.h"

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

std::string httpUrl(const core::SocketAddress& address) {
  return "http://" + address.toString();
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
  return path.empty() ? "tcp://" + address.toString() : httpUrl(address) + path;
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
    const core::SocketAddress& client = site.etcd.endpoints.front();
    const std::string client_url = httpUrl(client);
    const std::string peer_url = httpUrl(core::SocketAddress(client.ip(), options.etcd_peer_port));
    ChildSpec etcd;
    etcd.role = Role::Etcd;
    etcd.name = "etcd";
    // One member; short heartbeats so the member elects itself within a second of starting.
    etcd.argv = {options.etcd_exe,
                 "--name=fulcrum",
                 "--data-dir=" + (site.site.state_dir / "etcd").string(),
                 "--listen-client-urls=" + client_url,
                 "--advertise-client-urls=" + client_url,
                 "--listen-peer-urls=" + peer_url,
                 "--initial-advertise-peer-urls=" + peer_url,
                 "--initial-cluster=fulcrum=" + peer_url,
                 "--heartbeat-interval=50",
                 "--election-timeout=500",
                 "--logger=zap",
                 "--log-level=" + std::string(options.log_level == "debug" ? "debug" : "warn")};
    etcd.probe = Probe{client, "/health"};
    etcd.log = logPath(site, "etcd");
    out.push_back(std::move(etcd));
  }
  for (const auto& node : site.db.nodes) {
    ChildSpec spec{Role::Db, node.name, roleArgs(options, site, "db", node.name), Probe{node.agent, "/health"},
                   logPath(site, node.name)};
    spec.start_timeout = kDbStartTimeout;
    spec.stop_timeout = kDbStopTimeout;
    out.push_back(std::move(spec));
  }
  for (const auto& node : site.web.nodes) {
    out.push_back(ChildSpec{Role::Web, node.name, roleArgs(options, site, "web", node.name),
                            Probe{node.listen, "/healthz"}, logPath(site, node.name)});
  }
  for (const auto& node : site.lb.nodes) {
    // The stats listener answers /healthz once the node runs; without one, its HTTP port.
    Probe probe = node.stats ? Probe{*node.stats, "/healthz"} : Probe{node.http, ""};
    out.push_back(
        ChildSpec{Role::Lb, node.name, roleArgs(options, site, "lb", node.name), probe, logPath(site, node.name)});
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

std::vector<Listener> siteListeners(const config::Site& site, uint16_t etcd_peer_port) {
  std::vector<Listener> out;
  if (hasManagedEtcd(site)) {
    const core::SocketAddress& client = site.etcd.endpoints.front();
    out.push_back({"etcd client", client});
    if (etcd_peer_port != 0) {
      out.push_back({"etcd peer", core::SocketAddress(client.ip(), etcd_peer_port)});
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

uint16_t chooseEtcdPeerPort(const config::Site& site, const std::function<bool(uint16_t)>& is_free) {
  if (!hasManagedEtcd(site)) {
    return 0;
  }
  const auto used = siteListeners(site, 0);
  uint32_t port = site.etcd.endpoints.front().port();
  for (uint16_t i = 0; i < kPeerPortTries; ++i) {
    ++port;
    if (port > 65535) {
      return 0;
    }
    bool taken = std::any_of(used.begin(), used.end(),
                             [&](const Listener& l) { return l.address.port() == port; });
    if (!taken && is_free(static_cast<uint16_t>(port))) {
      return static_cast<uint16_t>(port);
    }
  }
  return 0;
}

}  // namespace fulcrum::site
