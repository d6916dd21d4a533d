#include "db/db_reload.h"

#include <fmt/format.h>

#include "run/reload_diff.h"

namespace fulcrum::db {

namespace {

using run::changeText;
using run::restartIfChanged;

std::string peersText(const std::vector<config::DbNode>& nodes) {
  std::string out;
  for (const config::DbNode& n : nodes) {
    out += (out.empty() ? "" : ", ") + n.name + "@" + n.pg.toString() + "/" + n.agent.toString();
  }
  return out.empty() ? "none" : out;
}

bool samePeers(const std::vector<config::DbNode>& a, const std::vector<config::DbNode>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || !(a[i].pg == b[i].pg) || !(a[i].agent == b[i].agent)) {
      return false;
    }
  }
  return true;
}

std::string endpointsText(const std::vector<core::SocketAddress>& endpoints) {
  std::string out;
  for (const core::SocketAddress& e : endpoints) {
    out += (out.empty() ? "" : ", ") + e.toString();
  }
  return out.empty() ? "none" : out;
}

// Under internal_tls, the certificate names pg_ident.conf lets in as the application: the web
// nodes and the lbs, as the agent wrote them at its start.
std::string appClientsText(const config::Site& site) {
  std::string out;
  for (const config::WebNode& n : site.web.nodes) {
    out += (out.empty() ? "" : ", ") + n.name;
  }
  for (const config::LbNode& n : site.lb.nodes) {
    out += (out.empty() ? "" : ", ") + n.name;
  }
  return out.empty() ? "none" : out;
}

}  // namespace

DbReloadPlan planDbReload(const config::Site& running, const config::Site& next, const std::string& node) {
  DbReloadPlan plan;
  run::ReloadReport& report = plan.report;
  const config::DbNode* before = running.findDbNode(node);
  const config::DbNode* after = next.findDbNode(node);
  if (after == nullptr) {
    report.needs_restart.push_back(
        fmt::format("db.node: {} is no longer in the file (stop it; nothing applied)", node));
    return plan;
  }
  const size_t index = static_cast<size_t>(after - next.db.nodes.data());
  const std::string prefix = fmt::format("db.node[{}]", index);
  if (before != nullptr) {
    restartIfChanged(report, prefix + ".pg", before->pg, after->pg);
    restartIfChanged(report, prefix + ".agent", before->agent, after->agent);
  }
  restartIfChanged(report, "site.name", running.site.name, next.site.name);
  restartIfChanged(report, "site.state_dir", running.site.state_dir, next.site.state_dir);
  restartIfChanged(report, "site.log_max_bytes", running.site.log_max_bytes, next.site.log_max_bytes);
  restartIfChanged(report, "site.log_keep", running.site.log_keep, next.site.log_keep);
  restartIfChanged(report, "db.database", running.db.database, next.db.database);
  restartIfChanged(report, "db.user", running.db.user, next.db.user);
  restartIfChanged(report, "db.password_file", running.db.password_file, next.db.password_file);
  restartIfChanged(report, "db.pg_bin", running.db.pg_bin, next.db.pg_bin);
  restartIfChanged(report, "db.synchronous", running.db.synchronous, next.db.synchronous);
  restartIfChanged(report, "db.synchronous_strict", running.db.synchronous_strict,
                   next.db.synchronous_strict);
  restartIfChanged(report, "db.leader_ttl_ms", running.db.leader_ttl_ms, next.db.leader_ttl_ms);
  restartIfChanged(report, "security.internal_tls", running.security.internal_tls,
                   next.security.internal_tls);
  if (next.security.internal_tls && appClientsText(running) != appClientsText(next)) {
    report.needs_restart.push_back(
        fmt::format("web.node, lb.node (the certificates admitted as the application): {} -> {}",
                    appClientsText(running), appClientsText(next)));
  }
  if (running.db.backup != next.db.backup) {
    // archive_command is on the postmaster's command line, the schedule in the agent.
    report.needs_restart.push_back(fmt::format("db.backup: {} -> {}", running.db.backup ? "set" : "absent",
                                               next.db.backup ? "set (changed)" : "absent"));
  }
  if (!samePeers(running.db.nodes, next.db.nodes)) {
    report.needs_restart.push_back(
        fmt::format("db.node: {} -> {}", peersText(running.db.nodes), peersText(next.db.nodes)));
  }
  if (!(running.etcd.endpoints == next.etcd.endpoints)) {
    report.needs_restart.push_back(fmt::format("etcd.endpoints: {} -> {}",
                                               endpointsText(running.etcd.endpoints),
                                               endpointsText(next.etcd.endpoints)));
  }
  if (running.db.max_lag_bytes != next.db.max_lag_bytes) {
    plan.max_lag_bytes = next.db.max_lag_bytes;
    report.changes.push_back(changeText("db.max_lag_bytes", running.db.max_lag_bytes, next.db.max_lag_bytes));
  }
  if (running.db.failover != next.db.failover) {
    plan.failover = next.db.failover;
    report.changes.push_back(changeText("db.failover", running.db.failover, next.db.failover));
  }
  return plan;
}

void applyDbPlan(config::Site& running, const DbReloadPlan& plan) {
  if (plan.max_lag_bytes) {
    running.db.max_lag_bytes = *plan.max_lag_bytes;
  }
  if (plan.failover) {
    running.db.failover = *plan.failover;
  }
}

}  // namespace fulcrum::db
