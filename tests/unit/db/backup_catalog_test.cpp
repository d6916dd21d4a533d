// The repository as `pgbackrest info --output=json` tells it, the schedule read from it, and the
// backup a point-in-time restore starts from.
#include "db/backup_catalog.h"

#include <gtest/gtest.h>

namespace fulcrum::db {
namespace {

// Trimmed from pgBackRest 2.45's answer for a stanza with a full and a differential backup.
constexpr const char* kInfo = R"([{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1",
  "max":"000000020000000000000009","min":"000000010000000000000003"}],
  "backup":[
   {"archive":{"start":"000000010000000000000005","stop":"000000010000000000000005"},
    "database":{"id":1,"repo-key":1},"error":false,
    "info":{"delta":33554432,"repository":{"delta":4194304,"size":4194304},"size":33554432},
    "label":"20261203-100000F_20261203-120000D","lsn":{"start":"0/5000028","stop":"0/5000100"},
    "prior":"20261203-100000F","reference":["20261203-100000F"],
    "timestamp":{"start":1764763200,"stop":1764763210},"type":"diff"},
   {"archive":{"start":"000000010000000000000003","stop":"000000010000000000000003"},
    "database":{"id":1,"repo-key":1},"error":false,
    "info":{"delta":33554432,"repository":{"delta":4194304,"size":4194304},"size":33554432},
    "label":"20261203-100000F","lsn":{"start":"0/3000028","stop":"0/3000100"},
    "prior":null,"reference":null,"timestamp":{"start":1764756000,"stop":1764756006},"type":"full"}],
  "cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7312345678901234567,"version":"15"}],
  "name":"site","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],
  "status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}])";

TEST(BackupCatalogTest, ParsesBackupsOldestFirstAndTheArchiveRange) {
  auto parsed = parseBackupInfo(kInfo);
  ASSERT_TRUE(parsed.ok) << parsed.error;
  const BackupCatalog& c = parsed.value;
  EXPECT_TRUE(c.stanza_ok);
  EXPECT_FALSE(c.locked);
  ASSERT_EQ(c.backups.size(), 2u);
  EXPECT_EQ(c.backups[0].label, "20261203-100000F");
  EXPECT_EQ(c.backups[0].type, BackupType::Full);
  EXPECT_EQ(c.backups[0].stop, 1764756006);
  EXPECT_EQ(c.backups[1].type, BackupType::Diff);
  EXPECT_EQ(c.backups[1].prior, "20261203-100000F");
  EXPECT_EQ(c.backups[1].repo_size, 4194304u);
  EXPECT_EQ(c.backups[1].repo_delta, 4194304u);
  EXPECT_EQ(c.wal_min, "000000010000000000000003");
  EXPECT_EQ(c.wal_max, "000000020000000000000009");
  EXPECT_EQ(newestFull(c)->label, "20261203-100000F");
  EXPECT_EQ(newestBackup(c)->type, BackupType::Diff);
}

TEST(BackupCatalogTest, AStanzaWithoutBackupsOrWithoutARepositoryPath) {
  auto empty = parseBackupInfo(
      R"([{"archive":[],"backup":[],"name":"site","status":{"code":2,"message":"no valid backups"}}])");
  ASSERT_TRUE(empty.ok);
  EXPECT_TRUE(empty.value.stanza_ok);
  EXPECT_TRUE(empty.value.backups.empty());
  auto missing = parseBackupInfo(R"([{"name":"site","status":{"code":1,"message":"missing stanza path"}}])");
  ASSERT_TRUE(missing.ok);
  EXPECT_FALSE(missing.value.stanza_ok);
  EXPECT_FALSE(parseBackupInfo("{}").ok);
  EXPECT_FALSE(parseBackupInfo("not json").ok);
  // Entries without a label or with an unknown type are skipped, not believed.
  auto odd = parseBackupInfo(R"([{"backup":[{"type":"full"},{"label":"x","type":"weird"},7],"status":{"code":0}}])");
  ASSERT_TRUE(odd.ok);
  EXPECT_TRUE(odd.value.backups.empty());
}

TEST(BackupCatalogTest, TheScheduleCallsForAFullThenDifferentials) {
  config::DbBackup schedule;
  schedule.full_every_hours = 168;
  schedule.diff_every_hours = 24;
  BackupCatalog c;
  c.stanza_ok = true;
  EXPECT_EQ(dueBackup(c, schedule, 1000000), BackupType::Full);  // none yet
  const int64_t t0 = 1764756000;
  c.backups.push_back(BackupSet{"F1", BackupType::Full, t0, t0 + 10});
  EXPECT_EQ(dueBackup(c, schedule, t0 + 3600), std::nullopt);
  EXPECT_EQ(dueBackup(c, schedule, t0 + 24 * 3600), BackupType::Diff);
  c.backups.push_back(BackupSet{"F1_D1", BackupType::Diff, t0 + 24 * 3600, t0 + 24 * 3600 + 5});
  EXPECT_EQ(dueBackup(c, schedule, t0 + 30 * 3600), std::nullopt);
  EXPECT_EQ(dueBackup(c, schedule, t0 + 168 * 3600), BackupType::Full);
  schedule.diff_every_hours = 0;  // fulls only
  EXPECT_EQ(dueBackup(c, schedule, t0 + 100 * 3600), std::nullopt);
}

TEST(BackupCatalogTest, ARestoreStartsFromTheNewestBackupConsistentByTheTarget) {
  BackupCatalog c;
  c.stanza_ok = true;
  c.backups.push_back(BackupSet{"F1", BackupType::Full, 1000, 1010});
  c.backups.push_back(BackupSet{"F1_D1", BackupType::Diff, 2000, 2010});
  auto plan = planRestore(c, RestoreTarget{1500, ""}, 5000);
  ASSERT_TRUE(plan.ok) << plan.error;
  EXPECT_EQ(plan.value.from.label, "F1");
  EXPECT_EQ(plan.value.time, 1500);
  plan = planRestore(c, RestoreTarget{2010, ""}, 5000);
  ASSERT_TRUE(plan.ok);
  EXPECT_EQ(plan.value.from.label, "F1_D1");
  // Before the oldest backup ended, or in the future: refused with the reason.
  EXPECT_NE(planRestore(c, RestoreTarget{1005, ""}, 5000).error.find("before the oldest backup"), std::string::npos);
  EXPECT_NE(planRestore(c, RestoreTarget{6000, ""}, 5000).error.find("future"), std::string::npos);
  // By label: that backup, to its end.
  plan = planRestore(c, RestoreTarget{std::nullopt, "F1"}, 5000);
  ASSERT_TRUE(plan.ok);
  EXPECT_EQ(plan.value.from.label, "F1");
  EXPECT_FALSE(plan.value.time);
  EXPECT_FALSE(planRestore(c, RestoreTarget{std::nullopt, "nope"}, 5000).ok);
  // A backup pgBackRest copied with checksum errors is never chosen.
  c.backups[1].error = true;
  plan = planRestore(c, RestoreTarget{3000, ""}, 5000);
  ASSERT_TRUE(plan.ok);
  EXPECT_EQ(plan.value.from.label, "F1");
  EXPECT_FALSE(planRestore(c, RestoreTarget{std::nullopt, "F1_D1"}, 5000).ok);
  EXPECT_FALSE(planRestore(BackupCatalog{true, 2}, RestoreTarget{3000, ""}, 5000).ok);
}

TEST(BackupCatalogTest, SegmentsMissingSinceTheNewestFullBackupAreFound) {
  BackupCatalog c;
  c.stanza_ok = true;
  BackupSet full{"F1", BackupType::Full, 1000, 1010};
  full.wal_start = "0000000100000000000000FE";
  c.backups.push_back(full);
  c.wal_max = "000000020000000100000003";
  // FE, FF, then log 1: 00 on timeline 1, 01 (the promotion's) and 03 on timeline 2; 02 dropped.
  const std::string listing =
      "0000000100000000/0000000100000000000000FD-aaaa.lz4\n"
      "0000000100000000/0000000100000000000000FE-bbbb.lz4\n"
      "0000000100000000/0000000100000000000000FE.00000028.backup\n"
      "0000000100000000/0000000100000000000000FF-cccc.lz4\n"
      "0000000100000001/000000010000000100000000-dddd.lz4\n"
      "0000000100000001/000000010000000100000001.partial-eeee.lz4\n"
      "0000000200000001/000000020000000100000001-ffff.lz4\n"
      "0000000200000001/000000020000000100000003-0000.lz4\n";
  ArchiveGaps gaps = findArchiveGaps(c, listing);
  EXPECT_EQ(gaps.missing, 1u);
  ASSERT_EQ(gaps.first.size(), 1u);
  EXPECT_EQ(gaps.first[0], "000000020000000100000002");
  // The whole run present: no gap; nothing before the full backup counts.
  EXPECT_EQ(findArchiveGaps(c, listing + "0000000200000001/000000020000000100000002-1111.lz4\n").missing, 0u);
  // No full backup, or names that are not segments: nothing claimed.
  EXPECT_EQ(findArchiveGaps(BackupCatalog{}, listing).missing, 0u);
  c.wal_max = "garbage";
  EXPECT_EQ(findArchiveGaps(c, listing).missing, 0u);
}

TEST(BackupCatalogTest, TimesAreReadInUtcUnlessAnOffsetIsGiven) {
  EXPECT_EQ(parseTime("2026-12-03 10:15:00"), 1796292900);
  EXPECT_EQ(parseTime("2026-12-03T10:15:00Z"), 1796292900);
  EXPECT_EQ(parseTime("2026-12-03 11:15:00+01:00"), 1796292900);
  EXPECT_EQ(parseTime("2026-12-03 05:15:00-0500"), 1796292900);
  EXPECT_EQ(parseTime("2026-12-03 10:15:00.123456+00"), 1796292900);
  EXPECT_EQ(parseTime("@1796292900"), 1796292900);
  EXPECT_EQ(formatUtc(1796292900), "2026-12-03 10:15:00+00");
  EXPECT_EQ(parseTime(formatUtc(1796292900)), 1796292900);
  for (const char* bad : {"", "yesterday", "2026-13-03 10:15:00", "2026-12-03", "2026-12-03 10:15:00 junk",
                          "@", "@-5", "2026-12-03 10:15:00+99"}) {
    EXPECT_FALSE(parseTime(bad)) << bad;
  }
}

}  // namespace
}  // namespace fulcrum::db
