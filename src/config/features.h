#pragma once
// What this build can run. The whole topology schema is validated, but a setting whose feature
// is not built yet must never look as if it were in force: `fulcrum check` lists these, and
// the role commands refuse them at start.
#include <vector>

#include "config/config.h"

namespace fulcrum::config {

// Load-balancer settings this build cannot honour, for one [[lb.node]] (or every node when
// `node` is null), each positioned at its key.
std::vector<ConfigError> lbNotBuiltYet(const Site& site, const LbNode* node);

// Database settings this build cannot honour, each positioned at its key (none at present:
// kept so `fulcrum db` and `check` refuse the next such setting the same way).
std::vector<ConfigError> dbNotBuiltYet(const Site& site);

// Everything in the file this build cannot run yet, across all roles.
std::vector<ConfigError> notBuiltYet(const Site& site);

}  // namespace fulcrum::config
