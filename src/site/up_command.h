#pragma once
// `fulcrum up [SITE]`: every node of the site as supervised child processes of this one.
#include <string>

#include "config/config.h"

namespace fulcrum::site {

struct UpOptions {
  bool restart = true;  // false: --no-restart
  std::string log_format = "text";
  std::string log_level = "info";
};

// Returns the process exit code: 0 after a clean stop (Ctrl-C, SIGTERM), 1 when the site could
// not be started or every child exited under --no-restart, 2 for settings this build refuses.
int runUpCommand(const config::Site& site, const UpOptions& options);

}  // namespace fulcrum::site
