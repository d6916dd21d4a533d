#pragma once
#include <string>

#include "config/config.h"

namespace fulcrum::web {

// Runs the [[web.node]] named `node` until SIGINT/SIGTERM; returns the process exit code.
int runWebCommand(const config::Site& site, const std::string& node);

}  // namespace fulcrum::web
