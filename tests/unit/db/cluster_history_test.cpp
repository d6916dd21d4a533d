// The history key: what the promoting agent writes, what garbage reads as, and the merge with the
// leader's own history file that `fulcrum db history` shows.
#include "db/cluster_history.h"

#include <gtest/gtest.h>

namespace fulcrum::db {
namespace {

TEST(ClusterHistoryTest, RoundTripsAndKeepsOneEntryPerTimeline) {
  std::vector<HistoryEntry> entries;
  entries = appendHistory(entries, {2, 0x3000148, 1764756000, "db-2", "failover: leader db-1's lease ended"});
  entries = appendHistory(entries, {3, 0x5000000, 1764757000, "db-1", "switchover from db-2"});
  // The same timeline written again (a retry after a lost answer) replaces, never duplicates.
  entries = appendHistory(entries, {3, 0x5000000, 1764757001, "db-1", "switchover from db-2"});
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].at, 1764757001);
  auto decoded = decodeHistory(encodeHistory(entries));
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(*decoded, entries);
}

TEST(ClusterHistoryTest, KeepsTheNewestEntriesOnly) {
  std::vector<HistoryEntry> entries;
  for (uint32_t tli = 2; tli < 2 + kMaxHistoryEntries + 10; ++tli) {
    entries = appendHistory(std::move(entries), {tli, tli, 0, "db-1", "failover"});
  }
  ASSERT_EQ(entries.size(), kMaxHistoryEntries);
  EXPECT_EQ(entries.front().timeline, 12u);
  EXPECT_EQ(entries.back().timeline, 2 + kMaxHistoryEntries + 9);
}

TEST(ClusterHistoryTest, GarbageReadsAsNothingAndBadEntriesAreSkipped) {
  EXPECT_FALSE(decodeHistory("not json").has_value());
  EXPECT_FALSE(decodeHistory(R"({"timeline":2})").has_value());
  EXPECT_FALSE(decodeHistory(std::string(kMaxHistoryBytes + 1, ' ')).has_value());
  auto decoded = decodeHistory(
      R"([{"timeline":0},{"timeline":-1},{"timeline":"2"},{"timeline":4294967296},7,)"
      R"({"timeline":3,"lsn":"garbage","at":"soon","leader":5,"reason":"failover"}])");
  ASSERT_TRUE(decoded.has_value());
  ASSERT_EQ(decoded->size(), 1u);
  EXPECT_EQ((*decoded)[0], (HistoryEntry{3, 0, 0, "", "failover"}));
}

TEST(ClusterHistoryTest, MergesTheHistoryFileWithTheKey) {
  // The leader is on timeline 4: its history file says 1 ended at 0/3000148, 2 at 0/5000000,
  // 3 at 0/7000000. The key knows only why 3 and 4 began (2 is older than the key), and has an
  // entry for a timeline of another branch (a restore) that is kept.
  const std::vector<TimelineSwitch> switches{{1, 0x3000148}, {2, 0x5000000}, {3, 0x7000000}};
  const std::vector<HistoryEntry> recorded{{3, 0x4ffffff, 100, "db-1", "switchover from db-2"},
                                           {4, 0, 200, "db-2", "failover: leader db-1's lease ended"},
                                           {9, 0x9000000, 300, "db-2", "restore of backup X"}};
  auto merged = mergeHistory(recorded, switches, 4);
  ASSERT_EQ(merged.size(), 5u);
  EXPECT_EQ(merged[0], (HistoryEntry{1, 0, 0, "", "initdb"}));
  EXPECT_EQ(merged[1], (HistoryEntry{2, 0x3000148, 0, "", ""}));
  EXPECT_EQ(merged[2], (HistoryEntry{3, 0x5000000, 100, "db-1", "switchover from db-2"}));  // the file's LSN
  EXPECT_EQ(merged[3], (HistoryEntry{4, 0x7000000, 200, "db-2", "failover: leader db-1's lease ended"}));
  EXPECT_EQ(merged[4].timeline, 9u);
  EXPECT_TRUE(mergeHistory({}, {}, 0).empty());
  EXPECT_EQ(mergeHistory({}, {}, 1).size(), 1u);
}

}  // namespace
}  // namespace fulcrum::db
