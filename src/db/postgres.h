#pragma once
// One PostgreSQL node, driven by the database agent: create a primary or clone a replica, start
// and stop the server, ask its role and WAL positions, promote it, fence it, rewind it and make
// it follow another primary.
//
// Process model. The postmaster is started by fork+exec of `postgres -D DATA` (not pg_ctl, which
// daemonizes it), so the agent is its parent: a dead postmaster is seen by pollExit() at once,
// and the postmaster gets SIGINT (fast shutdown) if the thread that started it dies, so a
// crashed agent leaves no unsupervised primary behind. Call start() from the agent's long-lived
// control thread, and do not reap children with waitpid(-1) elsewhere. Every other program
// (initdb, pg_basebackup, pg_rewind, pg_controldata, pg_ctl for a postmaster we did not start)
// runs to completion under a timeout. When we are root, all of them run as the `postgres` OS user.
//
// Node identity (listen address, port, socket directory, cluster_name) is passed on the
// postmaster's command line at every start, never kept in a configuration file:
// pg_basebackup and pg_rewind copy configuration files from another node, which would carry
// that node's address. What is the same on every node goes into DATA/fulcrum.conf (included
// from postgresql.conf); a replica's primary_conninfo and primary_slot_name go into
// postgresql.auto.conf.
//
// Authentication. The local socket (in run_dir, mode 0700) accepts only the superuser, by peer
// authentication through the ident map `fulcrum`: the agent's own OS user (root, or the
// PostgreSQL OS user itself when not root) and the OS user of the superuser's name may log in as
// the superuser. TCP accepts only the application role on its database and the replication role
// (replication, and the `postgres` database for pg_rewind), all by scram-sha-256; nothing is ever
// `trust`. Passwords are generated into files of mode 0600 and reach the server as SCRAM
// verifiers, and the tools read them from a .pgpass file, never from a command line.
// pg_hba.conf's local rule and pg_ident.conf belong to the agent: both are rewritten before
// every start (a clone or rewind copies another node's, an older build wrote no map); the TCP
// rules written by initPrimary() are kept as they are. Under internal_tls (ServerTls) the TCP
// rules are rewritten too, certificate authentication only, and every TCP connection is TLS.
//
// Queries go through libpq in-process (PgSession: one persistent connection per database on the
// local socket, each call bounded by query_timeout even against a frozen server), not a psql per
// statement: a failover runs many statements, and forking psql cost 40-100 ms each. Sessions are
// dropped whenever the postmaster stops or is found dead, so none talks to a server that is gone.
//
// Blocking: every call returns within its timeout (options). Not thread-safe.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/address.h"
#include "db/pg_process.h"
#include "db/pg_session.h"
#include "db/result.h"
#include "pg/connection_policy.h"
#include "pg/pg_format.h"

namespace fulcrum::db {

using pg::Lsn;

// TLS on every TCP connection, both ways, with certificates from the site CA. The server takes
// only certificate authentication over TCP (hostssl ... cert, no password over the wire): a
// client's certificate CN, a node name, maps to a role in pg_ident.conf. Its own pair and the CA
// also serve as this node's client identity towards the other nodes (clones, pg_rewind, the WAL
// receiver, all verify-full). PostgreSQL demands a key owned by its OS user, so the files are
// copied into run_dir/tls (outside the data directory, which clones and rewinds replace) before
// every start, clone and rewind: a renewed certificate is taken up then.
struct ServerTls {
  std::filesystem::path ca_cert;  // the site CA (verifies clients and servers)
  std::filesystem::path cert;     // this node's pair, readable by the agent
  std::filesystem::path key;
  std::string app_database;  // the application's database and role
  std::string app_user;
  std::vector<std::string> app_clients;          // certificate names that log in as app_user
  std::vector<std::string> replication_clients;  // ... as the replication role
};

struct PostgresOptions {
  std::string node;                  // node name: cluster_name, application_name, its slot name
  std::filesystem::path bin_dir;     // from findPgBin()
  std::filesystem::path data_dir;    // PGDATA: created 0700, owned by the OS user
  std::filesystem::path run_dir;     // socket, .pgpass; not inside data_dir
  // The server's own log (its stderr), appended; empty = run_dir/postgres.log.
  std::filesystem::path log_file;
  core::SocketAddress listen;        // [[db.node]] pg: listen_addresses and port
  std::string os_user = "postgres";  // who runs PostgreSQL when we are root
  std::string replication_user = "replicator";
  std::filesystem::path replication_password_file;  // shared by every node; created by initPrimary
  // Networks allowed to connect over TCP (still with a password).
  std::vector<std::string> allowed_networks = {"0.0.0.0/0", "::/0"};
  // Extra cluster-wide settings for fulcrum.conf, e.g. {"shared_buffers", "64MB"}.
  std::vector<std::pair<std::string, std::string>> settings;
  bool durable = true;  // false (tests only): skip fsync in initdb, pg_basebackup, pg_rewind
  std::chrono::milliseconds tool_timeout{60000};   // initdb, pg_basebackup, pg_rewind
  std::chrono::milliseconds query_timeout{5000};   // each query(), connecting included
  std::chrono::milliseconds start_timeout{60000};  // until the server accepts connections
  std::chrono::milliseconds stop_timeout{30000};   // per shutdown mode before escalating
  // The fence that holds without the agent (fence_file.h). When fence_file is set, every
  // start() writes the library built into this binary to fence_library and preloads it with
  // fulcrum.fence_file = fence_file: the server refuses writes past the deadline the file holds
  // and stops itself. Absolute paths whose directories the OS user can traverse; the library's
  // path under 96 bytes (PostgreSQL names a background worker's library in a 96-byte field).
  std::filesystem::path fence_library;
  std::filesystem::path fence_file;
  // [security] internal_tls (see ServerTls); nullopt: TCP by password, no TLS.
  std::optional<ServerTls> tls;
  // [db.backup]: archive_mode on, with this archive_command (backup_repo.h); empty: no archiving.
  // On the command line, not in fulcrum.conf: it names this node's own data directory, and the
  // configuration files travel to replicas with every clone.
  std::string archive_command;
};

// The application's database and role ([db] database, user, password_file).
struct AppDatabase {
  std::string database = "site";
  std::string user = "site";
  std::filesystem::path password_file;  // read, or generated (0600) when missing
};

enum class StopMode {
  Smart,      // waits for clients to disconnect
  Fast,       // rolls back open transactions, disconnects clients, checkpoints
  Immediate,  // no checkpoint: crash recovery at next start (fastest fence)
};

struct PgStatus {
  bool in_recovery = false;  // a standby
  uint32_t timeline = 0;     // primary: the one it writes; standby: the one it receives (0: none yet)
  Lsn current_lsn = 0;       // primary: pg_current_wal_lsn()
  Lsn receive_lsn = 0;       // standby: pg_last_wal_receive_lsn() (0: none yet)
  Lsn replay_lsn = 0;        // standby: pg_last_wal_replay_lsn()
  bool read_only = false;    // default_transaction_read_only (fenced) in new sessions
  std::string receiver;      // standby: pg_stat_wal_receiver.status ("streaming"), else ""
  std::string sender;        // standby: the WAL receiver's sender "host:port", else ""
  // standby: seconds its replay trails the last transaction it received (0 when it has replayed
  // all it received; nullopt on a primary or before any transaction was replayed)
  std::optional<double> replay_lag_seconds;
  bool pending_restart = false;  // a changed setting waits for a restart (pg_settings)
  uint32_t checkpoint_timeline = 0;  // the last checkpoint's (restartpoint's) timeline
  // The position this node has: written (primary) or replayed (standby).
  Lsn lsn() const { return in_recovery ? replay_lsn : current_lsn; }
};

// One line of a timeline history file (pg_wal/0000000N.history): timeline `tli` ended at
// `switchpoint`, where its child timeline begins.
struct TimelineSwitch {
  uint32_t tli = 0;
  Lsn switchpoint = 0;
  bool operator==(const TimelineSwitch&) const = default;
};
// The lines of a history file; nullopt when malformed.
std::optional<std::vector<TimelineSwitch>> parseTimelineHistory(std::string_view text);

// A standby connected to this primary (pg_stat_replication).
struct ReplicaInfo {
  std::string application_name;  // the standby's node name
  std::string client_addr;
  std::string state;  // "streaming", "catchup", ...
  Lsn sent_lsn = 0;
  Lsn flush_lsn = 0;
  Lsn replay_lsn = 0;
  std::string sync_state;  // "async", "sync", "quorum", "potential"
  int sync_priority = 0;   // > 0: its walsender counts for synchronous commits
  // pg_stat_replication.replay_lag in seconds; 0 once it replayed all that was sent (PostgreSQL
  // then shows NULL after a while); nullopt when not measured yet
  std::optional<double> replay_lag_seconds;
};

class PostgresNode {
 public:
  // Resolves the OS user; check initError() before use.
  explicit PostgresNode(PostgresOptions options);
  // Stops a postmaster we started (fast, then kill), so none outlives its controller.
  ~PostgresNode();
  PostgresNode(const PostgresNode&) = delete;
  PostgresNode& operator=(const PostgresNode&) = delete;

  // Empty when usable; else why not (no such OS user, a directory postgres cannot reach).
  const std::string& initError() const { return init_error_; }

  // True when data_dir holds a cluster (PG_VERSION exists).
  bool initialized() const;
  // A new cluster: initdb (checksums on), configuration, pg_hba; starts it, creates the
  // replication role and the application role and database; leaves it running as a primary.
  // With a fence configured, the caller arms the fence file for bootstrapBound() first: the
  // server starts fenced like any other, and its CREATE statements need the window.
  Status initPrimary(const AppDatabase& app);
  // The longest initPrimary() can take: initdb, the start, and each statement within its timeout.
  std::chrono::milliseconds bootstrapBound() const;
  // A new standby of `primary` into an empty data_dir: pg_basebackup streaming WAL, creating the
  // physical slot `slot` on the primary (reusing it if it exists), then standby.signal and
  // primary_conninfo. Leaves the server stopped: call start().
  Status cloneReplica(const core::SocketAddress& primary, std::string_view slot);

  // Long operations, for a caller that must not wait (the agent's control loop): begin...() starts
  // one (a tool runs in the background, or the postmaster is spawned), then pollOperation() every
  // so often says when it is done and how it went. One at a time; the blocking forms below are
  // the same operation waited for. abandonOperation() kills a running tool (a started postmaster
  // stays: stop() it).
  Status beginInitPrimary(const AppDatabase& app);
  Status beginClone(const core::SocketAddress& primary, std::string_view slot);
  // A new standby from a backup instead ([db.backup]): `restore` (pgBackRest's restore as a standby
  // into data_dir) fills the empty data directory, then standby.signal and primary_conninfo point it
  // at `primary` (whose slot `slot` the leader keeps): it replays the archive and streams the rest.
  Status beginRestoreClone(std::vector<std::string> restore, std::chrono::milliseconds timeout,
                           const core::SocketAddress& primary, std::string_view slot);
  Status beginRewind(const core::SocketAddress& source);
  Status beginStart();
  // Nullopt while the operation runs; its outcome once done (success when none runs).
  std::optional<Status> pollOperation();
  bool operationRunning() const { return op_ != Operation::None; }
  void abandonOperation();

  // Starts the postmaster as our child and waits until it accepts connections (a standby: once
  // consistent, hot_standby is on). `keep_waiting`, when set, runs between polls (the agent
  // renews its lease there) and abandons the wait by returning false: the server is then left
  // starting, for the caller to stop.
  Status start(const std::function<bool()>& keep_waiting = {});
  // Stops the server: `mode`, escalating to Immediate and then SIGKILL when a mode exceeds
  // stop_timeout. A postmaster we did not start (left by a previous agent) is stopped with
  // pg_ctl. Success when nothing runs any more.
  Status stop(StopMode mode = StopMode::Fast);
  // Asks the postmaster this node started to stop and returns at once (pollExit() says when it
  // did). False when no postmaster of ours runs.
  bool signalStop(StopMode mode);
  // internal_tls: the node's pair (renewed or reissued) copied in again, and a running server
  // told to read it (PostgreSQL reloads its SSL files with its configuration). The clients of
  // this node (pg_basebackup, pg_rewind, the WAL receiver) read the copies at their next connect.
  Status refreshTls();
  // Our postmaster is alive (reaps it if it died).
  bool isRunning();
  // The wait status of our postmaster once it has died (reported once), else nullopt. The
  // agent calls this every tick (or on SIGCHLD).
  std::optional<int> pollExit();
  // Our postmaster's pid, or -1.
  pid_t pid() const { return postmaster_.pid(); }
  // `postgres --version` ("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)").
  Result<std::string> serverVersion();

  Result<PgStatus> status();
  Result<std::vector<ReplicaInfo>> replicas();

  // Ends recovery (pg_promote, then polls until it has ended) and lifts a fence: the node then takes writes
  // on a new timeline. Call checkpoint() next (the agent does so once it has published itself).
  Status promote();
  // CHECKPOINT. After promote(): the end-of-recovery checkpoint runs in the background, and until
  // one completes the control file still names the old timeline, so a former primary rewound
  // from us meanwhile would find "no rewind required" and then fail to follow (Patroni's
  // checkpoint_after_promote).
  Status checkpoint();
  // A soft fence for switchover: new sessions default to read-only (ALTER SYSTEM, reload,
  // verified: see fence() in postgres.cpp), then every other client session is terminated. A
  // client may still ask for a read-write transaction explicitly: on losing the lease the agent
  // stops the server instead (stop(Immediate) is the hard fence).
  Status fence();
  Status unfence();
  // synchronous_standby_names (ALTER SYSTEM, then a reload): `value` as built by
  // standbyNamesValue(); "" makes commits wait for no standby.
  Status setSynchronousStandbys(std::string_view value);
  // The stopped server's shutdown checkpoint (pg_controldata): its WAL ends with that record.
  // Failure when the cluster was not shut down cleanly.
  Result<Lsn> cleanShutdownLsn();
  // The ancestry of timeline `tli` from this data directory's pg_wal (empty for timeline 1).
  Result<std::vector<TimelineSwitch>> timelineHistory(uint32_t tli);
  // The data directory's database system identifier (pg_controldata; running or not): the same on
  // every node of one cluster, different for any other initdb.
  Result<uint64_t> systemIdentifier();
  // Moves the stopped data_dir aside to `<data_dir>.failed-<UTC time>` (kept for inspection)
  // and returns where; data_dir is then absent, ready for a fresh clone.
  Result<std::filesystem::path> moveDataAside();
  // A physical slot on this primary, reserving WAL from now (nothing when it exists).
  Status ensureSlot(std::string_view slot);
  Status dropSlot(std::string_view slot);

  // Makes the stopped data_dir a copy of `source`'s history (pg_rewind, as the replication
  // role): required before a former primary can follow the new one. Nothing to do is success.
  Status rewind(const core::SocketAddress& source);
  // Makes this node a standby of `primary` using `slot`: stopped, it writes standby.signal and
  // primary_conninfo / primary_slot_name (and drops a fence left in postgresql.auto.conf), for
  // the next start(); running as a standby, it changes them with ALTER SYSTEM and a reload.
  Status follow(const core::SocketAddress& primary, std::string_view slot);

  // Runs one SQL statement as the local superuser on `database` (a persistent libpq session per
  // database, within query_timeout); rows of fields (NULL reads as "").
  Result<std::vector<std::vector<std::string>>> query(std::string_view sql,
                                                      std::string_view database = "postgres");

  const PostgresOptions& options() const { return options_; }
  // The agent bootstraps with a generous query timeout (CREATE DATABASE), then tightens it so a
  // frozen server cannot hold its control loop past a fence deadline.
  void setQueryTimeout(std::chrono::milliseconds timeout) { options_.query_timeout = timeout; }
  const OsUser& osUser() const { return user_; }
  std::filesystem::path logFile() const {
    return options_.log_file.empty() ? options_.run_dir / "postgres.log" : options_.log_file;
  }
  std::filesystem::path passFile() const { return options_.run_dir / "pgpass"; }
  std::filesystem::path program(std::string_view name) const { return options_.bin_dir / std::string(name); }
  // The superuser role: the OS user's name (peer authentication maps one to the other).
  const std::string& superuser() const { return user_.name; }

 private:
  Status prepareEmptyDataDir();
  Result<ToolOutput> run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                         std::vector<std::string> env = {}, std::string input = {});
  // The tool's standard output when it exits 0 in time, else what went wrong.
  Result<std::string> capture(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                              std::vector<std::string> env = {});
  Status runChecked(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                    std::vector<std::string> env = {}, std::string input = {});
  Status writeClusterConfig(const AppDatabase& app);
  // pg_ident.conf and pg_hba.conf: the agent's local rule and map, then `host_rules` (the TCP
  // rules; nullopt: those the current pg_hba.conf holds). Under tls, the certificate rules and
  // map instead.
  Status writeAccessFiles(std::optional<std::vector<std::string>> host_rules = std::nullopt);
  // Closes every session (the postmaster stopped, died or is about to start).
  void dropSessions();
  Status writePassFile();
  // Copies options_.tls's files into tlsDir(), owned by the OS user (nothing without tls).
  Status installTls();
  std::filesystem::path tlsDir() const { return options_.run_dir / "tls"; }
  // This node's identity as a client of another node: the copies, which postgres can read.
  pg::ClientTls clientTls() const;
  Status writeStandbyConfig(const core::SocketAddress& primary, std::string_view slot);
  std::string primaryConninfo(const core::SocketAddress& primary) const;
  // The pid in DATA/postmaster.pid when that process is alive, else nullopt.
  std::optional<pid_t> livePostmasterPid() const;
  enum class Operation { None, InitPrimary, Clone, RestoreClone, Rewind, Start };
  Status launchJob(Operation op, std::vector<std::string> argv, std::chrono::milliseconds timeout,
                   std::vector<std::string> env = {});
  std::optional<Status> pollJob();
  std::optional<Status> pollStart();
  // Waits for the operation under way.
  Status finishOperation();
  Status finishInitPrimary();
  // What both clones (pg_basebackup, a restore from the repository) start with: an empty data
  // directory, the pass file and TLS files, and the primary to follow afterwards.
  Status prepareClone(const core::SocketAddress& primary, std::string_view slot);
  std::vector<std::string> basebackupArgs(bool create_slot) const;
  Status launchBasebackup(bool create_slot);
  void clearDataDir();
  // The FATAL/PANIC lines the last start wrote to the server log (else its last lines).
  std::string startLogSummary() const;

  PostgresOptions options_;
  OsUser user_;
  std::string init_error_;
  ChildProcess postmaster_;
  std::optional<int> unreported_exit_;
  uintmax_t start_log_offset_ = 0;  // the server log's size when the last start began
  // The operation under way and what its later steps need.
  Operation op_ = Operation::None;
  std::unique_ptr<ToolJob> job_;
  std::chrono::steady_clock::time_point start_deadline_{};
  AppDatabase init_app_;
  std::string init_app_password_;
  std::string init_replication_password_;
  core::SocketAddress clone_primary_;
  std::string clone_slot_;
  bool clone_create_slot_ = false;
  bool rewind_parked_ = false;  // seen by
                                // isRunning(), not yet returned by pollExit()
  std::map<std::string, std::unique_ptr<PgSession>, std::less<>> sessions_;  // by database name
};

}  // namespace fulcrum::db
