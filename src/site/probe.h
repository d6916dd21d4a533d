#pragma once
// One blocking readiness check of a child (control plane only: `up` and `status`).
#include <chrono>
#include <string>

#include "core/address.h"
#include "site/plan.h"

namespace fulcrum::site {

struct ProbeResult {
  bool ok = false;
  int status = 0;     // HTTP status, 0 for a TCP check or when nothing answered
  std::string body;   // the HTTP response body
  std::string error;  // why it failed: "connect 127.0.0.1:9001: Connection refused", "HTTP 503"
};

// HTTP GET (ok on 2xx) or TCP connect (ok once connected), within `timeout`.
ProbeResult runProbe(const Probe& probe, std::chrono::milliseconds timeout);

// A GET whatever its status (for `status`, which reads 503 answers too); a POST of `post_body`
// (JSON) when it is not empty.
ProbeResult fetch(const core::SocketAddress& address, const std::string& path,
                  std::chrono::milliseconds timeout, std::string_view post_body = {});

}  // namespace fulcrum::site
