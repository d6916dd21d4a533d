#include "lb/vrrp_tracking.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "core/log.h"
#include "lb/lb_command.h"
#include "lb/vrrp/link.h"

namespace fulcrum::lb {

namespace {

int64_t steadyNs() {
  return std::chrono::steady_clock::now().time_since_epoch().count();
}

uint32_t hostOrder(const core::IpAddress& ip) {
  uint32_t net = 0;
  std::memcpy(&net, ip.bytes.data(), 4);
  return ntohl(net);
}

}  // namespace

int releaseVip(const config::Site& site) {
  if (!site.lb.vip) {
    log::info("no [lb.vip]: no virtual IP to release");
    return 0;
  }
  const config::LbVip& vip = *site.lb.vip;
  std::string error;
  const int index = vrrp::interfaceIndex(vip.interface, error);
  if (index == 0) {
    log::error("release of {}: {}", vip.address, error);
    return 1;
  }
  const bool held = vrrp::hasAddress(vip.interface, hostOrder(vip.ip));
  if (!vrrp::setAddress(index, hostOrder(vip.ip), vip.prefix_len, false, error)) {
    log::error("release of {}: {}", vip.address, error);
    return 1;
  }
  if (held) {
    log::warn("vrrp: released {} from {} (left by a node that stopped without releasing it)", vip.address,
              vip.interface);
  }
  return 0;
}

std::unique_ptr<VrrpTracking> VrrpTracking::create(const config::Site& site, const config::LbNode& node,
                                                   core::EventLoop& main_loop, core::WorkerGroup& workers,
                                                   const HealthChecker& checker,
                                                   const std::vector<Backend>& backends, std::string& error) {
  const config::LbVip& vip = *site.lb.vip;
  vrrp::NodeOptions options;
  options.interface = vip.interface;
  options.vip = hostOrder(vip.ip);
  options.prefix_len = vip.prefix_len;
  options.router.vrid = static_cast<uint8_t>(vip.vrid);
  options.router.priority = static_cast<uint8_t>(node.priority);
  options.router.advert_interval = core::millis(vip.advert_interval_ms);
  options.router.preempt = vip.preempt;
  options.router.preempt_delay = core::millis(vip.preempt_delay_ms);
  for (const core::IpAddress& peer : vip.unicast_peers) {
    options.unicast_peers.push_back(hostOrder(peer));
  }
  auto vrrp_node = vrrp::Node::create(main_loop, std::move(options), error);
  if (!vrrp_node) {
    return nullptr;
  }
  // Health is looked at every advert interval (at least every 50 ms apart: the checks do not
  // change faster than their own interval anyway).
  core::Duration every = std::max<core::Duration>(core::millis(vip.advert_interval_ms), core::millis(50));
  auto tracking = std::unique_ptr<VrrpTracking>(
      new VrrpTracking(main_loop, workers, checker, backends, std::move(vrrp_node), every));
  tracking->node_->start(tracking->health());
  tracking->check();
  return tracking;
}

VrrpTracking::VrrpTracking(core::EventLoop& loop, core::WorkerGroup& workers, const HealthChecker& checker,
                           const std::vector<Backend>& backends, std::unique_ptr<vrrp::Node> node,
                           core::Duration every)
    : workers_(workers),
      checker_(checker),
      backends_(backends),
      node_(std::move(node)),
      every_(every),
      // A worker that has not answered for this long cannot be serving its connections.
      stall_(std::max<core::Duration>(std::chrono::seconds(1), 3 * every)),
      beats_(new std::atomic<int64_t>[workers.size()]),
      timer_(loop, [this] { check(); }) {
  int64_t now = steadyNs();
  for (size_t i = 0; i < workers_.size(); ++i) {
    beats_[i].store(now, std::memory_order_relaxed);
  }
}

vrrp::NodeHealth VrrpTracking::health() const {
  vrrp::NodeHealth h;
  // Up and passed a check at least once: servers start UP before any check, and a node that
  // just started must not take the address on that assumption.
  h.servers_up = backends_.empty() || std::any_of(backends_.begin(), backends_.end(), [&](const Backend& b) {
                   return !b.removed && checker_.isUp(b.id) && checker_.stats(b.id).passed > 0;
                 });
  int64_t now = steadyNs();
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (now - beats_[i].load(std::memory_order_relaxed) > stall_.count()) {
      h.workers_alive = false;
    }
  }
  return h;
}

void VrrpTracking::check() {
  if (stopped_) {
    return;
  }
  node_->setHealth(health());
  std::atomic<int64_t>* beats = beats_.get();
  workers_.postAll(
      [beats](core::EventLoop&, unsigned i) { beats[i].store(steadyNs(), std::memory_order_relaxed); });
  timer_.armAfter(every_);
}

void VrrpTracking::stop() {
  stopped_ = true;
  timer_.disarm();
  node_->stop();
}

}  // namespace fulcrum::lb
