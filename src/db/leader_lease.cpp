#include "db/leader_lease.h"

#include <algorithm>

namespace fulcrum::db {

LeaseTiming LeaseTiming::forTtl(core::Duration ttl) {
  LeaseTiming timing;
  timing.ttl = ttl;
  timing.renew_interval = ttl / 2;
  timing.retry_interval = ttl / 10;
  timing.safety_margin = ttl / 5;
  return timing;
}

std::string LeaseTiming::validate() const {
  if (ttl <= core::Duration::zero()) {
    return "lease ttl must be positive";
  }
  if (renew_interval <= core::Duration::zero() || retry_interval <= core::Duration::zero()) {
    return "lease renew and retry intervals must be positive";
  }
  if (safety_margin < core::Duration::zero() || safety_margin >= ttl) {
    return "lease safety margin must be at least 0 and below the ttl";
  }
  if (renew_interval >= ttl - safety_margin) {
    return "lease renew interval must be shorter than ttl - safety margin, or the leader fences itself "
           "before its first renewal";
  }
  return {};
}

LeaderLease::LeaderLease(const core::Clock& clock, LeaseTiming timing) : clock_(clock), timing_(timing) {}

void LeaderLease::acquired(core::TimePoint sent_at, core::Duration granted_ttl) {
  held_ = true;
  renewal_sent_ = sent_at;
  fence_deadline_ = sent_at + std::min(timing_.ttl, granted_ttl) - timing_.safety_margin;
  next_renewal_ = sent_at + timing_.renew_interval;
}

void LeaderLease::renewed(core::TimePoint sent_at, core::Duration granted_ttl) {
  if (!held_) {
    return;
  }
  extend(sent_at, granted_ttl);
}

void LeaderLease::extend(core::TimePoint sent_at, core::Duration granted_ttl) {
  fence_deadline_ =
      std::max(fence_deadline_, sent_at + std::min(timing_.ttl, granted_ttl) - timing_.safety_margin);
  renewal_sent_ = std::max(renewal_sent_, sent_at);
  next_renewal_ = renewal_sent_ + timing_.renew_interval;
}

void LeaderLease::renewFailed() {
  if (held_) {
    next_renewal_ = clock_.now() + timing_.retry_interval;
  }
}

void LeaderLease::lost() {
  held_ = false;
}

LeaseDecision LeaderLease::decide() const {
  LeaseDecision decision;
  if (!held_) {
    return decision;  // fenced, nothing to renew
  }
  const core::TimePoint now = clock_.now();
  decision.fenced = now >= fence_deadline_;
  // A fenced leader keeps renewing: while etcd still has the lease, a renewal that gets through
  // restores it (nobody else can hold the key meanwhile); etcd answers TTL 0 once it is gone.
  decision.should_renew = now >= next_renewal_;
  if (decision.should_renew) {
    decision.next_action = now;
  } else if (decision.fenced) {
    decision.next_action = next_renewal_;
  } else {
    decision.next_action = std::min(next_renewal_, fence_deadline_);
  }
  return decision;
}

}  // namespace fulcrum::db
