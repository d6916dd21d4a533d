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
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "db/agent_machine.h"
#include "db/agent_state.h"
#include "db/backup_manager.h"
#include "db/cluster_history.h"
#include "db/elector.h"
#include "db/etcd_client.h"
#include "db/etcd_watch.h"
#include "db/fence_file.h"
#include "db/postgres.h"
#include "db/site_keys.h"
#include "db/switchover.h"
#include "db/sync_state.h"
#include "http/server.h"
#include "run/node_files.h"
#include "tls/tls_transport.h"

namespace fulcrum::db {

class DbAgent final : public http::Handler {
 public:
  // `loop` must outlive the agent (the site and node are copied). Check prepare() before start().
  // `client_tls` ([security] internal_tls): the node's TLS for its etcd calls and watch and for
  // the admin calls it forwards to another agent; null: http. Under internal_tls the API's
  // admin calls also need a client certificate from the site CA (the TLS listener is the
  // caller's to set up).
  DbAgent(const config::Site& site, const config::DbNode& node, core::EventLoop& loop,
          std::shared_ptr<core::ClientTransportFactory> client_tls = nullptr);
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

  // internal_tls: this node's certificate was renewed or reissued (tls::NodeTlsWatch); its
  // PostgreSQL takes it now, its etcd client (the caller reloads that) at the next connection.
  void refreshTls();

  void handle(const http::Request& request, http::Response& response) override;
  // A call with a body and without the admin token is answered 401 before the body is read.
  // Under internal_tls, so is an admin call from a client without a site certificate (403).
  bool refuseBeforeBody(const http::RequestHead& head, std::string_view peer_certificate,
                        http::Response& response) const override;
  // SIGCHLD: a control tick at once when it was the postmaster that died (a restart, or a
  // failover, should not wait for the next scheduled tick).
  void onChildSignal();
  // The API listener's counters, for /metrics (not owned; set once before start).
  void setApiStats(const http::ServerStats* stats) { api_stats_ = stats; }
  // Under internal_tls, the API listener's TLS counters, for /metrics (not owned; set once before
  // start).
  void setApiTlsStats(const tls::TlsStats* stats) { api_tls_stats_ = stats; }

  NodeView view() const;

  // A point-in-time restore on this (leader) node, step by step (agent_restore.cpp).
  enum class RestoreStep { Archiving, Staging, Holding, Swapping, Recovering, Done, Failed };

  // Re-reads the topology file (SIGHUP, POST /reload) and applies what may change while running
  // (db_reload.h); a file with errors changes nothing. The report is written to
  // state_dir/run/NAME.reload.json and returned.
  run::ReloadReport reload();

 private:
  enum class Phase { Bootstrap, Running, Failed };

  void tick();
  // One function per state's step (agent_machine.h), chosen by the state the last facts name.
  void bootstrapStep();  // Bootstrapping
  void stepLeader();     // Leader, Promoting, SwitchingOver
  void stepFenced();     // Fenced: take the key again, or rejoin whoever leads
  void stepReplica();    // Replica (and a fresh look for Candidate)
  void stepCandidate();  // Candidate: promote if the rules choose this node
  // Stops PostgreSQL at once (the agent's own fence) when it runs.
  void fenceStop();
  // This tick's facts, and the state they name: a change is logged with its reason and counted.
  AgentFacts facts() const;
  void updateState();
  void maybePromote();
  // Takes the free leader key and promotes (`how`: "failover", "switchover"); false when
  // another node got the key or the promotion failed (then the key is released).
  bool takeOver(const char* how);
  // The rest of a promotion, next tick: CHECKPOINT, then replication slots.
  void finishPromotion();
  void followLeader();
  void rejoinAsReplica();
  // Stops PostgreSQL when running, rewinds it onto `leader` (pg_rewind: nothing when its WAL never
  // left the leader's history) and starts it as the leader's replica; re-clones when pg_rewind
  // cannot. `why` is logged.
  void rewindAndFollow(const MemberRecord& leader, const std::string& why);
  // A replica that cannot follow the leader's timeline (it received WAL the leader never had, or
  // it does not stream from the leader and cannot start or stream) is rewound. Runs every
  // replica tick.
  void checkDivergence();
  // pg_rewind failed (or the operator asked, `planned`): data directory aside, then a new clone
  // of `leader` (or the bootstrap phase clones it later). The path the old data went to, or
  // nullopt when it could not be moved (logged).
  std::optional<std::filesystem::path> recloneFrom(const MemberRecord& leader, bool planned = false);

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
  // Under internal_tls: true, with a 403 in `response`, when the admin caller presented no
  // site certificate.
  bool refuseUncertified(std::string_view peer_certificate, http::Response& response) const;
  // An admin call's credentials: true, with the 403 (no site certificate under internal_tls) or
  // the 401 (no valid bearer token) in `response`, when they are missing.
  bool refuseUnauthorized(const http::Request& request, http::Response& response) const;
  void handleSwitchover(const http::Request& request, http::Response& response);
  void handleFailover(const http::Request& request, http::Response& response);
  void handleReload(const http::Request& request, http::Response& response);
  // POST /pause {"paused": true|false}: maintenance mode on or off, for the whole cluster.
  void handlePause(const http::Request& request, http::Response& response);
  // Carries an admin call to `node`'s agent and relays its answer (deferred; a thread makes the
  // blocking call and posts the answer back to the loop).
  void forwardAdmin(const http::Request& request, http::Response& response, const std::string& node);
  // Where forwarding threads deliver answers; the loop is cleared at shutdown.
  struct ForwardMailbox {
    std::mutex mutex;
    core::EventLoop* loop = nullptr;
  };
  std::shared_ptr<ForwardMailbox> forward_mailbox_ = std::make_shared<ForwardMailbox>();
  void driveSwitchover();
  // A switchover from this leader: the target for `request` as the cluster is now (200, or why
  // not), and the first step of one to `target` (`reply` answered when it ends).
  SwitchoverChoice chooseSwitchover(const SwitchoverRequest& request) const;
  void beginSwitchover(const std::string& target, http::DeferredResponse reply);
  // The leader, every tick while a switchover is scheduled: drops one planned by another leader,
  // begins ours once its time has come.
  void driveScheduledSwitchover();
  void finishSwitchover(int status, const std::string& message);
  // An intent in etcd names another node as the one to take the key.
  bool intentBlocks() const;
  // The leader's published record, when it is a running primary.
  std::optional<MemberRecord> leaderRecord(const std::string& leader);
  // Cluster identity (site_keys.h: InitRecord). The identifier recorded in the initialize key,
  // when it is recorded.
  std::optional<uint64_t> clusterSysid() const;
  // Whether `leader` belongs to this cluster, for `action` ("follow", "rewind onto", "clone"):
  // its published identifier must be the cluster's (and ours when we hold data). A refusal is
  // logged with both identifiers.
  bool sameSystem(const MemberRecord& leader, const char* action);
  // Running phase, every tick before anything else: our data belongs to the cluster recorded in
  // etcd (records it when nothing is recorded yet). Foreign: this node must neither lead, follow
  // nor run PostgreSQL (foreign_ says why); Wait: not this tick (etcd failed, or the record is
  // changing).
  enum class Identity { Ok, Wait, Foreign };
  Identity checkIdentity();
  // Reads our data directory's system identifier (pg_controldata) into sysid_.
  void readSysid();
  // One read of every key of the site (site_keys.h), validated, into members_, leader_name_,
  // sync_key_, intent_ and init_; ignored keys are logged once. False when etcd failed (`error`).
  bool readSiteKeys(std::string& error);
  // The leader key as last read counts as free: absent, or unleased and unchanged for a TTL
  // (then deleted, so anyone may take it).
  bool leaderFree();
  // What this node publishes as the leader it sees: "" only when the key is really free (a
  // synchronous replica promotes once every listed one has said so), the raw name of an
  // unleased key (its leader may still write), "?" for a foreign holder.
  std::string seenLeaderText() const;
  void observe();
  void publish();
  // Begins a start of PostgreSQL (an operation, see runOp); after failures, only once the backoff
  // allows (1 s doubling to 30 s). False when not begun; `then` runs once it has started or not.
  bool startPostgres(const char* why, std::function<void(bool started)> then = {});
  // A long PostgresNode operation (initdb, a clone, pg_rewind, a start) runs while the loop goes
  // on serving the REST API, renewing the lease and publishing; `then` runs on the loop once it
  // is done (or at once when `begun` failed).
  // `source`: the member the operation copies from (a clone, pg_rewind), abandoned as soon as
  // that member no longer holds the leader key — a frozen or cut-off source would otherwise hold
  // the tool until its timeout while the site needs this node as a replica.
  void runOp(std::string what, Status begun, std::function<void(const Status&)> then, std::string source = {});
  // A tick while an operation runs; true while it still runs (the tick ends there). A leader's
  // lease that is no longer valid abandons the operation and fences.
  bool tickOperation();
  struct PendingOp {
    std::string what;
    std::function<void(const Status&)> then;
    core::TimePoint started{};
    std::string source;
  };
  std::optional<PendingOp> op_;
  // The watch saw the leader key change: an operation with a source re-reads the keys.
  bool leader_key_changed_ = false;
  // True (and the operation abandoned, its `then` called with the failure) when op_'s source no
  // longer leads.
  bool abandonIfSourceLost();
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
  // A watched key no agent reads (an unknown member, anything else): logged once per key.
  void logStrangeKey(const WatchEvent& event);
  // A control tick as soon as possible (at most one every kWakeSpacing).
  void wake();
  void fatal(const std::string& message);

  std::string statusJson() const;
  std::string metricsText() const;

  // The operator's node actions (agent_ops.cpp). POST /restart: PostgreSQL stopped (fast) and
  // started again in its role, without giving up the lease. POST /reinit: a replica's data
  // moved aside and cloned again from the leader. GET /history: the timelines and why each
  // began (cluster_history.h).
  void handleRestart(const http::Request& request, http::Response& response);
  void handleReinit(const http::Request& request, http::Response& response);
  void handleHistory(http::Response& response);
  // Every tick: a restart's stop that outlasts stop_timeout is made immediate.
  void driveRestart();
  // On the leader once its new timeline is on disk: the pending entry into the history key.
  void recordHistory();
  // The timeline shown to operators: a replica not streaming reports the last one it knew.
  uint32_t reportedTimeline() const;

  // [db.backup] (agent_backup.cpp): pgBackRest driven while this node leads.
  void tickBackup();
  // The primary's pg_stat_archiver and the segments waiting in archive_status.
  std::optional<ArchiverStatus> readArchiver();
  // Streaming replicas of ours whose data directory is on this host (a backup may copy from them).
  std::vector<LocalStandby> localStandbys() const;
  // GET /backup (the catalog, the archive, what runs), POST /backup {"type":"full"|"diff"|"incr"}.
  void handleBackup(const http::Request& request, http::Response& response);
  // GET /restore (how the last one goes), POST /restore {"to":TIME}|{"backup":LABEL}[,"dry_run":true].
  void handleRestore(const http::Request& request, http::Response& response);
  // Every tick on the restoring leader.
  void driveRestore();
  void restoreStep(RestoreStep step);
  void restoreLog(const std::string& line, bool trouble = false);
  void failRestore(const std::string& why);
  void putRestoreKey(RestoreHold::State state);
  // The restore (Swapping, Recovering) starts and watches PostgreSQL, not the leader's step.
  bool restoreOwnsPostgres() const;
  // Another node restores: true while this one must keep PostgreSQL stopped and do nothing else.
  bool holdForRestore();

  const http::ServerStats* api_stats_ = nullptr;
  const tls::TlsStats* api_tls_stats_ = nullptr;
  // The file as loaded at start, with what reloads applied (db_reload.h): read on the loop only.
  config::Site site_;
  const config::DbNode node_;
  core::EventLoop& loop_;
  core::Timer timer_;
  core::Duration interval_;
  const bool internal_tls_;  // as started: the API listener's TLS is not reloaded
  std::shared_ptr<core::ClientTransportFactory> client_tls_;
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
  AgentState state_ = AgentState::Bootstrapping;
  core::TimePoint state_since_{};
  std::array<std::array<uint64_t, kAgentStates>, kAgentStates> transitions_{};  // [from][to]
  bool rejoining_ = false;     // a rewind or re-clone is under way (rewindAndFollow)
  bool primary_data_ = false;  // our data directory is a primary's (no standby.signal)
  bool slots_ok_ = false;
  std::optional<core::TimePoint> no_leader_since_;  // bootstrap: waiting for a leader to clone
  core::TimePoint next_wait_log_{};

  // Last observations.
  bool pg_running_ = false;
  bool status_ok_ = false;
  PgStatus pg_status_;
  std::vector<ReplicaInfo> replica_lags_;  // as the primary last read pg_stat_replication
  core::TimePoint next_replica_lags_{};
  std::optional<std::string> leader_name_;
  // Who last held the leader key as this agent read it, and when: a takeover names whose lease
  // expired and how long ago it was last seen held.
  std::optional<std::pair<std::string, core::TimePoint>> last_holder_;
  std::optional<Lsn> leader_lsn_;
  std::optional<Lsn> last_leader_lsn_;  // kept after the leader is gone: the failover lag bound
  std::string following_;               // the leader this replica was last pointed at
  std::vector<MemberRecord> members_;
  // The current leader's record as last published as a running primary (nullopt: no leader, or
  // not published yet): whom replicas must stream from, on which timeline.
  std::optional<MemberRecord> leader_record_;
  // Our timeline's ancestry, published while primary (read once per timeline).
  uint32_t history_tli_ = 0;
  std::vector<TimelineSwitch> history_;
  // Replica: the timeline of the WAL we last received (kept while not streaming), and since when
  // we have not been streaming from the leader.
  uint32_t received_tli_ = 0;
  std::optional<core::TimePoint> not_streaming_since_;
  core::Duration diverged_grace_{};  // how long not streaming before pg_rewind is asked (doubles)
  // PostgreSQL start failures in a row, when the next start may be tried, and the last error.
  int start_failures_ = 0;
  core::TimePoint next_start_{};
  std::string last_start_error_;
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

  // Cluster identity and what was read of etcd's keys.
  std::set<std::string> nodes_;     // every [[db.node]] name
  std::optional<uint64_t> sysid_;   // our data directory's system identifier
  std::optional<InitRecord> init_;  // the initialize key as last read (nullopt: absent)
  int64_t init_mod_revision_ = 0;
  std::string init_value_;
  LeaderKey leader_key_;
  // An unleased leader key: its revision and when this agent first saw it so.
  std::optional<std::pair<int64_t, core::TimePoint>> unleased_since_;
  std::vector<IgnoredKey> ignored_;     // logged once each, again if it comes back after it went
  std::set<std::string> strange_keys_;  // logStrangeKey(): those already logged
  std::string foreign_;                 // why this node's data may not be used (checkIdentity)
  bool identity_verified_ = false;      // this tick's checkIdentity() said Ok

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
  struct Restore {
    std::string id;
    RestorePlan plan;
    RestoreStep step = RestoreStep::Archiving;
    core::TimePoint since{};
    std::vector<std::string> log;  // what GET /restore shows the operator
    std::string error;
    std::string switched_wal;
    bool staging_started = false;
    std::filesystem::path staging, aside;
    uint32_t timeline_before = 0, timeline = 0;
    std::string key_value;  // the restore key as last published
  };
  std::optional<Restore> restore_;
  std::optional<RestoreHold> restore_key_;  // as last read
  std::optional<PauseRecord> pause_;        // maintenance mode, as last read (nullopt: not paused)
  std::optional<ScheduledSwitchover> scheduled_;  // as last read (nullopt: none)
  std::string scheduled_value_;                   // its stored value (compare-and-delete)
  std::string held_restore_id_;             // another node's restore this one holds for
  std::unique_ptr<BackupManager> backup_;  // null without [db.backup]
  bool repo_clone_failed_ = false;         // the last copy from the repository failed: pg_basebackup next
  std::optional<ArchiverStatus> archiver_;
  core::TimePoint next_archiver_read_{};
  bool backup_leading_ = false;  // the manager was last told this node leads
  bool checkpoint_pending_ = false;  // promoted, the post-promotion CHECKPOINT not done yet
  // A promotion's entry for the history key, written once the new timeline is on disk.
  std::optional<HistoryEntry> pending_history_;
  int history_attempts_ = 0;
  // GET /history's last read of the key (spaced: the endpoint is public).
  struct HistoryRead {
    core::TimePoint at{};
    std::vector<HistoryEntry> entries;
  };
  std::optional<HistoryRead> history_read_;
  // POST /restart: the postmaster was told to stop at `since`; started again by the step.
  struct Restart {
    core::TimePoint since{};
    bool escalated = false;
  };
  std::optional<Restart> restart_;
  bool promoted_this_tick_ = false;  // the next tick comes at once (one time only)
};

}  // namespace fulcrum::db
