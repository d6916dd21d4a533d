#pragma once
// `fulcrum reload`: asks every node of a site that runs on this host to re-read the topology file
// (SIGHUP to the pid in its pid file, as `systemctl reload` would), waits for each node's report
// and prints what changed, what needs a restart, or why the file was refused.
#include <chrono>
#include <string>
#include <vector>

#include "config/config.h"

namespace fulcrum::site {

struct ReloadOptions {
  std::vector<std::string> nodes;  // only these (every node of the site when empty)
  bool json = false;
  // A binary upgrade of the load balancers instead: `fulcrum up` (SIGUSR2) starts each again with
  // --takeover from the binary now installed; waits until each pid file names the new process.
  bool upgrade = false;
  std::chrono::milliseconds wait{10000};  // per node, for its report
};

// Exit code: 0 when every running node reloaded, 1 when one refused the file, did not answer in
// time, or no node runs here.
int runReloadCommand(const config::Site& site, const ReloadOptions& options);
int runUpgradeCommand(const config::Site& site, const ReloadOptions& options);

}  // namespace fulcrum::site
