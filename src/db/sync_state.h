#pragma once
// Synchronous replication (db.synchronous = true), kept pure so every decision is unit-tested:
// the value of synchronous_standby_names, the etcd "sync key", the leader's next step to keep
// both in line with its healthy replicas, and who may be promoted when the leader key is free.
//
// The sync key /fulcrum/<site>/sync (permanent, no lease; written only by the leader, in a txn
// guarded by the leader key) holds {"leader": L, "sync": [names]}: the replicas of L that may
// be promoted. Invariant: every commit L has acknowledged is flushed on at least one replica in
// `sync`, and `sync` includes every name in L's synchronous_standby_names = 'ANY 1 (...)'. So:
//   - widening: a name goes into the key BEFORE it goes into synchronous_standby_names (from
//     then on a commit may be acknowledged by that replica alone);
//   - narrowing: a name leaves synchronous_standby_names first; it leaves the key only once its
//     walsender no longer counts (sync_priority 0 or disconnected) and a replica still listed
//     has flushed past the leader's position read after that (every commit the removed one
//     could have acknowledged alone is then on a listed one);
//   - no healthy replica: the key is emptied first (nobody may be promoted), then
//     synchronous_standby_names (writes go on, acknowledged by the primary alone). This is
//     Patroni's non-strict synchronous_mode: writes stay available, failover waits until a
//     replica is synchronous again;
//   - strict (db.synchronous_strict, Patroni's synchronous_mode_strict): with no healthy
//     replica, commits wait instead. synchronous_standby_names keeps the names it had; when it
//     had none (a new leader), every other node is listed in the key first and then named in
//     synchronous_standby_names, so whichever replica comes back acknowledges, and it was listed
//     before it could;
//   - a new leader empties the key (leader = itself) before it accepts any write.
// Promotion: a replica may take the free leader key only when it is listed, every other listed
// replica has published a record since it saw the leader key gone (so no acknowledged commit
// can still reach it) and is running, and none of them has flushed further (ties: the lower
// name wins). WAL is one line, so the most advanced listed replica holds every acknowledged
// commit. A listed replica that cannot be seen blocks failover (a double failure): waiting is
// safe, guessing is not.
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "db/agent_state.h"
#include "pg/pg_format.h"

namespace fulcrum::db {

// "/fulcrum/<site>/sync".
std::string syncKey(std::string_view site);

struct SyncState {
  std::string leader;
  std::set<std::string> sync;  // replicas that may be promoted
};
std::string encodeSync(const SyncState& state);
// Nullopt when `json` is not a sync record.
std::optional<SyncState> decodeSync(std::string_view json);

// synchronous_standby_names for `names`: 'ANY 1 ("db-2", "db-3")' (each name a quoted
// identifier, so any character is kept); "" when `names` is empty.
std::string standbyNamesValue(const std::set<std::string>& names);

// One replica as the leader sees it in pg_stat_replication.
struct SyncReplica {
  std::string name;
  bool streaming = false;  // state = 'streaming'
  bool counted = false;    // sync_priority > 0: its flushes may acknowledge commits
  Lsn flush_lsn = 0;
};

// The leader's view for one reconciliation step.
struct SyncInputs {
  std::string me;
  std::optional<SyncState> key;             // as read from etcd (nullopt: absent)
  std::optional<std::set<std::string>> pg;  // synchronous_standby_names in force (nullopt: unknown)
  std::set<std::string> nodes;              // every other [[db.node]] name
  std::vector<SyncReplica> replicas;        // pg_stat_replication
  Lsn current_lsn = 0;                      // pg_current_wal_lsn() read after `replicas`
  std::optional<Lsn> narrow_lsn;            // recorded by an earlier step (see SyncStep)
  bool strict = false;                      // commits wait even with no healthy replica
};

// What the leader does next; at most one change per step (the next step sees its effect).
struct SyncStep {
  enum class Kind {
    None,       // in line
    WriteKey,   // write `key` to etcd (guarded by the leader key)
    SetPg,      // set synchronous_standby_names to `pg`
    RecordLsn,  // narrowing: the removed walsenders no longer count; remember `lsn`
    Wait,       // narrowing: a listed replica has not flushed past the recorded LSN yet
  };
  Kind kind = Kind::None;
  SyncState key;
  std::set<std::string> pg;
  Lsn lsn = 0;
  std::string why;  // for the log
};
SyncStep nextSyncStep(const SyncInputs& in);

// Healthy replicas: streaming, and named like another node.
std::set<std::string> healthySyncNames(const SyncInputs& in);

// May `me` take the free leader key and promote? `mine` is this replica's flushed position
// (received or replayed, whichever is further); `members` the published records.
struct PromoteVerdict {
  bool allowed = false;
  std::string why;  // when not allowed
};
PromoteVerdict maySyncPromote(const std::optional<SyncState>& key, const std::string& me, Lsn mine,
                              const std::vector<MemberRecord>& members);

// The same in asynchronous mode, for `me` that replayed `mine`: within max_lag_bytes of the last
// leader position it saw (when it saw one), and no running replica replayed further (it could
// not follow a timeline forked off before its position). With `yield_ties` an equally advanced
// replica with a lower name goes first (automatic failover; a manual one names its node).
PromoteVerdict mayAsyncPromote(const std::string& me, Lsn mine, std::optional<Lsn> last_leader_lsn,
                               uint64_t max_lag_bytes, const std::vector<MemberRecord>& members, bool yield_ties);

}  // namespace fulcrum::db
