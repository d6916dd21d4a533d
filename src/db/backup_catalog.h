#pragma once
// What the site's pgBackRest repository holds, as `pgbackrest info --output=json` tells it, and
// the decisions read from it: which backup is due by the [db.backup] schedule, and which backup
// a point-in-time restore starts from. Pure functions over parsed data (unit-tested); the agent
// runs the tools (backup_manager.h).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "db/result.h"

namespace fulcrum::db {

enum class BackupType { Full, Diff, Incr };
const char* backupTypeName(BackupType type);  // "full", "diff", "incr" (pgBackRest's words)
std::optional<BackupType> parseBackupType(std::string_view text);

struct BackupSet {
  std::string label;  // "20261203-101500F", "20261203-101500F_20261203-121500D"
  BackupType type = BackupType::Full;
  int64_t start = 0;  // unix seconds
  int64_t stop = 0;   // the backup is consistent from here: the earliest moment it restores to
  std::string wal_start, wal_stop;  // the first and last WAL segment it needs
  std::string prior;                // the backup a diff/incr builds on ("" for a full one)
  uint64_t size = 0;                // database size
  uint64_t repo_size = 0;           // bytes in the repository (compressed), of the whole set it restores
  uint64_t repo_delta = 0;          // of those, what this backup itself stored
  bool error = false;               // pgBackRest found page checksum errors while copying
};

struct BackupCatalog {
  bool stanza_ok = false;  // the stanza exists (status code 0 or 2: "no valid backups")
  int status_code = -1;    // pgBackRest's status code (0 ok, 1 missing stanza path, 2 no valid backup, ...)
  std::string status_message;
  bool locked = false;                 // a backup holds the stanza's lock now
  std::vector<BackupSet> backups;      // oldest first
  std::string wal_min, wal_max;        // the archive's range on the current database ("" when empty)
  std::string archive_id;              // that archive's directory ("15-1")
};

// Segments missing from the archive since the newest full backup began: the moments after the
// first one cannot be restored (pgBackRest dropped WAL when its queue was full, or a primary died
// before it archived its last segments). One entry per missing segment number (16 MiB segments,
// PostgreSQL's default, which Fulcrum's initdb keeps), as the segment name on the newest
// timeline that has segments around it.
struct ArchiveGaps {
  uint64_t missing = 0;
  std::vector<std::string> first;  // the first few missing, in order
};
// `listing`: `pgbackrest repo-ls archive/STANZA/ID --recurse` (text, one path per line).
ArchiveGaps findArchiveGaps(const BackupCatalog& catalog, std::string_view listing);

// Parses `pgbackrest info --output=json --stanza=S` (an array of one stanza).
Result<BackupCatalog> parseBackupInfo(std::string_view json);

// The newest backup (any type), and the newest full one; nullptr when none.
const BackupSet* newestBackup(const BackupCatalog& catalog);
const BackupSet* newestFull(const BackupCatalog& catalog);

// The backup the schedule calls for at `now` (unix seconds): a full one when there is none or
// the newest is older than full_every_hours, a differential one when the newest backup of any
// type is older than diff_every_hours (0: none); nullopt when nothing is due.
std::optional<BackupType> dueBackup(const BackupCatalog& catalog, const config::DbBackup& schedule, int64_t now);

// A restore target, as the operator gives it.
struct RestoreTarget {
  std::optional<int64_t> time;  // unix seconds (--to)
  std::string backup;           // a label (--to-backup): the moment that backup ends
};

// What a restore will do: the backup it starts from and the moment it stops at.
struct RestorePlan {
  BackupSet from;
  std::optional<int64_t> time;  // replay the archive up to here; nullopt: to the backup's end
};

// Chooses the backup for `target`, or says why it cannot be restored: a time before the oldest
// backup ended, a time in the future (past `now`), a label that is not in the repository.
Result<RestorePlan> planRestore(const BackupCatalog& catalog, const RestoreTarget& target, int64_t now);

// "2026-12-03 10:15:00+00" (UTC), as PostgreSQL's recovery_target_time and the CLI take it.
std::string formatUtc(int64_t unix_seconds);
// Parses "2026-12-03 10:15:00", "2026-12-03T10:15:00Z", with an optional "+HH[:MM]"/"-HH[:MM]"
// offset (none: UTC), or "@1701598500" (unix seconds).
std::optional<int64_t> parseTime(std::string_view text);

}  // namespace fulcrum::db
