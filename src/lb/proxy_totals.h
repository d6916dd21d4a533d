#pragma once
// The workers' counters of a load balancer added up, for readers on the main thread (the stats
// listener's /metrics and /api/state, the dashboard's sampler). Relaxed reads: each sum is a
// moment's view, good to a request or two.
#include <cstdint>
#include <memory>
#include <vector>

#include "core/histogram.h"
#include "lb/proxy.h"

namespace fulcrum::lb {

struct Totals {
  uint64_t connections_total = 0, connections_active = 0, requests = 0, retries = 0,
           retries_budget_exhausted = 0, no_server = 0, bad_gateway = 0, gateway_timeout = 0,
           bad_requests = 0, bytes_in = 0, bytes_out = 0, slow_head = 0, slow_body = 0, slow_send = 0,
           evicted = 0, refused = 0, proxy_protocol_errors = 0;
  uint64_t by_class[6] = {};
  core::HistogramSnapshot total_time[2];  // http, https
  uint64_t h2_connections = 0, h2_streams = 0, h2_resets_received = 0;
  uint64_t h2_goaway[5] = {};  // by H2Abuse
  uint64_t queued = 0, queue_full = 0, queue_timeouts = 0;
  core::HistogramSnapshot queue_time;
};

struct ServerTotals {
  uint64_t requests = 0, failures = 0, inflight = 0, responses = 0, connects = 0;
  core::HistogramSnapshot response_time;
  uint64_t by_class[6] = {};
};

Totals sumTotals(const std::vector<std::unique_ptr<ProxyStats>>& workers);
ServerTotals sumServer(const std::vector<std::unique_ptr<ProxyStats>>& workers, size_t id);

}  // namespace fulcrum::lb
