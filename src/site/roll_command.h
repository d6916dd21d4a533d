#pragma once
// `fulcrum roll`: restarts the web nodes of a site that run on this host one at a time, without a
// failed request — each is drained at every load balancer (admin API), its in-flight requests
// allowed to finish, stopped with SIGTERM (its supervisor, `fulcrum up` or systemd, starts it
// again), and put back in rotation once it answers and every lb has it up.
#include <chrono>
#include <string>
#include <vector>

#include "config/config.h"

namespace fulcrum::site {

struct RollOptions {
  std::string role = "web";
  std::vector<std::string> nodes;           // only these (every node of the role when empty)
  std::chrono::seconds step_timeout{60};    // per wait: in-flight requests, restart, health
};

// 0 when every node was restarted (or was not running here), 1 when one step failed (the node is
// left drained: the message says so), 2 on a usage error.
int runRollCommand(const config::Site& site, const RollOptions& options);

}  // namespace fulcrum::site
