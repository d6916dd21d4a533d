#pragma once
// [db.backup] on one db node: the agent's hands on pgBackRest. While this node leads with a
// running primary, it creates the stanza, keeps the repository's catalog fresh (`info`), takes
// the backups the schedule calls for (or the operator asks for), from a healthy replica on this
// host when there is one, and lets pgBackRest apply the retention after each. It also watches the
// primary's archiver (pg_stat_archiver and the segments waiting in pg_wal/archive_status) so a
// failing archive is seen. Every tool runs in the background (db::ToolJob) as PostgreSQL's OS
// user, one at a time; the agent's loop polls them, never waits.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "db/backup_catalog.h"
#include "db/backup_repo.h"
#include "db/pg_process.h"
#include "metrics/prometheus.h"

namespace fulcrum::db {

// pg_stat_archiver on the primary, and what waits in pg_wal/archive_status.
struct ArchiverStatus {
  uint64_t archived_count = 0;
  uint64_t failed_count = 0;
  std::string last_archived_wal;
  int64_t last_archived_time = 0;  // unix seconds, 0 never
  std::string last_failed_wal;
  int64_t last_failed_time = 0;
  uint64_t ready_segments = 0;  // .ready files: WAL finished but not archived yet
  // The last attempt failed and none succeeded since (compared at PostgreSQL's microseconds: a
  // failure and a success often fall in the same second).
  bool failing = false;
};

// A replica on this host a backup may copy from (pgBackRest's --backup-standby).
struct LocalStandby {
  std::string name;
  std::filesystem::path data_dir;
  uint16_t port = 0;
  std::filesystem::path socket_dir;
};

class BackupManager {
 public:
  BackupManager(BackupRepo repo, config::DbBackup schedule, OsUser user, std::filesystem::path pg_data,
                uint16_t pg_port, std::filesystem::path pg_socket_dir);
  ~BackupManager();

  // Every control tick. `leading`: this node holds the lease and its primary runs and accepts
  // writes; `archiver`: that primary's archiver, when read; `standbys`: streaming replicas of it
  // on this host. Starts at most one tool; polls the one running.
  void tick(bool leading, const std::optional<ArchiverStatus>& archiver, const std::vector<LocalStandby>& standbys,
            std::chrono::system_clock::time_point now);
  // Leadership lost: a running backup is stopped (its lock released), the catalog kept.
  void stopJobs(const std::string& why);

  // The operator's `fulcrum backup`: taken at the next tick. Refused while one runs.
  Status requestBackup(BackupType type);
  // A backup runs or is asked for.
  bool busy() const { return (job_ != nullptr && job_->kind == JobKind::Backup) || requested_.has_value(); }

  const std::optional<BackupCatalog>& catalog() const { return catalog_; }
  // The catalog read again at the next tick (after a restore, say).
  void refreshSoon() { next_info_ = {}; }

  // Restore of `plan` into `target` (a fresh directory), with PostgreSQL told to stop at the
  // plan's time and promote. pgBackRest checks every file it copies, so a damaged backup fails
  // here, with its message.
  // The pgbackrest call, to run (runTool, as user()) on a thread of the caller's; judge its output
  // with restoreResult().
  ToolRun restoreRun(const RestorePlan& plan, const std::filesystem::path& target,
                     std::chrono::milliseconds timeout) const;
  static Status restoreResult(const RestorePlan& plan, const Result<ToolOutput>& out);

  // For a new replica: the newest backup of timeline `timeline` when it is at least
  // replica_from_backup_bytes (nullopt: clone with pg_basebackup). Reads the repository (blocking,
  // a fraction of a second); a repository that cannot be read says nullopt, with why in `why`.
  std::optional<BackupSet> backupForReplica(uint32_t timeline, std::string& why) const;
  // pgBackRest's restore of `from` as a standby into this node's (empty) data directory.
  std::vector<std::string> standbyRestoreArgs(const BackupSet& from) const;
  const OsUser& user() const { return user_; }

  // GET /backup and the /status field.
  nlohmann::json json(std::chrono::system_clock::time_point now) const;
  nlohmann::json statusJson() const;
  void writeMetrics(metrics::PrometheusWriter& w, std::string_view node) const;
  const std::optional<ArchiverStatus>& archiver() const { return archiver_; }
  const BackupRepo& repo() const { return repo_; }

 private:
  enum class JobKind { StanzaCreate, Info, ArchiveList, Backup };
  struct Running {
    JobKind kind;
    BackupType type = BackupType::Full;
    std::string from;  // "primary" or the standby's name
    std::chrono::system_clock::time_point started;
    std::unique_ptr<ToolJob> job;
  };
  std::vector<std::string> baseArgs() const;
  bool startJob(JobKind kind, std::vector<std::string> args, std::chrono::milliseconds timeout, BackupType type,
                std::string from, std::chrono::system_clock::time_point now);
  void finishJob(const ToolOutput& out, std::chrono::system_clock::time_point now);
  void startBackup(BackupType type, const std::vector<LocalStandby>& standbys, std::chrono::system_clock::time_point now);

  BackupRepo repo_;
  config::DbBackup schedule_;
  OsUser user_;
  std::filesystem::path pg_data_;
  uint16_t pg_port_;
  std::filesystem::path pg_socket_dir_;
  std::string pgbackrest_;  // absolute path of the tool

  std::unique_ptr<Running> job_;
  std::optional<BackupType> requested_;
  bool stanza_ok_ = false;
  std::optional<BackupCatalog> catalog_;
  std::optional<ArchiveGaps> gaps_;  // as of the last listing of the archive
  bool list_due_ = false;            // a listing follows each catalog read
  uint64_t seen_failed_ = 0;         // the archiver's failures as of the last catalog read
  bool was_failing_ = false;
  std::optional<ArchiverStatus> archiver_;
  std::chrono::system_clock::time_point next_info_{};
  std::chrono::system_clock::time_point next_try_{};  // after a failed backup or stanza-create
  std::chrono::seconds backoff_{0};
  bool standby_failed_ = false;  // the last try from a standby failed: the next goes to the primary

  // The last backup this agent ran (GET /backup "last"); its label once the catalog is read again.
  struct LastBackup {
    BackupType type = BackupType::Full;
    std::string from;
    bool ok = false;
    std::string error;
    std::string label;
    int64_t finished = 0;  // unix seconds
    double seconds = 0;
  };
  std::optional<LastBackup> last_;
  bool label_pending_ = false;

  // For /status and /metrics.
  std::string last_error_;
  std::chrono::system_clock::time_point last_error_time_{};
  std::optional<std::string> last_label_;
  std::chrono::system_clock::time_point last_success_{};
  double last_duration_s_ = 0;
  uint64_t backups_ok_[3] = {0, 0, 0};
  uint64_t backups_failed_[3] = {0, 0, 0};
};

}  // namespace fulcrum::db
