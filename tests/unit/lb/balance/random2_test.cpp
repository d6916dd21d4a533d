// random2: two distinct weighted draws, the less loaded (per weight) wins.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>

#include "balance_test_util.h"
#include "lb/balance/balancer.h"

namespace fulcrum::lb {
namespace {

using testing::TestPool;

class RandomTwoTest : public ::testing::Test {
 protected:
  void use(const std::vector<uint32_t>& weights) {
    pool_ = TestPool(weights);
    balancer_->setServers(pool_.entries());
  }
  std::map<int, int> counts(int n, std::span<const uint32_t> exclude = {}) {
    std::map<int, int> result;
    for (int i = 0; i < n; ++i) {
      ++result[balancer_->pick(PickContext{0, "", exclude})];
    }
    return result;
  }
  void load(uint32_t id, int requests) {
    for (int i = 0; i < requests; ++i) {
      balancer_->onRequestStart(id);
    }
  }

  TestPool pool_{{}};
  std::unique_ptr<Balancer> balancer_ = makeBalancer("random2", core::Random(2024));
};

TEST_F(RandomTwoTest, IdleEqualServersAreChosenUniformly) {
  use({1, 1, 1, 1});
  for (auto [id, n] : counts(200000)) {
    EXPECT_NEAR(n, 50000, 1000) << "server " << id;
  }
}

TEST_F(RandomTwoTest, IdleServersAreChosenByWeight) {
  use({1, 2, 5, 8});
  std::map<int, int> picks = counts(160000);
  EXPECT_NEAR(picks[0], 10000, 600);
  EXPECT_NEAR(picks[1], 20000, 800);
  EXPECT_NEAR(picks[2], 50000, 1200);
  EXPECT_NEAR(picks[3], 80000, 1500);
}

TEST_F(RandomTwoTest, TwoServersTheLessLoadedAlwaysWins) {
  // With two servers both are always drawn: the draws are distinct.
  use({1, 1});
  load(0, 1);
  EXPECT_EQ(counts(1000), (std::map<int, int>{{1, 1000}}));
}

TEST_F(RandomTwoTest, LoadedServerLosesEveryPairing) {
  use({1, 1, 1});
  load(1, 5);
  std::map<int, int> picks = counts(30000);
  EXPECT_EQ(picks.count(1), 0u);
  EXPECT_NEAR(picks[0], 15000, 600);
  EXPECT_NEAR(picks[2], 15000, 600);
}

TEST_F(RandomTwoTest, LoadIsComparedPerUnitOfWeight) {
  use({4, 1});
  load(0, 3);  // 3/4 per weight
  load(1, 1);  // 1/1
  EXPECT_EQ(counts(200), (std::map<int, int>{{0, 200}}));
  load(0, 2);  // 5/4
  EXPECT_EQ(counts(200), (std::map<int, int>{{1, 200}}));
}

TEST_F(RandomTwoTest, SecondDrawNeverRepeatsAHeavyFirst) {
  use({256, 1});
  load(0, 1);
  EXPECT_EQ(counts(1000), (std::map<int, int>{{1, 1000}}));
}

TEST_F(RandomTwoTest, AServerWinsOnlyAgainstBusierOnes) {
  use({1, 1, 1, 1});
  load(0, 1);
  load(1, 2);
  std::map<int, int> picks = counts(60000);
  // Of the 6 equally likely pairs, a wins only {a, b}; b wins none; c and d win 2.5 each.
  EXPECT_NEAR(picks[0], 10000, 500);
  EXPECT_EQ(picks.count(1), 0u);
  EXPECT_NEAR(picks[2], 25000, 700);
  EXPECT_NEAR(picks[3], 25000, 700);
}

// The average spread (most minus least loaded server) under constant concurrency with requests
// ending in random order, when each request goes where `choose` says.
template <typename Choose>
double averageSpread(Choose choose, Balancer* balancer) {
  std::vector<int> inflight(8, 0);
  std::deque<int> order;
  core::Random ends(5);
  double spread = 0;
  constexpr int kRequests = 20000;
  for (int i = 0; i < kRequests; ++i) {
    int id = choose();
    ++inflight[static_cast<size_t>(id)];
    order.push_back(id);
    if (balancer != nullptr) {
      balancer->onRequestStart(static_cast<uint32_t>(id));
    }
    if (order.size() > 64) {
      size_t done = static_cast<size_t>(ends.below(order.size()));
      --inflight[static_cast<size_t>(order[done])];
      if (balancer != nullptr) {
        balancer->onRequestEnd(static_cast<uint32_t>(order[done]));
      }
      order.erase(order.begin() + static_cast<std::ptrdiff_t>(done));
    }
    auto [low, high] = std::minmax_element(inflight.begin(), inflight.end());
    spread += *high - *low;
  }
  return spread / kRequests;
}

TEST_F(RandomTwoTest, SteadyLoadIsMoreBalancedThanWithOneRandomChoice) {
  use({1, 1, 1, 1, 1, 1, 1, 1});
  double two = averageSpread([&] { return balancer_->pick(PickContext{}); }, balancer_.get());
  core::Random one(9);
  double single = averageSpread([&] { return static_cast<int>(one.below(8)); }, nullptr);
  // Measured: about 3.5 against 8.
  EXPECT_LT(two, single * 0.6) << "two choices " << two << ", one choice " << single;
  EXPECT_LT(two, 4.0);
}

TEST_F(RandomTwoTest, RetryDrawsFromTheRestByWeight) {
  use({1, 1, 2});
  const uint32_t tried[] = {2};
  std::map<int, int> picks = counts(40000, tried);
  EXPECT_EQ(picks.count(2), 0u);
  EXPECT_NEAR(picks[0], 20000, 700);
  EXPECT_NEAR(picks[1], 20000, 700);
}

TEST_F(RandomTwoTest, RetryStillPrefersTheLessLoaded) {
  use({1, 1, 1});
  load(1, 2);
  const uint32_t tried[] = {0};
  EXPECT_EQ(counts(500, tried), (std::map<int, int>{{2, 500}}));
}

TEST_F(RandomTwoTest, RetryWithOneServerLeft) {
  use({5, 1, 1});
  const uint32_t tried[] = {0, 2};
  EXPECT_EQ(counts(100, tried), (std::map<int, int>{{1, 100}}));
}

TEST_F(RandomTwoTest, DifferentSeedsDrawDifferently) {
  use({1, 1, 1, 1, 1, 1, 1, 1});
  auto other = makeBalancer("random2", core::Random(2025));
  other->setServers(pool_.entries());
  int same = 0;
  for (int i = 0; i < 1000; ++i) {
    same += balancer_->pick(PickContext{}) == other->pick(PickContext{}) ? 1 : 0;
  }
  EXPECT_LT(same, 250);  // 1/8 expected
}

}  // namespace
}  // namespace fulcrum::lb
