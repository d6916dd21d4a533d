// Slow start ([lb] slow_start_ms): a server that comes up ramps its share from almost nothing to
// its full weight; the others' shares are unchanged meanwhile, and nothing ramps without it.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <vector>

#include "core/event_loop.h"
#include "lb/pool.h"

namespace fulcrum::lb {
namespace {

using std::chrono::milliseconds;

TEST(SlowStartWeight, GrowsLinearlyFromASliverToTheFullWeight) {
  const milliseconds period(1000);
  EXPECT_EQ(slowStartWeight(1, 16, milliseconds(0), period), 1u);
  EXPECT_EQ(slowStartWeight(1, 16, milliseconds(250), period), 4u);
  EXPECT_EQ(slowStartWeight(1, 16, milliseconds(500), period), 8u);
  EXPECT_EQ(slowStartWeight(1, 16, milliseconds(1000), period), 16u);
  EXPECT_EQ(slowStartWeight(3, 16, milliseconds(5000), period), 48u);
  EXPECT_EQ(slowStartWeight(10, 1, milliseconds(0), milliseconds(0)), 10u);  // no slow start
}

class SlowStartPool : public ::testing::Test {
 protected:
  void make(std::string_view algorithm, milliseconds slow_start) {
    for (uint32_t i = 0; i < 2; ++i) {
      Backend b;
      b.id = i;
      b.name = "s" + std::to_string(i);
      backends_.push_back(b);
    }
    PoolOptions options;
    options.slow_start = slow_start;
    pool_ = std::make_unique<WorkerPool>(loop_, backends_, algorithm, options);
  }
  // How many of `n` requests go to server 1, all in flight together (leastconn weighs the
  // requests in flight), then all ended.
  int toServer1(int n) {
    int count = 0;
    std::vector<uint32_t> started;
    for (int i = 0; i < n; ++i) {
      int id = pool_->pick(PickContext{});
      EXPECT_NE(id, kNoServer);
      pool_->onRequestStart(static_cast<uint32_t>(id));
      started.push_back(static_cast<uint32_t>(id));
      count += id == 1 ? 1 : 0;
    }
    for (uint32_t id : started) {
      pool_->onRequestEnd(id);
    }
    return count;
  }
  void runFor(milliseconds how_long) {
    const auto until = std::chrono::steady_clock::now() + how_long;
    while (std::chrono::steady_clock::now() < until) {
      loop_.runOnce(milliseconds(10));
    }
  }

  core::EventLoop loop_;
  std::vector<Backend> backends_;
  std::unique_ptr<WorkerPool> pool_;
};

TEST_F(SlowStartPool, AServerBackFromDownRampsUpAndThenTakesItsFullShare) {
  const milliseconds period(1600);
  // Server 1's expected share (of 1000) at a weight ramped `elapsed` into the period, against
  // server 0 at its full 16.
  auto share = [&](std::chrono::steady_clock::duration elapsed) {
    const double w = slowStartWeight(1, 16, elapsed, period);
    return 1000.0 * w / (w + 16.0);
  };
  for (std::string_view algorithm : {"roundrobin", "leastconn", "random2"}) {
    SCOPED_TRACE(std::string(algorithm));
    backends_.clear();
    make(algorithm, period);
    EXPECT_NEAR(toServer1(1000), 500, 60);  // at start nothing ramps
    pool_->setUp(1, false);
    EXPECT_EQ(toServer1(100), 0);
    loop_.updateTime();
    const auto up_at = std::chrono::steady_clock::now();
    pool_->setUp(1, true);
    EXPECT_LT(toServer1(1000), 100);  // a sliver at first (1/16 of its weight: ~6 %)
    runFor(milliseconds(600));
    // The balancers were rebuilt at most one step (period / 16) before this look.
    const auto before = std::chrono::steady_clock::now() - up_at - period / 16 - milliseconds(20);
    const int halfway = toServer1(1000);
    const auto after = std::chrono::steady_clock::now() - up_at;
    EXPECT_GT(halfway, share(before) - 60);
    EXPECT_LT(halfway, share(after) + 60);
    EXPECT_LT(halfway, 470);  // still ramping
    // Then its full share, within the period and a margin for a loaded machine.
    int last = 0;
    for (int i = 0; i < 40 && std::abs((last = toServer1(1000)) - 500) > 60; ++i) {
      runFor(milliseconds(100));
    }
    EXPECT_NEAR(last, 500, 60);
  }
}

TEST_F(SlowStartPool, BackFromMaintenanceRampsToo) {
  make("roundrobin", milliseconds(600));
  pool_->setInRotation(1, false);
  pool_->setInRotation(1, true);
  loop_.updateTime();
  EXPECT_LT(toServer1(1000), 100);
}

// [lb.outlier]: ejection is a state of its own; neither a health flip nor an admin change ends it.
TEST_F(SlowStartPool, AnEjectedServerTakesNothingUntilItReturnsThenRamps) {
  make("roundrobin", milliseconds(600));
  pool_->setEjected(1, true);
  EXPECT_EQ(toServer1(100), 0);
  pool_->setUp(1, false);
  pool_->setUp(1, true);
  pool_->setInRotation(1, false);
  pool_->setInRotation(1, true);
  EXPECT_EQ(toServer1(100), 0);
  loop_.updateTime();
  pool_->setEjected(1, false);
  EXPECT_GT(toServer1(1000), 0);
  EXPECT_LT(toServer1(1000), 100);
}

TEST_F(SlowStartPool, WithoutSlowStartAServerIsBackAtOnce) {
  make("roundrobin", milliseconds(0));
  pool_->setUp(1, false);
  pool_->setUp(1, true);
  EXPECT_EQ(toServer1(1000), 500);
  pool_->setEjected(1, true);
  pool_->setEjected(1, false);
  EXPECT_EQ(toServer1(1000), 500);
}

}  // namespace
}  // namespace fulcrum::lb
