#pragma once
// What a web node does with a topology file re-read on SIGHUP: the difference between the file
// it runs and the new one, for this node. Pure: web_command.cpp applies the plan (a new docroot,
// max_lag_bytes, the [[db.node]] list) to each worker's loop; what a running node cannot take is
// named for a restart.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "config/config.h"
#include "run/node_files.h"

namespace fulcrum::web {

struct WebReloadPlan {
  run::ReloadReport report;                      // changes (to apply) and needs_restart
  std::optional<std::filesystem::path> docroot;  // a new [web] docroot to serve
  std::optional<uint64_t> max_lag_bytes;         // a new [db] max_lag_bytes for the guestbook's reads
  std::optional<std::vector<config::DbNode>> db_nodes;  // a new [[db.node]] list for the guestbook
};

// `running`: the settings in effect (the file as loaded at start, with reloads applied);
// `next`: the file just loaded without errors; `node`: this web node's name.
WebReloadPlan planWebReload(const config::Site& running, const config::Site& next, const std::string& node);

// `running` with the plan applied: what the next reload compares against (what needs a restart
// stays as it runs, so it is named again until the node restarts).
void applyWebPlan(config::Site& running, const WebReloadPlan& plan);

}  // namespace fulcrum::web
