#include "lb/site_history.h"

#include <gtest/gtest.h>

namespace fulcrum::lb {
namespace {

TEST(RingTest, KeepsTheNewestInOrderOnceFull) {
  Ring<int> ring(3);
  EXPECT_TRUE(ring.empty());
  for (int i = 1; i <= 5; ++i) {
    ring.push(i);
  }
  ASSERT_EQ(ring.size(), 3u);
  EXPECT_EQ(ring[0], 3);
  EXPECT_EQ(ring[1], 4);
  EXPECT_EQ(ring[2], 5);
  EXPECT_EQ(ring.back(), 5);
}

TEST(RingTest, PartlyFilled) {
  Ring<int> ring(4);
  ring.push(7);
  ring.push(8);
  ASSERT_EQ(ring.size(), 2u);
  EXPECT_EQ(ring[0], 7);
  EXPECT_EQ(ring.back(), 8);
}

TEST(StateLogTest, LogsChangesNotRepeats) {
  StateLog log(10, 4, 60000);
  EXPECT_FALSE(log.observe("web-01", "up", NodeStatus::Ok, "", 1000));  // healthy first sighting
  EXPECT_FALSE(log.observe("web-01", "up", NodeStatus::Ok, "", 2000));
  EXPECT_TRUE(log.observe("web-01", "down", NodeStatus::Down, "connect: Connection refused", 3000));
  ASSERT_EQ(log.changes().size(), 1u);
  const StateChange& c = log.changes()[0];
  EXPECT_EQ(c.node, "web-01");
  EXPECT_EQ(c.from, "up");
  EXPECT_EQ(c.to, "down");
  EXPECT_EQ(c.reason, "connect: Connection refused");
  EXPECT_EQ(c.t_ms, 3000);
  EXPECT_FALSE(c.flapping);
  EXPECT_EQ(log.since("web-01"), 3000);
}

TEST(StateLogTest, AFailingFirstSightingIsLogged) {
  StateLog log(10, 4, 60000);
  EXPECT_TRUE(log.observe("db-2", "down", NodeStatus::Down, "timeout after 1000 ms", 500));
  EXPECT_EQ(log.changes()[0].from, "");
  EXPECT_EQ(log.since("db-2"), 500);
}

TEST(StateLogTest, TheLogIsBounded) {
  StateLog log(3, 100, 60000);
  log.observe("n", "a", NodeStatus::Ok, "", 0);
  for (int i = 1; i <= 10; ++i) {
    log.observe("n", i % 2 ? "b" : "a", NodeStatus::Ok, "", i * 1000);
  }
  ASSERT_EQ(log.changes().size(), 3u);
  EXPECT_EQ(log.changes()[0].t_ms, 8000);
  EXPECT_EQ(log.changes().back().t_ms, 10000);
}

TEST(StateLogTest, FlappingIsNChangesWithinTheWindow) {
  StateLog log(50, 3, 10000);
  log.observe("web-02", "up", NodeStatus::Ok, "", 0);
  log.observe("web-02", "down", NodeStatus::Down, "HTTP 500", 1000);
  log.observe("web-02", "up", NodeStatus::Ok, "HTTP 200", 2000);
  EXPECT_FALSE(log.flapping("web-02", 2000));
  EXPECT_EQ(log.recentChanges("web-02", 2000), 2u);
  log.observe("web-02", "down", NodeStatus::Down, "HTTP 500", 3000);
  EXPECT_TRUE(log.flapping("web-02", 3000));
  EXPECT_TRUE(log.changes().back().flapping);
  EXPECT_FALSE(log.changes()[0].flapping);
  // Quiet for the window: no longer flapping, and the next change alone does not make it so.
  EXPECT_TRUE(log.flapping("web-02", 10999));
  EXPECT_FALSE(log.flapping("web-02", 13000));
  log.observe("web-02", "up", NodeStatus::Ok, "HTTP 200", 14000);
  EXPECT_FALSE(log.changes().back().flapping);
  EXPECT_FALSE(log.flapping("other", 14000));
}

TEST(SummaryTest, AllHealthy) {
  std::vector<NodeView> nodes = {{"lb-1", "up", NodeStatus::Ok, "", 0, false},
                                 {"db-2", "replica", NodeStatus::Ok, "", 0, false}};
  EXPECT_EQ(summarize(nodes, 1000), "all healthy");
}

TEST(SummaryTest, SaysWhatIsDownForHowLongThenFlappingThenDegraded) {
  std::vector<NodeView> nodes = {
      {"db-2", "replica", NodeStatus::Warn, "lag 12 MB", 0, false},
      {"web-01", "up", NodeStatus::Ok, "", 0, true},
      {"web-02", "down", NodeStatus::Down, "connect: Connection refused", 10000, false},
  };
  EXPECT_EQ(summarize(nodes, 50000),
            "web-02 down for 40 s (connect: Connection refused); web-01 flapping; db-2 replica (lag 12 MB)");
}

TEST(SummaryTest, NotCheckedYetIsNotHealthy) {
  std::vector<NodeView> nodes = {{"etcd", "checking", NodeStatus::Unknown, "", 0, false}};
  EXPECT_NE(summarize(nodes, 0), "all healthy");
}

TEST(SummaryTest, Durations) {
  EXPECT_EQ(durationText(40500), "40 s");
  EXPECT_EQ(durationText(600000), "10 min");
  EXPECT_EQ(durationText(3 * 3600000 + 5 * 60000), "3 h 5 min");
  EXPECT_EQ(durationText(-5), "0 s");
}

}  // namespace
}  // namespace fulcrum::lb
