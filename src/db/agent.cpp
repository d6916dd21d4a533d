#include "db/agent.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "core/log.h"
#include "db/site_options.h"
#include "metrics/prometheus.h"

namespace fulcrum::db {

namespace {

using std::chrono::milliseconds;

// A replica waits this long for a leader to publish itself before the agent gives up.
constexpr auto kBootstrapWait = std::chrono::seconds(180);
// Repeated "still waiting" / etcd errors are logged at most this often.
constexpr auto kLogEvery = std::chrono::seconds(5);
// The control loop's pace while a switchover runs on this node.
constexpr auto kSwitchoverPoll = std::chrono::milliseconds(100);
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
  return {{"name", m.name},        {"role", m.role},         {"pg", m.pg},
          {"agent", m.agent},      {"timeline", m.timeline}, {"lsn", formatLsn(m.lsn)},
          {"receiver", m.receiver}, {"received", formatLsn(m.received)}};
}

}  // namespace

DbAgent::DbAgent(const config::Site& site, const config::DbNode& node, core::EventLoop& loop)
    : site_(site),
      node_(node),
      loop_(loop),
      timer_(loop, [this] { tick(); }),
      interval_(ttlOf(site) / 5),
      etcd_(etcdClientOptions(site)),
      elector_(etcd_, loop.clock(), electorOptions(site, node.name)) {}

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
  options.listen = node_.pg;
  options.replication_password_file = state_dir / "replication.password";
  options.fence_library = fs::absolute(node_dir / "fulcrum_fence.so");
  options.fence_file = fs::absolute(node_dir / "fence");
  auto fence = FenceFile::open(options.fence_file);
  if (!fence.ok) {
    return Status::failure(fence.error);
  }
  fence_ = std::move(fence.value);
  fence_->disarm();
  pg_ = std::make_unique<PostgresNode>(options);
  if (!pg_->initError().empty()) {
    return Status::failure("state_dir " + state_dir.string() +
                           " must be reachable by the PostgreSQL OS user '" + options.os_user +
                           "': " + pg_->initError());
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
    pg_->setQueryTimeout(runningQueryTimeout(site_));
    log::info("existing {} data in {}", primary_data_ ? "primary" : "replica", options.data_dir.string());
  }
  return Status::success();
}

void DbAgent::start(std::function<void(const std::string&)> on_fatal) {
  on_fatal_ = std::move(on_fatal);
  bootstrap_deadline_ = loop_.clock().now() + kBootstrapWait;
  schedule(loop_.clock().now());
  EtcdWatchOptions options;
  options.endpoints = etcdClientOptions(site_).endpoints;
  options.prefix = sitePrefix(site_.site.name);
  watch_ = std::make_unique<EtcdWatch>(
      loop_, std::move(options), [this](const WatchEvent& event) { onWatchEvent(event); },
      [this] { wake(); });
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
    std::pair<std::string, std::string> seen{"gone", ""};
    if (event.type == WatchEvent::Type::Put) {
      auto m = decodeMember(event.value);
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
      event.key == switchoverKey(site_.site.name)) {
    wake();
  }
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
  if (auto exit = pg_->pollExit()) {
    ++postgres_exits_;
    log::warn("PostgreSQL exited (wait status {})", *exit);
  }
  if (phase_ == Phase::Bootstrap) {
    bootstrapStep();
  }
  if (phase_ == Phase::Running) {
    if (primary_data_) {
      pg_->setQueryTimeout(runningQueryTimeout(site_));
      runPrimary();
    } else {
      pg_->setQueryTimeout(replicaQueryTimeout(site_));
      runReplica();
    }
    // After the run: the old leader may already have rejoined as a replica while it waits to
    // see the target published as primary.
    if (switchover_) {
      driveSwitchover();
    }
  }
  core::TimePoint next = loop_.clock().now() + interval_;
  if (switchover_) {
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
    if (now >= bootstrap_deadline_) {
      fatal("gave up bootstrapping after " + std::to_string(kBootstrapWait.count()) + " s: " + why);
      return;
    }
    if (now >= next_wait_log_) {
      log::info("waiting to bootstrap: {}", why);
      next_wait_log_ = now + kLogEvery;
    }
  };
  const std::string key = initializeKey(site_.site.name);
  auto claim = etcd_.get(key);
  if (!claim.ok) {
    waiting("etcd: " + claim.error);
    return;
  }
  std::string owner;
  if (claim.value) {
    owner = claim.value->value;
  } else {
    auto created = etcd_.createIfAbsent(key, node_.name);
    if (!created.ok) {
      waiting("etcd: " + created.error);
      return;
    }
    if (!created.value) {
      return;  // another node claimed it first: read who next tick
    }
    owner = node_.name;
  }
  if (owner == node_.name && !must_clone_) {
    log::info("this node initializes the cluster (initdb into {})", pg_->options().data_dir.string());
    // Nobody else can hold data yet: the new server may write until the lease is taken next tick.
    fence_->arm(std::chrono::steady_clock::now() + pg_->bootstrapBound());
    Status init = pg_->initPrimary(app_);
    if (!init.ok) {
      fatal("initializing the cluster failed: " + init.error);
      return;
    }
    ++postgres_starts_;
    primary_data_ = true;
    phase_ = Phase::Running;
    pg_->setQueryTimeout(runningQueryTimeout(site_));
    return;
  }
  auto leader = elector_.currentLeader();
  if (!leader.ok) {
    waiting("etcd: " + leader.error);
    return;
  }
  if (!leader.value) {
    waiting("no leader yet (cluster initialized by " + owner + ")");
    return;
  }
  auto record = etcd_.get(memberKey(site_.site.name, *leader.value));
  std::optional<MemberRecord> member;
  if (record.ok && record.value) {
    member = decodeMember(record.value->value);
  }
  if (!member || member->role != "primary") {
    waiting("leader " + *leader.value + " has not published a running primary yet");
    return;
  }
  auto address = core::SocketAddress::parse(member->pg);
  if (!address) {
    waiting("leader " + *leader.value + " published a bad address '" + member->pg + "'");
    return;
  }
  log::info("cloning leader {} at {} (pg_basebackup, slot {})", member->name, member->pg,
            slotNameFor(node_.name));
  Status clone = pg_->cloneReplica(*address, slotNameFor(node_.name));
  if (!clone.ok) {
    waiting("cloning " + member->name + " failed: " + clone.error);
    return;
  }
  primary_data_ = false;
  must_clone_ = false;
  following_ = member->name;
  phase_ = Phase::Running;
  pg_->setQueryTimeout(runningQueryTimeout(site_));
  startPostgres("replica");
}

bool DbAgent::startPostgres(const char* why) {
  ++postgres_starts_;
  // A primary's start (crash recovery) may outlast the lease: keep renewing it meanwhile, and
  // give up (the caller fences) once it can no longer be trusted.
  std::function<bool()> keep_leased;
  if (primary_data_) {
    keep_leased = [this] {
      bool leased = elector_.isLeader() && !elector_.tick().fenced;
      syncFence();
      return leased;
    };
  }
  Status started = pg_->start(keep_leased);
  if (!started.ok) {
    log::error("starting PostgreSQL ({}): {}", why, started.error);
    return false;
  }
  log::info("PostgreSQL running as {} on {}", why, node_.pg.toString());
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

void DbAgent::runPrimary() {
  const core::TimePoint now = loop_.clock().now();
  if (syncMode() && !site_read_) {
    publish();  // whether we may lead depends on the sync key: read it before deciding
  }
  bool may_take = !elector_.isLeader() && !switchover_ && !intentBlocks();
  if (may_take && syncMode() && !syncAllowsLeading()) {
    may_take = false;
    if (site_read_ && now >= next_wait_log_) {
      log::warn("the sync key names {} as the last leader: this node's data may lack commits it acknowledged, "
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
      // Another node leads (by failover, manual or not, or switchover): rejoinAsReplica() below.
    } else if (syncMode() && !claimSyncKey()) {
      elector_.release();
    } else {
      log::info("took the leader lease");
      slots_ok_ = false;
      pg_sync_.reset();
    }
  }
  LeaseDecision decision;
  if (elector_.isLeader()) {
    decision = elector_.tick();
    if (!elector_.lastError().empty() && now >= next_wait_log_) {
      log::warn("leader lease renewal failed: {}", elector_.lastError());
      next_wait_log_ = now + kLogEvery;
    }
  }
  syncFence();
  if (decision.fenced) {
    if (pg_->isRunning()) {
      // The hard fence: nobody may write here once another node could hold the key.
      ++fences_;
      log::warn("no valid leader lease ({}): stopping PostgreSQL at once",
                elector_.isLeader() ? "renewals failing" : "lease lost");
      Status stopped = pg_->stop(StopMode::Immediate);
      if (!stopped.ok) {
        log::error("fencing: stopping PostgreSQL failed: {}", stopped.error);
      }
    }
  } else {
    // A switchover stops PostgreSQL on purpose: it stays stopped unless given up.
    if (!switchover_ && !pg_->isRunning() && !startPostgres("primary") && pg_->isRunning()) {
      // Lease lost while it started: a primary that comes up unleased must not take writes.
      ++fences_;
      pg_->stop(StopMode::Immediate);
    }
    if (checkpoint_pending_ && !pg_->isRunning()) {
      checkpoint_pending_ = false;  // a restart's end-of-recovery checkpoint records the timeline
    }
    if (checkpoint_pending_) {
      finishPromotion();
    } else if (!slots_ok_ && pg_->isRunning()) {
      ensureSlots();
    }
  }
  observe();
  publish();
  if (elector_.isLeader() && elector_.mayWrite() && pg_->isRunning() && etcd_ok_ && !switchover_) {
    if (syncMode()) {
      reconcileSync();
    } else if (!pg_sync_) {
      clearSynchronousStandbys();
    }
  }
  if (!elector_.isLeader() && !pg_->isRunning() && leader_name_ && *leader_name_ != node_.name) {
    rejoinAsReplica();
  }
}

void DbAgent::runReplica() {
  if (!pg_->isRunning()) {
    startPostgres("replica");
  }
  observe();
  publish();
  if (!etcd_ok_) {
    return;
  }
  if (!leader_name_) {
    if (intent_ && intent_->to == node_.name) {
      if (syncMode() && !(sync_key_ && sync_key_->sync.count(node_.name) != 0)) {
        log::warn("switchover to this node refused: not listed in the sync key");
      } else {
        takeOver("switchover");
      }
    } else if (site_.db.failover && !intent_) {
      maybePromote();
    }
  } else if (*leader_name_ != node_.name && *leader_name_ != following_) {
    followLeader();
  }
}

std::optional<MemberRecord> DbAgent::leaderRecord(const std::string& leader) {
  auto record = etcd_.get(memberKey(site_.site.name, leader));
  if (!record.ok || !record.value) {
    return std::nullopt;
  }
  auto member = decodeMember(record.value->value);
  if (!member || member->role != "primary" || !core::SocketAddress::parse(member->pg)) {
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
  log::warn("leader key was free: this replica (replayed {}) takes over by {} and promotes",
            formatLsn(pg_status_.replay_lsn), how);
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
  // SIGCHLD also comes from the tools the agent runs; only the postmaster's death matters.
  if (phase_ == Phase::Running && pg_running_ && !pg_->isRunning()) {
    wake();
  }
}

void DbAgent::followLeader() {
  auto leader = leaderRecord(*leader_name_);
  if (!leader) {
    return;  // not published as a running primary yet
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
  const auto address = *core::SocketAddress::parse(leader->pg);
  log::warn("another node ({}) leads: rewinding this former primary and following it", leader->name);
  if (Status rewound = pg_->rewind(address); !rewound.ok) {
    log::error("pg_rewind from {}: {}", leader->name, rewound.error);
    // Not reaching the leader says nothing about our data: try again next tick. Anything else
    // (damaged or incompatible data) will not mend by itself.
    if (rewound.error.find("could not connect") == std::string::npos &&
        rewound.error.find("connection to server") == std::string::npos) {
      recloneFrom(*leader);
    }
    return;
  }
  ++rewinds_;
  if (Status following = pg_->follow(address, slotNameFor(node_.name)); !following.ok) {
    log::error("following {}: {}", leader->name, following.error);
    return;
  }
  primary_data_ = false;
  following_ = leader->name;
  startPostgres("replica");
  observe();
  publish();
}

void DbAgent::recloneFrom(const MemberRecord& leader) {
  auto aside = pg_->moveDataAside();
  if (!aside.ok) {
    log::error("cannot re-clone: {}", aside.error);
    return;
  }
  ++reclones_;
  log::warn("data directory moved aside to {} (kept); cloning {} again", aside.value.string(), leader.name);
  primary_data_ = false;
  must_clone_ = true;
  following_.clear();
  Status clone = pg_->cloneReplica(*core::SocketAddress::parse(leader.pg), slotNameFor(node_.name));
  if (!clone.ok) {
    // The bootstrap phase retries (clone only) until its deadline.
    log::error("cloning {}: {}; retrying", leader.name, clone.error);
    phase_ = Phase::Bootstrap;
    bootstrap_deadline_ = loop_.clock().now() + kBootstrapWait;
    return;
  }
  must_clone_ = false;
  following_ = leader.name;
  startPostgres("replica");
  observe();
  publish();
}

void DbAgent::ensureSlots() {
  bool ok = true;
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
    me.received = !status_ok_                ? 0
                  : pg_status_.in_recovery ? std::max(pg_status_.receive_lsn, pg_status_.replay_lsn)
                                           : pg_status_.current_lsn;
    if (site_read_) {
      me.seen_leader = leader_name_.value_or("");
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
  if (error.empty()) {
    // One read of the whole site: members, leader, sync key, switchover intent.
    auto list = etcd_.list(sitePrefix(site_.site.name));
    if (list.ok) {
      const std::string members = membersPrefix(site_.site.name);
      const std::string leader = leaderKey(site_.site.name);
      members_.clear();
      leader_name_.reset();
      sync_key_.reset();
      intent_.reset();
      for (const auto& kv : list.value) {
        if (kv.key.rfind(members, 0) == 0) {
          if (auto m = decodeMember(kv.value)) {
            members_.push_back(std::move(*m));
          }
        } else if (kv.key == leader) {
          leader_name_ = kv.value;
        } else if (kv.key == syncKey(site_.site.name)) {
          sync_key_ = decodeSync(kv.value);
        } else if (kv.key == switchoverKey(site_.site.name)) {
          intent_ = decodeSwitchover(kv.value);
        }
      }
      site_read_ = true;
      // The record just written says which leader we saw before this read. When the read shows
      // another (the key gone, most of all), say so at once: in synchronous mode a replica may
      // promote only after every other listed replica has reported the leader gone, and the
      // watch wakes it on this very change.
      if (member_lease_ != 0 && published_seen != leader_name_.value_or("")) {
        put_record();
      }
      leader_lsn_.reset();
      for (const auto& m : members_) {
        if (leader_name_ && m.name == *leader_name_ && m.role == "primary") {
          leader_lsn_ = m.lsn;
          last_leader_lsn_ = m.lsn;
        }
      }
    } else {
      error = list.error;
    }
  }
  etcd_.capDeadline(std::nullopt);
  etcd_ok_ = error.empty();
  if (!etcd_ok_ && error != last_etcd_error_) {
    log::warn("etcd: {}", error);
  }
  last_etcd_error_ = error;
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
  return v;
}

void DbAgent::shutdown() {
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
  j["pg_running"] = v.pg_running;
  j["timeline"] = status_ok_ ? pg_status_.timeline : 0;
  j["lsn"] = formatLsn(status_ok_ ? pg_status_.lsn() : 0);
  if (auto lag = v.lagBytes()) {
    j["lag_bytes"] = *lag;
  } else {
    j["lag_bytes"] = nullptr;
  }
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
  j["switchover"] = intent_ ? nlohmann::json{{"from", intent_->from}, {"to", intent_->to}} : nlohmann::json(nullptr);
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
  gauge("fulcrum_db_primary", "1 on the leader while it accepts writes", primaryStatus(v) == 200 ? 1 : 0);
  gauge("fulcrum_db_replica", "1 on a streaming replica", replicaStatus(v, std::nullopt) == 200 ? 1 : 0);
  gauge("fulcrum_db_leader_lease_valid", "1 while this node holds a valid leader lease", v.may_write ? 1 : 0);
  gauge("fulcrum_db_timeline", "PostgreSQL timeline", status_ok_ ? pg_status_.timeline : 0);
  gauge("fulcrum_db_lsn_bytes", "WAL position written (primary) or replayed (replica)",
        static_cast<double>(status_ok_ ? pg_status_.lsn() : 0));
  auto lag = v.lagBytes();
  gauge("fulcrum_db_lag_bytes", "bytes behind the leader's published position (-1 unknown)",
        lag ? static_cast<double>(*lag) : -1.0);
  gauge("fulcrum_db_etcd_ok", "1 when the last etcd exchange succeeded", etcd_ok_ ? 1 : 0);
  counter("fulcrum_db_postgres_starts_total", "PostgreSQL starts by the agent", postgres_starts_);
  counter("fulcrum_db_postgres_exits_total", "unexpected PostgreSQL exits seen", postgres_exits_);
  counter("fulcrum_db_fences_total", "hard fences (PostgreSQL stopped on losing the lease)", fences_);
  counter("fulcrum_db_promotions_total", "promotions of this replica by failover", promotions_);
  counter("fulcrum_db_rewinds_total", "pg_rewind runs of this former primary", rewinds_);
  counter("fulcrum_db_reclones_total", "re-clones after pg_rewind failed", reclones_);
  counter("fulcrum_db_switchovers_total", "switchovers this node handed its leadership over by",
          switchovers_);
  gauge("fulcrum_db_sync_standbys", "replicas commits wait for (ANY 1 of them); -1 unknown or not leader",
        elector_.isLeader() && pg_sync_ ? static_cast<double>(pg_sync_->size()) : -1.0);
  return w.take();
}

void DbAgent::handle(const http::Request& request, http::Response& response) {
  const http::Method method = request.head.method;
  const std::string_view path = request.head.path;
  const bool status_only = method == http::Method::Head || method == http::Method::Options;
  auto json = [&](int status, std::string body) {
    response.setBody(status, "application/json", status_only ? std::string() : std::move(body));
  };
  if (path == "/switchover" || path == "/failover") {
    if (method != http::Method::Post) {
      response.addHeader("Allow", "POST");
      json(405, R"({"error":"use POST"})");
      return;
    }
    if (path == "/switchover") {
      handleSwitchover(request, response);
    } else {
      handleFailover(request, response);
    }
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
    int status = path == "/replica"     ? replicaStatus(v, lag)
                 : path == "/read-only" ? readOnlyStatus(v, lag)
                 : path.starts_with("/sync") ? syncStatus(v, lag)
                                             : asyncStatus(v, lag);
    json(status, statusJson());
  } else if (path == "/liveness") {
    json(200, R"({"alive":true})");  // answered by the control loop's own thread
  } else if (path == "/readiness") {
    json(healthStatus(v), statusJson());  // as Patroni: the leader, or PostgreSQL up and running
  } else if (path == "/status" || path == "/") {
    json(200, statusJson());
  } else if (path == "/metrics") {
    response.setBody(200, metrics::kContentType, status_only ? std::string() : metricsText());
  } else {
    json(404, R"({"error":"not found"})");
  }
}

}  // namespace fulcrum::db
