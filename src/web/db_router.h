#pragma once
// Database routing for one worker thread: pooled libpq connections (PgConn) to every
// [[db.node]], a probe per node every probe_interval that learns who is primary (and whether a
// node is fenced), each node's timeline, and what each replica's WAL receiver streams from and
// how far it has replayed; writes to the primary, reads round-robin over the replicas that
// stream from the primary on its timeline within max_lag_bytes (db_routing.h decides; the
// primary as fallback), and read-your-writes through a WAL-position token, with one replay
// check per replica per tick serving every waiting read. Everything runs on the worker's event
// loop: nothing blocks, no thread per query, no lock (cancel requests, which libpq sends
// blocking, go to a few helper threads: pg_cancel.h). Each worker owns its own router
// (shared-nothing); only the DbStats counters are read by other threads (metrics).
#include <atomic>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/counter.h"
#include "core/event_loop.h"
#include "pg/connection_policy.h"
#include "web/db_routing.h"
#include "web/password_file.h"
#include "web/pg_conn.h"
#include "web/token_waiters.h"

namespace fulcrum::web {

struct DbSettings {
  std::vector<DbNodeConfig> nodes;
  std::string user;
  std::string database;
  std::filesystem::path password_file;  // first line; read again only when the file changes
  // [security] internal_tls: sslmode=verify-full with the web node's certificate, which the
  // servers map to `user` (cert authentication): then no password is read or sent.
  std::optional<pg::ClientTls> tls;
  std::string application_name = "fulcrum-web";
  uint64_t max_lag_bytes = 1048576;
  size_t conns_per_node = 4;
  size_t max_waiting = 256;                                       // per node; more → 503 at once
  core::Duration wait_for_connection = std::chrono::seconds(1);  // longer → 503 (writes: within write_deadline)
  core::Duration query_timeout = std::chrono::milliseconds(1500);
  core::Duration write_deadline = std::chrono::seconds(2);  // a write's whole answer, schema wait included
  core::Duration probe_interval = std::chrono::milliseconds(500);
  core::Duration probe_timeout = std::chrono::seconds(1);
  core::Duration token_wait = std::chrono::milliseconds(300);  // a replica catching up to a token
  // The longest a failover takes once this router has lost the primary: the old leader's lease
  // runs out (leader_ttl), then a replica takes it and promotes. A 503 for want of a primary says
  // to retry when that time is up, not at once (every earlier retry would fail too).
  core::Duration failover_time = std::chrono::seconds(8);
  std::string schema_sql;                                      // run once through the primary
  bool log_roles = true;  // log role changes (one worker does, or every line comes once per worker)
};

// Per-worker counters; the per-node role and lag gauges are the worker's latest view.
struct DbNodeStats {
  core::Counter queries;
  core::Counter errors;
  // 0 unreachable, 1 primary, 2 replica (readable), 3 replica (too far behind), 4 fenced (or a
  // second claimant), 5 replica not following the primary (see ReadVerdict)
  std::atomic<int> role{0};
  std::atomic<uint64_t> lag_bytes{0};
  // This worker's pool for the node, as of its last change: connections serving a statement,
  // parked idle, and requests waiting for one.
  std::atomic<uint64_t> pool_in_use{0};
  std::atomic<uint64_t> pool_idle{0};
  std::atomic<uint64_t> pool_waiting{0};
};
struct DbStats {
  explicit DbStats(size_t nodes) {
    for (size_t i = 0; i < nodes; ++i) {
      node.push_back(std::make_unique<DbNodeStats>());
    }
  }
  std::vector<std::unique_ptr<DbNodeStats>> node;
  core::Counter writes;
  core::Counter reads;
  core::Counter token_reads;          // reads that carried a read-your-writes token
  core::Counter token_primary_reads;  // ... and went to the primary (no replica caught up in time)
  core::Counter token_waits;          // token reads that waited for a replica to replay their token
  core::Counter replay_checks;        // replay positions asked for those reads (one per replica per tick)
  core::Counter reads_primary;        // reads run on the primary
  core::Counter reads_replica;        // reads run on a replica
  core::Counter unavailable;          // answered 503
};

struct DbReply {
  int status = 200;  // 200 ok; 400 refused by the database's checks; 503 unavailable
  std::string error;
  std::vector<std::vector<std::string>> rows;
  std::string node;          // the db node that answered
  std::optional<Lsn> lsn;    // writes: a WAL position at or after the commit
  core::Duration retry_after = std::chrono::seconds(1);  // with 503: when a retry may succeed
};
using ReplyFn = std::function<void(DbReply&)>;

// The conninfo string of one node (values quoted per libpq's rules); `password` is left out under
// settings.tls.
std::string conninfoFor(const DbSettings& settings, const DbNodeConfig& node, const std::string& password);

// What every worker's router of one process shares.
struct RouterShared {
  explicit RouterShared(unsigned routers) : routers(routers) {}
  const unsigned routers;
  std::atomic<bool> schema_ready{false};  // the schema is created once per process
  std::atomic<unsigned> ready{0};         // routers past their first round of probes
};

// The database side of one process for one [[db.node]] list: what the workers' routers share and
// each worker's counters (read by /metrics on any worker). A reload that changes the list makes a
// new one; the old lives on while a retired router or a handler still holds it.
struct DbGeneration {
  DbGeneration(std::vector<std::string> node_names, unsigned workers)
      : names(std::move(node_names)), shared(workers) {
    for (unsigned i = 0; i < workers; ++i) {
      stats.push_back(std::make_unique<DbStats>(names.size()));
    }
  }
  std::vector<std::string> names;               // by node index, as in DbSettings::nodes
  std::vector<std::unique_ptr<DbStats>> stats;  // by worker
  RouterShared shared;
};

class DbRouter {
 public:
  DbRouter(core::EventLoop& loop, DbSettings settings, DbStats& stats, RouterShared& shared);
  ~DbRouter();
  DbRouter(const DbRouter&) = delete;
  DbRouter& operator=(const DbRouter&) = delete;

  // Writes `sql` on the primary; the reply carries its rows and the WAL position after commit.
  // Without a usable primary the reply is 503 at once. `reply` may run inside this call.
  void write(std::string_view sql, std::vector<std::string> params, ReplyFn reply);
  // Reads `sql` from a replica that has replayed `token` (if any), else the primary.
  void read(std::string_view sql, std::vector<std::string> params, std::optional<Lsn> token, ReplyFn reply);
  // True once every router of the process has heard from each database node once and, with a
  // primary known, the schema is in place (or kReadyBound has passed): before, it would answer
  // requests 503, so the web node's /healthz keeps the load balancer away meanwhile (a
  // restarted node, say).
  // A new max_lag_bytes (a reload): replicas join or leave the read pool at once.
  void setMaxLagBytes(uint64_t max_lag_bytes);
  bool allReady() const { return shared_.ready.load(std::memory_order_relaxed) >= shared_.routers; }
  // This router has heard from every node once (or kReadyBound passed), with the schema in place.
  bool ready() const { return ready_; }

 private:
  struct Node;
  struct ReadOp;
  using Use = std::function<void(PgConn*)>;  // nullptr: no connection in time

  void acquire(size_t node, Use use);
  void release(size_t node, PgConn* conn);
  void onConnChange(size_t node, PgConn& conn);
  void dropConn(size_t node, PgConn* conn);
  void failWaiters(size_t node);
  void publishPool(size_t node);  // the pool gauges of DbNodeStats
  void probeAll();
  void probe(size_t node);
  void onProbe(size_t node, PgResult& result);
  void applyProbe(size_t node, PgResult& result);
  void checkReady();
  void markDown(size_t node);
  void updateRoles();
  void ensureSchema();
  void startWrite(std::string sql, std::vector<std::string> params, ReplyFn reply, core::TimePoint deadline);
  void routeRead(const std::shared_ptr<ReadOp>& op);
  void runRead(size_t node, PgConn* conn, const std::shared_ptr<ReadOp>& op);
  void checkReplicas();
  void checkReplay(size_t node);
  void onTick();
  void markReady();
  void armTick();
  void unavailable(ReplyFn& reply, std::string message, core::Duration retry_after = std::chrono::seconds(1));
  // A write with no primary to go to: 503 with what is left of failover_time.
  void noPrimary(ReplyFn& reply);
  std::string connInfo(size_t node);

  core::EventLoop& loop_;
  DbSettings settings_;  // only max_lag_bytes changes after construction
  DbStats& stats_;
  RouterShared& shared_;
  std::atomic<bool>& schema_ready_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<NodeStatus> status_;
  std::vector<ReadVerdict> verdict_;  // by node, as last logged (lag alone is not)
  std::vector<bool> probed_;  // by node: a probe result came in
  bool ready_ = false;
  std::optional<size_t> primary_;
  std::optional<core::TimePoint> primary_lost_at_;  // when primary_ last went from a node to none
  std::vector<size_t> eligible_;
  size_t next_replica_ = 0;
  bool schema_running_ = false;
  std::vector<std::function<void(bool)>> after_schema_;
  TokenWaiters<std::shared_ptr<ReadOp>> token_waiters_;
  core::Timer probe_timer_;
  core::Timer tick_timer_;
  core::Timer ready_timer_;
  PasswordFile password_file_;
  bool password_warned_ = false;
};

}  // namespace fulcrum::web
