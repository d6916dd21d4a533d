#pragma once
// The whole site as the load balancer's dashboard shows it, kept on the main thread beside the
// stats listener: the web servers as this node's health checks see them, the other load
// balancers, the database agents (role, timeline, lag) and etcd asked every two seconds with the
// health checker's non-blocking HTTP client, a sample of the workers' counters every second for
// the 15-minute charts and the per-server rates and latency percentiles, and a log of state
// changes with flapping marked. Workers are only read (their counters and histograms).
#include <chrono>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/event_loop.h"
#include "core/histogram.h"
#include "lb/health/health_checker.h"
#include "lb/pool.h"
#include "lb/proxy.h"
#include "lb/site_history.h"

namespace fulcrum::lb {

struct SiteMonitorInputs {
  const config::Site* site = nullptr;
  std::string self;  // this load balancer's node name
  const std::vector<Backend>* backends = nullptr;
  const std::vector<std::unique_ptr<ProxyStats>>* workers = nullptr;
  const HealthChecker* health = nullptr;  // the web servers' checks
  // [security] internal_tls: the lb's client TLS, for the etcd members, the agents' API and the
  // other lbs' stats listeners. Not owned.
  tls::ClientContext* tls = nullptr;
};

// Rates and latency of the last few seconds (kWindow), from counters and histogram snapshots.
struct WindowRates {
  double rps = 0;
  double errors_per_s = 0;  // 5xx answers (and, per server, failed attempts) per second
  double p50_ms = 0, p90_ms = 0, p99_ms = 0;
};

class SiteMonitor {
 public:
  static constexpr auto kSampleEvery = std::chrono::seconds(1);
  static constexpr size_t kHistoryPoints = 900;  // 15 minutes at one a second
  static constexpr size_t kWindowSamples = 10;   // per-server rates over the last 10 s
  static constexpr auto kPeerInterval = std::chrono::seconds(2);

  SiteMonitor(core::EventLoop& loop, SiteMonitorInputs inputs);
  ~SiteMonitor();
  SiteMonitor(const SiteMonitor&) = delete;
  SiteMonitor& operator=(const SiteMonitor&) = delete;

  // Starts sampling and the peer checks (main thread, once the workers run).
  void start();
  // This node's checker changed a web server's state (main thread).
  void serverChanged(uint32_t id, bool up, std::string_view reason);
  // The admin API set a web server's admin state ("ready", "drain", "maint").
  // A reload changed the server table (servers appended or marked removed).
  void serversChanged();
  void adminChanged(uint32_t id, std::string_view admin);

  // Hook for [monitoring]: the Prometheus base URL ("http://127.0.0.1:9090") whose query_range
  // API the page asks for its charts instead of this ring (set with [monitoring]).
  void setPrometheusUrl(std::string url) { prometheus_url_ = std::move(url); }

  // Adds the dashboard's keys to the /api/state object (whose "servers" and "db_frontends" it
  // reads and extends): summary, nodes, events, history, rates.
  void addTo(nlohmann::json& state) const;
  WindowRates serverRates(uint32_t id) const;

 private:
  struct Peer;
  struct Snapshot {
    core::TimePoint at{};
    uint64_t requests = 0, errors = 0;
    core::HistogramSnapshot total_time;
    std::vector<uint64_t> server_requests, server_errors;
    std::vector<core::HistogramSnapshot> server_time;
  };
  Snapshot take() const;
  void sample();
  void onPeerResult(uint32_t id, bool ok, std::string_view reason, std::string_view body);
  NodeView webView(size_t id, int64_t now_ms) const;
  static int64_t nowMs();

  core::EventLoop& loop_;
  SiteMonitorInputs in_;
  std::vector<Peer> peers_;
  std::unique_ptr<HealthChecker> peer_checker_;
  std::vector<std::string> web_reason_;  // by server id: what made its last change
  std::vector<std::string> web_admin_;   // by server id
  StateLog log_;
  Ring<SitePoint> history_{kHistoryPoints};
  Ring<Snapshot> snapshots_{kWindowSamples + 1};
  std::vector<WindowRates> server_rates_;
  WindowRates site_rates_;
  core::Timer sampler_;
  std::string prometheus_url_;
  int64_t started_ms_ = 0;
};

}  // namespace fulcrum::lb
