#include "db/backup_repo.h"

#include <fmt/format.h>

namespace fulcrum::db {

namespace {

// pgBackRest stanza names: letters, digits, '-' and '_' (a site name may also hold '.').
std::string stanzaName(const std::string& site) {
  std::string out = site;
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) {
      c = '-';
    }
  }
  return out.empty() ? "site" : out;
}

}  // namespace

BackupRepo backupRepo(const config::Site& site, const std::string& node) {
  const config::DbBackup& b = *site.db.backup;
  BackupRepo repo;
  repo.stanza = stanzaName(site.site.name);
  repo.repo = b.repo_path;
  repo.work = site.site.state_dir / node / "pgbackrest";
  repo.config = repo.work / "pgbackrest.conf";
  repo.retention_full = b.retention_full;
  repo.retention_diff = b.retention_diff;
  repo.archive_queue_max_bytes = b.archive_queue_max_bytes;
  return repo;
}

std::string pgbackrestConfig(const BackupRepo& repo, const std::filesystem::path& pg_data, uint16_t port,
                             const std::filesystem::path& socket_dir) {
  // Synchronous archive-push: its queue limit holds whatever the repository does (the
  // asynchronous mode's does not when one file keeps failing, pgBackRest 2.45).
  return fmt::format(
      "# Written by Fulcrum for this node ([db.backup]); rewritten at every start.\n"
      "[global]\n"
      "repo1-path={}\n"
      "repo1-retention-full={}\n"
      "repo1-retention-diff={}\n"
      "log-path={}\n"
      "lock-path={}\n"
      "spool-path={}\n"
      "log-level-console=warn\n"
      "log-level-file=info\n"
      "start-fast=y\n"
      "compress-type=lz4\n"
      "archive-push-queue-max={}\n"
      "\n"
      "[{}]\n"
      "pg1-path={}\n"
      "pg1-port={}\n"
      "pg1-socket-path={}\n",
      repo.repo.string(), repo.retention_full, repo.retention_diff, (repo.work / "log").string(),
      (repo.work / "lock").string(), (repo.work / "spool").string(), repo.archive_queue_max_bytes, repo.stanza,
      pg_data.string(), port, socket_dir.string());
}

Status prepareBackupRepo(const OsUser& user, const BackupRepo& repo, const std::string& config_text) {
  for (const std::filesystem::path& dir : {repo.repo, repo.work, repo.work / "log", repo.work / "lock", repo.work / "spool"}) {
    if (Status made = preparePrivateDir(user, dir); !made.ok) {
      return Status::failure("[db.backup]: " + made.error);
    }
  }
  return writeFileAs(user, repo.config, config_text, 0600);
}

std::string shellQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string archiveCommand(const BackupRepo& repo, const std::filesystem::path& pg_data) {
  return "pgbackrest --config=" + shellQuote(repo.config.string()) + " --stanza=" + shellQuote(repo.stanza) +
         " --pg1-path=" + shellQuote(pg_data.string()) + " archive-push %p";
}

}  // namespace fulcrum::db
