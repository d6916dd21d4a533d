#pragma once
#include <string>

#include "config/config.h"

namespace fulcrum::lb {

// Runs the [[lb.node]] named `node` until SIGINT/SIGTERM; returns the process exit code.
int runLbCommand(const config::Site& site, const std::string& node);

}  // namespace fulcrum::lb
