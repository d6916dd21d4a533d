// The restart schedule of a crashing child under `fulcrum up`.
#include "site/backoff.h"

#include <gtest/gtest.h>

namespace fulcrum::site {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(BackoffTest, DoublesFromHalfASecondUpToThirtySeconds) {
  RestartBackoff b;
  std::vector<long> delays;
  for (int i = 0; i < 9; ++i) {
    delays.push_back(b.onExit(milliseconds(100)).count());
  }
  EXPECT_EQ(delays, (std::vector<long>{500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000}));
}

TEST(BackoffTest, ARunOfSixtySecondsResetsTheSchedule) {
  RestartBackoff b;
  b.onExit(seconds(1));
  b.onExit(seconds(1));
  EXPECT_EQ(b.onExit(seconds(59)).count(), 2000);  // not stable yet: keeps growing
  EXPECT_EQ(b.onExit(seconds(60)).count(), 500);
  EXPECT_EQ(b.onExit(seconds(1)).count(), 1000);
}

TEST(BackoffTest, CustomBounds) {
  RestartBackoff b(milliseconds(100), milliseconds(250), seconds(5));
  EXPECT_EQ(b.onExit(seconds(0)).count(), 100);
  EXPECT_EQ(b.onExit(seconds(0)).count(), 200);
  EXPECT_EQ(b.onExit(seconds(0)).count(), 250);
  EXPECT_EQ(b.onExit(seconds(5)).count(), 100);
}

}  // namespace
}  // namespace fulcrum::site
