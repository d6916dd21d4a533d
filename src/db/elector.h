#pragma once
// Leader election over etcd: the leader is whoever holds the key /fulcrum/<site>/leader, bound
// to a lease it keeps renewing. The etcd calls are here; when to renew and when to stop
// accepting writes is LeaderLease's (see the fencing argument in leader_lease.h).
//
// Blocking: each call costs at most the client's request timeout (per etcd call made).
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "db/etcd_client.h"
#include "db/leader_lease.h"
#include "db/result.h"

namespace fulcrum::db {

// "/fulcrum/<site>/leader": one leader key per site, so sites may share an etcd.
std::string leaderKey(std::string_view site_name);

struct ElectorOptions {
  std::string key;   // leaderKey(site)
  std::string node;  // this node's name: the value of the key while it leads
  LeaseTiming timing;
};

class Elector {
 public:
  // `client` and `clock` must outlive the Elector.
  Elector(EtcdClient& client, const core::Clock& clock, ElectorOptions options);

  // Becomes leader if nobody is: grants a lease, then creates the key bound to it. True when
  // this node now leads (or already did); false when another node holds the key.
  Result<bool> tryAcquire();
  // Keeps the lease alive and checks the key still names this node with this lease. On a
  // failed call nothing is extended (the lease fences itself on time); when the lease expired
  // or the key was taken, leadership is lost.
  Status renew();
  // Renewals so far that succeeded (ok) or not: what renew() returned.
  uint64_t renewals(bool ok) const { return ok ? renewals_ok_ : renewals_failed_; }
  // For the agent's loop: renews when due and returns the decision that follows. The agent acts
  // on `fenced` and sleeps until `next_action`. While writes are allowed, a renewal's etcd calls
  // are cut short at the fence deadline, so tick() returns in time for the agent to fence.
  // The last renewal error is in lastError().
  LeaseDecision tick();
  // Steps down: stops writes first (fenced at once), then revokes the lease, which deletes the
  // key so another node can take over without waiting for the TTL.
  Status release();
  // The node named by the leader key, or nullopt when there is no leader.
  Result<std::optional<std::string>> currentLeader();

  bool isLeader() const { return lease_.held(); }
  bool mayWrite() const { return lease_.mayWrite(); }
  const LeaderLease& lease() const { return lease_; }
  LeaseId leaseId() const { return lease_id_; }
  const ElectorOptions& options() const { return options_; }
  const std::string& lastError() const { return last_error_; }

 private:
  void lose();
  Status renewOnce();

  EtcdClient& client_;
  const core::Clock& clock_;
  ElectorOptions options_;
  LeaderLease lease_;
  LeaseId lease_id_ = 0;  // non-zero while held
  std::string last_error_;
  uint64_t renewals_ok_ = 0;
  uint64_t renewals_failed_ = 0;
};

}  // namespace fulcrum::db
