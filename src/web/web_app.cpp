#include "web/web_app.h"

#include "metrics/process.h"

namespace fulcrum::web {

WebApp::WebApp(std::string node_name, std::shared_ptr<const StaticFiles> files,
               const std::vector<std::unique_ptr<http::ServerStats>>& worker_stats)
    : node_name_(std::move(node_name)), files_(std::move(files)), worker_stats_(worker_stats) {}

void WebApp::handle(const http::Request& request, http::Response& response) {
  std::string_view path = request.head.path;
  bool read_method = request.head.method == http::Method::Get || request.head.method == http::Method::Head;
  if (path == "/healthz" && read_method) {
    response.setBody(200, "text/plain; charset=utf-8", "ok\n");
    response.addHeader("Cache-Control", "no-store");
    return;
  }
  if (path == "/metrics" && read_method) {
    response.setBody(200, metrics::kContentType, metricsText());
    return;
  }
  files_->serve(request, response);
}

size_t WebApp::routeOf(const http::RequestHead& head) const {
  if (head.path == "/healthz") {
    return static_cast<size_t>(Route::Health);
  }
  if (head.path == "/metrics") {
    return static_cast<size_t>(Route::Metrics);
  }
  if (head.method == http::Method::Get || head.method == http::Method::Head) {
    return static_cast<size_t>(Route::Static);
  }
  return static_cast<size_t>(Route::Other);
}

std::string WebApp::metricsText() const {
  uint64_t conns_total = 0;
  uint64_t conns_active = 0;
  uint64_t requests = 0;
  uint64_t by_class[6] = {};
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t parse_errors = 0;
  uint64_t timeouts = 0;
  uint64_t refused = 0;
  uint64_t evicted = 0;
  for (const auto& s : worker_stats_) {
    conns_total += s->connections_total.get();
    conns_active += s->connections_active.get();
    requests += s->requests_total.get();
    for (size_t i = 1; i < 6; ++i) {
      by_class[i] += s->responses_by_class[i].get();
    }
    bytes_in += s->bytes_in.get();
    bytes_out += s->bytes_out.get();
    parse_errors += s->parse_errors.get();
    timeouts += s->timeouts.get();
    refused += s->refused.get();
    evicted += s->evicted.get();
  }
  metrics::PrometheusWriter w;
  const std::string_view node = node_name_;
  w.family("fulcrum_web_requests_total", "counter", "HTTP requests handled.");
  w.sample("fulcrum_web_requests_total", {{"node", node}}, requests);
  w.family("fulcrum_web_responses_total", "counter", "HTTP responses sent, by status class.");
  static constexpr std::string_view kClasses[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (size_t i = 1; i < 6; ++i) {
    w.sample("fulcrum_web_responses_total", {{"node", node}, {"code", kClasses[i]}}, by_class[i]);
  }
  w.family("fulcrum_web_connections_total", "counter", "Client connections accepted.");
  w.sample("fulcrum_web_connections_total", {{"node", node}}, conns_total);
  w.family("fulcrum_web_connections_active", "gauge", "Client connections open now.");
  w.sample("fulcrum_web_connections_active", {{"node", node}}, conns_active);
  w.family("fulcrum_web_received_bytes_total", "counter", "Bytes read from clients.");
  w.sample("fulcrum_web_received_bytes_total", {{"node", node}}, bytes_in);
  w.family("fulcrum_web_sent_bytes_total", "counter", "Bytes written to clients.");
  w.sample("fulcrum_web_sent_bytes_total", {{"node", node}}, bytes_out);
  w.family("fulcrum_web_bad_requests_total", "counter",
           "Requests refused as malformed (4xx/5xx before dispatch).");
  w.sample("fulcrum_web_bad_requests_total", {{"node", node}}, parse_errors);
  w.family("fulcrum_web_timeouts_total", "counter", "Connections closed by a request or idle timeout.");
  w.sample("fulcrum_web_timeouts_total", {{"node", node}}, timeouts);
  w.family("fulcrum_web_connections_refused_total", "counter",
           "Connections closed at accept: max_connections reached with no idle one to close.");
  w.sample("fulcrum_web_connections_refused_total", {{"node", node}}, refused);
  w.family("fulcrum_web_connections_evicted_total", "counter",
           "Idle keep-alive connections closed to make room for a new one at max_connections.");
  w.sample("fulcrum_web_connections_evicted_total", {{"node", node}}, evicted);
  if (tls_stats_ != nullptr) {
    auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
    // `resumed` first: a handshake counts in `handshakes` before `resumed`, so full never goes below 0.
    uint64_t resumed = get(tls_stats_->resumed);
    uint64_t handshakes = get(tls_stats_->handshakes);
    w.family("fulcrum_web_tls_handshakes_total", "counter",
             "TLS handshakes on the listener ([security] internal_tls), by result (full, resumed from a "
             "ticket, failed: plaintext, no or a refused client certificate, a client gone mid-handshake).");
    w.sample("fulcrum_web_tls_handshakes_total", {{"node", node}, {"result", "full"}}, handshakes - resumed);
    w.sample("fulcrum_web_tls_handshakes_total", {{"node", node}, {"result", "resumed"}}, resumed);
    w.sample("fulcrum_web_tls_handshakes_total", {{"node", node}, {"result", "failed"}},
             get(tls_stats_->handshake_failures));
    w.family("fulcrum_web_tls_clients_refused_total", "counter",
             "Failed handshakes where the client had no certificate from the site CA.");
    w.sample("fulcrum_web_tls_clients_refused_total", {{"node", node}}, get(tls_stats_->verify_failures));
  }
  appendRouteMetrics(w);
  appendDbMetrics(w);
  metrics::writeProcessMetrics(w);
  return w.take();
}

void WebApp::appendRouteMetrics(metrics::PrometheusWriter& w) const {
  const std::string_view node = node_name_;
  constexpr size_t kRoutes = std::size(kRouteNames);
  static_assert(kRoutes <= http::kMaxRoutes);
  static constexpr std::string_view kClasses[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
  uint64_t by_class[kRoutes][6] = {};
  core::HistogramSnapshot duration[kRoutes];
  for (const auto& s : worker_stats_) {
    for (size_t r = 0; r < kRoutes; ++r) {
      for (size_t c = 1; c < 6; ++c) {
        by_class[r][c] += s->routes[r].responses_by_class[c].get();
      }
      s->routes[r].duration.addTo(duration[r]);
    }
  }
  w.family("fulcrum_web_route_responses_total", "counter",
           "Responses to requests that reached a route (static, guestbook, health, metrics, other), by "
           "status class.");
  for (size_t r = 0; r < kRoutes; ++r) {
    for (size_t c = 1; c < 6; ++c) {
      w.sample("fulcrum_web_route_responses_total",
               {{"node", node}, {"route", kRouteNames[r]}, {"code", kClasses[c]}}, by_class[r][c]);
    }
  }
  w.family(
      "fulcrum_web_request_duration_seconds", "histogram",
      "Time from a request's head parsed to its response queued (a guestbook request includes its database "
      "work), per route.");
  for (size_t r = 0; r < kRoutes; ++r) {
    w.histogram("fulcrum_web_request_duration_seconds", {{"node", node}, {"route", kRouteNames[r]}},
                duration[r]);
  }
}

void WebApp::appendDbMetrics(metrics::PrometheusWriter& w) const {
  if (db_ == nullptr || db_->stats.empty()) {
    return;
  }
  const std::vector<std::unique_ptr<DbStats>>& db_stats = db_->stats;
  const std::vector<std::string>& db_nodes = db_->names;
  const std::string_view node = node_name_;
  auto total = [&](auto member) {
    uint64_t sum = 0;
    for (const auto& s : db_stats) {
      sum += member(*s).get();
    }
    return sum;
  };
  struct Family {
    std::string_view name;
    std::string_view help;
    const core::Counter& (*get)(const DbStats&);
  };
  static constexpr Family kFamilies[] = {
      {"fulcrum_web_guestbook_writes_total", "Guestbook writes routed to the primary.",
       [](const DbStats& s) -> const core::Counter& { return s.writes; }},
      {"fulcrum_web_guestbook_reads_total", "Guestbook reads routed.",
       [](const DbStats& s) -> const core::Counter& { return s.reads; }},
      {"fulcrum_web_guestbook_token_reads_total", "Reads carrying a read-your-writes token.",
       [](const DbStats& s) -> const core::Counter& { return s.token_reads; }},
      {"fulcrum_web_guestbook_token_primary_reads_total",
       "Token reads served by the primary (no replica had replayed the token in time).",
       [](const DbStats& s) -> const core::Counter& { return s.token_primary_reads; }},
      {"fulcrum_web_guestbook_token_waits_total",
       "Token reads that waited for a replica to replay their token (up to token_wait; those still "
       "unserved then fall back to the primary, fulcrum_web_guestbook_token_primary_reads_total).",
       [](const DbStats& s) -> const core::Counter& { return s.token_waits; }},
      {"fulcrum_web_guestbook_replay_checks_total",
       "Replay positions asked of replicas for token reads (one per replica per tick serves every waiter).",
       [](const DbStats& s) -> const core::Counter& { return s.replay_checks; }},
      {"fulcrum_web_guestbook_unavailable_total", "Guestbook requests answered 503 (database unavailable).",
       [](const DbStats& s) -> const core::Counter& { return s.unavailable; }},
  };
  for (const Family& f : kFamilies) {
    w.family(f.name, "counter", f.help);
    w.sample(f.name, {{"node", node}}, total([&](const DbStats& s) -> const core::Counter& { return f.get(s); }));
  }
  w.family("fulcrum_web_guestbook_reads_served_total", "counter",
           "Guestbook reads run, by the role of the database node that served them (primary, replica).");
  w.sample("fulcrum_web_guestbook_reads_served_total", {{"node", node}, {"by", "primary"}},
           total([](const DbStats& s) -> const core::Counter& { return s.reads_primary; }));
  w.sample("fulcrum_web_guestbook_reads_served_total", {{"node", node}, {"by", "replica"}},
           total([](const DbStats& s) -> const core::Counter& { return s.reads_replica; }));
  // Pool gauges: every worker has its own pool to each node; the node's figure is their sum.
  auto pool = [&](size_t i, const std::atomic<uint64_t> DbNodeStats::*member) {
    uint64_t sum = 0;
    for (const auto& s : db_stats) {
      sum += ((*s->node[i]).*member).load(std::memory_order_relaxed);
    }
    return sum;
  };
  w.family("fulcrum_web_db_pool_connections", "gauge",
           "Pooled connections to each database node, by state (in_use: running a statement; idle).");
  for (size_t i = 0; i < db_nodes.size(); ++i) {
    w.sample("fulcrum_web_db_pool_connections",
             {{"node", node}, {"db_node", db_nodes[i]}, {"state", "in_use"}},
             pool(i, &DbNodeStats::pool_in_use));
    w.sample("fulcrum_web_db_pool_connections", {{"node", node}, {"db_node", db_nodes[i]}, {"state", "idle"}},
             pool(i, &DbNodeStats::pool_idle));
  }
  w.family("fulcrum_web_db_pool_waiting", "gauge",
           "Requests waiting for a pooled connection to each database node.");
  for (size_t i = 0; i < db_nodes.size(); ++i) {
    w.sample("fulcrum_web_db_pool_waiting", {{"node", node}, {"db_node", db_nodes[i]}},
             pool(i, &DbNodeStats::pool_waiting));
  }
  static constexpr std::string_view kRoles[] = {"down",    "primary", "replica",
                                                "lagging", "fenced",  "detached"};
  w.family("fulcrum_web_db_queries_total", "counter", "Statements sent to each database node.");
  for (size_t i = 0; i < db_nodes.size(); ++i) {
    w.sample("fulcrum_web_db_queries_total", {{"node", node}, {"db_node", db_nodes[i]}},
             total([&](const DbStats& s) -> const core::Counter& { return s.node[i]->queries; }));
  }
  w.family("fulcrum_web_db_errors_total", "counter", "Statements that failed, per database node.");
  for (size_t i = 0; i < db_nodes.size(); ++i) {
    w.sample("fulcrum_web_db_errors_total", {{"node", node}, {"db_node", db_nodes[i]}},
             total([&](const DbStats& s) -> const core::Counter& { return s.node[i]->errors; }));
  }
  // Roles and lag as the first worker's router last saw them.
  const DbStats& first = *db_stats.front();
  w.family("fulcrum_web_db_role", "gauge", "1 for each database node's role as this web node sees it.");
  for (size_t i = 0; i < db_nodes.size(); ++i) {
    int role = first.node[i]->role.load(std::memory_order_relaxed);
    std::string_view name = role >= 0 && role < 6 ? kRoles[role] : "down";
    w.sample("fulcrum_web_db_role", {{"node", node}, {"db_node", db_nodes[i]}, {"role", name}}, uint64_t{1});
  }
  w.family("fulcrum_web_db_lag_bytes", "gauge", "Bytes each replica's replay trails the primary.");
  for (size_t i = 0; i < db_nodes.size(); ++i) {
    w.sample("fulcrum_web_db_lag_bytes", {{"node", node}, {"db_node", db_nodes[i]}},
             first.node[i]->lag_bytes.load(std::memory_order_relaxed));
  }
}

}  // namespace fulcrum::web
