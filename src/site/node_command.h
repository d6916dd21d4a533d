#pragma once
// `fulcrum stop|start|restart [FILE] NODE`: asks the site's running `fulcrum up`, over its control
// socket (up_control.h), to stop one node and keep it down, to start it again, or both; prints
// what `up` did once it is done.
#include <string>

#include "config/config.h"
#include "site/up_control.h"

namespace fulcrum::site {

// How long the command waits for `up`'s answer: `up` bounds each step itself (a stop by the node's
// stop timeout, a start by its start timeout, 180 s for a db node).
inline constexpr std::chrono::seconds kNodeCommandTimeout{240};

// Exit code: 0 when done (also a stop of a node already stopped, a start of one running), 1 when
// no `up` runs for the site or the node did not stop or start, 2 for a node `up` does not run.
int runNodeCommand(const config::Site& site, ControlOp op, const std::string& node);

}  // namespace fulcrum::site
