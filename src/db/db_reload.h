#pragma once
// What a database agent does with a topology file re-read (SIGHUP, POST /reload): the
// difference between the file it runs and the new one, for this node. Pure: DbAgent::reload
// applies the plan on its loop. Applied at once: db.max_lag_bytes (the failover lag bound, and
// what /replica?lag and /status report) and db.failover. Everything else the agent fixed at start
// is named for a restart: its own addresses, what PostgreSQL runs with, the lease TTL (granted
// by etcd, and every agent's timing derives from it), synchronous mode (the sync key protocol
// needs every agent to agree at once), the peer list and the etcd endpoints.
#include <optional>
#include <string>

#include "config/config.h"
#include "run/node_files.h"

namespace fulcrum::db {

struct DbReloadPlan {
  run::ReloadReport report;  // changes (to apply) and needs_restart
  std::optional<uint64_t> max_lag_bytes;
  std::optional<bool> failover;
};

// `running`: the settings in effect; `next`: the file just loaded without errors; `node`: this
// agent's [[db.node]] name.
DbReloadPlan planDbReload(const config::Site& running, const config::Site& next, const std::string& node);

// `running` with the plan applied (what needs a restart is left as it runs).
void applyDbPlan(config::Site& running, const DbReloadPlan& plan);

}  // namespace fulcrum::db
