#include "web/token_waiters.h"

#include <gtest/gtest.h>

#include <string>

namespace fulcrum::web {
namespace {

using namespace std::chrono_literals;

TEST(TokenWaiters, OneReplayPositionAnswersEveryWaiterAtOrBelowIt) {
  core::ManualClock clock;
  const core::TimePoint deadline = clock.now() + 300ms;
  TokenWaiters<std::string> waiters;
  EXPECT_TRUE(waiters.empty());
  waiters.push(0x300, deadline, "c");
  waiters.push(0x100, deadline, "a1");
  waiters.push(0x200, deadline, "b");
  waiters.push(0x100, deadline, "a2");
  EXPECT_EQ(waiters.size(), 4u);
  EXPECT_EQ(waiters.highest(), 0x300u);
  EXPECT_EQ(waiters.takeReplayed(0xFF), (std::vector<std::string>{}));
  // Lowest token first; equal tokens in arrival order.
  EXPECT_EQ(waiters.takeReplayed(0x200), (std::vector<std::string>{"a1", "a2", "b"}));
  EXPECT_EQ(waiters.size(), 1u);
  EXPECT_EQ(waiters.highest(), 0x300u);
  EXPECT_EQ(waiters.takeReplayed(0x2FF), (std::vector<std::string>{}));
  EXPECT_EQ(waiters.takeReplayed(0x300), (std::vector<std::string>{"c"}));
  EXPECT_TRUE(waiters.empty());
}

TEST(TokenWaiters, WaitersPastTheirDeadlineLeave) {
  core::ManualClock clock;
  TokenWaiters<int> waiters;
  waiters.push(0x100, clock.now() + 300ms, 1);
  clock.advance(100ms);
  waiters.push(0x50, clock.now() + 300ms, 2);
  clock.advance(199ms);
  EXPECT_EQ(waiters.takeExpired(clock.now()), (std::vector<int>{}));
  clock.advance(1ms);  // the first waited 300 ms
  EXPECT_EQ(waiters.takeExpired(clock.now()), (std::vector<int>{1}));
  EXPECT_EQ(waiters.highest(), 0x50u);
  clock.advance(100ms);
  EXPECT_EQ(waiters.takeExpired(clock.now()), (std::vector<int>{2}));
  EXPECT_TRUE(waiters.empty());
}

TEST(TokenWaiters, TakeAllEmptiesTheQueue) {
  core::ManualClock clock;
  TokenWaiters<int> waiters;
  waiters.push(~Lsn{0}, clock.now(), 1);
  waiters.push(0, clock.now(), 2);
  EXPECT_EQ(waiters.takeAll(), (std::vector<int>{2, 1}));
  EXPECT_TRUE(waiters.empty());
}

}  // namespace
}  // namespace fulcrum::web
