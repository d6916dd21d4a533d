#include <gtest/gtest.h>

#include "lb/health/health_checker.h"

namespace fulcrum::lb {
namespace {

using std::chrono::seconds;

const core::TimePoint kStart{seconds(1000)};

TEST(StateTimesTest, AServerAlwaysUpWasNeverDown) {
  StateTimes t(kStart, true);
  EXPECT_EQ(t.downtime(kStart + seconds(90)), seconds(0));
  EXPECT_EQ(t.sinceChange(kStart + seconds(90)), seconds(90));  // since its checks began
}

TEST(StateTimesTest, TheCurrentDownSpellCountsAndGrows) {
  StateTimes t(kStart, true);
  t.change(kStart + seconds(10), false);
  EXPECT_EQ(t.downtime(kStart + seconds(15)), seconds(5));
  EXPECT_EQ(t.downtime(kStart + seconds(40)), seconds(30));
  EXPECT_EQ(t.sinceChange(kStart + seconds(40)), seconds(30));
}

TEST(StateTimesTest, DownSpellsAddUpAndUpTimeDoesNotCount) {
  StateTimes t(kStart, true);
  t.change(kStart + seconds(10), false);
  t.change(kStart + seconds(13), true);  // 3 s down
  t.change(kStart + seconds(20), false);
  t.change(kStart + seconds(27), true);  // 7 s down
  EXPECT_EQ(t.downtime(kStart + seconds(100)), seconds(10));
  EXPECT_EQ(t.sinceChange(kStart + seconds(100)), seconds(73));
  t.change(kStart + seconds(100), false);
  EXPECT_EQ(t.downtime(kStart + seconds(102)), seconds(12));
}

TEST(StateTimesTest, AServerThatStartsDownIsDownUntilItComesUp) {
  StateTimes t(kStart, false);
  EXPECT_EQ(t.downtime(kStart + seconds(2)), seconds(2));
  t.change(kStart + seconds(3), true);
  EXPECT_EQ(t.downtime(kStart + seconds(60)), seconds(3));
  EXPECT_EQ(t.sinceChange(kStart + seconds(60)), seconds(57));
}

TEST(StateTimesTest, TheSameStateAgainIsNoChange) {
  StateTimes t(kStart, false);
  t.change(kStart + seconds(5), false);
  EXPECT_EQ(t.sinceChange(kStart + seconds(8)), seconds(8));
  EXPECT_EQ(t.downtime(kStart + seconds(8)), seconds(8));
}

}  // namespace
}  // namespace fulcrum::lb
