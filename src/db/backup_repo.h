#pragma once
// [db.backup]: how every node reaches the site's pgBackRest repository. Fulcrum configures,
// schedules and watches pgBackRest (Debian's `pgbackrest`); the backup format and the WAL
// archive are pgBackRest's own. Each node gets its own configuration file (its pg1 is itself)
// under state_dir, passed with --config on every call: the host's /etc/pgbackrest.conf and
// /tmp/pgbackrest are never used.
#include <cstdint>
#include <filesystem>
#include <string>

#include "config/config.h"
#include "db/pg_process.h"
#include "db/result.h"

namespace fulcrum::db {

struct BackupRepo {
  std::string stanza;            // the site's name, as pgBackRest takes it
  std::filesystem::path repo;    // [db.backup] repo_path
  std::filesystem::path work;    // this node's log, lock and spool directories
  std::filesystem::path config;  // this node's pgbackrest.conf
  uint32_t retention_full = 2;
  uint32_t retention_diff = 7;
  uint64_t archive_queue_max_bytes = uint64_t{1} << 30;
};

// The repository as node `node` sees it; the site must have [db.backup].
BackupRepo backupRepo(const config::Site& site, const std::string& node);

// pgbackrest.conf for a node whose data directory, port and socket directory are these (pg1).
std::string pgbackrestConfig(const BackupRepo& repo, const std::filesystem::path& pg_data, uint16_t port,
                             const std::filesystem::path& socket_dir);

// The node's archive_command: pushes each finished WAL segment to the repository. It names
// this node's data directory: PostgreSQL copies its settings to replicas and backups, so the
// command goes on the postmaster's command line, never into a configuration file.
std::string archiveCommand(const BackupRepo& repo, const std::filesystem::path& pg_data);

// Makes the repository and this node's work directories (owned by `user`, who runs PostgreSQL
// and pgBackRest) and writes its configuration file.
Status prepareBackupRepo(const OsUser& user, const BackupRepo& repo, const std::string& config_text);

// `text` quoted for /bin/sh (PostgreSQL runs archive_command through it).
std::string shellQuote(const std::string& text);

}  // namespace fulcrum::db
