#pragma once
// The database frontends of a load balancer node ([[lb.node]] db_write and db_read): TCP
// proxies whose servers are the [[db.node]] PostgreSQL addresses, health-checked through each
// node's agent like Patroni's HAProxy configuration. db_write goes to the node whose agent
// answers GET /primary with 200; db_read spreads over the nodes answering
// GET /replica?lag=<max_lag_bytes> with 200, and falls back to the primary while none does.
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/event_loop.h"
#include "core/workers.h"
#include "lb/health/health_checker.h"
#include "lb/pool.h"
#include "lb/tcp_proxy.h"
#include "metrics/prometheus.h"

namespace fulcrum::lb {

// The health settings of database servers, from [lb.health]: checks at least every second (a
// failover wants a quick reaction), exactly 200 passes, and a server starts DOWN until its
// first passing check (no write may reach a node that has not said it is the primary).
HealthOptions dbHealthOptions(const config::LbHealth& health);

// A callback that runs `done` on its `count`th call (one thread): several drains, one "idle".
std::function<void()> afterAll(size_t count, std::function<void()> done);

class DbFrontends {
 public:
  // Binds every listener (one per worker and frontend) and builds the health checks; null with
  // `error` set when a listener cannot be bound. Call on the main thread before workers start.
  // `tls` ([security] internal_tls): the lb's client TLS, which the agents' API requires (not
  // owned; outlives this).
  static std::unique_ptr<DbFrontends> create(const config::Site& site, const config::LbNode& node,
                                             unsigned threads, core::EventLoop& main_loop,
                                             core::WorkerGroup& workers, tls::ClientContext* tls,
                                             std::string& error);
  ~DbFrontends();
  DbFrontends(const DbFrontends&) = delete;
  DbFrontends& operator=(const DbFrontends&) = delete;

  // The firewall for every frontend's listener (not owned); set before the workers start.
  void setFilter(core::IpFilter* filter) { filter_ = filter; }
  // A reload's firewall, once the workers run: posted to each worker's listeners (main thread;
  // the previous filter must outlive the posts).
  void replaceFilter(core::IpFilter* filter);
  // Builds worker `index`'s proxies, on that worker's thread.
  void startWorker(core::EventLoop& loop, unsigned index);
  // Starts the health checks (main thread), once every worker runs.
  void startChecks();
  // Stops worker `index` accepting; `on_idle` runs on it once its last session has ended.
  void drainWorker(unsigned index, std::function<void()> on_idle);
  // Frees the per-worker proxies once the workers have stopped.
  void stopWorkers();

  // The admin API (main thread): whether `name` is a [[db.node]] behind these frontends, and
  // taking it out of rotation (or back) in every frontend and worker. Open sessions go on; a
  // server marked down by its checks is still cut.
  bool hasServer(std::string_view name) const;
  void setInRotation(const std::string& name, bool in_rotation);

  // For the stats listener (main thread).
  void writeMetrics(metrics::PrometheusWriter& w, std::string_view node) const;
  nlohmann::json stateJson() const;
  std::string summary() const;  // "db_write on 127.0.0.1:5000, db_read on 127.0.0.1:5001"

 private:
  struct Frontend;
  DbFrontends(core::EventLoop& main_loop, core::WorkerGroup& workers);
  void onHealthChange(uint32_t check, bool up);
  // A check's answer: the agent's /status JSON, whose role is shown in /api/state.
  void onAnswer(uint32_t check, std::string_view body);

  core::EventLoop& main_loop_;
  core::WorkerGroup& workers_;
  std::vector<std::unique_ptr<Frontend>> frontends_;
  std::unique_ptr<HealthChecker> checker_;
  struct CheckName {
    uint32_t id;
    std::string server;     // the [[db.node]]
    std::string_view kind;  // "primary" | "replica": what its agent is asked
    uint32_t node;          // its index in [[db.node]]
  };
  std::vector<CheckName> checks_;
  // By [[db.node]]: the role its agent gave in the last check's answer (primary, replica,
  // stopped), "unknown" without one.
  std::vector<std::string> roles_;
  core::IpFilter* filter_ = nullptr;
};

}  // namespace fulcrum::lb
