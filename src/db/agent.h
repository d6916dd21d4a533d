#pragma once
// The database agent of one [[db.node]]: supervises its own PostgreSQL, takes part in leader
// election over etcd, publishes its member record, and answers the REST API (Patroni's
// meanings) on the node's `agent` address. Everything runs on one thread, the process's main
// event loop: a control timer drives the lease and PostgreSQL; HTTP answers come from the last
// observation plus the lease as of now (so /primary stops answering 200 the instant the lease
// passes its fence deadline, even between two control ticks).
//
// Bootstrap: the node that claims initializeKey() runs initdb and then takes the leader key;
// the others wait (bounded) for the leader's member record and clone it, each with its own
// replication slot. The lease is taken only once the cluster exists, so a slow initdb can never
// outlive it.
//
// Failover (db.failover = true): when the leader key is free, the replica with the most advanced
// replay position (within max_lag_bytes of the last leader position it saw) takes the key and
// promotes; the other replicas follow the new leader; a former primary that finds another
// leader is rewound (pg_rewind) and follows it. With failover = false a replica takes the key
// only when told to (POST /failover, or a switchover); a former primary still rejoins whoever
// leads.
//
// Synchronous mode (db.synchronous = true, agent_sync.cpp): the leader keeps
// synchronous_standby_names = 'ANY 1 (...)' over its streaming replicas and publishes who may
// be promoted in the sync key; only such a replica, and the most advanced of them, promotes
// (see sync_state.h for the protocol and why no acknowledged commit is lost). With
// db.synchronous_strict, commits wait even while no replica is healthy.
//
// Switchover (POST /switchover with the admin bearer token, agent_switchover.cpp): planned and
// without loss, see switchover.h. The HTTP answer is deferred until the new leader holds the
// key (200) or the attempt is given up (503, nothing lost).
//
// Re-clone: a former primary that pg_rewind cannot bring back has its data directory moved aside
// (DATA.failed-<time>, kept) and is cloned again from the leader.
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "db/agent_state.h"
#include "db/elector.h"
#include "db/etcd_client.h"
#include "db/etcd_watch.h"
#include "db/fence_file.h"
#include "db/postgres.h"
#include "db/switchover.h"
#include "db/sync_state.h"
#include "http/server.h"

namespace fulcrum::db {

class DbAgent final : public http::Handler {
 public:
  // `site` and `loop` must outlive the agent. Check prepare() before start().
  DbAgent(const config::Site& site, const config::DbNode& node, core::EventLoop& loop);
  ~DbAgent() override;

  // Directories, secrets and the PostgresNode; a clear message when something is unusable
  // (e.g. a state_dir the postgres user cannot reach).
  Status prepare();
  // Arms the control loop (first tick at once). `on_fatal` runs when the agent cannot go on
  // (bootstrap timed out or failed); the process should exit non-zero.
  void start(std::function<void(const std::string&)> on_fatal);
  // SIGTERM: no more ticks; PostgreSQL stopped (fast), then the leader lease released and the
  // member record removed. Blocking.
  void shutdown();

  void handle(const http::Request& request, http::Response& response) override;
  // SIGCHLD: a control tick at once when it was the postmaster that died (a restart, or a
  // failover, should not wait for the next scheduled tick).
  void onChildSignal();

  NodeView view() const;

 private:
  enum class Phase { Bootstrap, Running, Failed };

  void tick();
  void bootstrapStep();
  void runPrimary();
  void runReplica();
  void maybePromote();
  // Takes the free leader key and promotes (`how`: "failover", "switchover"); false when
  // another node got the key or the promotion failed (then the key is released).
  bool takeOver(const char* how);
  // The rest of a promotion, next tick: CHECKPOINT, then replication slots.
  void finishPromotion();
  void followLeader();
  void rejoinAsReplica();
  // pg_rewind failed: data directory aside, then a new clone of `leader` (or the bootstrap
  // phase clones it later).
  void recloneFrom(const MemberRecord& leader);

  // Synchronous mode (agent_sync.cpp).
  bool syncMode() const { return site_.db.synchronous; }
  // A node holding a primary's data may lead only when no other node led since (the sync key
  // names it, or nobody).
  bool syncAllowsLeading() const;
  // A new leader lists no replica in the sync key before it accepts writes.
  bool claimSyncKey();
  std::set<std::string> otherNodes() const;  // every [[db.node]] name but this one
  // synchronous_standby_names to set just before pg_promote ("" unless strict).
  std::string promotionStandbyNames() const;
  // One or a few steps of nextSyncStep() on the leader.
  void reconcileSync();
  // Asynchronous mode: a synchronous_standby_names left from synchronous mode (or copied from a
  // former leader) would make commits wait: cleared once per leadership.
  void clearSynchronousStandbys();
  void reconcileSyncSteps();

  // Switchover (agent_switchover.cpp).
  void handleSwitchover(const http::Request& request, http::Response& response);
  void handleFailover(const http::Request& request, http::Response& response);
  void driveSwitchover();
  void finishSwitchover(int status, const std::string& message);
  // An intent in etcd names another node as the one to take the key.
  bool intentBlocks() const;
  // The leader's published record, when it is a running primary.
  std::optional<MemberRecord> leaderRecord(const std::string& leader);
  void observe();
  void publish();
  bool startPostgres(const char* why);
  // The fence that holds without this process (fence_file.h): armed with the lease's fence
  // deadline while this node leads and may write, else disarmed. Called after every lease
  // acquisition, renewal or release.
  void syncFence();
  void ensureSlots();
  // Caps etcd calls at the fence deadline while this node may write (see leader_lease.h).
  void capEtcd();
  void schedule(core::TimePoint next);
  // A watched change under the site prefix that calls for a decision now (see onWatchEvent).
  void onWatchEvent(const WatchEvent& event);
  // A control tick as soon as possible (at most one every kWakeSpacing).
  void wake();
  void fatal(const std::string& message);

  std::string statusJson() const;
  std::string metricsText() const;

  const config::Site& site_;
  const config::DbNode& node_;
  core::EventLoop& loop_;
  core::Timer timer_;
  core::Duration interval_;
  EtcdClient etcd_;
  Elector elector_;
  std::unique_ptr<PostgresNode> pg_;
  std::unique_ptr<FenceFile> fence_;
  AppDatabase app_;
  std::function<void(const std::string&)> on_fatal_;
  // Wakes the control loop when the leader key, the sync key, the switchover intent or another
  // member's role changes: failover starts when etcd deletes the expired key, not a tick later.
  std::unique_ptr<EtcdWatch> watch_;
  // Role and seen_leader of every other member as last seen by the watch (a change wakes).
  std::map<std::string, std::pair<std::string, std::string>> watched_members_;
  core::TimePoint last_tick_{};
  core::TimePoint next_tick_{};  // when the control timer is armed for

  Phase phase_ = Phase::Bootstrap;
  bool primary_data_ = false;  // our data directory is a primary's (no standby.signal)
  bool slots_ok_ = false;
  core::TimePoint bootstrap_deadline_{};
  core::TimePoint next_wait_log_{};

  // Last observations.
  bool pg_running_ = false;
  bool status_ok_ = false;
  PgStatus pg_status_;
  std::optional<std::string> leader_name_;
  std::optional<Lsn> leader_lsn_;
  std::optional<Lsn> last_leader_lsn_;  // kept after the leader is gone: the failover lag bound
  std::string following_;               // the leader this replica was last pointed at
  std::vector<MemberRecord> members_;
  LeaseId member_lease_ = 0;
  bool etcd_ok_ = false;
  std::string last_etcd_error_;

  // Counters for /metrics.
  uint64_t postgres_starts_ = 0;
  uint64_t postgres_exits_ = 0;
  uint64_t fences_ = 0;
  uint64_t promotions_ = 0;
  uint64_t rewinds_ = 0;
  uint64_t reclones_ = 0;
  uint64_t switchovers_ = 0;

  // Site state read with the member records (publish()).
  bool site_read_ = false;  // at least one full read succeeded
  std::optional<SyncState> sync_key_;
  std::optional<SwitchoverIntent> intent_;

  // Synchronous mode, on the leader.
  std::optional<std::set<std::string>> pg_sync_;  // synchronous_standby_names we set (nullopt: unknown)
  std::optional<Lsn> narrow_lsn_;
  std::string last_sync_wait_;

  // Re-clone: the bootstrap phase must clone, never initdb.
  bool must_clone_ = false;

  // Switchover in progress on this (leader) node.
  std::string admin_token_;
  struct Switchover {
    enum class Step { Announce, CatchUp, Takeover };
    Step step = Step::Announce;
    std::string to;
    http::DeferredResponse reply;
    core::TimePoint started{};
    core::TimePoint deadline{};
    Lsn final_lsn = 0;
    std::string intent_value;  // as published (deleted by value when the attempt ends)
  };
  std::optional<Switchover> switchover_;
  bool checkpoint_pending_ = false;  // promoted, the post-promotion CHECKPOINT not done yet
  bool promoted_this_tick_ = false;  // the next tick comes at once (one time only)
};

}  // namespace fulcrum::db
