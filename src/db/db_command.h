#pragma once
#include <string>

#include "config/config.h"

namespace fulcrum::db {

// Runs the database agent of the [[db.node]] named `node` until SIGINT/SIGTERM; returns the
// process exit code.
int runDbCommand(const config::Site& site, const std::string& node);

}  // namespace fulcrum::db
