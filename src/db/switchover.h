#pragma once
// Planned switchover (POST /switchover), the pure part: the request body, the choice of the
// target, and the intent published in etcd. The steps themselves are the agent's.
//
// Protocol. The leader publishes the intent {"from": leader, "to": target} at switchoverKey(),
// bound to its member lease (gone if the leader dies), in a txn guarded by the leader key. It
// then stops its PostgreSQL (fast: a checkpoint, and the walsenders send all WAL to connected
// standbys before they exit), waits (bounded) until the target's published flushed position
// reaches the shutdown checkpoint, and releases the leader key. While the intent exists, only
// its target may take the free key; it promotes (it holds every byte the old leader wrote), and
// the old leader rejoins as its replica. A target that does not catch up in time: the leader
// restarts its PostgreSQL and stays leader (nothing changed). A target that does not take the
// key in time: the intent is deleted and ordinary failover elects a leader.
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "db/agent_state.h"
#include "db/sync_state.h"

namespace fulcrum::db {

// "/fulcrum/<site>/switchover".
std::string switchoverKey(std::string_view site);

struct SwitchoverIntent {
  std::string from;
  std::string to;
};
std::string encodeSwitchover(const SwitchoverIntent& intent);
std::optional<SwitchoverIntent> decodeSwitchover(std::string_view json);

// The body of POST /switchover: {"to": "db-02"} or {} (any healthy replica), optionally with
// "at": a time (backup_catalog.h parseTime: "2026-12-04 03:00:00", "...Z", "+01:00", "@unix") to
// schedule it for, or {"cancel": true} to drop a scheduled one. Nullopt `to` when absent; an
// error message (for a 400) when the body is not such an object.
struct SwitchoverRequest {
  std::optional<std::string> to;
  std::optional<int64_t> at;  // unix seconds
  bool cancel = false;
};
Result<SwitchoverRequest> parseSwitchoverRequest(std::string_view body);

// Which replica to hand over to, as the leader sees the cluster now.
struct SwitchoverInputs {
  std::string me;
  std::set<std::string> nodes;  // every [[db.node]] name
  uint32_t timeline = 0;        // the leader's
  std::vector<MemberRecord> members;
  std::optional<SyncState> sync;  // set in synchronous mode: the target must be listed
};
struct SwitchoverChoice {
  int status = 200;    // 200, or the HTTP status of the refusal (400, 409, 503)
  std::string target;  // when 200
  std::string error;   // otherwise
};
SwitchoverChoice chooseSwitchoverTarget(const SwitchoverRequest& request, const SwitchoverInputs& in);

// Manual failover (POST /failover, Patroni's), sent to the agent of the replica that should
// lead, for a cluster whose leader key is free: with failover = false nobody else would take
// it, and with failover = true it picks the node. The rules of automatic failover hold
// (synchronous mode: maySyncPromote; otherwise within max_lag_bytes of the last leader position
// and no other replica replayed further); among equally advanced replicas the operator chooses,
// where automatic failover would take the lowest name.
struct FailoverInputs {
  std::string me;
  std::set<std::string> nodes;        // every [[db.node]] name
  std::optional<std::string> leader;  // who holds the leader key (nullopt: free)
  std::string leader_agent;           // the leader's agent address, when known
  bool running_replica = false;       // PostgreSQL up, in recovery, status known
  bool intent_for_other = false;      // a switchover intent names another node
  Lsn mine = 0;                       // flushed here (received or replayed, the further)
  Lsn replayed = 0;
  std::optional<Lsn> last_leader_lsn;  // the last position the leader published (nullopt: never seen)
  uint64_t max_lag_bytes = 0;
  bool sync_mode = false;
  std::optional<SyncState> sync;  // the sync key
  std::vector<MemberRecord> members;
};
struct FailoverCheck {
  int status = 200;   // 200: take the key now; else the HTTP status of the refusal
  std::string error;  // when refused
};
FailoverCheck checkManualFailover(const SwitchoverRequest& request, const FailoverInputs& in);

}  // namespace fulcrum::db
