// The operator's node actions: restart PostgreSQL in place, re-clone a replica, and the
// cluster's timeline history (`fulcrum db restart|reinit|history`, patronictl's namesakes).
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "db/agent.h"
#include "db/agent_http.h"
#include "db/backup_catalog.h"

namespace fulcrum::db {

using pg::formatLsn;

namespace {

// A history entry that could not be written is tried again each tick, this many times.
constexpr int kHistoryAttempts = 30;
constexpr auto kHistoryReadSpacing = std::chrono::seconds(2);

}  // namespace

uint32_t DbAgent::reportedTimeline() const {
  if (status_ok_ && pg_status_.timeline != 0) {
    return pg_status_.timeline;
  }
  // A replica between two leaders streams from nobody: the timeline of the WAL it last received,
  // else (nothing received since the agent started) that of its last restartpoint.
  if (!status_ok_ || !pg_status_.in_recovery) {
    return 0;
  }
  return received_tli_ != 0 ? received_tli_ : pg_status_.checkpoint_timeline;
}

void DbAgent::handleRestart(const http::Request& request, http::Response& response) {
  if (refuseUnauthorized(request, response)) {
    return;
  }
  if (op_) {
    answerJson(response, 409, {{"error", node_.name + " is busy (" + op_->what + "); try again once it ends"}});
    return;
  }
  if (switchover_ || restoreOwnsPostgres() || restore_) {
    answerJson(response, 409, {{"error", node_.name + " is in a switchover or a restore; try again once it ends"}});
    return;
  }
  if (restart_) {
    answerJson(response, 409, {{"error", "a restart of " + node_.name + "'s PostgreSQL is already under way"}});
    return;
  }
  if (!pg_->isRunning()) {
    answerJson(response, 409,
           {{"error", "PostgreSQL is not running on " + node_.name +
                          ": nothing to restart (the agent starts it when its role allows; see `fulcrum db list`)"}});
    return;
  }
  const std::string role = view().role();
  if (!pg_->signalStop(StopMode::Fast)) {
    answerJson(response, 409, {{"error", "PostgreSQL on " + node_.name + " was not started by this agent"}});
    return;
  }
  restart_ = Restart{loop_.clock().now(), false};
  // The lease is kept: a leader restarting its server is still the leader (Patroni does the same),
  // and /primary answers 503 until the server is back.
  log::info("restart asked by the operator: PostgreSQL ({}) stops (fast) and starts again", role);
  answerJson(response, 202, {{"restarting", node_.name}, {"role", role}, {"starts", postgres_starts_}});
  wake();
}

void DbAgent::driveRestart() {
  if (!restart_ || restart_->escalated) {
    return;
  }
  if (loop_.clock().now() - restart_->since > pg_->options().stop_timeout && pg_->isRunning()) {
    log::warn("restart: PostgreSQL did not stop within {} ms (fast); stopping it at once",
              pg_->options().stop_timeout.count());
    pg_->signalStop(StopMode::Immediate);
    restart_->escalated = true;
  }
}

void DbAgent::handleReinit(const http::Request& request, http::Response& response) {
  if (refuseUnauthorized(request, response)) {
    return;
  }
  if (elector_.isLeader() || (leader_name_ && *leader_name_ == node_.name)) {
    answerJson(response, 409,
           {{"error", node_.name + " leads: a leader cannot be cloned from itself; hand it over first "
                                   "(`fulcrum db switchover`), then reinit it"}});
    return;
  }
  if (phase_ != Phase::Running || op_ || rejoining_ || restart_ || !held_restore_id_.empty()) {
    answerJson(response, 409,
           {{"error", node_.name + " is busy (" + (op_ ? op_->what : std::string("starting, rejoining or held")) +
                          "); try again once it ends"}});
    return;
  }
  std::optional<MemberRecord> leader = leader_name_ ? leaderRecord(*leader_name_) : std::nullopt;
  if (!leader) {
    answerJson(response, 503,
           {{"error", "no leader runs as a primary to clone from" +
                          (leader_name_ ? " (" + *leader_name_ + " holds the key but has not published)"
                                        : std::string())}});
    return;
  }
  if (!sameSystem(*leader, "clone")) {
    answerJson(response, 409, {{"error", "leader " + leader->name + " belongs to another system (see the agent's log)"}});
    return;
  }
  if (pg_->isRunning()) {
    if (Status stopped = pg_->stop(StopMode::Fast); !stopped.ok) {
      answerJson(response, 500, {{"error", "stopping PostgreSQL: " + stopped.error}});
      return;
    }
  }
  auto aside = recloneFrom(*leader, /*planned=*/true);
  if (!aside) {
    answerJson(response, 500, {{"error", "the data directory could not be moved aside (see the agent's log)"}});
    return;
  }
  answerJson(response, 202, {{"reinit", node_.name}, {"from", leader->name}, {"old_data", aside->string()}});
}

void DbAgent::recordHistory() {
  HistoryEntry entry = *pending_history_;
  entry.timeline = pg_status_.timeline;
  if (history_tli_ == pg_status_.timeline && !history_.empty() && history_.back().tli + 1 == entry.timeline) {
    entry.lsn = history_.back().switchpoint;  // where PostgreSQL says the timeline forked
  }
  const std::string key = historyKey(site_.site.name);
  auto give_up_or_retry = [&](const std::string& why) {
    if (++history_attempts_ >= kHistoryAttempts) {
      log::warn("history: timeline {} not recorded ({}); giving up", entry.timeline, why);
      pending_history_.reset();
    }
  };
  auto current = etcd_.get(key);
  if (!current.ok) {
    give_up_or_retry(current.error);
    return;
  }
  std::vector<HistoryEntry> entries;
  if (current.value) {
    if (auto decoded = decodeHistory(current.value->value)) {
      entries = std::move(*decoded);
    } else {
      log::warn("etcd: {} is not a history list ({} bytes); replacing it", key, current.value->value.size());
    }
  }
  const std::string value = encodeHistory(appendHistory(std::move(entries), entry));
  auto written = current.value ? etcd_.putIfUnchanged(key, current.value->mod_revision, value)
                               : etcd_.createIfAbsent(key, value);
  if (!written.ok || !written.value) {
    give_up_or_retry(written.ok ? "changed meanwhile" : written.error);
    return;
  }
  pending_history_.reset();
  history_read_.reset();  // GET /history shows it at once
  log::info("history: timeline {} began at {}: {}", entry.timeline, formatLsn(entry.lsn), entry.reason);
}

void DbAgent::handleHistory(http::Response& response) {
  // The endpoint needs no token and the read blocks the control loop (the lease's renewals too):
  // at most one etcd read per kHistoryReadSpacing, however often it is asked.
  const core::TimePoint now = loop_.clock().now();
  if (!history_read_ || now - history_read_->at >= kHistoryReadSpacing) {
    auto got = etcd_.get(historyKey(site_.site.name));
    if (!got.ok) {
      answerJson(response, 503, {{"error", "etcd: " + got.error}});
      return;
    }
    history_read_ = HistoryRead{now, got.value ? decodeHistory(got.value->value).value_or(std::vector<HistoryEntry>{})
                                               : std::vector<HistoryEntry>{}};
  }
  const std::vector<HistoryEntry>& recorded = history_read_->entries;
  // The leader's ancestry: its history file as it publishes it (our own when we lead).
  std::vector<TimelineSwitch> switches;
  uint32_t current = 0;
  if (elector_.isLeader() && status_ok_ && !pg_status_.in_recovery) {
    current = pg_status_.timeline;
    if (history_tli_ == current) {
      switches = history_;
    }
  } else if (leader_record_) {
    current = leader_record_->timeline;
    switches = leader_record_->history;
  }
  nlohmann::json rows = nlohmann::json::array();
  for (const HistoryEntry& e : mergeHistory(recorded, switches, current)) {
    rows.push_back({{"timeline", e.timeline},
                    {"lsn", formatLsn(e.lsn)},
                    {"at", e.at > 0 ? nlohmann::json(formatUtc(e.at)) : nlohmann::json(nullptr)},
                    {"leader", e.leader.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.leader)},
                    {"reason", e.reason.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.reason)}});
  }
  answerJson(response, 200,
         {{"leader", leader_name_ ? nlohmann::json(*leader_name_) : nlohmann::json(nullptr)},
          {"timeline", current},
          {"history", std::move(rows)}});
}

}  // namespace fulcrum::db
