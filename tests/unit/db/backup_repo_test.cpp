// [db.backup]: the keys and their checks, and what each node hands pgBackRest (its own
// configuration file, an archive_command naming its own data directory, shell-quoted).
#include "db/backup_repo.h"

#include <gtest/gtest.h>

#include "config/loader.h"

namespace fulcrum::db {
namespace {

config::LoadResult load(const std::string& text) {
  return config::loadSiteString(text, "/srv/site/site.toml");
}

TEST(BackupConfig, DefaultsAndTheRepositoryUnderStateDir) {
  config::LoadResult r = load("[site]\nname = \"www.example.com\"\nstate_dir = \"/data/fulcrum\"\n[db.backup]\n");
  ASSERT_TRUE(r.ok()) << r.errors[0].toString();
  ASSERT_TRUE(r.site.db.backup.has_value());
  const config::DbBackup& b = *r.site.db.backup;
  EXPECT_EQ(b.repo_path, "/data/fulcrum/backup");
  EXPECT_EQ(b.full_every_hours, 168u);
  EXPECT_EQ(b.diff_every_hours, 24u);
  EXPECT_EQ(b.retention_full, 2u);
  EXPECT_TRUE(b.from_replica);
  EXPECT_FALSE(load("[db]\n").site.db.backup.has_value()) << "no [db.backup]: no archiving";
}

TEST(BackupConfig, BadValuesAreRefusedAtTheirKey) {
  config::LoadResult r = load("[db.backup]\nfull_every_hours = 24\ndiff_every_hours = 24\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].key, "db.backup.diff_every_hours");
  EXPECT_EQ(r.errors[0].line, 3u);
  r = load("[db.backup]\nretention_full = 0\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].key, "db.backup.retention_full");
  r = load("[db.backup]\narchive_queue_max_bytes = 1024\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].key, "db.backup.archive_queue_max_bytes");
  r = load("[site]\nstate_dir = \"/data/it's here\"\n[db.backup]\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].key, "site.state_dir");
  r = load("[db.backup]\nrepo_path = \"/mnt/$HOME\"\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].key, "db.backup.repo_path");
  r = load("[db.backup]\nschedule = \"daily\"\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].key, "db.backup.schedule");
}

TEST(BackupRepo, EachNodeHasItsOwnConfigurationAndArchiveCommand) {
  config::LoadResult r = load(
      "[site]\nname = \"www.example.com\"\nstate_dir = \"/data/fulcrum here\"\n"
      "[db.backup]\nrepo_path = \"/mnt/backups\"\nretention_full = 3\narchive_queue_max_bytes = 67108864\n");
  ASSERT_TRUE(r.ok()) << r.errors[0].toString();
  BackupRepo repo = backupRepo(r.site, "db-1");
  EXPECT_EQ(repo.stanza, "www-example-com");
  EXPECT_EQ(repo.config, "/data/fulcrum here/db-1/pgbackrest/pgbackrest.conf");
  std::string conf = pgbackrestConfig(repo, "/data/fulcrum here/db-1/data", 5432, "/data/fulcrum here/db-1/run");
  EXPECT_NE(conf.find("repo1-path=/mnt/backups\n"), std::string::npos) << conf;
  EXPECT_NE(conf.find("repo1-retention-full=3\n"), std::string::npos);
  EXPECT_NE(conf.find("archive-push-queue-max=67108864\n"), std::string::npos);
  EXPECT_NE(conf.find("lock-path=/data/fulcrum here/db-1/pgbackrest/lock\n"), std::string::npos);
  EXPECT_NE(conf.find("[www-example-com]\npg1-path=/data/fulcrum here/db-1/data\npg1-port=5432\n"), std::string::npos);
  EXPECT_EQ(archiveCommand(repo, "/data/fulcrum here/db-1/data"),
            "pgbackrest --config='/data/fulcrum here/db-1/pgbackrest/pgbackrest.conf' --stanza='www-example-com' "
            "--pg1-path='/data/fulcrum here/db-1/data' archive-push %p");
}

}  // namespace
}  // namespace fulcrum::db
