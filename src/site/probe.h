#pragma once
// One blocking readiness check of a child (control plane only: `up` and `status`).
#include <chrono>
#include <memory>
#include <string>

#include "core/address.h"
#include "core/transport.h"
#include "site/plan.h"

namespace fulcrum::site {

struct ProbeResult {
  bool ok = false;
  int status = 0;     // HTTP status, 0 for a TCP check or when nothing answered
  std::string body;   // the HTTP response body
  std::string error;  // why it failed: "connect 127.0.0.1:9001: Connection refused", "HTTP 503"
};

// HTTP GET (ok on 2xx) or TCP connect (ok once connected), within `timeout`. A probe.tls GET
// goes over `tls` (the operator's client TLS); without one it fails, saying so.
ProbeResult runProbe(const Probe& probe, std::chrono::milliseconds timeout,
                     const std::shared_ptr<core::ClientTransportFactory>& tls = nullptr);

// A GET whatever its status (for `status`, which reads 503 answers too); a POST of `post_body`
// (JSON) when it is not empty. Over TLS when `tls` is given; `headers`: more lines, each
// "Name: value\r\n".
ProbeResult fetch(const core::SocketAddress& address, const std::string& path,
                  std::chrono::milliseconds timeout, std::string_view post_body = {},
                  std::shared_ptr<core::ClientTransportFactory> tls = nullptr, std::string_view headers = {});

}  // namespace fulcrum::site
