#pragma once
#include <string>

#include "config/config.h"

namespace fulcrum::lb {

// Runs the [[lb.node]] named `node` until SIGINT/SIGTERM; returns the process exit code.
// `takeover`: take the listening sockets of the node's running process instead of binding them
// (a binary upgrade, lb/takeover.h); that process then drains and exits.
int runLbCommand(const config::Site& site, const std::string& node, bool takeover = false);

// `fulcrum lb --release-vip`: removes [lb.vip]'s address from its interface, as a node leaving
// Master does — for a supervisor (fulcrum up/lab, systemd's ExecStopPost) after the node died
// without releasing it (kill -9, a crash): the dead node's kernel would otherwise keep answering
// ARP for the address beside the new master. Returns 0, or 1 with the reason logged.
int releaseVip(const config::Site& site);

}  // namespace fulcrum::lb
