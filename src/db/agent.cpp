#include "db/agent.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "core/log.h"
#include "db/backup_repo.h"
#include "db/site_options.h"
#include "metrics/process.h"
#include "metrics/prometheus.h"
#include "pg/pg_bin.h"
#include "tls/site_pki.h"

namespace fulcrum::db {

using pg::findPgBin;
using pg::formatLsn;
using pg::loadOrCreateSecret;
using pg::quoteIdent;
using pg::slotNameFor;

namespace {

using std::chrono::milliseconds;

// Repeated "still waiting" / etcd errors are logged at most this often.
constexpr auto kLogEvery = std::chrono::seconds(5);
// The control loop's pace while a switchover runs on this node.
constexpr auto kSwitchoverPoll = std::chrono::milliseconds(100);
// While an operation (initdb, a clone, pg_rewind, a start) runs, the loop looks at it this often.
constexpr auto kOperationPoll = std::chrono::milliseconds(100);
// Ticks woken by etcd events are at least this far apart.
constexpr auto kWakeSpacing = std::chrono::milliseconds(20);

milliseconds ttlOf(const config::Site& site) {
  return milliseconds(site.db.leader_ttl_ms);
}

// Each SQL call once running: short enough that a frozen server cannot hold the control loop
// much past a fence deadline.
milliseconds runningQueryTimeout(const config::Site& site) {
  return std::clamp(ttlOf(site) / 5, milliseconds(500), milliseconds(5000));
}

// A replica has no fence deadline to keep: a slower answer on a loaded machine must not make it
// look stopped (a status query that times out publishes role "stopped").
milliseconds replicaQueryTimeout(const config::Site& site) {
  return std::clamp(ttlOf(site) * 2 / 3, milliseconds(1000), milliseconds(5000));
}

nlohmann::json memberJson(const MemberRecord& m) {
  return {{"name", m.name},
          {"role", m.role},
          {"pg", m.pg},
          {"agent", m.agent},
          {"timeline", m.timeline},
          {"lsn", formatLsn(m.lsn)},
          {"receiver", m.receiver},
          {"received", formatLsn(m.received)}};
}

}  // namespace

DbAgent::DbAgent(const config::Site& site, const config::DbNode& node, core::EventLoop& loop,
                 std::shared_ptr<core::ClientTransportFactory> client_tls)
    : site_(site),
      node_(node),
      loop_(loop),
      timer_(loop, [this] { tick(); }),
      interval_(ttlOf(site) / 5),
      internal_tls_(site.security.internal_tls),
      client_tls_(std::move(client_tls)),
      etcd_(etcdClientOptions(site, client_tls_)),
      elector_(etcd_, loop.clock(), electorOptions(site, node.name)) {
  for (const auto& n : site.db.nodes) {
    nodes_.insert(n.name);
  }
  forward_mailbox_->loop = &loop_;
}

DbAgent::~DbAgent() = default;

Status DbAgent::prepare() {
  namespace fs = std::filesystem;
  const fs::path state_dir = site_.site.state_dir;
  const fs::path node_dir = state_dir / node_.name;
  std::error_code ec;
  bool created = !fs::exists(node_dir, ec);
  fs::create_directories(node_dir, ec);
  if (ec) {
    return Status::failure("cannot create " + node_dir.string() + ": " + ec.message());
  }
  if (created) {
    // Root-owned and searchable: PostgreSQL's own directories below it are private (0700).
    ::chmod(node_dir.c_str(), 0755);
  }
  auto bin = findPgBin(site_.db.pg_bin);
  if (!bin.ok) {
    return Status::failure(bin.error);
  }
  PostgresOptions options;
  options.node = node_.name;
  options.bin_dir = bin.value;
  options.data_dir = node_dir / "data";
  options.run_dir = node_dir / "run";
  // Next to the agent's own log under `up` (state_dir/logs/NODE.log), never copied into it.
  options.log_file = state_dir / "logs" / (node_.name + ".postgresql.log");
  fs::create_directories(options.log_file.parent_path(), ec);
  if (ec) {
    return Status::failure("cannot create " + options.log_file.parent_path().string() + ": " + ec.message());
  }
  log::info("PostgreSQL's own log: {}", options.log_file.string());
  options.listen = node_.pg;
  options.replication_password_file = state_dir / "replication.password";
  options.fence_library = fs::absolute(node_dir / "fulcrum_fence.so");
  options.fence_file = fs::absolute(node_dir / "fence");
  if (site_.security.internal_tls) {
    // Refused here, before anything starts: a server without its certificate would take no
    // client, and a replica could not reach its primary.
    auto own = tls::nodeTls(site_, node_.name);
    if (!own.ok) {
      return Status::failure("internal_tls: PostgreSQL on " + node_.name +
                             " needs its certificate: " + own.error);
    }
    ServerTls server;
    server.ca_cert = own.value.ca_cert;
    server.cert = own.value.cert;
    server.key = own.value.key;
    server.app_database = site_.db.database;
    server.app_user = site_.db.user;
    // Web nodes and lbs log in as the application (an lb's database frontends only pass TCP
    // through: the client behind one presents its own certificate), db nodes as the replication role.
    for (const auto& web : site_.web.nodes) {
      server.app_clients.push_back(web.name);
    }
    for (const auto& lb : site_.lb.nodes) {
      server.app_clients.push_back(lb.name);
    }
    for (const auto& db : site_.db.nodes) {
      server.replication_clients.push_back(db.name);
    }
    options.tls = std::move(server);
  }
  auto fence = FenceFile::open(options.fence_file);
  if (!fence.ok) {
    return Status::failure(fence.error);
  }
  fence_ = std::move(fence.value);
  fence_->disarm();
  std::optional<BackupRepo> backup;
  if (site_.db.backup) {
    backup = backupRepo(site_, node_.name);
    options.archive_command = archiveCommand(*backup, options.data_dir);
  }
  pg_ = std::make_unique<PostgresNode>(options);
  if (!pg_->initError().empty()) {
    return Status::failure("state_dir " + state_dir.string() +
                           " must be reachable by the PostgreSQL OS user '" + options.os_user +
                           "': " + pg_->initError());
  }
  if (backup) {
    const std::string conf = pgbackrestConfig(*backup, options.data_dir, options.listen.port(), options.run_dir);
    if (Status ready = prepareBackupRepo(pg_->osUser(), *backup, conf); !ready.ok) {
      return ready;
    }
    backup_ = std::make_unique<BackupManager>(*backup, *site_.db.backup, pg_->osUser(), options.data_dir,
                                              options.listen.port(), options.run_dir);
  }
  // PostgreSQL refuses a library built for another major version (PG_MODULE_MAGIC): say so now.
  auto version = pg_->serverVersion();
  if (!version.ok) {
    return Status::failure(version.error);
  }
  if (Status fits = checkFenceLibraryFits(version.value); !fits.ok) {
    return fits;
  }
  app_.database = site_.db.database;
  app_.user = site_.db.user;
  app_.password_file = site_.db.password_file.empty() ? state_dir / "db.password" : site_.db.password_file;
  // One admin token per state_dir, shared with the load balancer's admin API.
  auto token = loadOrCreateSecret(state_dir / "admin.token");
  if (!token.ok) {
    return Status::failure("admin token: " + token.error);
  }
  admin_token_ = token.value;
  if (pg_->initialized()) {
    primary_data_ = !fs::exists(options.data_dir / "standby.signal", ec);
    phase_ = Phase::Running;
    readSysid();
    pg_->setQueryTimeout(runningQueryTimeout(site_));
    log::info("existing {} data in {} (system identifier {})", primary_data_ ? "primary" : "replica",
              options.data_dir.string(), sysid_ ? std::to_string(*sysid_) : "unreadable");
  }
  return Status::success();
}

void DbAgent::start(std::function<void(const std::string&)> on_fatal) {
  on_fatal_ = std::move(on_fatal);
  state_ = classify(facts());  // with data, the agent starts fenced or a replica, not bootstrapping
  state_since_ = loop_.clock().now();
  log::info("state {} at start", stateName(state_));
  schedule(loop_.clock().now());
  EtcdWatchOptions options;
  options.endpoints = site_.etcd.endpoints;
  options.tls = client_tls_;
  options.prefix = sitePrefix(site_.site.name);
  watch_ = std::make_unique<EtcdWatch>(
      loop_, std::move(options), [this](const WatchEvent& event) { onWatchEvent(event); },
      [this] { wake(); });
  // A member our calls found dead, frozen or without a leader should not keep the watch either: a
  // frozen one would hold it open and silent.
  etcd_.onEndpointFailed([this](const core::SocketAddress& endpoint, const std::string& why) {
    if (watch_) {
      watch_->leave(endpoint, why);
    }
  });
}

void DbAgent::onWatchEvent(const WatchEvent& event) {
  const std::string members = membersPrefix(site_.site.name);
  if (event.key.rfind(members, 0) == 0) {
    // Member records change every tick (positions): only a role or seen_leader change matters
    // (a replica that saw the leader go, a new primary published), else every publish would
    // wake every other agent.
    const std::string name = event.key.substr(members.size());
    if (name == node_.name) {
      return;
    }
    if (nodes_.count(name) == 0) {
      logStrangeKey(event);
      return;
    }
    std::pair<std::string, std::string> seen{"gone", ""};
    if (event.type == WatchEvent::Type::Put) {
      auto m = checkedMember(site_.site.name, nodes_, event.key, event.value, nullptr);
      if (!m) {
        return;
      }
      seen = {m->role, m->seen_leader.value_or("?")};
    }
    auto [it, inserted] = watched_members_.try_emplace(name, seen);
    if (!inserted && it->second == seen) {
      return;
    }
    it->second = seen;
    wake();
    return;
  }
  // The leader key (taken, released, expired), the sync key and the switchover intent change
  // only when a decision is due.
  if (event.key == leaderKey(site_.site.name) || event.key == syncKey(site_.site.name) ||
      event.key == switchoverKey(site_.site.name) || event.key == restoreKey(site_.site.name) ||
      event.key == pauseKey(site_.site.name)) {
    leader_key_changed_ = leader_key_changed_ || event.key == leaderKey(site_.site.name);
    wake();
  } else if (event.key != initializeKey(site_.site.name) && event.key != historyKey(site_.site.name)) {
    logStrangeKey(event);
  }
}

void DbAgent::logStrangeKey(const WatchEvent& event) {
  // Never read (only the site's exact keys are), but said once: someone writes where no agent
  // looks. Bounded, whatever an attacker writes.
  constexpr size_t kMaxRemembered = 256;
  if (event.type != WatchEvent::Type::Put || strange_keys_.count(event.key) != 0) {
    return;
  }
  if (strange_keys_.size() >= kMaxRemembered) {
    if (strange_keys_.size() == kMaxRemembered) {
      log::warn("etcd: more unknown keys under {}; no longer logged", sitePrefix(site_.site.name));
      strange_keys_.insert("");
    }
    return;
  }
  strange_keys_.insert(event.key);
  log::warn(
      "etcd: ignoring {}: not a key of this site's agents (no [[db.node]] of that name, or unknown), "
      "{} bytes",
      event.key.substr(0, 256), event.value.size());
}

void DbAgent::wake() {
  if (phase_ == Phase::Failed) {
    return;
  }
  // Spacing keeps a burst of events (or a misbehaving peer) from spinning the loop; a tick
  // already due sooner (a lease renewal, the fence deadline) is never put off.
  const core::TimePoint at = std::max(loop_.clock().now(), last_tick_ + kWakeSpacing);
  if (!timer_.armed() || at < next_tick_) {
    schedule(at);
  }
}

void DbAgent::fatal(const std::string& message) {
  phase_ = Phase::Failed;
  timer_.disarm();
  if (on_fatal_) {
    on_fatal_(message);
  }
}

void DbAgent::schedule(core::TimePoint next) {
  if (phase_ != Phase::Failed) {
    timer_.armAt(next);
    next_tick_ = next;
  }
}

void DbAgent::tick() {
  last_tick_ = loop_.clock().now();
  if (op_ && tickOperation()) {
    // Polled every kOperationPoll (SIGCHLD wakes the loop sooner), the lease kept on time.
    core::TimePoint next = loop_.clock().now() + kOperationPoll;
    if (elector_.isLeader()) {
      next = std::min(next, elector_.lease().decide().next_action);
    }
    schedule(next);
    return;
  }
  if (auto exit = pg_->pollExit()) {
    if (restart_) {
      log::info("PostgreSQL stopped for the restart the operator asked ({:.1f} s); starting it again",
                std::chrono::duration<double>(loop_.clock().now() - restart_->since).count());
      restart_.reset();
    } else {
      ++postgres_exits_;
      log::warn("PostgreSQL exited (wait status {})", *exit);
    }
  }
  driveRestart();
  if (phase_ == Phase::Bootstrap) {
    bootstrapStep();
  }
  Identity identity = Identity::Ok;
  if (phase_ == Phase::Running) {
    std::string error;
    if (!site_read_ && !readSiteKeys(error)) {
      identity = Identity::Wait;  // the identity check needs one read of the keys first
    } else {
      identity = checkIdentity();
    }
    // Until verified, this node takes no leadership and follows nobody (a leader already in
    // office keeps renewing, or fencing itself, as usual).
    identity_verified_ = identity == Identity::Ok;
    if (identity == Identity::Foreign) {
      if (elector_.isLeader()) {
        elector_.release();
      }
      syncFence();
      if (pg_->isRunning()) {
        log::warn("stopping PostgreSQL: its data is not of this cluster");
        pg_->stop(StopMode::Fast);
      }
      observe();
      publish();
    }
  }
  updateState();
  if (phase_ == Phase::Running && identity != Identity::Foreign) {
    pg_->setQueryTimeout(primary_data_ ? runningQueryTimeout(site_) : replicaQueryTimeout(site_));
    if (holdForRestore()) {
      observe();
      publish();
    } else switch (state_) {
      case AgentState::Leader:
      case AgentState::Promoting:
      case AgentState::SwitchingOver:
        stepLeader();
        break;
      case AgentState::Fenced:
        stepFenced();
        break;
      case AgentState::Replica:
      case AgentState::Candidate:
        stepReplica();  // a fresh look first; stepCandidate() decides while the key is free
        break;
      case AgentState::Bootstrapping:  // initdb or a clone finished this very tick
      case AgentState::Rejoining:
      case AgentState::Foreign:
        if (primary_data_) {
          stepFenced();
        } else {
          stepReplica();
        }
        break;
    }
    // After the step: the old leader may already have rejoined as a replica while it waits to
    // see the target published as primary.
    if (switchover_) {
      driveSwitchover();
    }
    driveRestore();
  }
  updateState();
  if (backup_) {
    tickBackup();
  }
  core::TimePoint next = loop_.clock().now() + interval_;
  if (switchover_ || (restore_ && restore_->step != RestoreStep::Done && restore_->step != RestoreStep::Failed) ||
      !held_restore_id_.empty()) {
    next = loop_.clock().now() + kSwitchoverPoll;
  } else if (std::exchange(promoted_this_tick_, false)) {
    next = loop_.clock().now();  // serve the requests waiting for /primary, then checkpoint
  } else if (phase_ == Phase::Running && etcd_ok_ && !leader_name_) {
    next = loop_.clock().now() + interval_ / 3;  // no leader: decide who takes over sooner
  }
  if (elector_.isLeader()) {
    next = std::min(next, elector_.lease().decide().next_action);
  }
  schedule(next);
}

void DbAgent::bootstrapStep() {
  const core::TimePoint now = loop_.clock().now();
  auto waiting = [&](const std::string& why) {
    if (now >= next_wait_log_) {
      log::info("waiting to bootstrap: {}", why);
      next_wait_log_ = now + kLogEvery;
    }
  };
  std::string error;
  if (!readSiteKeys(error)) {
    waiting("etcd: " + error);
    return;
  }
  const std::string key = initializeKey(site_.site.name);
  if (!init_ && !must_clone_) {
    // Nobody has created the cluster: claim the right to, before initdb (no other node may run
    // initdb, nobody can clone from us until the identifier is recorded).
    auto created = etcd_.createIfAbsent(key, encodeInit({InitRecord::State::Initializing, node_.name, {}}));
    if (!created.ok) {
      waiting("etcd: " + created.error);
    }
    return;  // the next tick reads who claimed it
  }
  if (init_ && init_->state == InitRecord::State::Initializing) {
    if (init_->node != node_.name || must_clone_) {
      waiting("the cluster is being initialized by " + init_->node);
      return;
    }
    // Ours, and no data (a run that stopped before initdb finished): nobody can have cloned or
    // written anything yet, so initdb (again) is safe.
    log::info("this node initializes the cluster (initdb into {})", pg_->options().data_dir.string());
    // Nobody else can hold data yet: the new server may write until the lease is taken next tick.
    fence_->arm(std::chrono::steady_clock::now() + pg_->bootstrapBound());
    runOp("initdb", pg_->beginInitPrimary(app_), [this, key](const Status& init) {
      if (!init.ok) {
        fatal("initializing the cluster failed: " + init.error);
        return;
      }
      ++postgres_starts_;
      readSysid();
      if (!sysid_) {
        fatal("initdb made a cluster without a readable system identifier");
        return;
      }
      auto recorded = etcd_.putIfUnchanged(key, init_mod_revision_,
                                           encodeInit({InitRecord::State::Initialized, node_.name, sysid_}));
      if (recorded.ok && !recorded.value) {
        // Someone recorded another identity meanwhile (a node holding an existing cluster's
        // data, after etcd lost its keys): our new cluster is empty and unused, so it goes.
        log::warn(
            "the cluster identity changed while this node ran initdb: discarding the new, empty cluster");
        fence_->disarm();
        pg_->stop(StopMode::Immediate);
        if (auto aside = pg_->moveDataAside(); aside.ok) {
          std::error_code ec;
          std::filesystem::remove_all(aside.value, ec);
        }
        sysid_.reset();
        return;
      }
      log::info("cluster created: system identifier {}", *sysid_);
      primary_data_ = true;
      phase_ = Phase::Running;
      pg_->setQueryTimeout(runningQueryTimeout(site_));
      // If that write failed, the first running tick (checkIdentity) records it before the lease.
    });
    return;
  }
  // The cluster exists: never initdb again. Clone the leader of this very cluster.
  const std::optional<uint64_t> cluster = clusterSysid();
  const std::string identity = cluster ? "system " + std::to_string(*cluster) : "identifier not recorded yet";
  auto wait_for_leader = [&](const std::string& why) {
    if (!no_leader_since_) {
      no_leader_since_ = now;
    }
    const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now - *no_leader_since_);
    if (now >= next_wait_log_) {
      log::warn(
          "this node has no data and clones the leader of the cluster ({}) as soon as one runs: {} "
          "(waiting {} s). It never runs initdb for an existing cluster; if every node lost its data, "
          "see docs/operations.md",
          identity, why, waited.count());
      next_wait_log_ = now + (waited < std::chrono::seconds(60) ? kLogEvery : std::chrono::seconds(30));
    }
  };
  if (!leader_name_) {
    wait_for_leader("no leader");
    return;
  }
  auto member = leaderRecord(*leader_name_);
  if (!member) {
    wait_for_leader("leader " + *leader_name_ + " has not published a running primary yet");
    return;
  }
  if (!sameSystem(*member, "clone")) {
    wait_for_leader("leader " + member->name + " is of another system");
    return;
  }
  no_leader_since_.reset();
  const std::optional<uint64_t> expected = cluster ? cluster : member->sysid;
  // [db.backup]: a large database comes from the newest backup of the leader's timeline, the
  // rest streamed (after one failed try, pg_basebackup).
  std::optional<BackupSet> from_backup;
  if (backup_ && !repo_clone_failed_) {
    std::string why;
    from_backup = backup_->backupForReplica(member->timeline, why);
    if (!from_backup) {
      log::info("copying the leader with pg_basebackup, not from the repository: {}", why);
    }
  }
  const core::SocketAddress leader_pg = *core::SocketAddress::parse(member->pg);
  Status begun = Status::success();
  std::string what;
  if (from_backup) {
    log::info("restoring backup {} ({} bytes) from the repository, then streaming from leader {} at {} (slot {})",
              from_backup->label, from_backup->size, member->name, member->pg, slotNameFor(node_.name));
    what = "restore of backup " + from_backup->label;
    begun = pg_->beginRestoreClone(backup_->standbyRestoreArgs(*from_backup), std::chrono::hours(6), leader_pg,
                                   slotNameFor(node_.name));
  } else {
    log::info("cloning leader {} at {} (pg_basebackup, slot {})", member->name, member->pg,
              slotNameFor(node_.name));
    what = "pg_basebackup from " + member->name;
    begun = pg_->beginClone(leader_pg, slotNameFor(node_.name));
  }
  runOp(what, begun,
        [this, leader = *member, expected, identity, repo = from_backup.has_value()](const Status& clone) {
          if (!clone.ok) {
            log::warn("{} {} failed: {}; trying again{}", repo ? "restoring a backup to follow" : "cloning",
                      leader.name, clone.error, repo ? " with pg_basebackup" : "");
            repo_clone_failed_ = repo_clone_failed_ || repo;
            return;
          }
          repo_clone_failed_ = false;
          readSysid();
          if (!sysid_ || (expected && *sysid_ != *expected)) {
            // The address published for the leader served another cluster: that copy is not ours.
            log::error("the clone from {} at {} is of system {}, not of this cluster ({}): discarding it",
                       leader.name, leader.pg, sysid_ ? std::to_string(*sysid_) : "unknown", identity);
            if (auto aside = pg_->moveDataAside(); aside.ok) {
              std::error_code ec;
              std::filesystem::remove_all(aside.value, ec);
            }
            sysid_.reset();
            return;
          }
          primary_data_ = false;
          must_clone_ = false;
          following_ = leader.name;
          phase_ = Phase::Running;
          pg_->setQueryTimeout(runningQueryTimeout(site_));
          startPostgres("replica");
        },
        member->name);
}

bool DbAgent::startPostgres(const char* why, std::function<void(bool)> then) {
  const core::TimePoint now = loop_.clock().now();
  if (start_failures_ > 0 && now < next_start_) {
    return false;  // backing off: the last error was logged
  }
  ++postgres_starts_;
  // A primary's start (crash recovery) may outlast the lease: the loop keeps renewing it
  // meanwhile, and abandons the start (and fences) once it can no longer be trusted. A replica
  // becomes consistent (and accepts connections) only with WAL from the leader it follows: its
  // start is abandoned if that leader loses the key (abandonIfSourceLost), and it is stopped and
  // pointed at the new one.
  const bool replica = std::string_view(why) == "replica";
  runOp(std::string("start as ") + why, pg_->beginStart(),
        [this, why = std::string(why), then = std::move(then)](const Status& started) {
          if (!started.ok && started.error.rfind("abandoned:", 0) == 0) {
            // Not a failure of the server: the leader it waited for went (logged). No backoff.
          } else if (!started.ok) {
            ++start_failures_;
            const auto backoff = std::min<core::Duration>(
                std::chrono::seconds(1L << std::min(start_failures_ - 1, 5)), std::chrono::seconds(30));
            next_start_ = loop_.clock().now() + backoff;
            last_start_error_ = started.error;
            log::error("starting PostgreSQL ({}, attempt {}; next in {} ms): {}", why, start_failures_,
                       std::chrono::duration_cast<milliseconds>(backoff).count(), started.error);
          } else {
            if (start_failures_ > 0) {
              log::info("PostgreSQL started after {} failed attempts", start_failures_);
            }
            start_failures_ = 0;
            last_start_error_.clear();
            log::info("PostgreSQL running as {} on {}", why, node_.pg.toString());
          }
          if (then) {
            then(started.ok);
          }
        },
        replica ? following_ : std::string());
  return true;
}

void DbAgent::runOp(std::string what, Status begun, std::function<void(const Status&)> then, std::string source) {
  if (!begun.ok) {
    then(begun);
    return;
  }
  log::debug("{}: under way", what);
  op_ = PendingOp{std::move(what), std::move(then), loop_.clock().now(), std::move(source)};
  leader_key_changed_ = false;
  wake();
}

bool DbAgent::abandonIfSourceLost() {
  if (op_->source.empty() || !leader_key_changed_) {
    return false;
  }
  leader_key_changed_ = false;
  std::string error;
  if (!readSiteKeys(error)) {
    return false;  // etcd unreachable: nothing known about the source, the tool's timeout stands
  }
  if (leader_name_ && *leader_name_ == op_->source) {
    return false;
  }
  const std::string why = op_->source + " no longer leads (" +
                          (leader_name_ ? *leader_name_ + " does now" : std::string("the leader key is free")) + ")";
  log::warn("{}: abandoned, {}", op_->what, why);
  pg_->abandonOperation();
  if (pg_->isRunning()) {
    // A replica's start: its server waits for WAL from the old leader and accepts no session
    // (so no new primary_conninfo) until then. Stopped, it is pointed at the new leader before
    // its next start (stepReplica).
    if (Status stopped = pg_->stop(StopMode::Fast); !stopped.ok) {
      log::error("stopping PostgreSQL after an abandoned start: {}", stopped.error);
    }
  }
  PendingOp op = std::move(*op_);
  op_.reset();
  op.then(Status::failure("abandoned: " + why));
  return true;
}

bool DbAgent::tickOperation() {
  if (abandonIfSourceLost()) {
    return op_.has_value();  // a continuation may have begun the next step
  }
  if (auto done = pg_->pollOperation()) {
    PendingOp op = std::move(*op_);
    op_.reset();
    log::debug("{}: done in {} ms", op.what,
               std::chrono::duration_cast<milliseconds>(loop_.clock().now() - op.started).count());
    op.then(*done);
    return op_.has_value();  // a continuation may have begun the next step
  }
  // Still running: the loop serves the REST API meanwhile, keeps the lease (a primary's start
  // can outlast it) and the member record alive.
  if (elector_.isLeader()) {
    const LeaseDecision decision = elector_.tick();
    syncFence();
    if (decision.fenced) {
      log::warn("{}: abandoned, the leader lease is no longer valid", op_->what);
      pg_->abandonOperation();
      op_.reset();
      fenceStop();
      return false;
    }
  }
  publish();
  return true;
}

void DbAgent::syncFence() {
  if (elector_.isLeader() && elector_.mayWrite()) {
    // The lease runs on the loop's clock, the file on the steady clock (as capEtcd()).
    fence_->arm(std::chrono::steady_clock::now() + (elector_.lease().fenceDeadline() - loop_.clock().now()));
  } else {
    fence_->disarm();
  }
}

void DbAgent::stepFenced() {
  // A primary's data without a valid lease: PostgreSQL stays stopped. Take the key when free and
  // allowed (then lead this very tick), else rejoin whoever leads.
  const core::TimePoint now = loop_.clock().now();
  if (syncMode() && !site_read_) {
    publish();  // whether we may lead depends on the sync key: read it before deciding
  }
  bool may_take =
      !elector_.isLeader() && !switchover_ && !intentBlocks() && identity_verified_ && leaderFree();
  if (may_take && syncMode() && !syncAllowsLeading()) {
    may_take = false;
    if (site_read_ && now >= next_wait_log_) {
      log::warn(
          "the sync key names {} as the last leader: this node's data may lack commits it acknowledged, "
          "so it does not lead",
          sync_key_->leader);
      next_wait_log_ = now + kLogEvery;
    }
  }
  if (may_take) {
    auto got = elector_.tryAcquire();
    if (!got.ok) {
      if (now >= next_wait_log_) {
        log::warn("cannot take the leader key: {}", got.error);
        next_wait_log_ = now + kLogEvery;
      }
    } else if (!got.value) {
      // Another node leads (by failover, manual or not, or switchover): rejoined below.
    } else if (syncMode() && !claimSyncKey()) {
      elector_.release();
    } else {
      log::info("took the leader lease");
      slots_ok_ = false;
      pg_sync_.reset();
    }
  }
  if (elector_.isLeader()) {
    stepLeader();  // took the key (or holds one past its deadline, which a renewal may mend)
    return;
  }
  syncFence();
  fenceStop();
  observe();
  publish();
  if (!pg_->isRunning() && leader_name_ && *leader_name_ != node_.name) {
    rejoinAsReplica();
  }
}

void DbAgent::fenceStop() {
  if (pg_->isRunning()) {
    // The hard fence: nobody may write here once another node could hold the key.
    ++fences_;
    log::warn("no valid leader lease ({}): stopping PostgreSQL at once",
              elector_.isLeader() ? "renewals failing" : "lease lost");
    if (Status stopped = pg_->stop(StopMode::Immediate); !stopped.ok) {
      log::error("fencing: stopping PostgreSQL failed: {}", stopped.error);
    }
  }
}

void DbAgent::stepLeader() {
  // Leader, Promoting and SwitchingOver: renew the lease; fence the moment it is no longer
  // valid; otherwise keep PostgreSQL running, finish a promotion, and keep replication in line.
  const core::TimePoint now = loop_.clock().now();
  const LeaseDecision decision = elector_.tick();
  if (!elector_.lastError().empty() && now >= next_wait_log_) {
    log::warn("leader lease renewal failed: {}", elector_.lastError());
    next_wait_log_ = now + kLogEvery;
  }
  syncFence();
  if (decision.fenced) {
    fenceStop();
  } else {
    // A switchover stops PostgreSQL on purpose: it stays stopped unless given up.
    if (!switchover_ && !restoreOwnsPostgres() && !pg_->isRunning() && startPostgres("primary")) {
      publish();
      return;  // the start runs on; tickOperation() keeps the lease (or abandons it and fences)
    }
    if (checkpoint_pending_ && !pg_->isRunning()) {
      checkpoint_pending_ = false;  // a restart's end-of-recovery checkpoint records the timeline
    }
    if (checkpoint_pending_) {
      finishPromotion();
    } else if (!slots_ok_ && pg_->isRunning() && !restoreOwnsPostgres()) {
      ensureSlots();
    }
  }
  observe();
  publish();
  if (pending_history_ && !checkpoint_pending_ && elector_.isLeader() && elector_.mayWrite() && status_ok_ &&
      !pg_status_.in_recovery) {
    recordHistory();
  }
  if (scheduled_ && elector_.isLeader() && elector_.mayWrite() && etcd_ok_ && !switchover_ && !restore_) {
    driveScheduledSwitchover();
  }
  if (elector_.isLeader() && elector_.mayWrite() && pg_->isRunning() && etcd_ok_ && !switchover_) {
    if (syncMode()) {
      reconcileSync();
    } else if (!pg_sync_) {
      clearSynchronousStandbys();
    }
  }
  if (!elector_.isLeader() && !pg_->isRunning() && leader_name_ && *leader_name_ != node_.name) {
    rejoinAsReplica();  // leadership lost this tick and someone else already leads
  }
}

void DbAgent::stepReplica() {
  if (!pg_->isRunning()) {
    // A new leader since the server stopped: its configuration first, then the start.
    if (leader_name_ && *leader_name_ != node_.name && *leader_name_ != following_) {
      followLeader();
    }
    if (startPostgres("replica")) {
      publish();
      return;  // the next ticks watch the start
    }
  }
  observe();
  publish();
  if (!etcd_ok_) {
    return;
  }
  if (!leader_name_ && leaderFree()) {
    stepCandidate();  // the key is free (or went free this tick): decide now, not a tick later
  } else if (leader_name_ && *leader_name_ != node_.name && *leader_name_ != following_) {
    followLeader();
  } else {
    checkDivergence();
  }
}

void DbAgent::stepCandidate() {
  // A standby while the leader key is free: the switchover target, or the replica the failover
  // rules choose, takes the key and promotes; the others wait for it.
  if (intent_ && intent_->to == node_.name) {
    if (syncMode() && !(sync_key_ && sync_key_->sync.count(node_.name) != 0)) {
      log::warn("switchover to this node refused: not listed in the sync key");
    } else {
      takeOver("switchover");
    }
  } else if (site_.db.failover && !intent_ && !pause_) {
    maybePromote();
  }
}

std::optional<MemberRecord> DbAgent::leaderRecord(const std::string& leader) {
  const std::string key = memberKey(site_.site.name, leader);
  auto record = etcd_.get(key);
  if (!record.ok || !record.value || record.value->lease == 0) {
    return std::nullopt;
  }
  auto member = checkedMember(site_.site.name, nodes_, key, record.value->value, nullptr);
  if (!member || member->role != "primary") {
    return std::nullopt;
  }
  return member;
}

void DbAgent::maybePromote() {
  if (!status_ok_ || !pg_status_.in_recovery) {
    return;
  }
  const Lsn mine = pg_status_.replay_lsn;
  const PromoteVerdict verdict =
      syncMode() ? maySyncPromote(sync_key_, node_.name, std::max(pg_status_.receive_lsn, mine), members_)
                 : mayAsyncPromote(node_.name, mine, last_leader_lsn_, site_.db.max_lag_bytes, members_,
                                   /*yield_ties=*/true);
  if (!verdict.allowed) {
    const core::TimePoint now = loop_.clock().now();
    if (now >= next_wait_log_) {
      log::info("leader key free; not taking over: {}", verdict.why);
      next_wait_log_ = now + kLogEvery;
    }
    return;
  }
  takeOver("failover");
}

bool DbAgent::takeOver(const char* how) {
  if (!identity_verified_) {
    return false;  // checkIdentity() logged why
  }
  auto got = elector_.tryAcquire();
  if (!got.ok || !got.value) {
    return false;
  }
  syncFence();  // before pg_promote: the server may take writes once recovery ends
  if (syncMode() && !claimSyncKey()) {
    elector_.release();
    syncFence();
    return false;
  }
  std::string previous = "no holder seen by this agent";
  std::string previous_holder = following_;
  if (last_holder_ && last_holder_->first != node_.name) {
    previous_holder = last_holder_->first;
    const double ago = std::chrono::duration<double>(loop_.clock().now() - last_holder_->second).count();
    previous = fmt::format("{}'s lease {} (last seen holding it {:.1f} s ago)", last_holder_->first,
                           std::string_view(how) == "switchover" ? "was released" : "expired", ago);
  }
  // A switchover is the operator's plan; a failover is not.
  const log::Level level = std::string_view(how) == "switchover" ? log::Level::Info : log::Level::Warn;
  if (log::enabled(level)) {
    log::write(level, fmt::format(
                          "leader key was free: {}; this replica (replayed {}) takes over by {} and promotes",
                          previous, formatLsn(pg_status_.replay_lsn), how));
  }
  // Why this timeline begins, for the history key (recordHistory(), once it is on disk).
  std::string reason = how;
  if (std::string_view(how) == "switchover" && intent_) {
    reason = "switchover from " + intent_->from;
  } else if (std::string_view(how) == "failover") {
    reason = previous_holder.empty() ? "failover: the leader key was free"
                                     : "failover: leader " + previous_holder + "'s lease ended";
  }
  const Lsn fork_at = pg_status_.replay_lsn;
  // Commits must not wait for a standby list copied from the old leader (pg_basebackup copies
  // postgresql.auto.conf): in synchronous mode the sync key just claimed lists nobody, so no
  // replica counts yet (reconcileSync() adds them as they stream); in asynchronous mode none
  // ever does. Set while still a standby (ALTER SYSTEM works there): after the promotion the
  // checkpointer, which applies the change for committing backends, is busy with the
  // end-of-recovery checkpoint, and commits would wait for a replica to follow us meanwhile.
  // Strict synchronous mode names the replicas the claimed key lists instead: commits wait.
  const std::string standbys = promotionStandbyNames();
  const Status cleared = pg_->setSynchronousStandbys(standbys);
  // pg_promote waits for the end of recovery: more than a status query's budget.
  pg_->setQueryTimeout(std::chrono::milliseconds(10000));
  Status promoted = pg_->promote();
  pg_->setQueryTimeout(runningQueryTimeout(site_));
  if (!promoted.ok) {
    log::error("promotion failed: {}; stepping down", promoted.error);
    elector_.release();
    syncFence();
    return false;
  }
  ++promotions_;
  pending_history_ = HistoryEntry{0, fork_at, std::chrono::duration_cast<std::chrono::seconds>(
                                                  std::chrono::system_clock::now().time_since_epoch())
                                                  .count(),
                                  node_.name, std::move(reason)};
  history_attempts_ = 0;
  primary_data_ = true;
  following_.clear();
  slots_ok_ = false;
  if (cleared.ok) {
    pg_sync_ = standbys.empty() ? std::set<std::string>{} : sync_key_->sync;
  } else {
    pg_sync_.reset();  // reconcileSync() / clearSynchronousStandbys() set it next tick
    log::warn("setting synchronous_standby_names before promotion: {}", cleared.error);
  }
  // Writes are accepted from here on: /primary answers 200 as soon as the loop serves it. The
  // checkpoint that pg_rewind needs comes next tick, before the record says "primary".
  checkpoint_pending_ = true;
  promoted_this_tick_ = true;
  observe();
  log::info("promoted: now the primary on timeline {}", pg_status_.timeline);
  return true;
}

void DbAgent::finishPromotion() {
  // Until this checkpoint the control file still names the old timeline: a former primary
  // rewound from us meanwhile would find "no rewind required" and then fail to follow
  // (Patroni's checkpoint_after_promote). The member record says "primary" only after it.
  if (Status done = pg_->checkpoint(); !done.ok) {
    log::warn("checkpoint after promotion: {}; retrying next tick", done.error);
    return;
  }
  checkpoint_pending_ = false;
  ensureSlots();
}

void DbAgent::onChildSignal() {
  if (op_) {
    wake();  // a tool (or a starting postmaster) may have exited: the operation says which
    return;
  }
  // SIGCHLD also comes from other children; only the postmaster's death matters.
  if (phase_ == Phase::Running && pg_running_ && !pg_->isRunning()) {
    wake();
  }
}

void DbAgent::refreshTls() {
  if (Status done = pg_->refreshTls(); !done.ok) {
    log::warn("internal_tls: PostgreSQL on {} keeps its previous certificate: {}", node_.name, done.error);
    return;
  }
  log::info("internal_tls: PostgreSQL on {} takes its new certificate", node_.name);
}

void DbAgent::followLeader() {
  auto leader = leaderRecord(*leader_name_);
  if (!leader) {
    return;  // not published as a running primary yet
  }
  if (!sameSystem(*leader, "follow")) {
    return;
  }
  Status following = pg_->follow(*core::SocketAddress::parse(leader->pg), slotNameFor(node_.name));
  if (!following.ok) {
    log::warn("following new leader {}: {}", leader->name, following.error);
    return;
  }
  following_ = leader->name;
  log::info("following leader {} at {}", leader->name, leader->pg);
}

void DbAgent::rejoinAsReplica() {
  auto leader = leaderRecord(*leader_name_);
  if (!leader) {
    return;
  }
  rewindAndFollow(
      *leader, "another node (" + leader->name + ") leads: rewinding this former primary and following it");
}

void DbAgent::rewindAndFollow(const MemberRecord& leader, const std::string& why) {
  if (!sameSystem(leader, "rewind onto")) {
    return;
  }
  const auto address = *core::SocketAddress::parse(leader.pg);
  log::warn("{}", why);
  rejoining_ = true;
  updateState();
  auto done = [this] {
    rejoining_ = false;
    updateState();
  };
  if (pg_->isRunning()) {
    if (Status stopped = pg_->stop(StopMode::Fast); !stopped.ok) {
      log::error("stopping PostgreSQL before pg_rewind: {}", stopped.error);
      done();
      return;
    }
  }
  runOp("pg_rewind from " + leader.name, pg_->beginRewind(address),
        [this, leader, address, done](const Status& rewound) {
          if (!rewound.ok) {
            log::error("pg_rewind from {}: {}", leader.name, rewound.error);
            // Not reaching the leader says nothing about our data: try again next tick. Anything
            // else (damaged or incompatible data, or a pg_rewind abandoned midway because its
            // source stopped leading: the target may be half rewound) will not mend by itself. pg_rewind's own
            // identity check ("different systems") means the leader's record lied about its
            // identifier: never move our data aside for a stranger.
            if (rewound.error.find("could not connect") == std::string::npos &&
                rewound.error.find("connection to server") == std::string::npos &&
                rewound.error.find("different systems") == std::string::npos) {
              recloneFrom(leader);
            }
            done();
            return;
          }
          ++rewinds_;
          if (Status following = pg_->follow(address, slotNameFor(node_.name)); !following.ok) {
            log::error("following {}: {}", leader.name, following.error);
            done();
            return;
          }
          primary_data_ = false;
          following_ = leader.name;
          not_streaming_since_.reset();
          start_failures_ = 0;  // a new start, not one more of a failing series
          if (!startPostgres("replica", [this, done](bool) {
                done();
                observe();
                publish();
              })) {
            done();
          }
        },
        leader.name);
}

void DbAgent::checkDivergence() {
  const core::TimePoint now = loop_.clock().now();
  if (status_ok_ && pg_status_.in_recovery && pg_status_.timeline != 0) {
    received_tli_ = pg_status_.timeline;
  }
  if (!leader_record_ || leader_record_->name == node_.name) {
    not_streaming_since_.reset();
    return;
  }
  const MemberRecord& leader = *leader_record_;
  const NodeView v = view();
  if (v.isStreamingReplica()) {
    not_streaming_since_.reset();
    diverged_grace_ = core::Duration{};
    return;
  }
  // Precise: our WAL went past the point where the leader's history left our timeline (we
  // received a former primary's last writes, which the new leader never had).
  const Lsn position = std::max(pg_status_.receive_lsn, pg_status_.replay_lsn);
  if (status_ok_ && received_tli_ != 0 &&
      divergence(received_tli_, position, leader.timeline, leader.history) == Divergence::Yes) {
    rewindAndFollow(leader, "this replica's WAL (timeline " + std::to_string(received_tli_) + " up to " +
                                formatLsn(position) + ") forked off leader " + leader.name + "'s timeline " +
                                std::to_string(leader.timeline) + ": rewinding it");
    return;
  }
  // PostgreSQL refuses to start on a timeline it cannot follow.
  if (!pg_->isRunning() && start_failures_ >= 2 &&
      (last_start_error_.find("not a child of this server's history") != std::string::npos ||
       last_start_error_.find("forked off") != std::string::npos || start_failures_ >= 4)) {
    rewindAndFollow(leader, "PostgreSQL fails to start as a replica of " + leader.name + " (" +
                                std::to_string(start_failures_) + " attempts): asking pg_rewind");
    return;
  }
  // Otherwise: pointed at the leader but not streaming from it for a while (the WAL receiver
  // retries every few seconds and is refused). pg_rewind decides; it changes nothing when our WAL
  // never left the leader's history. The wait doubles each time (a leader that will not serve us
  // for another reason must not make us restart in a loop).
  if (!pg_->isRunning() || following_ != leader.name) {
    return;
  }
  if (!not_streaming_since_) {
    not_streaming_since_ = now;
    return;
  }
  const core::Duration base = std::max<core::Duration>(ttlOf(site_) * 2, std::chrono::seconds(10));
  if (diverged_grace_ < base) {
    diverged_grace_ = base;
  }
  if (now - *not_streaming_since_ < diverged_grace_) {
    return;
  }
  const auto waited = std::chrono::duration_cast<milliseconds>(now - *not_streaming_since_).count();
  diverged_grace_ = std::min<core::Duration>(diverged_grace_ * 2, std::chrono::minutes(10));
  rewindAndFollow(leader, "not streaming from leader " + leader.name + " for " + std::to_string(waited) +
                              " ms: stopping this replica and asking pg_rewind whether it forked off");
}

std::optional<std::filesystem::path> DbAgent::recloneFrom(const MemberRecord& leader, bool planned) {
  auto aside = pg_->moveDataAside();
  if (!aside.ok) {
    log::error("cannot re-clone: {}", aside.error);
    return std::nullopt;
  }
  ++reclones_;
  if (planned) {
    log::info("reinit asked by the operator: data directory moved aside to {} (kept); cloning {}",
              aside.value.string(), leader.name);
  } else {
    log::warn("data directory moved aside to {} (kept); cloning {} again", aside.value.string(), leader.name);
  }
  primary_data_ = false;
  must_clone_ = true;
  following_.clear();
  sysid_.reset();
  // The bootstrap phase clones (never initdb), with the same identity checks as a new node.
  phase_ = Phase::Bootstrap;
  wake();
  return aside.value;
}

void DbAgent::ensureSlots() {
  bool ok = true;
  // Clusters created before initPrimary() granted it: the web nodes' read routing needs it.
  if (auto granted = pg_->query("GRANT pg_read_all_stats TO " + quoteIdent(site_.db.user)); !granted.ok) {
    log::warn("granting pg_read_all_stats to {}: {}", site_.db.user, granted.error);
    ok = false;
  }
  for (const auto& other : site_.db.nodes) {
    if (other.name == node_.name) {
      continue;
    }
    Status slot = pg_->ensureSlot(slotNameFor(other.name));
    if (!slot.ok) {
      log::warn("replication slot for {}: {}", other.name, slot.error);
      ok = false;
    }
  }
  slots_ok_ = ok;
}

void DbAgent::observe() {
  pg_running_ = pg_->isRunning();
  status_ok_ = false;
  if (pg_running_) {
    auto status = pg_->status();
    status_ok_ = status.ok;
    if (status.ok) {
      pg_status_ = status.value;
    }
  }
  // The primary's view of each replica's replay lag, for /metrics: once a second at most.
  if (!status_ok_ || pg_status_.in_recovery) {
    replica_lags_.clear();
  } else if (loop_.clock().now() >= next_replica_lags_) {
    next_replica_lags_ = loop_.clock().now() + std::chrono::seconds(1);
    auto replicas = pg_->replicas();
    if (replicas.ok) {
      replica_lags_ = std::move(replicas.value);
    }
  }
}

void DbAgent::capEtcd() {
  if (elector_.isLeader() && elector_.mayWrite()) {
    etcd_.capDeadline(std::chrono::steady_clock::now() +
                      (elector_.lease().fenceDeadline() - loop_.clock().now()));
  } else {
    etcd_.capDeadline(std::nullopt);
  }
}

void DbAgent::publish() {
  capEtcd();
  std::string error;
  if (member_lease_ == 0) {
    auto grant = etcd_.grantLease(ttlOf(site_));
    if (grant.ok) {
      member_lease_ = grant.value.id;
    } else {
      error = grant.error;
    }
  } else {
    auto ttl = etcd_.keepAlive(member_lease_);
    if (!ttl.ok) {
      error = ttl.error;
    } else if (ttl.value.count() == 0) {
      member_lease_ = 0;  // expired while etcd was unreachable: a new one next tick
    }
  }
  std::optional<std::string> published_seen;
  auto put_record = [&] {
    const NodeView v = view();
    MemberRecord me;
    me.name = node_.name;
    // A new primary before its post-promotion checkpoint: not yet a source to rewind from.
    me.role = checkpoint_pending_ && v.role() == "primary" ? "promoting" : v.role();
    me.pg = node_.pg.toString();
    me.agent = node_.agent.toString();
    me.timeline = status_ok_ ? pg_status_.timeline : 0;
    me.lsn = status_ok_ ? pg_status_.lsn() : 0;
    me.receiver = status_ok_ ? pg_status_.receiver : "";
    me.received = !status_ok_              ? 0
                  : pg_status_.in_recovery ? std::max(pg_status_.receive_lsn, pg_status_.replay_lsn)
                                           : pg_status_.current_lsn;
    if (site_read_) {
      me.seen_leader = seenLeaderText();
    }
    me.sysid = sysid_;
    if (status_ok_ && !pg_status_.in_recovery && pg_status_.timeline != 0) {
      if (history_tli_ != pg_status_.timeline) {
        auto history = pg_->timelineHistory(pg_status_.timeline);
        if (history.ok) {
          history_ = std::move(history.value);
          history_tli_ = pg_status_.timeline;
        } else {
          log::warn("timeline history: {}", history.error);
        }
      }
      if (history_tli_ == pg_status_.timeline) {
        me.history = history_;
      }
    }
    published_seen = me.seen_leader;
    if (Status put = etcd_.put(memberKey(site_.site.name, node_.name), encodeMember(me), member_lease_);
        !put.ok) {
      error = put.error;
    }
  };
  if (member_lease_ != 0 && error.empty()) {
    put_record();
  }
  if (error.empty() && readSiteKeys(error)) {
    // The record just written says which leader we saw before this read. When the read shows
    // another (the key gone, most of all), say so at once: in synchronous mode a replica may
    // promote only after every other listed replica has reported the leader gone, and the
    // watch wakes it on this very change.
    if (member_lease_ != 0 && published_seen != seenLeaderText()) {
      put_record();
    }
  }
  etcd_.capDeadline(std::nullopt);
  etcd_ok_ = error.empty();
  if (!etcd_ok_ && error != last_etcd_error_) {
    log::warn("etcd: {}", error);
  }
  last_etcd_error_ = error;
}

bool DbAgent::readSiteKeys(std::string& error) {
  const std::vector<std::string> keys = siteKeys(site_.site.name, nodes_);
  auto values = etcd_.getMany(keys);
  if (!values.ok) {
    error = values.error;
    return false;
  }
  SiteView site = readSite(site_.site.name, nodes_, values.value);
  // Log each ignored key once (and again only after it went away and came back).
  for (const IgnoredKey& ignored : site.ignored) {
    if (std::find(ignored_.begin(), ignored_.end(), ignored) == ignored_.end()) {
      log::warn("etcd: ignoring {}: {}", ignored.key, ignored.why);
    }
  }
  ignored_ = std::move(site.ignored);
  members_ = std::move(site.members);
  sync_key_ = std::move(site.sync);
  intent_ = std::move(site.intent);
  restore_key_ = std::move(site.restore);
  if (site.pause.has_value() != pause_.has_value()) {
    if (site.pause) {
      log::info("maintenance mode: no automatic failover (paused by {} at {})", site.pause->by,
                formatUtc(site.pause->since));
    } else {
      log::info("maintenance mode over: automatic failover {}", site_.db.failover ? "on again" : "stays off (db.failover)");
    }
  }
  pause_ = std::move(site.pause);
  scheduled_ = std::move(site.scheduled);
  scheduled_value_ = std::move(site.scheduled_value);
  init_ = std::move(site.init);
  init_mod_revision_ = site.init_mod_revision;
  init_value_ = std::move(site.init_value);
  leader_key_ = site.leader;
  if (leader_key_.state == LeaderKey::State::Unleased) {
    if (!unleased_since_ || unleased_since_->first != leader_key_.mod_revision) {
      unleased_since_ = {leader_key_.mod_revision, loop_.clock().now()};
    }
  } else {
    unleased_since_.reset();
  }
  leader_name_.reset();
  if (leader_key_.state == LeaderKey::State::Held) {
    leader_name_ = leader_key_.name;
    last_holder_ = {leader_key_.name, loop_.clock().now()};
  }
  site_read_ = true;
  if (!leader_name_) {
    leader_record_.reset();
  } else if (leader_record_ && leader_record_->name != *leader_name_) {
    leader_record_.reset();
  }
  if (const MemberRecord* m = leader_name_ ? findMember(members_, *leader_name_) : nullptr;
      m != nullptr && m->role == "primary") {
    leader_record_ = *m;
  }
  leader_lsn_.reset();
  for (const auto& m : members_) {
    if (leader_name_ && m.name == *leader_name_ && m.role == "primary") {
      leader_lsn_ = m.lsn;
      last_leader_lsn_ = m.lsn;
    }
  }
  return true;
}

bool DbAgent::leaderFree() {
  switch (leader_key_.state) {
    case LeaderKey::State::Free:
      return true;
    case LeaderKey::State::Held:
    case LeaderKey::State::Foreign:
      return false;
    case LeaderKey::State::Unleased:
      break;
  }
  // Written without a lease, the key would never expire. It counts as free once it has stayed
  // unchanged for a whole TTL: a live leader re-binds it to its lease at its next renewal (every
  // ttl/2), and a dead one's lease, renewed at the latest before the key was rewritten (a renewal
  // only counts when the key still holds it), has expired and fenced it by then.
  if (!unleased_since_ || loop_.clock().now() - unleased_since_->second < ttlOf(site_)) {
    return false;
  }
  auto deleted = etcd_.deleteIfUnchanged(leaderKey(site_.site.name), leader_key_.mod_revision);
  if (!deleted.ok || !deleted.value) {
    return false;  // changed meanwhile: the next read decides
  }
  log::warn("deleted the leader key '{}', bound to no lease and unchanged for {} ms", leader_key_.name,
            site_.db.leader_ttl_ms);
  leader_key_ = LeaderKey{};
  unleased_since_.reset();
  return true;
}

std::string DbAgent::seenLeaderText() const {
  switch (leader_key_.state) {
    case LeaderKey::State::Free:
      return "";
    case LeaderKey::State::Held:
    case LeaderKey::State::Unleased:
      return leader_key_.name.substr(0, 64);
    case LeaderKey::State::Foreign:
      break;
  }
  return "?";
}

std::optional<uint64_t> DbAgent::clusterSysid() const {
  if (init_ && init_->state == InitRecord::State::Initialized) {
    return init_->sysid;
  }
  return std::nullopt;
}

void DbAgent::readSysid() {
  auto id = pg_->systemIdentifier();
  if (id.ok) {
    sysid_ = id.value;
  } else {
    sysid_.reset();
    log::warn("reading the system identifier of {}: {}", pg_->options().data_dir.string(), id.error);
  }
}

bool DbAgent::sameSystem(const MemberRecord& leader, const char* action) {
  const std::optional<uint64_t> cluster = clusterSysid();
  const std::optional<uint64_t> expected = cluster ? cluster : sysid_;
  auto text = [](std::optional<uint64_t> id) { return id ? std::to_string(*id) : std::string("unknown"); };
  std::string why;
  if (expected && leader.sysid != expected) {
    why = "its system identifier is " + text(leader.sysid) + ", the cluster's " + text(cluster) + ", ours " +
          text(sysid_);
  } else if (sysid_ && cluster && *sysid_ != *cluster) {
    why = "our data (system " + text(sysid_) + ") is not of this cluster (" + text(cluster) + ")";
  }
  if (why.empty()) {
    return true;
  }
  const core::TimePoint now = loop_.clock().now();
  if (now >= next_wait_log_) {
    log::error("refusing to {} leader {}: {}", action, leader.name, why);
    next_wait_log_ = now + kLogEvery;
  }
  return false;
}

DbAgent::Identity DbAgent::checkIdentity() {
  if (!sysid_) {
    readSysid();
  }
  auto refuse = [&](std::string why) {
    if (why != foreign_) {
      log::error("{}; this node neither leads nor follows until an operator decides (see docs/operations.md)",
                 why);
      foreign_ = std::move(why);
    }
    return Identity::Foreign;
  };
  if (!sysid_) {
    return Identity::Wait;  // readSysid() logged why; try again next tick
  }
  const std::string mine = std::to_string(*sysid_);
  if (!init_) {
    // No identity recorded (a new etcd, or data from before this check): ours becomes the
    // cluster's. A node of another cluster racing us here loses the create, then refuses.
    auto created = etcd_.createIfAbsent(initializeKey(site_.site.name),
                                        encodeInit({InitRecord::State::Initialized, node_.name, sysid_}));
    if (created.ok && created.value) {
      log::warn("no cluster identity in etcd: recorded this node's system identifier {}", mine);
      init_ = InitRecord{InitRecord::State::Initialized, node_.name, sysid_};
      return Identity::Ok;
    }
    return Identity::Wait;  // etcd failed, or another node recorded first: read it next tick
  }
  if (init_->state == InitRecord::State::Initializing && init_->node != node_.name) {
    // Another node is running initdb while we hold a cluster's data (etcd lost its keys): an
    // existing cluster wins over an empty one that nobody can have used yet.
    auto put = etcd_.putIfUnchanged(initializeKey(site_.site.name), init_mod_revision_,
                                    encodeInit({InitRecord::State::Initialized, node_.name, sysid_}));
    if (put.ok && put.value) {
      log::warn("{} was initializing a new cluster while this node holds data of system {}: recorded ours",
                init_->node, mine);
      init_ = InitRecord{InitRecord::State::Initialized, node_.name, sysid_};
    }
    return Identity::Wait;  // decide again with the next read
  }
  if (auto cluster = clusterSysid(); cluster && *cluster != *sysid_) {
    return refuse("this node's data is of system " + mine + ", the cluster's identifier (" +
                  initializeKey(site_.site.name) + ") is " + std::to_string(*cluster));
  }
  if (!foreign_.empty()) {
    log::info("this node's data (system {}) is of the cluster again", mine);
    foreign_.clear();
  }
  const bool initialized_here = init_->state == InitRecord::State::Initializing && init_->node == node_.name;
  if (init_->state != InitRecord::State::Initialized &&
      (initialized_here || (elector_.isLeader() && elector_.mayWrite()))) {
    // Our initdb ended before it was recorded, or an older build recorded only a name: fill the
    // identifier in.
    auto put = etcd_.putIfUnchanged(initializeKey(site_.site.name), init_mod_revision_,
                                    encodeInit({InitRecord::State::Initialized, node_.name, sysid_}));
    if (put.ok && put.value) {
      log::info("recorded the cluster's system identifier {} in {}", mine, initializeKey(site_.site.name));
    }
  }
  return Identity::Ok;
}

AgentFacts DbAgent::facts() const {
  AgentFacts f;
  f.has_data = phase_ == Phase::Running;
  f.foreign = !foreign_.empty();
  f.primary_data = primary_data_;
  f.holds_lease = elector_.isLeader();
  f.may_write = elector_.mayWrite();
  f.checkpoint_pending = checkpoint_pending_;
  f.switching_over = switchover_.has_value();
  f.leader_key_free = site_read_ && etcd_ok_ && leader_key_.state == LeaderKey::State::Free;
  f.rejoining = rejoining_;
  return f;
}

void DbAgent::updateState() {
  const AgentFacts f = facts();
  const AgentState next = classify(f);
  if (next == state_) {
    return;
  }
  const std::string reason = transitionReason(state_, next, f);
  if (transitionAllowed(state_, next)) {
    log::info("state {} -> {}: {}", stateName(state_), stateName(next), reason);
  } else {
    log::error("unexpected state change {} -> {}: {} (please report: the agent's table does not allow it)",
               stateName(state_), stateName(next), reason);
  }
  ++transitions_[static_cast<size_t>(state_)][static_cast<size_t>(next)];
  state_ = next;
  state_since_ = loop_.clock().now();
}

NodeView DbAgent::view() const {
  NodeView v;
  v.pg_running = pg_running_;
  v.status_ok = status_ok_;
  v.pg = pg_status_;
  v.leader = elector_.isLeader();
  v.may_write = elector_.mayWrite();
  v.leader_lsn = leader_lsn_;
  v.sync_standby = syncMode() && sync_key_ && sync_key_->sync.contains(node_.name);
  if (leader_record_) {
    v.leader_pg = leader_record_->pg;
    v.leader_timeline = leader_record_->timeline;
  }
  return v;
}

void DbAgent::shutdown() {
  if (op_) {
    log::info("{}: abandoned (shutting down)", op_->what);
    pg_->abandonOperation();  // a running tool is killed; a starting postmaster is stopped below
    op_.reset();
  }
  if (backup_) {
    backup_->stopJobs("shutting down");
  }
  {
    std::lock_guard lock(forward_mailbox_->mutex);
    forward_mailbox_->loop = nullptr;  // forwarded calls still out answer nobody
  }
  timer_.disarm();
  if (watch_) {
    watch_->stop();
  }
  phase_ = Phase::Failed;
  if (pg_ && (pg_->isRunning() || pg_->initialized())) {
    Status stopped = pg_->stop(StopMode::Fast);
    if (!stopped.ok) {
      log::error("stopping PostgreSQL: {}", stopped.error);
    }
  }
  // Only once PostgreSQL is down may another node take the key.
  if (elector_.isLeader()) {
    if (Status released = elector_.release(); !released.ok) {
      log::warn("releasing the leader lease: {}", released.error);
    }
    syncFence();
  }
  if (member_lease_ != 0) {
    etcd_.revoke(member_lease_);  // deletes our member record
    member_lease_ = 0;
  }
}

std::string DbAgent::statusJson() const {
  const NodeView v = view();
  nlohmann::json j;
  j["name"] = node_.name;
  j["role"] = v.role();
  j["state"] = std::string(stateName(state_));
  if (op_) {
    j["operation"] = {
        {"what", op_->what},
        {"ms", std::chrono::duration_cast<milliseconds>(loop_.clock().now() - op_->started).count()}};
  } else {
    j["operation"] = nullptr;
  }
  j["pg_running"] = v.pg_running;
  j["postgres_starts"] = postgres_starts_;  // `db restart` waits for the next one
  j["pending_restart"] = status_ok_ && pg_status_.pending_restart;
  j["scheduled_switchover"] =
      scheduled_ ? nlohmann::json{{"from", scheduled_->from},
                                  {"to", scheduled_->to.empty() ? nlohmann::json(nullptr) : nlohmann::json(scheduled_->to)},
                                  {"at", formatUtc(scheduled_->at)}}
                 : nlohmann::json(nullptr);
  j["timeline"] = reportedTimeline();
  j["lsn"] = formatLsn(status_ok_ ? pg_status_.lsn() : 0);
  if (auto lag = v.lagBytes()) {
    j["lag_bytes"] = *lag;
  } else {
    j["lag_bytes"] = nullptr;
  }
  // A replica's own view: its WAL receiver, and its replay lag in time while it streams.
  const bool replica = status_ok_ && pg_status_.in_recovery;
  j["receiver"] = replica ? nlohmann::json(pg_status_.receiver) : nlohmann::json(nullptr);
  j["lag_seconds"] = replica && pg_status_.receiver == "streaming" && pg_status_.replay_lag_seconds
                         ? nlohmann::json(*pg_status_.replay_lag_seconds)
                         : nlohmann::json(nullptr);
  j["leader"] = leader_name_ ? nlohmann::json(*leader_name_) : nlohmann::json(nullptr);
  j["lease"] = {{"held", v.leader}, {"may_write", v.may_write}};
  j["etcd_ok"] = etcd_ok_;
  nlohmann::json members = nlohmann::json::array();
  for (const auto& m : members_) {
    members.push_back(memberJson(m));
  }
  j["members"] = std::move(members);
  nlohmann::json sync = {{"mode", syncMode() ? "synchronous" : "asynchronous"}};
  if (syncMode()) {
    // Who may be promoted (the sync key) and, on the leader, whom commits wait for.
    sync["key"] = sync_key_ ? nlohmann::json{{"leader", sync_key_->leader}, {"sync", sync_key_->sync}}
                            : nlohmann::json(nullptr);
    sync["standbys"] = elector_.isLeader() && pg_sync_ ? nlohmann::json(*pg_sync_) : nlohmann::json(nullptr);
  }
  j["sync"] = std::move(sync);
  // Settings a reload may change (db_reload.h), as in effect now.
  j["failover"] = {{"automatic", site_.db.failover && !pause_}, {"max_lag_bytes", site_.db.max_lag_bytes}};
  j["paused"] = pause_ ? nlohmann::json{{"by", pause_->by}, {"since", formatUtc(pause_->since)}} : nlohmann::json(nullptr);
  j["switchover"] =
      intent_ ? nlohmann::json{{"from", intent_->from}, {"to", intent_->to}} : nlohmann::json(nullptr);
  j["backup"] = backup_ ? backup_->statusJson() : nlohmann::json(nullptr);
  return j.dump();
}

std::string DbAgent::metricsText() const {
  const NodeView v = view();
  metrics::PrometheusWriter w;
  const std::string_view node = node_.name;
  auto gauge = [&](std::string_view name, std::string_view help, double value) {
    w.family(name, "gauge", help);
    w.sample(name, {{"node", node}}, value);
  };
  auto counter = [&](std::string_view name, std::string_view help, uint64_t value) {
    w.family(name, "counter", help);
    w.sample(name, {{"node", node}}, value);
  };
  gauge("fulcrum_db_up", "1 when PostgreSQL is up", healthStatus(v) == 200 ? 1 : 0);
  if (api_stats_ != nullptr) {
    counter("fulcrum_db_api_connections_refused_total",
            "API connections closed at accept (over 64 from one address, or every slot busy)",
            api_stats_->refused.get());
    counter("fulcrum_db_api_connections_evicted_total",
            "idle API connections closed to make room for a new one", api_stats_->evicted.get());
  }
  if (api_tls_stats_ != nullptr) {
    auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
    // `resumed` first: a handshake counts in `handshakes` before `resumed`, so full never goes below 0.
    const uint64_t resumed = get(api_tls_stats_->resumed);
    const uint64_t handshakes = get(api_tls_stats_->handshakes);
    w.family(
        "fulcrum_db_api_tls_handshakes_total", "counter",
        "TLS handshakes on the API listener ([security] internal_tls), by result (full, resumed from a "
        "ticket, failed: plaintext, a client certificate that did not verify, a client gone mid-handshake)");
    w.sample("fulcrum_db_api_tls_handshakes_total", {{"node", node}, {"result", "full"}},
             handshakes - resumed);
    w.sample("fulcrum_db_api_tls_handshakes_total", {{"node", node}, {"result", "resumed"}}, resumed);
    w.sample("fulcrum_db_api_tls_handshakes_total", {{"node", node}, {"result", "failed"}},
             get(api_tls_stats_->handshake_failures));
    counter("fulcrum_db_api_tls_clients_refused_total",
            "API handshakes refused because the client's certificate did not verify (another CA, expired)",
            get(api_tls_stats_->verify_failures));
  }
  gauge("fulcrum_db_primary", "1 on the leader while it accepts writes", primaryStatus(v) == 200 ? 1 : 0);
  gauge("fulcrum_db_replica", "1 on a streaming replica", replicaStatus(v, std::nullopt) == 200 ? 1 : 0);
  gauge("fulcrum_db_leader_lease_valid", "1 while this node holds a valid leader lease", v.may_write ? 1 : 0);
  gauge("fulcrum_db_timeline", "PostgreSQL timeline (a replica not streaming: the last it knew)",
        reportedTimeline());
  gauge("fulcrum_db_lsn_bytes", "WAL position written (primary) or replayed (replica)",
        static_cast<double>(status_ok_ ? pg_status_.lsn() : 0));
  auto lag = v.lagBytes();
  gauge("fulcrum_db_lag_bytes", "bytes behind the leader's published position (-1 unknown)",
        lag ? static_cast<double>(*lag) : -1.0);
  // A replica's own view; a replica whose receiver is not streaming cannot tell (-1).
  const bool streaming = status_ok_ && pg_status_.in_recovery && pg_status_.receiver == "streaming";
  w.family("fulcrum_db_lag_seconds", "gauge",
           "Replay lag in seconds: on a replica its own (-1 unknown: not streaming), on the primary one "
           "sample per connected replica (label replica, its application_name)");
  if (status_ok_ && pg_status_.in_recovery) {
    w.sample("fulcrum_db_lag_seconds", {{"node", node}},
             streaming && pg_status_.replay_lag_seconds ? *pg_status_.replay_lag_seconds : -1.0);
  }
  for (const ReplicaInfo& r : replica_lags_) {
    w.sample("fulcrum_db_lag_seconds", {{"node", node}, {"replica", r.application_name}},
             r.replay_lag_seconds ? *r.replay_lag_seconds : -1.0);
  }
  w.family("fulcrum_db_replica_lag_bytes", "gauge",
           "On the primary, bytes each connected replica's replay trails the WAL sent to it");
  for (const ReplicaInfo& r : replica_lags_) {
    w.sample("fulcrum_db_replica_lag_bytes", {{"node", node}, {"replica", r.application_name}},
             r.sent_lsn - std::min(r.sent_lsn, r.replay_lsn));
  }
  gauge("fulcrum_db_etcd_ok", "1 when the last etcd exchange succeeded", etcd_ok_ ? 1 : 0);
  w.family("fulcrum_db_lease_renewals_total", "counter", "leader lease renewals, by result (ok, failed)");
  w.sample("fulcrum_db_lease_renewals_total", {{"node", node}, {"result", "ok"}}, elector_.renewals(true));
  w.sample("fulcrum_db_lease_renewals_total", {{"node", node}, {"result", "failed"}},
           elector_.renewals(false));
  counter("fulcrum_db_postgres_starts_total", "PostgreSQL starts by the agent", postgres_starts_);
  counter("fulcrum_db_postgres_exits_total", "unexpected PostgreSQL exits seen", postgres_exits_);
  counter("fulcrum_db_fences_total", "hard fences (PostgreSQL stopped on losing the lease)", fences_);
  counter("fulcrum_db_promotions_total", "promotions of this replica by failover", promotions_);
  counter("fulcrum_db_rewinds_total", "pg_rewind runs of this former primary", rewinds_);
  counter("fulcrum_db_reclones_total", "re-clones after pg_rewind failed", reclones_);
  counter("fulcrum_db_switchovers_total", "switchovers this node handed its leadership over by",
          switchovers_);
  w.family("fulcrum_db_state", "gauge", "1 for the agent's current state (see docs/architecture.md)");
  for (int i = 0; i < kAgentStates; ++i) {
    const auto state = static_cast<AgentState>(i);
    w.sample("fulcrum_db_state", {{"node", node}, {"state", stateName(state)}}, state == state_ ? 1.0 : 0.0);
  }
  gauge("fulcrum_db_state_seconds", "seconds in the current state",
        std::chrono::duration<double>(loop_.clock().now() - state_since_).count());
  w.family("fulcrum_db_state_transitions_total", "counter", "state changes of the agent, by pair");
  for (int from = 0; from < kAgentStates; ++from) {
    for (int to = 0; to < kAgentStates; ++to) {
      if (transitions_[from][to] != 0) {
        w.sample("fulcrum_db_state_transitions_total",
                 {{"node", node},
                  {"from", stateName(static_cast<AgentState>(from))},
                  {"to", stateName(static_cast<AgentState>(to))}},
                 transitions_[from][to]);
      }
    }
  }
  gauge("fulcrum_db_paused", "1 while the cluster is in maintenance mode (fulcrum db pause): no automatic failover",
        pause_ ? 1 : 0);
  gauge("fulcrum_db_sync_standbys", "replicas commits wait for (ANY 1 of them); -1 unknown or not leader",
        elector_.isLeader() && pg_sync_ ? static_cast<double>(pg_sync_->size()) : -1.0);
  if (backup_) {
    backup_->writeMetrics(w, node);
  }
  metrics::writeProcessMetrics(w);
  return w.take();
}

void DbAgent::handle(const http::Request& request, http::Response& response) {
  const http::Method method = request.head.method;
  const std::string_view path = request.head.path;
  const bool status_only = method == http::Method::Head || method == http::Method::Options;
  auto json = [&](int status, std::string body) {
    response.setBody(status, "application/json", status_only ? std::string() : std::move(body));
  };
  // The admin calls that only act: POST, from a caller with a site certificate under
  // internal_tls (each handler then checks the token, and its body).
  using AdminHandler = void (DbAgent::*)(const http::Request&, http::Response&);
  static constexpr std::pair<std::string_view, AdminHandler> kActions[] = {
      {"/reload", &DbAgent::handleReload},   {"/pause", &DbAgent::handlePause},
      {"/switchover", &DbAgent::handleSwitchover}, {"/failover", &DbAgent::handleFailover},
      {"/restart", &DbAgent::handleRestart}, {"/reinit", &DbAgent::handleReinit}};
  for (const auto& [action, handler] : kActions) {
    if (path != action) {
      continue;
    }
    if (method != http::Method::Post) {
      response.addHeader("Allow", "POST");
      json(405, R"({"error":"use POST"})");
    } else if (!refuseUncertified(request.peer_certificate, response)) {
      (this->*handler)(request, response);
    }
    return;
  }
  if (path == "/backup") {
    handleBackup(request, response);
    return;
  }
  if (path == "/restore") {
    handleRestore(request, response);
    return;
  }
  if (method != http::Method::Get && !status_only) {
    response.addHeader("Allow", "GET, HEAD, OPTIONS");
    json(405, R"({"error":"method not allowed"})");
    return;
  }
  const NodeView v = view();
  if (path == "/health") {
    json(healthStatus(v), statusJson());
  } else if (path == "/primary" || path == "/master" || path == "/leader" || path == "/read-write") {
    json(primaryStatus(v), statusJson());
  } else if (path == "/replica" || path == "/read-only" || path == "/sync" || path == "/synchronous" ||
             path == "/async" || path == "/asynchronous") {
    bool ok = true;
    auto lag = lagParameter(request.head.query, ok);
    if (!ok) {
      json(400, R"({"error":"lag must be a number of bytes"})");
      return;
    }
    int status = path == "/replica"          ? replicaStatus(v, lag)
                 : path == "/read-only"      ? readOnlyStatus(v, lag)
                 : path.starts_with("/sync") ? syncStatus(v, lag)
                                             : asyncStatus(v, lag);
    json(status, statusJson());
  } else if (path == "/liveness") {
    json(200, R"({"alive":true})");  // answered by the control loop's own thread
  } else if (path == "/readiness") {
    json(healthStatus(v), statusJson());  // as Patroni: the leader, or PostgreSQL up and running
  } else if (path == "/status" || path == "/") {
    json(200, statusJson());
  } else if (path == "/history") {
    handleHistory(response);
  } else if (path == "/metrics") {
    response.setBody(200, metrics::kContentType, status_only ? std::string() : metricsText());
  } else {
    json(404, R"({"error":"not found"})");
  }
}

}  // namespace fulcrum::db
