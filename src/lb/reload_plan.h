#pragma once
// What a reload of the topology file changes for one lb node, worked out before anything is
// touched (HAProxy re-parses the whole file too, but then starts a new process; we apply the
// difference in place). Pure: the node's runtime applies the plan (lb_command.cpp).
#include <string>
#include <vector>

#include "config/config.h"

namespace fulcrum::lb {

struct ReloadPlan {
  // The site as it will be in force: the new file, except the parts that need a restart, which
  // keep their running values (so the next reload reports them again until the node restarts).
  config::Site effective;
  std::vector<std::string> changes;        // one line per change applied, for the log and the report
  std::vector<std::string> needs_restart;  // "KEY: why", read but not applied
  // Server table edits, by [[web.node]] name. A server whose address changed is both removed
  // (the old one drains) and added (a new server id, checked before it takes traffic).
  std::vector<config::WebNode> added;
  std::vector<std::string> removed;
  std::vector<config::WebNode> updated;  // same name and address, new weight or backup flag
  bool algorithm = false;
  bool health = false;
  bool tunables = false;      // timeouts, retries, header/body limits, min_body_rate, hsts, redirect
  bool certificates = false;  // [lb.tls] cert/key/certs
  bool firewall = false;      // [lb.firewall]
  bool empty() const { return changes.empty(); }
};

// `running` is the site in force, `next` the file just loaded and validated; `node` names this
// lb. When `next` no longer has the node, everything is left as it runs (needs_restart says so).
ReloadPlan planReload(const config::Site& running, const config::Site& next, const std::string& node);

}  // namespace fulcrum::lb
