#include "lb/proxy_totals.h"

namespace fulcrum::lb {

Totals sumTotals(const std::vector<std::unique_ptr<ProxyStats>>& workers) {
  Totals t;
  for (const auto& w : workers) {
    t.connections_total += w->connections_total.get();
    t.connections_active += w->connections_active.get();
    t.requests += w->requests_total.get();
    t.retries += w->retries.get();
    t.retries_budget_exhausted += w->retries_budget_exhausted.get();
    t.no_server += w->no_server.get();
    t.bad_gateway += w->bad_gateway.get();
    t.gateway_timeout += w->gateway_timeout.get();
    t.bad_requests += w->bad_requests.get();
    t.proxy_protocol_errors += w->proxy_protocol_errors.get();
    t.slow_head += w->slow_head.get();
    t.slow_body += w->slow_body.get();
    t.slow_send += w->slow_send.get();
    t.evicted += w->evicted.get();
    t.refused += w->refused.get();
    t.bytes_in += w->bytes_in.get();
    t.bytes_out += w->bytes_out.get();
    for (size_t c = 1; c < 6; ++c) {
      t.by_class[c] += w->responses_by_class[c].get();
    }
    t.h2_connections += w->h2_connections.get();
    t.h2_streams += w->h2_streams.get();
    t.h2_resets_received += w->h2_resets_received.get();
    for (size_t r = 0; r < w->h2_goaway.size(); ++r) {
      t.h2_goaway[r] += w->h2_goaway[r].get();
    }
    t.queued += w->queued.get();
    t.queue_full += w->queue_full.get();
    t.queue_timeouts += w->queue_timeouts.get();
    w->queue_time.addTo(t.queue_time);
    w->total_time[0].addTo(t.total_time[0]);
    w->total_time[1].addTo(t.total_time[1]);
  }
  return t;
}

ServerTotals sumServer(const std::vector<std::unique_ptr<ProxyStats>>& workers, size_t id) {
  ServerTotals t;
  for (const auto& w : workers) {
    const BackendStats& b = w->backends[id];
    t.requests += b.requests.get();
    t.failures += b.failures.get();
    t.connects += b.connects.get();
    // In-flight counts go up on one worker and down on the same one; the sum is exact.
    t.inflight += b.inflight.get();
    b.response_time.addTo(t.response_time);
    for (size_t c = 1; c < 6; ++c) {
      t.by_class[c] += b.responses_by_class[c].get();
      t.responses += b.responses_by_class[c].get();
    }
  }
  return t;
}

}  // namespace fulcrum::lb
