#pragma once
// `fulcrum backup` and `fulcrum restore`: the operator's side of [db.backup]. Both talk to the
// leader's db agent (found by asking each agent's /status), with the admin token from
// state_dir/admin.token (and the operator's certificate under internal_tls): the agent runs
// pgBackRest, this command only asks and reports.
#include <chrono>
#include <string>

#include "config/config.h"

namespace fulcrum::site {

struct BackupOptions {
  std::string type = "diff";  // "full", "diff", "incr"
  bool list = false;          // print what can be restored instead
  bool json = false;          // --list as the agent's JSON
  std::chrono::seconds wait{3600};  // for the backup to finish
};

// Exit code 0 when the backup finished (or the list was printed), 1 otherwise.
int runBackupCommand(const config::Site& site, const BackupOptions& options);

struct RestoreOptions {
  std::string to;         // a time: "2026-12-03 10:15:00" (UTC unless an offset is given), "@UNIX"
  std::string to_backup;  // or a backup's label
  bool dry_run = false;
  std::chrono::seconds wait{3600};
};

int runRestoreCommand(const config::Site& site, const RestoreOptions& options);

}  // namespace fulcrum::site
