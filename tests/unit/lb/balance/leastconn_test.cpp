// leastconn: fewest in-flight requests for the weight; ties taken in turn.
#include <gtest/gtest.h>

#include <deque>

#include "balance_test_util.h"
#include "lb/balance/balancer.h"

namespace fulcrum::lb {
namespace {

using testing::pickSequence;
using testing::TestPool;

class LeastConnTest : public ::testing::Test {
 protected:
  void use(const std::vector<uint32_t>& weights) {
    pool_ = TestPool(weights);
    balancer_->setServers(pool_.entries());
  }
  // Picks and starts a request, as the proxy does.
  int send() {
    int id = balancer_->pick(PickContext{});
    if (id != kNoServer) {
      balancer_->onRequestStart(static_cast<uint32_t>(id));
    }
    return id;
  }
  void finish(int id, int times = 1) {
    for (int i = 0; i < times; ++i) {
      balancer_->onRequestEnd(static_cast<uint32_t>(id));
    }
  }

  TestPool pool_{{}};
  std::unique_ptr<Balancer> balancer_ = makeBalancer("leastconn", core::Random(3));
};

TEST_F(LeastConnTest, IdleEqualServersTakeTurns) {
  use({1, 1, 1});
  EXPECT_EQ(pickSequence(*balancer_, 9), "abcabcabc");
}

TEST_F(LeastConnTest, ShortRequestsAlternateBetweenEqualServers) {
  use({1, 1});
  std::string order;
  for (int i = 0; i < 6; ++i) {
    int id = send();
    order += testing::letter(id);
    finish(id);
  }
  EXPECT_EQ(order, "ababab");
}

TEST_F(LeastConnTest, PicksTheIdleServerWhileAnotherIsBusy) {
  use({1, 1, 1});
  balancer_->onRequestStart(0);
  balancer_->onRequestStart(0);
  balancer_->onRequestStart(2);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(balancer_->pick(PickContext{}), 1);
  }
  finish(0, 2);
  finish(2);
  EXPECT_EQ(pickSequence(*balancer_, 3), "acb");  // b was picked last
}

TEST_F(LeastConnTest, NewRequestsFillTheLeastLoadedFirst) {
  use({1, 1, 1});
  for (int i = 0; i < 4; ++i) {
    balancer_->onRequestStart(0);
  }
  balancer_->onRequestStart(1);
  std::string order;
  for (int i = 0; i < 7; ++i) {
    order += testing::letter(send());
  }
  // c catches up with b, then b and c take turns until they reach a's four.
  EXPECT_EQ(order, "cbcbcbc");
}

TEST_F(LeastConnTest, InFlightRequestsFollowTheWeights) {
  use({3, 1, 2});
  std::map<int, int> inflight;
  for (int i = 0; i < 600; ++i) {
    ++inflight[send()];
  }
  EXPECT_EQ(inflight, (std::map<int, int>{{0, 300}, {1, 100}, {2, 200}}));
}

TEST_F(LeastConnTest, IdleHeavyServerBeatsIdleLightServer) {
  use({1, 4});
  EXPECT_EQ(balancer_->pick(PickContext{}), 1);
  // 3 in flight on b is (3+1)/4 = 1 per weight, as idle a's (0+1)/1: a tie, a was not picked last.
  for (int i = 0; i < 3; ++i) {
    balancer_->onRequestStart(1);
  }
  EXPECT_EQ(balancer_->pick(PickContext{}), 0);
  balancer_->onRequestStart(1);
  EXPECT_EQ(balancer_->pick(PickContext{}), 0);
}

TEST_F(LeastConnTest, SteadyLoadKeepsServersWithinOneRequest) {
  use({1, 1, 1, 1});
  std::deque<int> inflight;
  std::vector<int> load(4, 0);
  core::Random random(11);
  for (int i = 0; i < 5000; ++i) {
    int id = send();
    ++load[static_cast<size_t>(id)];
    inflight.push_back(id);
    // Requests end in random order.
    if (inflight.size() > 20) {
      size_t done = static_cast<size_t>(random.below(inflight.size()));
      --load[static_cast<size_t>(inflight[done])];
      finish(inflight[done]);
      inflight.erase(inflight.begin() + static_cast<std::ptrdiff_t>(done));
    }
    auto [low, high] = std::minmax_element(load.begin(), load.end());
    ASSERT_LE(*high - *low, 2) << "after request " << i;
  }
}

TEST_F(LeastConnTest, CountsSurviveSetServers) {
  use({1, 1});
  balancer_->onRequestStart(0);
  balancer_->onRequestStart(0);
  balancer_->setServers(pool_.entries());
  EXPECT_EQ(balancer_->pick(PickContext{}), 1);
  EXPECT_EQ(balancer_->pick(PickContext{}), 1);
}

TEST_F(LeastConnTest, RequestEndingAfterItsServerLeftStillCounts) {
  use({1, 1});
  balancer_->onRequestStart(0);
  balancer_->onRequestStart(0);
  balancer_->onRequestStart(1);
  balancer_->setServers(pool_.without(0));
  finish(0, 2);  // ended while 0 was out of the set
  balancer_->setServers(pool_.entries());
  EXPECT_EQ(balancer_->pick(PickContext{}), 0);  // idle again, b still has one
}

TEST_F(LeastConnTest, RetryTakesTheLeastLoadedOfTheRest) {
  use({1, 1, 1});
  balancer_->onRequestStart(1);
  balancer_->onRequestStart(1);
  balancer_->onRequestStart(2);
  const uint32_t tried[] = {0};
  EXPECT_EQ(balancer_->pick(PickContext{0, "", tried}), 2);
  balancer_->onRequestStart(2);
  balancer_->onRequestStart(2);
  EXPECT_EQ(balancer_->pick(PickContext{0, "", tried}), 1);
}

TEST_F(LeastConnTest, RetryTiesAlsoTakeTurns) {
  use({1, 1, 1});
  const uint32_t tried[] = {1};
  std::string order;
  for (int i = 0; i < 4; ++i) {
    order += testing::letter(balancer_->pick(PickContext{0, "", tried}));
  }
  EXPECT_EQ(order, "acac");
  EXPECT_EQ(balancer_->pick(PickContext{}), 1);  // b waited longest
}

TEST_F(LeastConnTest, StartsOnUnknownIdsAreTolerated) {
  use({1, 1});
  balancer_->onRequestStart(1000);
  balancer_->onRequestEnd(1000);
  balancer_->onRequestEnd(1000);
  EXPECT_EQ(pickSequence(*balancer_, 2), "ab");
}

}  // namespace
}  // namespace fulcrum::lb
