#include "web/db_router.h"

#include <algorithm>

#include "core/log.h"
#include "pg/connection_policy.h"

namespace fulcrum::web {

namespace {

using namespace std::chrono_literals;

// Read after COMMIT on the writer's connection: every byte of the commit record is flushed by
// then (synchronous_commit), so a replica that has replayed this far sees the row.
constexpr std::string_view kCommitLsnSql = "SELECT pg_current_wal_flush_lsn()";
constexpr std::string_view kReplayLsnSql = "SELECT pg_last_wal_replay_lsn()";
constexpr core::Duration kTick = 20ms;
constexpr core::Duration kFirstBackoff = 100ms;
// The longest a router waits for its first round of probes before it calls itself ready.
constexpr core::Duration kReadyBound = 3s;
constexpr core::Duration kMaxBackoff = 2s;

// SQLSTATE classes 22 (data exception) and 23 (integrity violation): the row itself is refused.
bool refusedRow(const std::string& sqlstate) {
  return sqlstate.size() == 5 && (sqlstate.starts_with("22") || sqlstate.starts_with("23"));
}

core::Duration nextBackoff(core::Duration d) { return std::min<core::Duration>(d * 2, kMaxBackoff); }

}  // namespace

std::string conninfoFor(const DbSettings& settings, const DbNodeConfig& node, const std::string& password) {
  // The server's own deadline for a statement: a little past the longest the router waits for
  // one (a write's whole answer, 2 s), so the router always gives up first, cancels and drops the
  // connection; the server's timeout ends the statement when that cancel cannot get through.
  const auto longest = std::max({settings.query_timeout, settings.write_deadline, settings.probe_timeout});
  const auto statement_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(longest) + 500ms;
  // The rest is the policy every session shares (pg/connection_policy.h): TLS verified both ways
  // under internal_tls, else none, and never GSS, so one socket from start to end (PgConn watches
  // that socket); keepalives and user timeouts both ways, so a web node that vanished frees its
  // backends, and an idle pooled connection to a node that vanished is found dead, in about 10 s
  // rather than the kernel's 2 hours. A query's own deadline (at most 2 s) is shorter still and
  // ends with the cancel above.
  pg::ConnParams params = {{"host", node.host},
                           {"port", std::to_string(node.port)},
                           {"user", settings.user},
                           {"dbname", settings.database}};
  if (!settings.tls) {
    params.emplace_back("password", password);
  }
  params.emplace_back("application_name", settings.application_name);
  pg::addSessionPolicy(params, statement_timeout, settings.tls);
  return pg::conninfoText(params);
}

struct DbRouter::Node {
  struct Waiter {
    Use use;
    core::TimePoint deadline;
  };
  DbNodeConfig config;
  std::vector<std::unique_ptr<PgConn>> conns;
  std::vector<PgConn*> idle;
  std::deque<Waiter> waiters;
  core::TimePoint connect_after{};
  core::Duration backoff = kFirstBackoff;
  std::unique_ptr<PgConn> probe;
  bool probing = false;
  core::TimePoint probe_after{};
  core::Duration probe_backoff = kFirstBackoff;
  // Read-your-writes: a replay check of this replica in flight; the earliest the next may start.
  bool checking = false;
  core::TimePoint next_check{};
};

struct DbRouter::ReadOp {
  std::string sql;
  std::vector<std::string> params;
  std::optional<Lsn> token;
  ReplyFn reply;
  core::TimePoint deadline;  // stop waiting for a replica to reach the token
  int attempts = 0;
  bool primary_only = false;  // a replica failed it: the primary or nothing
};

DbRouter::DbRouter(core::EventLoop& loop, DbSettings settings, DbStats& stats, RouterShared& shared)
    : loop_(loop),
      settings_(std::move(settings)),
      stats_(stats),
      shared_(shared),
      schema_ready_(shared.schema_ready),
      status_(settings_.nodes.size()),
      verdict_(settings_.nodes.size(), ReadVerdict::Down),
      probed_(settings_.nodes.size(), false),
      probe_timer_(loop, [this] { probeAll(); }),
      tick_timer_(loop, [this] { onTick(); }),
      ready_timer_(loop, [this] { markReady(); }),
      password_file_(settings_.password_file) {
  for (const DbNodeConfig& config : settings_.nodes) {
    nodes_.push_back(std::make_unique<Node>());
    nodes_.back()->config = config;
  }
  probe_timer_.armAfter(core::Duration::zero());
  // A node that never answers (no password file yet, a black hole) must not keep the web node
  // out of rotation for good: its static files serve regardless.
  ready_timer_.armAfter(kReadyBound);
  if (nodes_.empty()) {
    markReady();
  }
}

void DbRouter::markReady() {
  if (!ready_) {
    ready_ = true;
    ready_timer_.disarm();
    shared_.ready.fetch_add(1, std::memory_order_relaxed);
  }
}

DbRouter::~DbRouter() = default;

std::string DbRouter::connInfo(size_t node) {
  if (settings_.tls) {
    return conninfoFor(settings_, nodes_[node]->config, "");
  }
  const std::string& password = password_file_.get();
  if (password.empty()) {
    if (!password_warned_) {
      password_warned_ = true;
      log::warn("cannot read the database password from {} (yet): the db agents write it on bootstrap",
                password_file_.path().string());
    }
    return "";
  }
  return conninfoFor(settings_, nodes_[node]->config, password);
}

// --- the connection pool ---------------------------------------------------------------

void DbRouter::acquire(size_t i, Use use) {
  Node& n = *nodes_[i];
  if (!n.idle.empty()) {
    PgConn* conn = n.idle.back();
    n.idle.pop_back();
    publishPool(i);
    use(conn);
    return;
  }
  if (n.waiters.size() >= settings_.max_waiting) {
    use(nullptr);
    return;
  }
  n.waiters.push_back({std::move(use), loop_.now() + settings_.wait_for_connection});
  size_t connecting = 0;
  for (const auto& c : n.conns) {
    connecting += c->state() == PgConn::State::Connecting ? 1 : 0;
  }
  if (n.conns.size() < settings_.conns_per_node && connecting < n.waiters.size() &&
      loop_.now() >= n.connect_after) {
    std::string info = connInfo(i);
    if (!info.empty()) {
      n.conns.push_back(std::make_unique<PgConn>(
          loop_, info, [this, i](PgConn& c) { onConnChange(i, c); }, n.config.name));
    }
  }
  publishPool(i);
  armTick();
}

void DbRouter::publishPool(size_t i) {
  const Node& n = *nodes_[i];
  size_t ready = 0;
  for (const auto& c : n.conns) {
    ready += c->state() == PgConn::State::Ready ? 1 : 0;
  }
  DbNodeStats& s = *stats_.node[i];
  s.pool_in_use.store(ready - std::min(ready, n.idle.size()), std::memory_order_relaxed);
  s.pool_idle.store(n.idle.size(), std::memory_order_relaxed);
  s.pool_waiting.store(n.waiters.size(), std::memory_order_relaxed);
}

void DbRouter::onConnChange(size_t i, PgConn& conn) {
  Node& n = *nodes_[i];
  if (conn.state() == PgConn::State::Ready) {
    n.backoff = kFirstBackoff;
    release(i, &conn);
    return;
  }
  log::debug("db node {}: connection lost: {}", n.config.name, conn.error());
  n.connect_after = loop_.now() + n.backoff;
  n.backoff = nextBackoff(n.backoff);
  dropConn(i, &conn);
  if (n.conns.empty()) {
    failWaiters(i);  // nothing left that could serve them: answer now, not at their deadline
  }
}

void DbRouter::release(size_t i, PgConn* conn) {
  Node& n = *nodes_[i];
  if (conn->state() == PgConn::State::Broken) {
    log::warn("db node {}: {}", n.config.name, conn->error());
    dropConn(i, conn);
    markDown(i);  // the probe tells when it is back
    return;
  }
  while (!n.waiters.empty()) {
    Node::Waiter w = std::move(n.waiters.front());
    n.waiters.pop_front();
    if (loop_.now() > w.deadline) {
      w.use(nullptr);
      continue;
    }
    publishPool(i);
    w.use(conn);
    return;
  }
  n.idle.push_back(conn);
  publishPool(i);
}

void DbRouter::dropConn(size_t i, PgConn* conn) {
  Node& n = *nodes_[i];
  n.idle.erase(std::remove(n.idle.begin(), n.idle.end(), conn), n.idle.end());
  for (auto it = n.conns.begin(); it != n.conns.end(); ++it) {
    if (it->get() == conn) {
      // Possibly inside one of its own callbacks: freed after this batch of events.
      loop_.deferDelete(std::unique_ptr<core::Deletable>(it->release()));
      n.conns.erase(it);
      publishPool(i);
      return;
    }
  }
}

void DbRouter::failWaiters(size_t i) {
  std::deque<Node::Waiter> waiters = std::move(nodes_[i]->waiters);
  nodes_[i]->waiters.clear();
  publishPool(i);
  for (auto& w : waiters) {
    w.use(nullptr);
  }
}

void DbRouter::armTick() {
  if (!tick_timer_.armed()) {
    tick_timer_.armAfter(kTick);
  }
}

void DbRouter::onTick() {
  bool again = false;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    std::deque<Node::Waiter> expired;
    auto& waiters = nodes_[i]->waiters;
    for (auto it = waiters.begin(); it != waiters.end();) {
      if (loop_.now() > it->deadline) {
        expired.push_back(std::move(*it));
        it = waiters.erase(it);
      } else {
        ++it;
      }
    }
    again = again || !waiters.empty();
    if (!expired.empty()) {
      publishPool(i);
    }
    for (auto& w : expired) {
      w.use(nullptr);
    }
  }
  // Token reads that waited token_wait: the primary answers (or a replica known to have it).
  for (auto& op : token_waiters_.takeExpired(loop_.now())) {
    routeRead(op);
  }
  checkReplicas();
  if (again || !token_waiters_.empty()) {
    armTick();
  }
}

// --- discovery ----------------------------------------------------------------------------

void DbRouter::probeAll() {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    probe(i);
  }
  probe_timer_.armAfter(settings_.probe_interval);
}

void DbRouter::probe(size_t i) {
  Node& n = *nodes_[i];
  if (n.probing) {
    return;  // still in flight; its timeout bounds it
  }
  if (!n.probe) {
    if (loop_.now() < n.probe_after) {
      return;
    }
    std::string info = connInfo(i);
    if (info.empty()) {
      return;
    }
    n.probe = std::make_unique<PgConn>(
        loop_, info,
        [this, i](PgConn& c) {
          if (c.state() == PgConn::State::Ready) {
            probe(i);
            return;
          }
          PgResult failed;
          failed.error = c.error();
          onProbe(i, failed);
        },
        n.config.name);
    return;
  }
  if (n.probe->state() != PgConn::State::Ready) {
    return;
  }
  n.probing = true;
  n.probe->query(kProbeSql, {}, settings_.probe_timeout, [this, i](PgResult& r) {
    nodes_[i]->probing = false;
    onProbe(i, r);
  });
}

void DbRouter::onProbe(size_t i, PgResult& r) {
  probed_[i] = true;
  applyProbe(i, r);
  checkReady();
}

void DbRouter::checkReady() {
  // Every node heard from, and, with a primary known, the schema in place (a read before it
  // would fail).
  if (!ready_ && std::all_of(probed_.begin(), probed_.end(), [](bool b) { return b; }) &&
      (!primary_ || schema_ready_.load() || settings_.schema_sql.empty())) {
    markReady();
  }
}

void DbRouter::applyProbe(size_t i, PgResult& r) {
  Node& n = *nodes_[i];
  std::optional<NodeStatus> seen;
  if (r.ok && r.rows.size() == 1) {
    seen = parseProbeRow(r.rows[0]);
  }
  if (!seen) {
    if (n.probe && n.probe->state() == PgConn::State::Broken) {
      loop_.deferDelete(std::unique_ptr<core::Deletable>(n.probe.release()));
      n.probe_after = loop_.now() + n.probe_backoff;
      n.probe_backoff = nextBackoff(n.probe_backoff);
    }
    if (status_[i].reachable && settings_.log_roles) {
      log::warn("db node {} unreachable: {}", n.config.name, r.ok ? "unexpected probe answer" : r.error);
    }
    markDown(i);
    return;
  }
  n.probe_backoff = kFirstBackoff;
  NodeStatus& s = *seen;
  // A replica's replay position only moves forward; a read-your-writes check may have seen
  // a newer one than this probe.
  if (s.in_recovery && status_[i].reachable && status_[i].in_recovery) {
    s.lsn = std::max(s.lsn, status_[i].lsn);
  }
  // Nor does a replica's timeline: once its WAL receiver stops (the primary died) the probe
  // falls back to the last restartpoint's, which may be older than the one it streamed. The
  // last one seen keeps it among the newest during the failover, so reads go on.
  if (s.in_recovery && status_[i].in_recovery) {
    s.timeline = std::max(s.timeline, status_[i].timeline);
  }
  status_[i] = std::move(s);
  updateRoles();
}

void DbRouter::markDown(size_t i) {
  // Only reachability is forgotten: the node's last timeline still counts as one seen.
  if (status_[i].reachable) {
    status_[i].reachable = false;
    updateRoles();
  }
  failWaiters(i);
}

void DbRouter::setMaxLagBytes(uint64_t max_lag_bytes) {
  settings_.max_lag_bytes = max_lag_bytes;
  updateRoles();
}

void DbRouter::updateRoles() {
  std::optional<size_t> before = primary_;
  primary_ = choosePrimary(status_);
  if (primary_) {
    primary_lost_at_.reset();
  } else if (before) {
    primary_lost_at_ = loop_.now();
  }
  eligible_ = eligibleReplicas(status_, settings_.nodes, primary_, settings_.max_lag_bytes);
  const bool settled =
      primary_ || ready_ || std::all_of(probed_.begin(), probed_.end(), [](bool b) { return b; });
  if (!settled) {
    // With no primary, "the newest timeline" means the newest of every node: until each has
    // been heard from (or the ready bound passed), a replica on an old one could look newest.
    eligible_.clear();
  }
  if (primary_ != before && settings_.log_roles) {
    size_t claims = 0;
    for (const NodeStatus& s : status_) {
      claims += claimsPrimary(s) ? 1 : 0;
    }
    if (primary_) {
      log::info("db primary is {} (timeline {})", nodes_[*primary_]->config.name,
                status_[*primary_].timeline);
    } else if (claims > 1) {
      log::warn("{} db nodes claim to be primary: writes answer 503 until the agents settle it", claims);
    } else {
      log::warn("no db primary reachable: writes answer 503");
    }
  }
  for (size_t i = 0; i < status_.size(); ++i) {
    const NodeStatus& s = status_[i];
    const ReadVerdict verdict = readVerdict(status_, settings_.nodes, i, primary_, settings_.max_lag_bytes);
    // Replicas entering or leaving the read pool, with the reason. Lag alone flaps with load:
    // not logged (the gauge shows it). Down and primary nodes are logged elsewhere.
    if (!s.reachable || !s.in_recovery) {
      verdict_[i] = verdict;
    } else if (settled && verdict != ReadVerdict::TooFarBehind && verdict != verdict_[i]) {
      verdict_[i] = verdict;
      if (settings_.log_roles && verdict == ReadVerdict::Readable) {
        log::info("db node {} serves reads", nodes_[i]->config.name);
      } else if (settings_.log_roles) {
        log::warn("db node {} serves no reads: {}", nodes_[i]->config.name, describe(verdict));
      }
    }
    int role = 0;
    uint64_t lag = 0;
    if (s.reachable) {
      if (!s.in_recovery) {
        role = primary_ == i ? 1 : 4;
      } else {
        lag = primary_ ? lagBytes(status_[*primary_].lsn, s.lsn) : 0;
        role = verdict == ReadVerdict::Readable ? 2 : verdict == ReadVerdict::TooFarBehind ? 3 : 5;
      }
    }
    const int was = stats_.node[i]->role.exchange(role, std::memory_order_relaxed);
    if (role == 4 && was != 4 && settings_.log_roles && (s.fenced || s.read_only)) {
      log::warn("db node {} is out of recovery but fenced ({}): no writes go there", nodes_[i]->config.name,
                s.fenced ? "fulcrum.fenced is on: its lease has expired" : "read-only");
    }
    stats_.node[i]->lag_bytes.store(lag, std::memory_order_relaxed);
  }
  if (primary_ && !schema_ready_.load() && !schema_running_ && !settings_.schema_sql.empty()) {
    ensureSchema();
  }
}

void DbRouter::ensureSchema() {
  schema_running_ = true;
  auto done = [this](bool ok) {
    schema_running_ = false;
    if (ok && !schema_ready_.exchange(true)) {
      log::info("guestbook schema ready");
    }
    checkReady();
    std::vector<std::function<void(bool)>> waiting = std::move(after_schema_);
    after_schema_.clear();
    for (auto& fn : waiting) {
      fn(ok);
    }
  };
  if (!primary_) {
    done(false);
    return;
  }
  size_t p = *primary_;
  acquire(p, [this, p, done](PgConn* conn) {
    if (conn == nullptr) {
      done(false);
      return;
    }
    conn->query(settings_.schema_sql, {}, settings_.query_timeout, [this, p, conn, done](PgResult& r) {
      // The statement's lock makes creators take turns; one that takes no lock (a web node of an
      // older version, mid-upgrade) may still race it, and the table exists either way.
      bool ok = r.ok || r.sqlstate == "23505" || r.sqlstate == "42P07";
      if (!ok) {
        log::warn("creating the guestbook schema on {}: {}", nodes_[p]->config.name, r.error);
      }
      release(p, conn);
      done(ok);
    });
  });
}

// --- writes -------------------------------------------------------------------------------

void DbRouter::unavailable(ReplyFn& reply, std::string message, core::Duration retry_after) {
  stats_.unavailable.add();
  DbReply out;
  out.status = 503;
  out.error = std::move(message);
  out.retry_after = retry_after;
  reply(out);
}

void DbRouter::noPrimary(ReplyFn& reply) {
  core::Duration left = std::chrono::seconds(1);
  if (primary_lost_at_) {
    left = std::max(left, *primary_lost_at_ + settings_.failover_time - loop_.now());
  }
  unavailable(reply, "no primary database (a failover is under way, or the database is down)", left);
}

void DbRouter::write(std::string_view sql, std::vector<std::string> params, ReplyFn reply) {
  stats_.writes.add();
  if (!primary_) {
    noPrimary(reply);
    return;
  }
  const core::TimePoint deadline = loop_.now() + settings_.write_deadline;
  if (!schema_ready_.load()) {
    after_schema_.push_back([this, sql = std::string(sql), params = std::move(params), reply = std::move(reply),
                             deadline](bool ok) mutable {
      if (!ok) {
        unavailable(reply, "the database schema could not be created; retry shortly");
        return;
      }
      startWrite(std::move(sql), std::move(params), std::move(reply), deadline);
    });
    if (!schema_running_) {
      ensureSchema();
    }
    return;
  }
  startWrite(std::string(sql), std::move(params), std::move(reply), deadline);
}

void DbRouter::startWrite(std::string sql, std::vector<std::string> params, ReplyFn reply,
                          core::TimePoint deadline) {
  if (!primary_) {
    noPrimary(reply);
    return;
  }
  // Each step gets what is left of the write's deadline: a lost primary means a quick 503.
  auto left = [this, deadline] {
    return std::max<core::Duration>(deadline - loop_.now(), std::chrono::milliseconds(1));
  };
  struct WriteOp {
    std::string sql;
    std::vector<std::string> params;
    ReplyFn reply;
    std::vector<std::vector<std::string>> rows;
  };
  auto op = std::make_shared<WriteOp>(WriteOp{std::move(sql), std::move(params), std::move(reply), {}});
  size_t p = *primary_;
  acquire(p, [this, p, op, left](PgConn* conn) {
    if (conn == nullptr) {
      unavailable(op->reply, "the primary database is busy or unreachable; retry shortly");
      return;
    }
    stats_.node[p]->queries.add();
    conn->query(op->sql, op->params, left(), [this, p, conn, op, left](PgResult& r) {
      if (!r.ok) {
        stats_.node[p]->errors.add();
        if (r.sqlstate == "25006") {
          status_[p].read_only = true;  // fenced since the last probe
          updateRoles();
        }
        release(p, conn);
        if (!refusedRow(r.sqlstate)) {
          probe(p);  // fenced by its lease, demoted, gone? Learn it now, not at the next round.
        }
        if (refusedRow(r.sqlstate)) {
          DbReply out;
          out.status = 400;
          out.error = "the database refused the message";
          op->reply(out);
          return;
        }
        log::warn("write on {} failed: {}", nodes_[p]->config.name, r.error);
        unavailable(op->reply, "the write failed (database unavailable); retry shortly");
        return;
      }
      op->rows = std::move(r.rows);
      conn->query(kCommitLsnSql, {}, left(), [this, p, conn, op](PgResult& l) {
        // The row is committed whatever happens here; without a position the reply has no token.
        DbReply out;
        out.rows = std::move(op->rows);
        out.node = nodes_[p]->config.name;
        if (l.ok && !l.rows.empty() && !l.rows[0].empty()) {
          out.lsn = parseLsn(l.rows[0][0]);
        }
        release(p, conn);
        op->reply(out);
      });
    });
  });
}

// --- reads --------------------------------------------------------------------------------

void DbRouter::read(std::string_view sql, std::vector<std::string> params, std::optional<Lsn> token,
                    ReplyFn reply) {
  stats_.reads.add();
  if (token) {
    stats_.token_reads.add();
  }
  auto op = std::make_shared<ReadOp>(
      ReadOp{std::string(sql), std::move(params), token, std::move(reply), loop_.now() + settings_.token_wait, 0});
  routeRead(op);
}

void DbRouter::routeRead(const std::shared_ptr<ReadOp>& op) {
  std::vector<size_t> ready;
  if (!op->primary_only) {
    ready = replicasAtLeast(status_, eligible_, op->token);
  }
  if (!ready.empty()) {
    // Round-robin, but skip past a replica whose connections are all busy when another has one
    // free: a slow replica should not make reads queue while its peer idles.
    size_t start = next_replica_++;
    size_t i = ready[start % ready.size()];
    for (size_t k = 0; k < ready.size(); ++k) {
      const Node& n = *nodes_[ready[(start + k) % ready.size()]];
      if (!n.idle.empty() || n.conns.size() < settings_.conns_per_node) {
        i = ready[(start + k) % ready.size()];
        break;
      }
    }
    acquire(i, [this, i, op](PgConn* conn) {
      if (conn == nullptr) {
        op->primary_only = true;  // this replica is busy or gone
        routeRead(op);
        return;
      }
      runRead(i, conn, op);
    });
    return;
  }
  if (op->token && !op->primary_only && !eligible_.empty() && loop_.now() < op->deadline) {
    // No replica known to have the writer's commit yet: wait for one, up to token_wait.
    stats_.token_waits.add();
    token_waiters_.push(*op->token, op->deadline, op);
    checkReplicas();
    armTick();
    return;
  }
  if (primary_) {
    if (op->token) {
      stats_.token_primary_reads.add();
    }
    size_t p = *primary_;
    acquire(p, [this, p, op](PgConn* conn) {
      if (conn == nullptr) {
        unavailable(op->reply, "the primary database is busy or unreachable; retry shortly");
        return;
      }
      runRead(p, conn, op);
    });
    return;
  }
  unavailable(op->reply, "no database node can serve this read; retry shortly");
}

void DbRouter::checkReplicas() {
  if (token_waiters_.empty()) {
    return;
  }
  if (eligible_.empty()) {
    // No replica may serve them any more (down, detached, a failover): do not wait in vain.
    for (auto& op : token_waiters_.takeAll()) {
      routeRead(op);
    }
    return;
  }
  // A discovery probe may have shown a replica past some tokens since they queued.
  Lsn known = 0;
  for (size_t i : eligible_) {
    known = std::max(known, status_[i].lsn);
  }
  for (auto& op : token_waiters_.takeReplayed(known)) {
    routeRead(op);
  }
  // One check per replica per tick, whatever the number of waiters: each answers them all.
  for (size_t i : eligible_) {
    Node& n = *nodes_[i];
    if (!token_waiters_.empty() && !n.checking && loop_.now() >= n.next_check) {
      checkReplay(i);
    }
  }
}

void DbRouter::checkReplay(size_t i) {
  Node& n = *nodes_[i];
  n.checking = true;
  n.next_check = loop_.now() + kTick;
  stats_.replay_checks.add();
  acquire(i, [this, i](PgConn* conn) {
    if (conn == nullptr) {
      nodes_[i]->checking = false;  // busy or gone: the next tick may try again
      return;
    }
    stats_.node[i]->queries.add();
    conn->query(kReplayLsnSql, {}, settings_.probe_timeout, [this, i, conn](PgResult& r) {
      nodes_[i]->checking = false;
      std::optional<Lsn> replayed;
      if (r.ok && !r.rows.empty() && !r.rows[0].empty()) {
        replayed = parseLsn(r.rows[0][0]);  // NULL (empty) once the node was promoted
      }
      if (!r.ok) {
        stats_.node[i]->errors.add();
      }
      // The verdict may have changed while the check ran: a replica that left the read pool
      // serves no waiter.
      const bool eligible = std::find(eligible_.begin(), eligible_.end(), i) != eligible_.end();
      if (!replayed || !eligible || !status_[i].in_recovery) {
        release(i, conn);
        return;
      }
      status_[i].lsn = std::max(status_[i].lsn, *replayed);
      std::vector<std::shared_ptr<ReadOp>> answered = token_waiters_.takeReplayed(*replayed);
      if (answered.empty()) {
        release(i, conn);
        return;
      }
      // The first runs on this connection: its next statement's snapshot includes everything
      // replayed up to here, the writer's commit among it. The others go to any replica now
      // known to have replayed their token (this one among them).
      runRead(i, conn, answered.front());
      for (size_t k = 1; k < answered.size(); ++k) {
        routeRead(answered[k]);
      }
    });
  });
}

void DbRouter::runRead(size_t i, PgConn* conn, const std::shared_ptr<ReadOp>& op) {
  stats_.node[i]->queries.add();
  (primary_ == i ? stats_.reads_primary : stats_.reads_replica).add();
  conn->query(op->sql, op->params, settings_.query_timeout, [this, i, conn, op](PgResult& r) {
    bool broken = conn->state() == PgConn::State::Broken;
    release(i, conn);
    // 42P01: the table is not there yet (no message ever written, or not replayed yet).
    if (r.ok || r.sqlstate == "42P01") {
      DbReply out;
      out.rows = std::move(r.rows);
      out.node = nodes_[i]->config.name;
      op->reply(out);
      return;
    }
    stats_.node[i]->errors.add();
    log::warn("read on {} failed: {}", nodes_[i]->config.name, r.error);
    if (broken && op->attempts++ == 0) {
      routeRead(op);  // the node went away mid-read (and is marked down): once more elsewhere
      return;
    }
    unavailable(op->reply, "the read failed (database unavailable); retry shortly");
  });
}

}  // namespace fulcrum::web
