// Synchronous mode of the database agent: the leader's side of the sync-key protocol
// (sync_state.h). The replica's side is maySyncPromote() in DbAgent::maybePromote().
#include "core/log.h"
#include "db/agent.h"

namespace fulcrum::db {

using pg::parseLsn;

bool DbAgent::syncAllowsLeading() const {
  // Until the site has been read, nothing is known: wait one tick.
  return site_read_ && (!sync_key_ || sync_key_->leader == node_.name);
}

bool DbAgent::claimSyncKey() {
  pg_sync_.reset();
  narrow_lsn_.reset();
  if (sync_key_ && sync_key_->leader == node_.name) {
    return true;  // still ours: it lists a superset of whom our commits waited for
  }
  // Strict: every other node is listed at once (each may acknowledge commits as soon as it
  // follows, and promotion still takes the most advanced listed one), so that commits wait from
  // the first one on; otherwise nobody is listed until a replica streams.
  SyncState fresh{node_.name, site_.db.synchronous_strict ? otherNodes() : std::set<std::string>{}};
  auto written =
      etcd_.putIfValue(leaderKey(site_.site.name), node_.name, syncKey(site_.site.name), encodeSync(fresh));
  if (!written.ok || !written.value) {
    log::warn("cannot claim the sync key: {}", written.ok ? "the leader key is not ours" : written.error);
    return false;
  }
  sync_key_ = fresh;
  log::info("sync key claimed: {}", site_.db.synchronous_strict
                                          ? "strict, every other node listed: commits wait for one of them"
                                          : "no replica may be promoted until one is synchronous");
  return true;
}

std::set<std::string> DbAgent::otherNodes() const {
  std::set<std::string> names;
  for (const auto& other : site_.db.nodes) {
    if (other.name != node_.name) {
      names.insert(other.name);
    }
  }
  return names;
}

std::string DbAgent::promotionStandbyNames() const {
  // Strict: the names the claimed key lists, so the first commit already waits for a replica.
  if (syncMode() && site_.db.synchronous_strict && sync_key_ && sync_key_->leader == node_.name) {
    return standbyNamesValue(sync_key_->sync);
  }
  return "";
}

void DbAgent::reconcileSyncSteps() {
  auto replicas = pg_->replicas();
  if (!replicas.ok) {
    log::warn("synchronous mode: reading pg_stat_replication: {}", replicas.error);
    return;
  }
  auto lsn = pg_->query("SELECT pg_current_wal_lsn()");
  if (!lsn.ok || lsn.value.size() != 1 || lsn.value[0].size() != 1 || !parseLsn(lsn.value[0][0])) {
    log::warn("synchronous mode: reading the WAL position: {}", lsn.ok ? "unexpected answer" : lsn.error);
    return;
  }
  SyncInputs in;
  in.me = node_.name;
  in.pg = pg_sync_;
  in.current_lsn = *parseLsn(lsn.value[0][0]);
  in.nodes = otherNodes();
  in.strict = site_.db.synchronous_strict;
  for (const auto& r : replicas.value) {
    in.replicas.push_back(
        SyncReplica{r.application_name, r.state == "streaming", r.sync_priority > 0, r.flush_lsn});
  }
  // Key writes need no new observation; a change to PostgreSQL does (walsenders reload).
  capEtcd();
  for (int steps = 0; steps < 3 && elector_.mayWrite(); ++steps) {
    in.key = sync_key_;
    in.pg = pg_sync_;
    in.narrow_lsn = narrow_lsn_;
    SyncStep step = nextSyncStep(in);
    switch (step.kind) {
      case SyncStep::Kind::None:
        last_sync_wait_.clear();
        return;
      case SyncStep::Kind::Wait:
        if (step.why != last_sync_wait_) {
          log::info("synchronous mode: waiting: {}", step.why);
          last_sync_wait_ = step.why;
        }
        return;
      case SyncStep::Kind::RecordLsn:
        narrow_lsn_ = step.lsn;
        return;
      case SyncStep::Kind::SetPg: {
        const std::string value = standbyNamesValue(step.pg);
        if (Status set = pg_->setSynchronousStandbys(value); !set.ok) {
          log::warn("synchronous mode: setting synchronous_standby_names: {}", set.error);
          return;
        }
        pg_sync_ = step.pg;
        narrow_lsn_.reset();
        log::info("synchronous_standby_names = '{}' ({})", value, step.why);
        return;
      }
      case SyncStep::Kind::WriteKey: {
        auto written = etcd_.putIfValue(leaderKey(site_.site.name), node_.name, syncKey(site_.site.name),
                                        encodeSync(step.key));
        if (!written.ok || !written.value) {
          log::warn("synchronous mode: writing the sync key: {}",
                    written.ok ? "the leader key is not ours" : written.error);
          return;
        }
        sync_key_ = step.key;
        log::info("sync key: {} ({})", encodeSync(step.key), step.why);
        break;
      }
    }
  }
}

void DbAgent::reconcileSync() {
  reconcileSyncSteps();
  etcd_.capDeadline(std::nullopt);
}

void DbAgent::clearSynchronousStandbys() {
  auto current = pg_->query("SELECT current_setting('synchronous_standby_names')");
  if (!current.ok) {
    return;  // next tick
  }
  if (!(current.value.empty() || current.value[0].empty() || current.value[0][0].empty())) {
    if (Status set = pg_->setSynchronousStandbys(""); !set.ok) {
      log::warn("asynchronous mode: clearing synchronous_standby_names: {}", set.error);
      return;
    }
    log::info("asynchronous mode: synchronous_standby_names cleared");
  }
  pg_sync_ = std::set<std::string>{};
}

}  // namespace fulcrum::db
