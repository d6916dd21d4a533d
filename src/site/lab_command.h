#pragma once
// `fulcrum lab up|down|status|kill|pause|resume|cut|heal SITE [NODE]` (root): the site across
// network namespaces, one per host, on a bridge, with fault injection from another terminal.
// `lab up` runs the same supervisor as `up`; the lab's namespaces, links and the nodes' pids are
// in state_dir/lab.json, so `lab down` cleans up even after `lab up` was killed.
#include <string>

#include "config/config.h"
#include "site/up_command.h"

namespace fulcrum::site {

struct LabOptions {
  UpOptions up;
  bool json = false;   // status: one JSON object
  bool hold = false;   // kill: keep the node down until `lab resume`
  std::string oneway;  // cut: "", "in" or "out"
  bool firewall = true;  // up: load each host's `fulcrum firewall` ruleset in its namespace
};

// Runs one lab action ("up", "down", "status", "kill", "pause", "resume", "cut", "heal") and returns
// the exit code: 0 ok; 1 runtime failure (or, for status, a lab that is not up and ready); 2 bad usage.
int runLabCommand(const std::string& action, const config::Site& site, const std::string& node,
                  const LabOptions& options);

}  // namespace fulcrum::site
