#pragma once
// What this build can run. The whole topology schema is validated, but a section whose role
// is not built yet must never look as if it were in force: `fulcrum check` lists these, and
// the role commands refuse the settings they cannot honour.
#include <vector>

#include "config/config.h"
#include "config/loader.h"

namespace fulcrum::config {

// One entry per configured feature this build cannot run yet, positioned at its key.
std::vector<ConfigError> notBuiltYet(const Site& site);

}  // namespace fulcrum::config
