#pragma once
// The leader's view of its etcd lease: when to renew it and when it must consider itself fenced
// (stop accepting writes). Pure logic on an injected clock; the etcd calls are the Elector's.
//
// Why a leader may trust its lease until  S + ttl - safety_margin,  S being the local time at
// which the last successful renewal (or the grant) was *sent*:
//   - etcd handles the request at some instant P after it was sent (P >= S), and from P the lease
//     lives for at least ttl: the lessor sets expiry = P + ttl, and an etcd leader change only
//     lengthens leases (the new leader restarts every remaining TTL).
//   - The leader key is bound to the lease, so no other node can create it before etcd has found
//     the lease expired and deleted the key: at some instant >= P + ttl >= S + ttl.
//   - Measuring from the send time needs no trust in the answer's latency: an answer that comes
//     late still proves the renewal happened at P >= S, and a renewal whose answer never comes
//     (timeout, connection reset) extends nothing, since we cannot know whether or when it was
//     handled.
//   - safety_margin covers what the argument leaves out: the local and etcd clocks measuring a
//     second slightly differently (NTP slews by at most 500 ppm: 2.5 ms of a 5 s ttl) and,
//     mostly, the time the agent needs to act on the fence (refuse /primary, demote PostgreSQL)
//     after it notices.
// The argument assumes the key disappears only when its lease does (or when this leader
// releases it). An operator deleting the key by hand lets another node in at once; the next
// renewal notices (the Elector checks the key) but writes in between are not fenced.
#include <string>

#include "core/clock.h"

namespace fulcrum::db {

struct LeaseTiming {
  core::Duration ttl{};             // the lease TTL (db.leader_ttl_ms)
  core::Duration renew_interval{};  // renew this long after the last successful renewal was sent
  core::Duration retry_interval{};  // after a failed renewal, retry this soon
  core::Duration safety_margin{};   // stop writes this long before the lease can expire

  // Renew every ttl/2, retry every ttl/10, fence ttl/5 early: a leader whose renewals all fail
  // makes three attempts (at 0.5, 0.6 and 0.7 ttl) before it fences itself at 0.8 ttl, so it
  // rides out an etcd stall of 0.3 ttl (1.5 s at the default 5 s). Renewing late is what makes
  // failover fast: when a leader dies, on average 0.75 ttl of its lease remain (0.83 ttl when
  // renewing every third), and that wait is most of a failover.
  static LeaseTiming forTtl(core::Duration ttl);
  // Empty when the timing is usable; else why not (e.g. it would fence before its first renewal).
  std::string validate() const;
};

struct LeaseDecision {
  bool should_renew = false;  // a renewal is due now
  bool fenced = true;         // no lease, or one that may have expired: accept no writes
  core::TimePoint next_action = core::TimePoint::max();  // when the decision changes next
};

class LeaderLease {
 public:
  LeaderLease(const core::Clock& clock, LeaseTiming timing);

  // A lease was granted (and the leader key bound to it) by a grant request sent at `sent_at`.
  // `granted_ttl` is etcd's answer; the shorter of it and timing.ttl is used.
  void acquired(core::TimePoint sent_at, core::Duration granted_ttl);
  // A renewal sent at `sent_at` succeeded. Answers may arrive out of order: the deadline only
  // ever moves forward. Ignored when the lease is not held (lost() is final for this lease).
  void renewed(core::TimePoint sent_at, core::Duration granted_ttl);
  // A renewal failed (timeout, etcd unreachable): nothing is extended; retry soon.
  void renewFailed();
  // The lease is gone (expired, key taken, released): fenced until the next acquired().
  void lost();

  bool held() const { return held_; }
  // Held and not past the fence deadline, now.
  bool mayWrite() const { return decide().fenced == false; }
  // The instant from which writes must stop (meaningful while held).
  core::TimePoint fenceDeadline() const { return fence_deadline_; }
  core::TimePoint lastRenewalSent() const { return renewal_sent_; }
  LeaseDecision decide() const;
  const LeaseTiming& timing() const { return timing_; }

 private:
  void extend(core::TimePoint sent_at, core::Duration granted_ttl);

  const core::Clock& clock_;
  LeaseTiming timing_;
  bool held_ = false;
  core::TimePoint renewal_sent_{};    // send time of the latest successful grant/renewal
  core::TimePoint fence_deadline_{};  // renewal_sent_ + min(ttl, granted) - safety_margin
  core::TimePoint next_renewal_{};
};

}  // namespace fulcrum::db
