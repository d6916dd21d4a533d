// Reload of the agent's settings from the topology file (SIGHUP, POST /reload), on the agent's
// loop: the control loop reads site_ on every tick, so a changed value counts from the next
// decision on. PostgreSQL, the leader lease and the health state go on untouched.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "config/features.h"
#include "config/loader.h"
#include "core/log.h"
#include "db/agent.h"
#include "db/db_reload.h"
#include "http/bearer.h"
#include "run/reload_diff.h"

namespace fulcrum::db {

run::ReloadReport DbAgent::reload() {
  log::info("reloading {}", site_.file.string());
  config::LoadResult loaded = config::loadSiteFile(site_.file);
  DbReloadPlan plan;
  for (const config::ConfigError& error : loaded.errors) {
    plan.report.errors.push_back(error.toString());
  }
  if (loaded.ok()) {
    // The checks `fulcrum db` makes at start (db_command.cpp), so a reload accepts no file a
    // start would refuse.
    for (const config::ConfigError& error : config::dbNotBuiltYet(loaded.site)) {
      plan.report.errors.push_back(error.toString());
    }
    if (loaded.site.etcd.endpoints.empty()) {
      plan.report.errors.push_back(
          loaded.site.errorAt("etcd.endpoints", "the database agent needs at least one etcd endpoint")
              .toString());
    }
  }
  if (plan.report.errors.empty()) {
    plan = planDbReload(site_, loaded.site, node_.name);
  }
  run::ReloadReport& report = plan.report;
  report.ok = report.errors.empty();
  run::logReloadReport(report);
  if (report.ok) {
    applyDbPlan(site_, plan);
    if (plan.failover || plan.max_lag_bytes) {
      wake();  // a replica waiting on a free leader key decides with the new values now
    }
  }
  report.node = node_.name;
  run::writeReloadReport(site_.site.state_dir, node_.name, report);
  return report;
}

void DbAgent::handleReload(const http::Request& request, http::Response& response) {
  // The admin token, as for /switchover and /failover: a reload changes how the agent fails over.
  if (!http::hasBearerToken(request.head, admin_token_)) {
    response.addHeader("WWW-Authenticate", "Bearer");
    response.setBody(401, "application/json",
                     nlohmann::json{{"error",
                                     "a valid 'Authorization: Bearer TOKEN' is required (token in "
                                     "state_dir/admin.token)"}}
                         .dump());
    return;
  }
  run::ReloadReport report = reload();
  report.pid = ::getpid();
  response.setBody(report.ok ? 200 : 400, "application/json", report.toJson());
}

}  // namespace fulcrum::db
