#pragma once
// [lb.vip]: the lb's VRRP router (lb/vrrp/vrrp_node.h) and what its priority tracks: whether a
// server behind this node has passed a check and is up, and whether every worker loop answers
// a heartbeat in time. A node whose proxy cannot serve advertises kDegradedPriority, so a
// healthy peer takes the address; it starts that way until its first checks pass.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/event_loop.h"
#include "core/workers.h"
#include "lb/health/health_checker.h"
#include "lb/pool.h"
#include "lb/vrrp/vrrp_node.h"

namespace fulcrum::lb {

class VrrpTracking {
 public:
  // Opens the VRRP socket, removes a stale virtual IP and starts in Backup. Call after the
  // workers and the health checker have started. nullptr with `error` on failure.
  static std::unique_ptr<VrrpTracking> create(const config::Site& site, const config::LbNode& node,
                                              core::EventLoop& main_loop, core::WorkerGroup& workers,
                                              const HealthChecker& checker,
                                              const std::vector<Backend>& backends, std::string& error);
  // Leaves the virtual router (priority-0 advert, address released); tracking stops.
  void stop();
  const vrrp::Node& node() const { return *node_; }

 private:
  VrrpTracking(core::EventLoop& loop, core::WorkerGroup& workers, const HealthChecker& checker,
               const std::vector<Backend>& backends, std::unique_ptr<vrrp::Node> node, core::Duration every);
  vrrp::NodeHealth health() const;
  void check();

  core::WorkerGroup& workers_;
  const HealthChecker& checker_;
  const std::vector<Backend>& backends_;
  std::unique_ptr<vrrp::Node> node_;
  core::Duration every_;
  core::Duration stall_;
  // The last heartbeat each worker answered (steady clock, ns): written by that worker.
  std::unique_ptr<std::atomic<int64_t>[]> beats_;
  core::Timer timer_;
  bool stopped_ = false;
};

}  // namespace fulcrum::lb
