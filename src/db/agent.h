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
// leader is rewound (pg_rewind) and follows it. With failover = false a replica never takes
// the key, and a former primary stays stopped.
//
// Not built yet (refused by dbNotBuiltYet): synchronous replication; switchover (501).
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "db/agent_state.h"
#include "db/elector.h"
#include "db/etcd_client.h"
#include "db/postgres.h"
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

  NodeView view() const;

 private:
  enum class Phase { Bootstrap, Running, Failed };

  void tick();
  void bootstrapStep();
  void runPrimary();
  void runReplica();
  void maybePromote();
  void followLeader();
  void rejoinAsReplica();
  // The leader's published record, when it is a running primary.
  std::optional<MemberRecord> leaderRecord(const std::string& leader);
  void observe();
  void publish();
  bool startPostgres(const char* why);
  void ensureSlots();
  // Caps etcd calls at the fence deadline while this node may write (see leader_lease.h).
  void capEtcd();
  void schedule(core::TimePoint next);
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
  AppDatabase app_;
  std::function<void(const std::string&)> on_fatal_;

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
};

}  // namespace fulcrum::db
