// roundrobin (nginx smooth weighted) and static-rr (evenly spaced map): exact orders.
#include <gtest/gtest.h>

#include "balance_test_util.h"
#include "lb/balance/balancer.h"

namespace fulcrum::lb {
namespace {

using testing::pickSequence;
using testing::TestPool;

std::string cycleOf(std::string_view algorithm, const std::vector<uint32_t>& weights, int picks) {
  TestPool pool(weights);
  auto balancer = makeBalancer(algorithm, core::Random(1));
  balancer->setServers(pool.entries());
  return pickSequence(*balancer, picks);
}

std::string smooth(const std::vector<uint32_t>& weights, int picks) {
  return cycleOf("roundrobin", weights, picks);
}
std::string staticRr(const std::vector<uint32_t>& weights, int picks) {
  return cycleOf("static-rr", weights, picks);
}

TEST(RoundRobinTest, EqualWeightsRotateInOrder) {
  EXPECT_EQ(smooth({1, 1, 1}, 9), "abcabcabc");
}

TEST(RoundRobinTest, NginxSmoothSequenceFor5_1_1) {
  EXPECT_EQ(smooth({5, 1, 1}, 14), "aabacaaaabacaa");
}

TEST(RoundRobinTest, ThreeToOneInterleaves) {
  EXPECT_EQ(smooth({3, 1}, 8), "aabaaaba");
}

TEST(RoundRobinTest, TwoToOne) {
  EXPECT_EQ(smooth({2, 1}, 6), "abaaba");
}

TEST(RoundRobinTest, FourThreeTwo) {
  EXPECT_EQ(smooth({4, 3, 2}, 9), "abcabacba");
}

TEST(RoundRobinTest, HeaviestLastStillStartsTheCycle) {
  EXPECT_EQ(smooth({1, 2, 3}, 6), "cbacbc");
}

TEST(RoundRobinTest, OnlyWeightRatiosMatter) {
  EXPECT_EQ(smooth({10, 20, 50}, 16), smooth({1, 2, 5}, 16));
}

TEST(RoundRobinTest, EveryCycleGivesExactShares) {
  std::string picks = smooth({7, 3, 1}, 11 * 100);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 'a'), 700);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 'b'), 300);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 'c'), 100);
}

TEST(RoundRobinTest, HeavyServerIsSpreadNotBunched) {
  // Weights 256:1 put the light server in the middle of a 257-turn cycle, not at an end.
  std::string picks = smooth({256, 1}, 257);
  size_t b = picks.find('b');
  ASSERT_NE(b, std::string::npos);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 'b'), 1);
  EXPECT_GT(b, 100u);
  EXPECT_LT(b, 157u);
}

TEST(RoundRobinTest, RetrySkipsTriedServerAndKeepsRotating) {
  TestPool pool = TestPool::equal(3);
  auto balancer = makeBalancer("roundrobin", core::Random(1));
  balancer->setServers(pool.entries());
  const uint32_t tried[] = {0};
  EXPECT_EQ(balancer->pick(PickContext{}), 0);
  EXPECT_EQ(balancer->pick(PickContext{0, "", tried}), 1);
  EXPECT_EQ(balancer->pick(PickContext{0, "", tried}), 2);
  EXPECT_EQ(balancer->pick(PickContext{0, "", tried}), 1);
  EXPECT_EQ(balancer->pick(PickContext{}), 2);
  EXPECT_EQ(balancer->pick(PickContext{}), 0);
}

TEST(RoundRobinTest, RetryPastAHeavyTriedServer) {
  TestPool pool({256, 1, 1});
  auto balancer = makeBalancer("roundrobin", core::Random(1));
  balancer->setServers(pool.entries());
  const uint32_t tried[] = {0};
  std::map<int, int> counts;
  for (int i = 0; i < 1000; ++i) {
    ++counts[balancer->pick(PickContext{0, "", tried})];
  }
  EXPECT_EQ(counts, (std::map<int, int>{{1, 500}, {2, 500}}));
}

TEST(RoundRobinTest, SetChangeDoesNotRestartTheRotation) {
  TestPool pool = TestPool::equal(3);
  auto balancer = makeBalancer("roundrobin", core::Random(1));
  balancer->setServers(pool.entries());
  EXPECT_EQ(pickSequence(*balancer, 2), "ab");
  balancer->setServers(pool.entries());
  EXPECT_EQ(pickSequence(*balancer, 4), "cabc");
}

TEST(RoundRobinTest, RemovedServerLeavesTheOthersInOrder) {
  TestPool pool({5, 1, 1});
  auto balancer = makeBalancer("roundrobin", core::Random(1));
  balancer->setServers(pool.without(2));
  EXPECT_EQ(pickSequence(*balancer, 12), "aaabaaaaabaa");
}

TEST(StaticRoundRobinTest, EqualWeightsRotateInOrder) {
  EXPECT_EQ(staticRr({1, 1, 1, 1}, 8), "abcdabcd");
}

TEST(StaticRoundRobinTest, ThreeToOneIsInterleaved) {
  EXPECT_EQ(staticRr({3, 1}, 8), "aabaaaba");
}

TEST(StaticRoundRobinTest, TurnsSitAtTheCentresOfEqualShares) {
  EXPECT_EQ(staticRr({5, 1, 1}, 7), "aaabcaa");
  EXPECT_EQ(staticRr({2, 1}, 3), "aba");
  EXPECT_EQ(staticRr({4, 3, 2}, 9), "abcabacba");
  EXPECT_EQ(staticRr({7, 1}, 8), "aaaabaaa");
}

TEST(StaticRoundRobinTest, OnlyWeightRatiosMatter) {
  EXPECT_EQ(staticRr({30, 20}, 10), staticRr({3, 2}, 10));
}

TEST(StaticRoundRobinTest, EveryCycleGivesExactShares) {
  std::string picks = staticRr({5, 3, 2, 1}, 11 * 50);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 'a'), 250);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 'b'), 150);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 'c'), 100);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 'd'), 50);
}

TEST(StaticRoundRobinTest, LightServerSitsMidCycle) {
  EXPECT_EQ(staticRr({9, 1}, 20), "aaaaabaaaaaaaaabaaaa");
  EXPECT_EQ(staticRr({2, 2, 1}, 5), "abcab");
}

TEST(StaticRoundRobinTest, RetrySkipsTriedServer) {
  TestPool pool({3, 1});
  auto balancer = makeBalancer("static-rr", core::Random(1));
  balancer->setServers(pool.entries());
  const uint32_t tried[] = {0};
  EXPECT_EQ(balancer->pick(PickContext{0, "", tried}), 1);
  EXPECT_EQ(balancer->pick(PickContext{}), 0);  // the map goes on after b
}

TEST(StaticRoundRobinTest, SetChangeKeepsThePosition) {
  TestPool pool = TestPool::equal(4);
  auto balancer = makeBalancer("static-rr", core::Random(1));
  balancer->setServers(pool.entries());
  EXPECT_EQ(pickSequence(*balancer, 3), "abc");
  balancer->setServers(pool.without(0));  // map b c d, position 3 -> 0
  EXPECT_EQ(pickSequence(*balancer, 3), "bcd");
}

}  // namespace
}  // namespace fulcrum::lb
