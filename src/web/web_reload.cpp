#include "web/web_reload.h"

#include <fmt/format.h>

#include "run/reload_diff.h"

namespace fulcrum::web {

namespace {

using run::changeText;
using run::restartIfChanged;

bool sameDbNodes(const std::vector<config::DbNode>& a, const std::vector<config::DbNode>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || !(a[i].pg == b[i].pg)) {
      return false;
    }
  }
  return true;
}

std::string dbNodesText(const std::vector<config::DbNode>& nodes) {
  std::string out;
  for (const config::DbNode& n : nodes) {
    out += (out.empty() ? "" : ", ") + n.name + "@" + n.pg.toString();
  }
  return out.empty() ? "none" : out;
}

}  // namespace

WebReloadPlan planWebReload(const config::Site& running, const config::Site& next, const std::string& node) {
  WebReloadPlan plan;
  run::ReloadReport& report = plan.report;
  const config::WebNode* before = running.findWebNode(node);
  const config::WebNode* after = next.findWebNode(node);
  if (after == nullptr) {
    report.needs_restart.push_back(
        fmt::format("web.node: {} is no longer in the file (stop it; nothing applied)", node));
    return plan;
  }
  size_t index = static_cast<size_t>(after - next.web.nodes.data());
  const std::string prefix = fmt::format("web.node[{}]", index);
  if (before != nullptr) {
    restartIfChanged(report, prefix + ".listen", before->listen, after->listen);
    restartIfChanged(report, prefix + ".threads", before->threads, after->threads);
    restartIfChanged(report, prefix + ".send_proxy", before->send_proxy, after->send_proxy);
  }
  restartIfChanged(report, "site.name", running.site.name, next.site.name);
  restartIfChanged(report, "site.state_dir", running.site.state_dir, next.site.state_dir);
  restartIfChanged(report, "web.app", running.web.app, next.web.app);
  // Log files are opened at start (SIGUSR1 reopens them at the same paths).
  restartIfChanged(report, "web.access_log", running.web.access_log.format, next.web.access_log.format);
  restartIfChanged(report, "web.access_log_file", running.web.access_log.file, next.web.access_log.file);
  restartIfChanged(report, "site.log_max_bytes", running.site.log_max_bytes, next.site.log_max_bytes);
  restartIfChanged(report, "site.log_keep", running.site.log_keep, next.site.log_keep);
  // The web server applies the site's HTTP limits and client timeouts (serverOptions): fixed
  // once its connections exist.
  restartIfChanged(report, "lb.limits.max_connections", running.lb.limits.max_connections,
                   next.lb.limits.max_connections);
  restartIfChanged(report, "lb.limits.max_header_bytes", running.lb.limits.max_header_bytes,
                   next.lb.limits.max_header_bytes);
  restartIfChanged(report, "lb.limits.max_body_bytes", running.lb.limits.max_body_bytes,
                   next.lb.limits.max_body_bytes);
  restartIfChanged(report, "lb.timeouts.client_ms", running.lb.timeouts.client_ms,
                   next.lb.timeouts.client_ms);
  restartIfChanged(report, "lb.timeouts.http_request_ms", running.lb.timeouts.http_request_ms,
                   next.lb.timeouts.http_request_ms);

  if (running.web.docroot != next.web.docroot) {
    plan.docroot = next.web.docroot;
    report.changes.push_back(changeText("web.docroot", running.web.docroot, next.web.docroot));
  }
  if (running.web.app != "guestbook") {
    return plan;  // no database side to compare
  }
  restartIfChanged(report, "db.user", running.db.user, next.db.user);
  restartIfChanged(report, "db.database", running.db.database, next.db.database);
  restartIfChanged(report, "db.password_file", running.db.password_file, next.db.password_file);
  // The guestbook's database connections authenticate by certificate under internal_tls.
  restartIfChanged(report, "security.internal_tls", running.security.internal_tls,
                   next.security.internal_tls);
  if (next.web.app == "guestbook" && next.db.nodes.empty()) {
    report.errors.push_back(
        next.errorAt("web.app",
                     "the guestbook needs its database: add [[db.node]] entries, or set app = \"none\"")
            .toString());
  } else if (!sameDbNodes(running.db.nodes, next.db.nodes)) {
    // Each worker builds new routers over the new list (worker_db.h).
    plan.db_nodes = next.db.nodes;
    report.changes.push_back(
        fmt::format("db.node: {} -> {}", dbNodesText(running.db.nodes), dbNodesText(next.db.nodes)));
  }
  if (running.db.max_lag_bytes != next.db.max_lag_bytes) {
    plan.max_lag_bytes = next.db.max_lag_bytes;
    report.changes.push_back(changeText("db.max_lag_bytes", running.db.max_lag_bytes, next.db.max_lag_bytes));
  }
  return plan;
}

void applyWebPlan(config::Site& running, const WebReloadPlan& plan) {
  if (plan.docroot) {
    running.web.docroot = *plan.docroot;
  }
  if (plan.max_lag_bytes) {
    running.db.max_lag_bytes = *plan.max_lag_bytes;
  }
  if (plan.db_nodes) {
    running.db.nodes = *plan.db_nodes;
  }
}

}  // namespace fulcrum::web
