// Properties every algorithm shares, run over every name of balancerNames().
#include "lb/balance/balancer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "balance_test_util.h"

namespace fulcrum::lb {
namespace {

using testing::pickCounts;
using testing::pickCountsUnderLoad;
using testing::TestPool;
using testing::VariedContext;

constexpr uint64_t kSeed = 42;

std::unique_ptr<Balancer> make(std::string_view name, uint64_t seed = kSeed) {
  return makeBalancer(name, core::Random(seed));
}

TEST(MakeBalancerTest, NamesAreTheTopologyAlgorithms) {
  std::vector<std::string_view> expected = {"roundrobin", "static-rr", "leastconn", "source",
                                            "uri",        "random2",   "maglev"};
  EXPECT_EQ(balancerNames(), expected);
}

TEST(MakeBalancerTest, UnknownNamesGiveNullptr) {
  for (std::string_view name :
       {"", "round-robin", "RoundRobin", "random", "leastconn ", "hash", "static_rr"}) {
    EXPECT_EQ(make(name), nullptr) << name;
  }
}

class EveryAlgorithmTest : public ::testing::TestWithParam<std::string_view> {
 protected:
  std::unique_ptr<Balancer> balancer_ = make(GetParam());
};

TEST_P(EveryAlgorithmTest, MakeBalancerKnowsTheName) {
  ASSERT_NE(balancer_, nullptr);
}

TEST_P(EveryAlgorithmTest, NoServersBeforeSetServers) {
  EXPECT_EQ(balancer_->pick(PickContext{}), kNoServer);
  VariedContext varied(1);
  EXPECT_EQ(balancer_->pick(varied.context), kNoServer);
}

TEST_P(EveryAlgorithmTest, EmptySetGivesNoServer) {
  TestPool pool({1, 1, 1});
  balancer_->setServers(pool.entries());
  ASSERT_NE(balancer_->pick(PickContext{}), kNoServer);
  balancer_->setServers({});
  for (int i = 0; i < 10; ++i) {
    VariedContext varied(static_cast<uint64_t>(i));
    EXPECT_EQ(balancer_->pick(varied.context), kNoServer);
  }
}

TEST_P(EveryAlgorithmTest, SingleServerTakesEveryRequest) {
  TestPool pool = TestPool::withIds({7});
  balancer_->setServers(pool.entries());
  EXPECT_EQ(pickCounts(*balancer_, 1000), (std::map<int, int>{{7, 1000}}));
}

TEST_P(EveryAlgorithmTest, OnlyPicksIdsOfTheSet) {
  TestPool pool = TestPool::withIds({3, 17, 9, 40});
  balancer_->setServers(pool.entries());
  std::map<int, int> counts = pickCounts(*balancer_, 4000);
  std::set<int> picked;
  for (auto [id, count] : counts) {
    picked.insert(id);
  }
  EXPECT_EQ(picked, (std::set<int>{3, 9, 17, 40}));
}

TEST_P(EveryAlgorithmTest, EqualServersShareTheLoad) {
  TestPool pool = TestPool::equal(4);
  balancer_->setServers(pool.entries());
  for (auto [id, count] : pickCountsUnderLoad(*balancer_, 40000, 8)) {
    EXPECT_NEAR(count, 10000, 1500) << "server " << id;  // hash rings: +-15%
  }
}

TEST_P(EveryAlgorithmTest, WeightsSetTheShares) {
  TestPool pool({1, 2, 5});
  balancer_->setServers(pool.entries());
  std::map<int, int> counts = pickCountsUnderLoad(*balancer_, 80000, 16);
  EXPECT_NEAR(counts[0], 10000, 1500);
  EXPECT_NEAR(counts[1], 20000, 3000);
  EXPECT_NEAR(counts[2], 50000, 7500);
}

TEST_P(EveryAlgorithmTest, ExcludedServerIsNeverChosen) {
  TestPool pool = TestPool::equal(3);
  balancer_->setServers(pool.entries());
  const uint32_t tried[] = {1};
  std::map<int, int> counts = pickCounts(*balancer_, 3000, tried);
  EXPECT_EQ(counts.count(1), 0u);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[2], 0);
}

TEST_P(EveryAlgorithmTest, TwoOfThreeExcludedLeavesTheThird) {
  TestPool pool({1, 4, 1});
  balancer_->setServers(pool.entries());
  const uint32_t tried[] = {1, 0};
  EXPECT_EQ(pickCounts(*balancer_, 500, tried), (std::map<int, int>{{2, 500}}));
}

TEST_P(EveryAlgorithmTest, AllExcludedGivesNoServer) {
  TestPool pool({1, 2, 3});
  balancer_->setServers(pool.entries());
  const uint32_t tried[] = {2, 0, 2, 9, 1};  // repeats and an id outside the set
  EXPECT_EQ(pickCounts(*balancer_, 200, tried), (std::map<int, int>{{kNoServer, 200}}));
}

TEST_P(EveryAlgorithmTest, RepeatedExclusionsDoNotHideOthers) {
  TestPool pool = TestPool::equal(3);
  balancer_->setServers(pool.entries());
  const uint32_t tried[] = {0, 0, 0, 5};  // as long as the set, but covers one server
  std::map<int, int> counts = pickCounts(*balancer_, 600, tried);
  EXPECT_EQ(counts.count(0), 0u);
  EXPECT_EQ(counts.count(kNoServer), 0u);
}

TEST_P(EveryAlgorithmTest, ExcludingAnIdOutsideTheSetChangesNothing) {
  TestPool pool = TestPool::equal(3);
  auto other = make(GetParam());
  balancer_->setServers(pool.entries());
  other->setServers(pool.entries());
  const uint32_t outside[] = {12};
  for (int i = 0; i < 300; ++i) {
    VariedContext plain(static_cast<uint64_t>(i));
    VariedContext excluding(static_cast<uint64_t>(i), outside);
    EXPECT_EQ(balancer_->pick(plain.context), other->pick(excluding.context));
  }
}

TEST_P(EveryAlgorithmTest, ServerThatLeftIsNoLongerChosen) {
  TestPool pool = TestPool::equal(4);
  balancer_->setServers(pool.entries());
  balancer_->setServers(pool.without(2));
  std::map<int, int> counts = pickCounts(*balancer_, 4000);
  EXPECT_EQ(counts.count(2), 0u);
  EXPECT_EQ(counts.size(), 3u);
}

TEST_P(EveryAlgorithmTest, RequestsEndingOnADepartedServerAreHarmless) {
  TestPool pool = TestPool::equal(3);
  balancer_->setServers(pool.entries());
  for (int i = 0; i < 30; ++i) {
    int id = balancer_->pick(PickContext{});
    ASSERT_NE(id, kNoServer);
    balancer_->onRequestStart(static_cast<uint32_t>(id));
  }
  balancer_->setServers(pool.without(0));
  for (int i = 0; i < 10; ++i) {
    balancer_->onRequestEnd(0);
  }
  balancer_->onRequestEnd(99);  // never seen
  balancer_->onRequestStart(99);
  balancer_->onRequestEnd(99);
  std::map<int, int> counts = pickCounts(*balancer_, 300);
  EXPECT_EQ(counts.count(0), 0u);
  EXPECT_EQ(counts.count(kNoServer), 0u);
}

TEST_P(EveryAlgorithmTest, UnmatchedRequestEndsDoNotUnderflow) {
  TestPool pool = TestPool::equal(2);
  balancer_->setServers(pool.entries());
  for (int i = 0; i < 5; ++i) {
    balancer_->onRequestEnd(0);
  }
  balancer_->onRequestStart(0);
  // One request in flight on 0, none on 1: the load-aware algorithms now avoid 0.
  std::map<int, int> counts = pickCounts(*balancer_, 1000);
  EXPECT_EQ(counts[0] + counts[1], 1000);
  if (GetParam() == "leastconn" || GetParam() == "random2") {
    EXPECT_EQ(counts[1], 1000);
  }
}

TEST_P(EveryAlgorithmTest, OutOfRangeWeightsAreClamped) {
  TestPool pool({0, 1000});  // treated as 1 and 256
  balancer_->setServers(pool.entries());
  std::map<int, int> counts = pickCountsUnderLoad(*balancer_, 25700, 257);
  EXPECT_GT(counts[0], 0);
  EXPECT_NEAR(counts[1], 25600, 150);
}

TEST_P(EveryAlgorithmTest, RepeatedIdsCountOnce) {
  TestPool pool = TestPool::equal(2);
  std::vector<ServerEntry> entries = pool.entries();
  entries.push_back(entries[0]);
  entries.push_back(entries[0]);
  balancer_->setServers(entries);
  std::map<int, int> counts = pickCountsUnderLoad(*balancer_, 20000, 4);
  EXPECT_NEAR(counts[0], 10000, 1500);
  EXPECT_NEAR(counts[1], 10000, 1500);
}

TEST_P(EveryAlgorithmTest, SameSeedSameChoices) {
  TestPool pool({3, 1, 2, 5});
  auto other = make(GetParam());
  balancer_->setServers(pool.entries());
  other->setServers(pool.entries());
  for (int i = 0; i < 1000; ++i) {
    VariedContext varied(static_cast<uint64_t>(i));
    int id = balancer_->pick(varied.context);
    ASSERT_EQ(id, other->pick(varied.context));
    if (i % 3 == 0) {
      balancer_->onRequestStart(static_cast<uint32_t>(id));
      other->onRequestStart(static_cast<uint32_t>(id));
    }
  }
}

TEST_P(EveryAlgorithmTest, ServerThatReturnsIsChosenAgain) {
  TestPool pool = TestPool::equal(3);
  balancer_->setServers(pool.entries());
  balancer_->setServers(pool.without(1));
  balancer_->setServers(pool.entries());
  EXPECT_GT(pickCounts(*balancer_, 3000)[1], 700);
}

std::string testName(const ::testing::TestParamInfo<std::string_view>& info) {
  std::string name(info.param);
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(Balancers, EveryAlgorithmTest, ::testing::ValuesIn(balancerNames()), testName);

}  // namespace
}  // namespace fulcrum::lb
