// Point-in-time restore (POST /restore on the leader, `fulcrum restore`). The leader does it, step
// by step in its control loop, while it keeps the leader key (so nobody fails over meanwhile):
//
//   archiving   a WAL switch, then waiting until the archive holds it (the moments up to now are
//               restorable); skipped for --to-backup
//   staging     pgBackRest restores the chosen backup into DATA.restore while the site still
//               serves: a damaged backup fails here, and nothing has changed
//   holding     the restore key (bound to our member lease) says Switching: every other agent
//               stops its PostgreSQL and waits
//   swapping    our PostgreSQL stopped, DATA moved aside (DATA.before-restore-<time>, kept), the
//               staged directory put in its place and started: it replays the archive up to the
//               target and promotes itself onto a new timeline
//   done        the key says Done: the others move their data aside and clone the new primary
//
// A failure before the swap changes nothing; a failure after it puts the old directory back
// and starts it again; either way the key says Failed and the others carry on as they were.
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/log.h"
#include "db/agent.h"
#include "db/agent_http.h"
#include "http/json_body.h"

namespace fulcrum::db {

namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

constexpr auto kArchiveWait = seconds(60);
constexpr auto kHoldWait = seconds(30);
constexpr auto kRecoveryWait = seconds(1800);
constexpr auto kStagingTimeout = std::chrono::milliseconds(seconds(3 * 3600));
constexpr auto kKeepDoneKey = seconds(300);

std::string stamp() {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &utc);
  return buf;
}

const char* stepName(DbAgent::RestoreStep step) {
  switch (step) {
    case DbAgent::RestoreStep::Archiving:
      return "archiving";
    case DbAgent::RestoreStep::Staging:
      return "staging";
    case DbAgent::RestoreStep::Holding:
      return "holding";
    case DbAgent::RestoreStep::Swapping:
      return "swapping";
    case DbAgent::RestoreStep::Recovering:
      return "recovering";
    case DbAgent::RestoreStep::Done:
      return "done";
    case DbAgent::RestoreStep::Failed:
      return "failed";
  }
  return "?";
}

}  // namespace

void DbAgent::restoreLog(const std::string& line, bool trouble) {
  // The steps of a restore the operator asked for are planned: info; what went wrong: warn.
  if (log::enabled(trouble ? log::Level::Warn : log::Level::Info)) {
    log::write(trouble ? log::Level::Warn : log::Level::Info,
               fmt::format("restore {}: {}", restore_->id, line));
  }
  restore_->log.push_back(line);
}

void DbAgent::restoreStep(RestoreStep step) {
  restore_->step = step;
  restore_->since = loop_.clock().now();
}

bool DbAgent::restoreOwnsPostgres() const {
  return restore_ && (restore_->step == RestoreStep::Swapping || restore_->step == RestoreStep::Recovering);
}

void DbAgent::handleRestore(const http::Request& request, http::Response& response) {
  const http::Method method = request.head.method;
  if (method == http::Method::Get || method == http::Method::Head) {
    if (!restore_) {
      answerJson(response, 404, {{"error", "no restore has run on " + node_.name + " since its agent started"}});
      return;
    }
    answerJson(response, 200,
           {{"id", restore_->id},
            {"state", stepName(restore_->step)},
            {"backup", restore_->plan.from.label},
            {"target", restore_->plan.time ? nlohmann::json(formatUtc(*restore_->plan.time)) : nlohmann::json(nullptr)},
            {"log", restore_->log},
            {"error", restore_->error},
            {"timeline", restore_->timeline}});
    return;
  }
  if (method != http::Method::Post) {
    response.addHeader("Allow", "GET, POST");
    answerJson(response, 405, {{"error", "use GET or POST"}});
    return;
  }
  if (refuseUnauthorized(request, response)) {
    return;
  }
  if (!backup_) {
    answerJson(response, 404, {{"error", "this site has no [db.backup]: nothing to restore from"}});
    return;
  }
  std::string error;
  std::optional<nlohmann::json> body = http::parseStrictJson(request.body, error);
  const char* usage = R"(expected {"to":"TIME"} or {"backup":"LABEL"}, with "dry_run":true to only plan)";
  if (!body || !body->is_object()) {
    answerJson(response, 400, {{"error", (error.empty() ? std::string("not a JSON object") : error) + ": " + usage}});
    return;
  }
  RestoreTarget target;
  bool dry_run = false;
  for (const auto& [name, value] : body->items()) {
    if (name == "to" && value.is_string()) {
      target.time = parseTime(value.get<std::string>());
      if (!target.time) {
        answerJson(response, 400,
               {{"error", "'" + value.get<std::string>().substr(0, 64) +
                              "' is not a time: use '2026-12-03 10:15:00' (UTC), '2026-12-03T10:15:00+01:00' or @UNIX"}});
        return;
      }
    } else if (name == "backup" && value.is_string() && !value.get<std::string>().empty()) {
      target.backup = value.get<std::string>();
    } else if (name == "dry_run" && value.is_boolean()) {
      dry_run = value.get<bool>();
    } else {
      answerJson(response, 400, {{"error", "unexpected field '" + name + "': " + usage}});
      return;
    }
  }
  if (target.time.has_value() == !target.backup.empty()) {
    answerJson(response, 400, {{"error", usage}});
    return;
  }
  if (!elector_.isLeader() && leader_name_ && *leader_name_ != node_.name) {
    forwardAdmin(request, response, *leader_name_);
    return;
  }
  if (restore_ && restore_->step != RestoreStep::Done && restore_->step != RestoreStep::Failed) {
    answerJson(response, 409, {{"error", "restore " + restore_->id + " is under way (" + stepName(restore_->step) + ")"}});
    return;
  }
  if (!backup_leading_) {
    answerJson(response, 503, {{"error", node_.name + " is not a leader with a running primary; a restore starts from one"}});
    return;
  }
  if (switchover_) {
    answerJson(response, 409, {{"error", "a switchover is under way"}});
    return;
  }
  if (backup_->busy()) {
    answerJson(response, 409, {{"error", "a backup is running; restore once it is done"}});
    return;
  }
  if (!backup_->catalog()) {
    answerJson(response, 503, {{"error", "the repository has not been read yet; try again in a few seconds"}});
    return;
  }
  const int64_t now = std::chrono::duration_cast<seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto plan = planRestore(*backup_->catalog(), target, now);
  if (!plan.ok) {
    answerJson(response, 409, {{"error", plan.error}});
    return;
  }
  std::vector<std::string> others;
  for (const config::DbNode& n : site_.db.nodes) {
    if (n.name != node_.name) {
      others.push_back(n.name);
    }
  }
  const std::string staging = (pg_->options().data_dir.string() + ".restore");
  std::vector<std::string> steps;
  if (plan.value.time) {
    steps.push_back("switch WAL on " + node_.name + " and wait until the archive holds it");
  }
  steps.push_back(fmt::format("restore backup {} ({} backup, consistent from {}) into {} with pgBackRest, "
                              "checking every file; the site keeps serving",
                              plan.value.from.label, backupTypeName(plan.value.from.type), formatUtc(plan.value.from.stop),
                              staging));
  steps.push_back(others.empty() ? std::string("(no other db node to stop)")
                                 : "stop PostgreSQL on " + fmt::format("{}", fmt::join(others, ", ")) +
                                       " (their agents hold; nobody fails over)");
  steps.push_back("stop PostgreSQL on " + node_.name + ", keep its data as " + pg_->options().data_dir.string() +
                  ".before-restore-<time>, start the restored copy");
  steps.push_back(plan.value.time ? "replay the WAL archive up to " + formatUtc(*plan.value.time) +
                                        ", then promote: a new timeline, " + node_.name + " still the leader"
                                  : "stop at the backup's end, then promote: a new timeline, " + node_.name +
                                        " still the leader");
  steps.push_back(others.empty() ? std::string("take a full backup of the new timeline")
                                 : fmt::format("{} keep their data aside and clone {} again; a full backup follows",
                                               fmt::join(others, ", "), node_.name));
  if (dry_run) {
    answerJson(response, 200, {{"dry_run", true}, {"backup", plan.value.from.label}, {"plan", steps}});
    return;
  }
  Restore r;
  r.id = stamp();
  r.plan = plan.value;
  r.staging = staging;
  r.timeline_before = pg_status_.timeline;
  restore_ = std::move(r);
  restoreStep(plan.value.time ? RestoreStep::Archiving : RestoreStep::Staging);
  restoreLog("requested: back to " + (plan.value.time ? formatUtc(*plan.value.time) : "the end of " + plan.value.from.label) +
             " from backup " + plan.value.from.label);
  wake();
  answerJson(response, 202, {{"id", restore_->id}, {"backup", plan.value.from.label}, {"plan", steps}});
}

bool DbAgent::holdForRestore() {
  if (!restore_key_ || restore_key_->node == node_.name) {
    if (!held_restore_id_.empty() && !restore_key_) {
      // The restorer went (its lease with it) before it said how it ended: carry on as before.
      log::warn("restore {}: its record is gone; carrying on with this node's data", held_restore_id_);
      held_restore_id_.clear();
    }
    return false;
  }
  const RestoreHold& hold = *restore_key_;
  switch (hold.state) {
    case RestoreHold::State::Switching:
      if (held_restore_id_ != hold.id) {
        held_restore_id_ = hold.id;
        log::info("restore {} by {}: holding, PostgreSQL stopped until it is done", hold.id, hold.node);
      }
      if (pg_->isRunning()) {
        if (Status stopped = pg_->stop(StopMode::Fast); !stopped.ok) {
          log::error("stopping PostgreSQL for the restore: {}", stopped.error);
        }
      }
      return true;
    case RestoreHold::State::Done:
      if (held_restore_id_ != hold.id) {
        return false;  // not held for this one (started since): the usual checks apply
      }
      if (leader_record_ && leader_record_->name == hold.node && leader_record_->timeline >= hold.timeline) {
        log::info("restore {} done by {} (timeline {}): cloning it again", hold.id, hold.node, hold.timeline);
        held_restore_id_.clear();
        if (pg_->isRunning()) {
          pg_->stop(StopMode::Fast);
        }
        recloneFrom(*leader_record_);
      }
      return true;
    case RestoreHold::State::Failed:
      if (held_restore_id_ == hold.id) {
        log::warn("restore {} failed on {}: carrying on with this node's data", hold.id, hold.node);
        held_restore_id_.clear();
      }
      return false;
  }
  return false;
}

void DbAgent::putRestoreKey(RestoreHold::State state) {
  RestoreHold hold{restore_->id, node_.name, state, restore_->timeline};
  if (member_lease_ == 0) {
    restoreLog("cannot publish the restore record: no member lease yet", true);
    return;
  }
  restore_->key_value = encodeRestoreHold(hold);
  auto put = etcd_.put(restoreKey(site_.site.name), restore_->key_value, member_lease_);
  if (!put.ok) {
    restoreLog("publishing the restore record: " + put.error, true);
  }
}

void DbAgent::failRestore(const std::string& why) {
  restore_->error = why;
  restoreLog("failed: " + why, true);
  const bool held_others = restore_->step == RestoreStep::Holding || restore_->step == RestoreStep::Swapping ||
                           restore_->step == RestoreStep::Recovering;
  std::error_code ec;
  if (restoreOwnsPostgres()) {
    // The old directory back in place, started again: the site as it was.
    if (pg_->isRunning()) {
      pg_->stop(StopMode::Fast);
    }
    const fs::path data = pg_->options().data_dir;
    if (!restore_->aside.empty() && fs::exists(restore_->aside, ec)) {
      const fs::path failed = data.string() + ".restore-failed-" + stamp();
      fs::rename(data, failed, ec);
      fs::rename(restore_->aside, data, ec);
      restoreLog(ec ? "putting " + restore_->aside.string() + " back: " + ec.message()
                    : "the data before the restore is back in " + data.string() +
                          " (the failed copy kept in " + failed.string() + ")",
                 static_cast<bool>(ec));
      readSysid();
    }
  } else if (!restore_->staging.empty()) {
    fs::remove_all(restore_->staging, ec);  // nothing of it was used
  }
  restoreStep(RestoreStep::Failed);
  if (held_others) {
    putRestoreKey(RestoreHold::State::Failed);
  }
  if (backup_) {
    backup_->refreshSoon();
  }
  wake();
}

void DbAgent::driveRestore() {
  if (!restore_) {
    return;
  }
  Restore& r = *restore_;
  const core::TimePoint now = loop_.clock().now();
  if (r.step != RestoreStep::Done && r.step != RestoreStep::Failed && !elector_.isLeader()) {
    failRestore("this node lost the leader key");
    return;
  }
  switch (r.step) {
    case RestoreStep::Archiving: {
      if (r.switched_wal.empty()) {
        // Recovery stops at the first commit after the target; with none after it, PostgreSQL
        // would reach the end of the archive first and refuse to start. A transaction of ours
        // (an xid assigned, so it commits a record) comes after any target up to now.
        if (auto xact = pg_->query("SELECT pg_catalog.txid_current()"); !xact.ok) {
          failRestore("writing a commit past the target: " + xact.error);
          return;
        }
        auto rows = pg_->query("SELECT pg_walfile_name(pg_switch_wal() - 1)");
        if (!rows.ok || rows.value.empty() || rows.value[0].empty()) {
          failRestore("switching WAL: " + (rows.ok ? std::string("no answer") : rows.error));
          return;
        }
        r.switched_wal = rows.value[0][0];
        restoreLog("waiting for the archive to hold " + r.switched_wal);
        return;
      }
      auto archiver = readArchiver();
      if (archiver && archiver->last_archived_wal >= r.switched_wal) {
        restoreLog("the archive holds WAL up to " + archiver->last_archived_wal);
        restoreStep(RestoreStep::Staging);
        wake();
        return;
      }
      if (now - r.since > kArchiveWait) {
        // The target may still be covered by what was archived before.
        if (archiver && r.plan.time && archiver->last_archived_time >= *r.plan.time) {
          restoreLog("archiving is behind, but it reached the target already");
          restoreStep(RestoreStep::Staging);
          return;
        }
        failRestore("the archive did not get WAL up to now within " + std::to_string(kArchiveWait.count()) +
                    " s: archiving is failing (" + (archiver ? archiver->last_failed_wal : std::string("?")) + ")");
      }
      return;
    }
    case RestoreStep::Staging: {
      if (r.staging_started) {
        return;  // the thread posts its result
      }
      r.staging_started = true;
      std::error_code ec;
      fs::remove_all(r.staging, ec);
      if (Status made = preparePrivateDir(pg_->osUser(), r.staging); !made.ok) {
        failRestore(made.error);
        return;
      }
      restoreLog("pgBackRest restores " + r.plan.from.label + " into " + r.staging.string());
      const std::string id = r.id;
      std::thread([mailbox = forward_mailbox_, user = backup_->user(),
                   run = backup_->restoreRun(r.plan, r.staging, kStagingTimeout), plan = r.plan, id, this] {
        Status done = BackupManager::restoreResult(plan, runTool(user, run));
        std::lock_guard lock(mailbox->mutex);
        if (mailbox->loop != nullptr) {
          mailbox->loop->post([this, done, id] {
            if (restore_ && restore_->id == id && restore_->step == RestoreStep::Staging) {
              if (!done.ok) {
                failRestore(done.error);
                return;
              }
              restoreLog("the backup restored and checked");
              restoreStep(RestoreStep::Holding);
              putRestoreKey(RestoreHold::State::Switching);
              wake();
            }
          });
        }
      }).detach();
      return;
    }
    case RestoreStep::Holding: {
      std::vector<std::string> running;
      for (const MemberRecord& m : members_) {
        if (m.name != node_.name && m.role != "stopped") {
          running.push_back(m.name);
        }
      }
      if (!running.empty() && now - r.since < kHoldWait) {
        return;
      }
      if (!running.empty()) {
        restoreLog(fmt::format("{} did not stop within {} s; going on (they clone the restored leader once done)",
                               fmt::join(running, ", "), kHoldWait.count()));
      } else {
        restoreLog("the other db nodes stopped");
      }
      restoreStep(RestoreStep::Swapping);
      if (pg_->isRunning()) {
        if (Status stopped = pg_->stop(StopMode::Fast); !stopped.ok) {
          failRestore("stopping PostgreSQL: " + stopped.error);
          return;
        }
      }
      const fs::path data = pg_->options().data_dir;
      r.aside = data.string() + ".before-restore-" + r.id;
      std::error_code ec;
      fs::rename(data, r.aside, ec);
      if (ec) {
        r.aside.clear();
        failRestore("moving " + data.string() + " aside: " + ec.message());
        return;
      }
      fs::rename(r.staging, data, ec);
      if (ec) {
        failRestore("putting the restored copy in place: " + ec.message());
        return;
      }
      restoreLog("the data before the restore is kept in " + r.aside.string() + "; starting the restored copy");
      start_failures_ = 0;
      startPostgres("restored primary", [this, id = r.id](bool started) {
        if (!restore_ || restore_->id != id || restore_->step != RestoreStep::Swapping) {
          return;
        }
        if (!started) {
          failRestore("the restored copy did not start: " + last_start_error_);
          return;
        }
        restoreLog("replaying the archive to the target");
        restoreStep(RestoreStep::Recovering);
        wake();
      });
      return;
    }
    case RestoreStep::Swapping:
      return;  // the start runs as an operation
    case RestoreStep::Recovering: {
      if (!pg_->isRunning()) {
        failRestore("PostgreSQL stopped during recovery (see its log: was the target reached?)");
        return;
      }
      auto status = pg_->status();
      if (status.ok && !status.value.in_recovery) {
        // The recovery settings pgBackRest wrote have done their work.
        for (const char* setting : {"restore_command", "recovery_target_time", "recovery_target_action",
                                    "recovery_target", "recovery_target_timeline"}) {
          pg_->query(std::string("ALTER SYSTEM RESET ") + setting);
        }
        pg_->query("SELECT pg_reload_conf()");
        r.timeline = status.value.timeline;
        primary_data_ = true;
        slots_ok_ = false;
        checkpoint_pending_ = true;  // finishPromotion: CHECKPOINT, then the replicas' slots
        history_tli_ = 0;
        readSysid();
        restoreLog(fmt::format("promoted on timeline {} (was {})", r.timeline, r.timeline_before));
        pending_history_ =
            HistoryEntry{0, 0,
                         std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count(),
                         node_.name,
                         "restore of backup " + r.plan.from.label +
                             (r.plan.time ? " to " + formatUtc(*r.plan.time) : std::string(" to its end"))};
        history_attempts_ = 0;
        restoreStep(RestoreStep::Done);
        putRestoreKey(RestoreHold::State::Done);
        if (backup_) {
          backup_->refreshSoon();
          backup_->requestBackup(BackupType::Full);  // the new timeline's first backup
        }
        return;
      }
      if (now - r.since > kRecoveryWait) {
        failRestore("recovery did not end within " + std::to_string(kRecoveryWait.count()) + " s");
      }
      return;
    }
    case RestoreStep::Done: {
      // The key stays until every other member streams from us on the new timeline (or a while).
      if (!restore_key_ || restore_key_->id != r.id) {
        return;
      }
      bool all = true;
      for (const config::DbNode& n : site_.db.nodes) {
        const MemberRecord* m = findMember(members_, n.name);
        if (n.name != node_.name && (m == nullptr || m->role != "replica" || m->timeline != r.timeline)) {
          all = false;
        }
      }
      if (all || now - r.since > kKeepDoneKey) {
        auto deleted = etcd_.compareAndDelete(restoreKey(site_.site.name), r.key_value);
        if (deleted.ok) {
          restoreLog(all ? "every replica follows the restored leader" : "the restore record removed");
          restore_key_.reset();
        }
      }
      return;
    }
    case RestoreStep::Failed:
      return;
  }
}

}  // namespace fulcrum::db
