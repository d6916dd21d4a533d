#pragma once
// One blocking HTTP/1.1 POST over a fresh TCP connection, bounded by a deadline (poll(), no
// threads). For the control plane's few requests per second a new connection per call is
// simpler than a pool and never meets a connection the server closed while idle.
#include <chrono>
#include <string>
#include <string_view>

#include "core/address.h"
#include "db/result.h"

namespace fulcrum::db {

struct HttpReply {
  int status = 0;
  std::string body;  // decoded (de-chunked)
};

struct PostOutcome {
  Result<HttpReply> reply;
  // True once any byte of the request was written: a failed call may then have taken effect on
  // the server, and only an idempotent request may be replayed elsewhere.
  bool request_sent = false;
};

struct PostLimits {
  std::chrono::steady_clock::time_point deadline;  // the whole exchange
  std::chrono::milliseconds connect_timeout{500};  // the TCP handshake, within the deadline
  uint64_t max_body_bytes = 64 << 20;
  std::string extra_headers;  // more header lines, each "Name: value\r\n" (no CR/LF inside values)
};

PostOutcome postJson(const core::SocketAddress& to, std::string_view path, std::string_view body,
                     const PostLimits& limits);

// The same exchange as a GET without a body (health and status probes of `fulcrum up`/`status`).
Result<HttpReply> httpGet(const core::SocketAddress& to, std::string_view path, const PostLimits& limits);

}  // namespace fulcrum::db
