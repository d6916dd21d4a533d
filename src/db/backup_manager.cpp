#include "db/backup_manager.h"

#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

#include "core/log.h"

namespace fulcrum::db {

namespace {

using std::chrono::system_clock;
using namespace std::chrono_literals;

constexpr auto kInfoEvery = 60s;
constexpr auto kInfoSoon = 5s;
constexpr auto kInfoTimeout = std::chrono::milliseconds(60s);
constexpr auto kStanzaTimeout = std::chrono::milliseconds(120s);
constexpr auto kBackupTimeout = std::chrono::milliseconds(std::chrono::hours(6));
constexpr auto kMaxBackoff = std::chrono::seconds(30min);

std::string findPgbackrest() {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    const std::string path = std::string(dir) + "/pgbackrest";
    if (::access(path.c_str(), X_OK) == 0) {
      return path;
    }
  }
  return "/usr/bin/pgbackrest";
}

int64_t unixSeconds(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// The last non-empty lines of a tool's output: pgBackRest's own error ("ERROR: [041]: ...").
std::string lastLines(const ToolOutput& out) {
  std::string text = out.err.empty() ? out.out : out.err;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
    text.pop_back();
  }
  if (text.size() > 600) {
    text = "..." + text.substr(text.size() - 600);
  }
  if (out.timed_out) {
    return "timed out" + (text.empty() ? std::string() : ": " + text);
  }
  return "exit " + std::to_string(out.exit_code) + (text.empty() ? std::string() : ": " + text);
}

}  // namespace

BackupManager::BackupManager(BackupRepo repo, config::DbBackup schedule, OsUser user, std::filesystem::path pg_data,
                             uint16_t pg_port, std::filesystem::path pg_socket_dir)
    : repo_(std::move(repo)),
      schedule_(std::move(schedule)),
      user_(std::move(user)),
      pg_data_(std::move(pg_data)),
      pg_port_(pg_port),
      pg_socket_dir_(std::move(pg_socket_dir)),
      pgbackrest_(findPgbackrest()) {}

BackupManager::~BackupManager() = default;

std::vector<std::string> BackupManager::baseArgs() const {
  return {pgbackrest_, "--config=" + repo_.config.string(), "--stanza=" + repo_.stanza};
}

bool BackupManager::startJob(JobKind kind, std::vector<std::string> args, std::chrono::milliseconds timeout,
                             BackupType type, std::string from, system_clock::time_point now) {
  ToolRun run;
  run.argv = baseArgs();
  run.argv.insert(run.argv.end(), args.begin(), args.end());
  run.cwd = repo_.work;
  run.timeout = timeout;
  auto started = ToolJob::start(user_, std::move(run));
  if (!started.ok) {
    last_error_ = "pgbackrest: " + started.error;
    last_error_time_ = now;
    return false;
  }
  job_ = std::make_unique<Running>(Running{kind, type, std::move(from), now, std::move(started.value)});
  return true;
}

void BackupManager::tick(bool leading, const std::optional<ArchiverStatus>& archiver,
                         const std::vector<LocalStandby>& standbys, system_clock::time_point now) {
  archiver_ = leading ? archiver : std::nullopt;
  if (archiver_) {
    // Archiving failed since the last look, or works again: the catalog and its gaps are read
    // again soon, so a segment pgBackRest dropped shows within seconds, not at the next minute.
    const bool failing = archiver_->failing;
    if (archiver_->failed_count != seen_failed_ || failing != was_failing_) {
      seen_failed_ = archiver_->failed_count;
      was_failing_ = failing;
      next_info_ = std::min(next_info_, now + kInfoSoon);
    }
  }
  if (job_) {
    if (auto out = job_->job->poll()) {
      finishJob(*out, now);
    } else {
      return;
    }
  }
  if (!leading) {
    return;
  }
  if (!stanza_ok_) {
    if (now >= next_try_) {
      // Idempotent: creates the stanza, or checks that the repository's matches this database
      // (a repository of another cluster is refused, with pgBackRest's message).
      startJob(JobKind::StanzaCreate, {"stanza-create"}, kStanzaTimeout, BackupType::Full, "", now);
    }
    return;
  }
  if (!catalog_ || now >= next_info_) {
    startJob(JobKind::Info, {"info", "--output=json"}, kInfoTimeout, BackupType::Full, "", now);
    return;
  }
  if (list_due_) {
    list_due_ = false;
    if (!catalog_->archive_id.empty()) {
      startJob(JobKind::ArchiveList,
               {"repo-ls", "archive/" + repo_.stanza + "/" + catalog_->archive_id, "--recurse",
                "--filter=^[0-9A-F]{16}/[0-9A-F]{24}-"},
               kInfoTimeout, BackupType::Full, "", now);
      return;
    }
  }
  if (requested_) {
    const BackupType type = *requested_;
    requested_.reset();
    startBackup(type, standbys, now);
    return;
  }
  if (now < next_try_) {
    return;
  }
  if (auto due = dueBackup(*catalog_, schedule_, unixSeconds(now))) {
    log::info("backup: a {} backup is due by the [db.backup] schedule", backupTypeName(*due));
    startBackup(*due, standbys, now);
  }
}

void BackupManager::startBackup(BackupType type, const std::vector<LocalStandby>& standbys,
                                system_clock::time_point now) {
  std::vector<std::string> args = {"backup", std::string("--type=") + backupTypeName(type)};
  std::string from = "primary";
  if (schedule_.from_replica && !standby_failed_ && !standbys.empty()) {
    const LocalStandby& s = standbys.front();
    from = s.name;
    args.insert(args.end(), {"--backup-standby", "--pg2-path=" + s.data_dir.string(),
                             "--pg2-port=" + std::to_string(s.port), "--pg2-socket-path=" + s.socket_dir.string()});
  }
  log::info("backup: {} backup starting, copying from {}", backupTypeName(type), from);
  startJob(JobKind::Backup, std::move(args), kBackupTimeout, type, std::move(from), now);
}

void BackupManager::finishJob(const ToolOutput& out, system_clock::time_point now) {
  std::unique_ptr<Running> job = std::move(job_);
  const bool ok = out.exit_code == 0 && !out.timed_out;
  auto failed = [&](const std::string& what) {
    last_error_ = what + ": " + lastLines(out);
    last_error_time_ = now;
    backoff_ = std::min<std::chrono::seconds>(kMaxBackoff, backoff_ == 0s ? 30s : backoff_ * 2);
    next_try_ = now + backoff_;
    log::warn("backup: {} (next try in {} s)", last_error_, backoff_.count());
  };
  switch (job->kind) {
    case JobKind::StanzaCreate:
      if (ok) {
        stanza_ok_ = true;
        backoff_ = 0s;
        next_try_ = {};
        next_info_ = {};
        log::info("backup: stanza '{}' ready in {}", repo_.stanza, repo_.repo.string());
      } else {
        failed("stanza-create");
      }
      break;
    case JobKind::Info: {
      next_info_ = now + kInfoEvery;
      if (!ok) {
        last_error_ = "info: " + lastLines(out);
        last_error_time_ = now;
        break;
      }
      auto parsed = parseBackupInfo(out.out);
      if (!parsed.ok) {
        last_error_ = parsed.error;
        last_error_time_ = now;
        break;
      }
      catalog_ = std::move(parsed.value);
      list_due_ = true;
      if (label_pending_ && last_) {
        label_pending_ = false;
        if (const BackupSet* newest = newestBackup(*catalog_)) {
          last_->label = newest->label;
        }
      }
      if (!catalog_->stanza_ok) {
        stanza_ok_ = false;  // the repository was emptied or replaced: create it again
        next_try_ = {};
      }
      break;
    }
    case JobKind::ArchiveList:
      if (!ok) {
        last_error_ = "repo-ls: " + lastLines(out);
        last_error_time_ = now;
        break;
      }
      if (catalog_) {
        ArchiveGaps gaps = findArchiveGaps(*catalog_, out.out);
        if (gaps.missing != 0 && (!gaps_ || gaps_->missing != gaps.missing)) {
          log::warn("backup: {} WAL segment(s) missing from the archive since the newest full backup (first {}): "
                    "restores stop before them until the next full backup",
                    gaps.missing, gaps.first.empty() ? "?" : gaps.first.front());
        }
        gaps_ = std::move(gaps);
      }
      break;
    case JobKind::Backup: {
      const double seconds = std::chrono::duration<double>(now - job->started).count();
      if (!ok && job->from != "primary") {
        // The standby could not serve (not caught up, unreachable): the same backup again at once,
        // from the primary; the operator waiting for it sees only how that one ends.
        ++backups_failed_[static_cast<int>(job->type)];
        standby_failed_ = true;
        requested_ = job->type;
        log::warn("backup: {} backup from {} failed ({}); taking it from the primary", backupTypeName(job->type),
                  job->from, lastLines(out));
        break;
      }
      last_ = LastBackup{job->type, job->from, ok, ok ? "" : lastLines(out), "", unixSeconds(now), seconds};
      label_pending_ = ok;
      if (ok) {
        ++backups_ok_[static_cast<int>(job->type)];
        last_success_ = now;
        last_duration_s_ = seconds;
        backoff_ = 0s;
        next_try_ = {};
        standby_failed_ = false;
        next_info_ = {};  // the new label, the retention's effect
        log::info("backup: {} backup from {} done in {:.1f} s", backupTypeName(job->type), job->from, seconds);
      } else {
        ++backups_failed_[static_cast<int>(job->type)];
        failed(std::string(backupTypeName(job->type)) + " backup from " + job->from);
      }
      break;
    }
  }
}

void BackupManager::stopJobs(const std::string& why) {
  requested_.reset();
  if (job_) {
    log::warn("backup: stopping pgbackrest {} ({})", job_->kind == JobKind::Backup ? "backup" : "call", why);
    job_.reset();  // kills its process group
  }
  stanza_ok_ = false;  // checked again by the next leader term
}

Status BackupManager::requestBackup(BackupType type) {
  if (job_ && job_->kind == JobKind::Backup) {
    return Status::failure(std::string("a ") + backupTypeName(job_->type) + " backup is already running");
  }
  if (requested_) {
    return Status::failure("a backup is already requested");
  }
  requested_ = type;
  return Status::success();
}

ToolRun BackupManager::restoreRun(const RestorePlan& plan, const std::filesystem::path& target,
                                  std::chrono::milliseconds timeout) const {
  ToolRun run;
  run.argv = baseArgs();
  // --job-retry=0: a file that fails its checksum will not mend in 15 s.
  run.argv.insert(run.argv.end(),
                  {"--pg1-path=" + target.string(), "restore", "--set=" + plan.from.label, "--job-retry=0"});
  if (plan.time) {
    run.argv.insert(run.argv.end(), {"--type=time", "--target=" + formatUtc(*plan.time)});
  } else {
    run.argv.push_back("--type=immediate");
  }
  run.argv.push_back("--target-action=promote");
  // The copy is restored beside the data directory and then put in its place: its
  // restore_command must name the place it will run from, not the staging one.
  // pgBackRest writes the value between single quotes without doubling any inside: the
  // paths are double-quoted for the shell instead (state_dir paths hold no '"', '$' or '`').
  run.argv.push_back("--recovery-option=restore_command=" + pgbackrest_ + " --config=\"" + repo_.config.string() +
                     "\" --stanza=" + repo_.stanza + " --pg1-path=\"" + pg_data_.string() +
                     "\" archive-get %f \"%p\"");
  run.cwd = repo_.work;
  run.timeout = timeout;
  return run;
}

Status BackupManager::restoreResult(const RestorePlan& plan, const Result<ToolOutput>& out) {
  if (!out.ok) {
    return Status::failure("pgbackrest restore: " + out.error);
  }
  if (out.value.exit_code != 0 || out.value.timed_out) {
    return Status::failure("pgbackrest restore of " + plan.from.label + ": " + lastLines(out.value));
  }
  return Status::success();
}

std::optional<BackupSet> BackupManager::backupForReplica(uint32_t timeline, std::string& why) const {
  if (schedule_.replica_from_backup_bytes == 0) {
    why = "replica_from_backup_bytes = 0";
    return std::nullopt;
  }
  ToolRun run;
  run.argv = baseArgs();
  run.argv.insert(run.argv.end(), {"info", "--output=json"});
  run.cwd = repo_.work;
  run.timeout = kInfoTimeout;
  auto out = runTool(user_, run);
  if (!out.ok || out.value.exit_code != 0) {
    why = "the repository cannot be read (" + (out.ok ? lastLines(out.value) : out.error) + ")";
    return std::nullopt;
  }
  auto catalog = parseBackupInfo(out.value.out);
  if (!catalog.ok) {
    why = catalog.error;
    return std::nullopt;
  }
  // Only a backup of the leader's own timeline: one from before a restore or a failover may hold
  // WAL the new timeline never had, and PostgreSQL would refuse to follow it.
  for (auto it = catalog.value.backups.rbegin(); it != catalog.value.backups.rend(); ++it) {
    if (it->error || it->wal_start.size() < 8) {
      continue;
    }
    const uint32_t tli = static_cast<uint32_t>(std::strtoul(it->wal_start.substr(0, 8).c_str(), nullptr, 16));
    if (tli != timeline) {
      why = "the newest backup is of timeline " + std::to_string(tli) + ", the leader's " + std::to_string(timeline);
      return std::nullopt;
    }
    if (it->size < schedule_.replica_from_backup_bytes) {
      why = fmt::format("the database ({} bytes) is under replica_from_backup_bytes", it->size);
      return std::nullopt;
    }
    return *it;
  }
  why = "no backup in the repository";
  return std::nullopt;
}

std::vector<std::string> BackupManager::standbyRestoreArgs(const BackupSet& from) const {
  std::vector<std::string> args = baseArgs();
  args.insert(args.end(), {"restore", "--set=" + from.label, "--type=standby", "--target-timeline=latest",
                           "--job-retry=0"});
  return args;
}

nlohmann::json BackupManager::statusJson() const {
  nlohmann::json j;
  j["stanza"] = repo_.stanza;
  j["repo"] = repo_.repo.string();
  j["stanza_ok"] = stanza_ok_;
  if (job_) {
    const char* kind = job_->kind == JobKind::Backup        ? "backup"
                       : job_->kind == JobKind::Info        ? "info"
                       : job_->kind == JobKind::ArchiveList ? "repo-ls"
                                                            : "stanza-create";
    j["running"] = {{"what", kind},
                    {"type", job_->kind == JobKind::Backup ? backupTypeName(job_->type) : ""},
                    {"from", job_->from},
                    {"seconds", std::chrono::duration<double>(system_clock::now() - job_->started).count()}};
  } else {
    j["running"] = nullptr;
  }
  if (last_) {
    j["last"] = {{"type", backupTypeName(last_->type)},
                 {"from", last_->from},
                 {"ok", last_->ok},
                 {"error", last_->error},
                 {"label", label_pending_ ? nlohmann::json(nullptr) : nlohmann::json(last_->label)},
                 {"finished_unix", last_->finished},
                 {"seconds", last_->seconds}};
  } else {
    j["last"] = nullptr;
  }
  j["requested"] = requested_ ? nlohmann::json(backupTypeName(*requested_)) : nlohmann::json(nullptr);
  j["last_error"] = last_error_.empty() ? nlohmann::json(nullptr) : nlohmann::json(last_error_);
  j["last_error_at"] = last_error_.empty() ? nlohmann::json(nullptr) : nlohmann::json(unixSeconds(last_error_time_));
  if (archiver_) {
    const ArchiverStatus& a = *archiver_;
    j["archive"] = {{"ok", !a.failing},
                    {"archived", a.archived_count},
                    {"failed", a.failed_count},
                    {"ready_segments", a.ready_segments},
                    {"last_archived_wal", a.last_archived_wal},
                    {"last_archived_at", a.last_archived_time},
                    {"last_failed_wal", a.last_failed_wal},
                    {"last_failed_at", a.last_failed_time}};
  } else {
    j["archive"] = nullptr;
  }
  return j;
}

nlohmann::json BackupManager::json(system_clock::time_point now) const {
  nlohmann::json j = statusJson();
  nlohmann::json list = nlohmann::json::array();
  if (catalog_) {
    for (const BackupSet& b : catalog_->backups) {
      list.push_back({{"label", b.label},
                      {"type", backupTypeName(b.type)},
                      {"start", formatUtc(b.start)},
                      {"stop", formatUtc(b.stop)},
                      {"start_unix", b.start},
                      {"stop_unix", b.stop},
                      {"prior", b.prior.empty() ? nlohmann::json(nullptr) : nlohmann::json(b.prior)},
                      {"size", b.size},
                      {"repo_size", b.repo_size},
                      {"repo_delta", b.repo_delta},
                      {"wal_start", b.wal_start},
                      {"wal_stop", b.wal_stop},
                      {"error", b.error}});
    }
    j["wal"] = {{"min", catalog_->wal_min},
                {"max", catalog_->wal_max},
                {"missing", gaps_ ? nlohmann::json(gaps_->missing) : nlohmann::json(nullptr)},
                {"first_missing", gaps_ ? nlohmann::json(gaps_->first) : nlohmann::json::array()}};
    j["catalog_status"] = catalog_->status_message;
  } else {
    j["wal"] = nullptr;
  }
  j["backups"] = std::move(list);
  // The moments a restore can reach: from the oldest backup's end to the last archived WAL.
  if (catalog_ && !catalog_->backups.empty()) {
    int64_t to = catalog_->backups.back().stop;
    if (archiver_ && archiver_->last_archived_time > to) {
      to = archiver_->last_archived_time;
    }
    j["recoverable"] = {{"from", formatUtc(catalog_->backups.front().stop)}, {"to", formatUtc(to)}};
  } else {
    j["recoverable"] = nullptr;
  }
  j["now"] = formatUtc(unixSeconds(now));
  return j;
}

void BackupManager::writeMetrics(metrics::PrometheusWriter& w, std::string_view node) const {
  auto gauge = [&](std::string_view name, std::string_view help, double value) {
    w.family(name, "gauge", help);
    w.sample(name, {{"node", node}}, value);
  };
  if (archiver_) {
    const ArchiverStatus& a = *archiver_;
    w.family("fulcrum_db_archive_archived_total", "counter",
             "WAL segments the primary archived (pg_stat_archiver, since its start)");
    w.sample("fulcrum_db_archive_archived_total", {{"node", node}}, a.archived_count);
    w.family("fulcrum_db_archive_failed_total", "counter",
             "failed attempts to archive a WAL segment (pg_stat_archiver, since its start)");
    w.sample("fulcrum_db_archive_failed_total", {{"node", node}}, a.failed_count);
    gauge("fulcrum_db_archive_ready_segments", "WAL segments finished but not archived yet (pg_wal/archive_status)",
          static_cast<double>(a.ready_segments));
    gauge("fulcrum_db_archive_last_success_timestamp_seconds", "when the primary last archived a segment (0 never)",
          static_cast<double>(a.last_archived_time));
    gauge("fulcrum_db_archive_last_failure_timestamp_seconds", "when archiving last failed (0 never)",
          static_cast<double>(a.last_failed_time));
    gauge("fulcrum_db_archive_failing", "1 while the primary's last archiving attempt failed",
          a.failing ? 1 : 0);
  }
  gauge("fulcrum_db_backup_running", "1 while this node runs a pgBackRest backup",
        job_ && job_->kind == JobKind::Backup ? 1 : 0);
  w.family("fulcrum_db_backups_taken_total", "counter", "pgBackRest backups this agent ran, by type and result");
  for (BackupType t : {BackupType::Full, BackupType::Diff, BackupType::Incr}) {
    w.sample("fulcrum_db_backups_taken_total", {{"node", node}, {"type", backupTypeName(t)}, {"result", "ok"}},
             backups_ok_[static_cast<int>(t)]);
    w.sample("fulcrum_db_backups_taken_total", {{"node", node}, {"type", backupTypeName(t)}, {"result", "failed"}},
             backups_failed_[static_cast<int>(t)]);
  }
  if (catalog_) {
    gauge("fulcrum_db_backups", "backups in the repository (as last read)", static_cast<double>(catalog_->backups.size()));
    uint64_t bytes = 0;
    for (const BackupSet& b : catalog_->backups) {
      bytes += b.repo_size;
    }
    if (gaps_) {
      gauge("fulcrum_db_archive_missing_segments",
            "WAL segments missing from the archive since the newest full backup began (restores stop before them)",
            static_cast<double>(gaps_->missing));
    }
    gauge("fulcrum_db_backup_repo_bytes", "bytes the repository's backups take (WAL archive not counted)",
          static_cast<double>(bytes));
    w.family("fulcrum_db_backup_last_timestamp_seconds", "gauge",
             "when the newest backup of each type in the repository ended (0: none)");
    for (BackupType t : {BackupType::Full, BackupType::Diff}) {
      int64_t at = 0;
      for (const BackupSet& b : catalog_->backups) {
        if (b.type == t) {
          at = std::max(at, b.stop);
        }
      }
      w.sample("fulcrum_db_backup_last_timestamp_seconds", {{"node", node}, {"type", backupTypeName(t)}},
               static_cast<double>(at));
    }
  }
}

}  // namespace fulcrum::db
