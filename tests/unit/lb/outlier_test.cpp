// Outlier ejection's rules ([lb.outlier]) on simulated time: the share cap, the growing and
// decaying ejection time, the comparison with the peers' median, and the runs the workers count;
// and the retry budget's arithmetic.
#include "lb/outlier.h"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "lb/retry_budget.h"

namespace fulcrum::lb {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

OutlierOptions options() {
  OutlierOptions o;
  o.base_ejection = seconds(30);
  o.max_ejection = seconds(100);
  o.interval = seconds(10);
  o.max_ejection_percent = 50;
  o.min_requests = 20;
  return o;
}

const core::TimePoint t0{seconds(1000)};

TEST(OutlierEjector, EjectionTimeGrowsWithEachEjectionUpToTheMaximum) {
  OutlierEjector e(options());
  e.resize(4);
  core::TimePoint now = t0;
  const std::vector<core::Duration> expected{seconds(30), seconds(60), seconds(90), seconds(100),
                                             seconds(100)};
  for (core::Duration want : expected) {
    std::optional<core::Duration> got = e.eject(1, OutlierReason::Consecutive5xx, now, 4, 3);
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, want);
    EXPECT_TRUE(e.ejected(1));
    EXPECT_EQ(e.nextExpiry(), now + want);
    EXPECT_TRUE(e.expire(now + want - milliseconds(1)).empty());
    now += want;
    EXPECT_EQ(e.expire(now), std::vector<uint32_t>{1});
    EXPECT_FALSE(e.ejected(1));
    now += seconds(1);  // back for less than an interval: no decay
    e.decay(now);
  }
  EXPECT_EQ(e.ejectionsTotal(1, OutlierReason::Consecutive5xx), 5u);
  EXPECT_EQ(e.ejectionsTotal(1, OutlierReason::Slow), 0u);
}

TEST(OutlierEjector, ACleanIntervalLowersTheCountByOne) {
  OutlierEjector e(options());
  e.resize(4);
  core::TimePoint now = t0;
  for (int i = 0; i < 3; ++i) {
    std::optional<core::Duration> got = e.eject(0, OutlierReason::ConsecutiveFailures, now, 4, 3);
    ASSERT_TRUE(got);
    now += *got;
    e.expire(now);
  }
  EXPECT_EQ(e.ejections(0), 3u);
  e.decay(now + seconds(9));
  EXPECT_EQ(e.ejections(0), 3u);
  e.decay(now + seconds(10));
  EXPECT_EQ(e.ejections(0), 2u);
  e.decay(now + seconds(15));  // one decrement per interval, not per call
  EXPECT_EQ(e.ejections(0), 2u);
  e.decay(now + seconds(20));
  EXPECT_EQ(e.ejections(0), 1u);
  EXPECT_EQ(*e.eject(0, OutlierReason::ConsecutiveFailures, now + seconds(21), 4, 3), seconds(60));
}

TEST(OutlierEjector, NeverMoreThanTheShareAtOnceButAlwaysOne) {
  OutlierEjector e(options());
  e.resize(5);
  std::string why;
  // 50 % of 5 servers: two.
  EXPECT_TRUE(e.eject(0, OutlierReason::Consecutive5xx, t0, 5, 4));
  EXPECT_TRUE(e.eject(1, OutlierReason::Consecutive5xx, t0, 5, 3));
  EXPECT_FALSE(e.eject(2, OutlierReason::Consecutive5xx, t0, 5, 2, &why));
  EXPECT_EQ(why, "2 of 5 servers ejected already (max_ejection_percent 50)");
  EXPECT_EQ(e.ejectedCount(), 2u);
  EXPECT_EQ(e.ejectionsTotal(2, OutlierReason::Consecutive5xx), 0u);
  // Once one returns, another may go.
  e.expire(t0 + seconds(30));
  EXPECT_TRUE(e.eject(2, OutlierReason::Consecutive5xx, t0 + seconds(30), 5, 2));

  OutlierOptions none = options();
  none.max_ejection_percent = 0;
  OutlierEjector one(none);
  one.resize(2);
  EXPECT_TRUE(one.eject(0, OutlierReason::Slow, t0, 2, 1));  // one may always be ejected
  EXPECT_FALSE(one.eject(1, OutlierReason::Slow, t0, 2, 1));
}

TEST(OutlierEjector, NeverTheLastUsableServerNorTwice) {
  OutlierOptions all = options();
  all.max_ejection_percent = 100;
  OutlierEjector e(all);
  e.resize(2);
  std::string why;
  EXPECT_FALSE(e.eject(0, OutlierReason::Consecutive5xx, t0, 2, 0, &why));
  EXPECT_EQ(why, "it is the last usable server");
  EXPECT_EQ(e.ejections(0), 0u);  // a refusal does not lengthen the next ejection
  EXPECT_TRUE(e.eject(0, OutlierReason::Consecutive5xx, t0, 2, 1));
  EXPECT_FALSE(e.eject(0, OutlierReason::Consecutive5xx, t0, 2, 1, &why));
  EXPECT_EQ(why, "already ejected");
  EXPECT_EQ(e.ejectedUntil(0), t0 + seconds(30));
}

std::vector<ServerWindow> windows(const std::vector<std::pair<uint64_t, uint64_t>>& by_id) {
  std::vector<ServerWindow> out;
  for (auto [responses, mean_ms] : by_id) {
    out.push_back(ServerWindow{responses, responses * mean_ms * 1000});
  }
  return out;
}

TEST(OutlierEjector, SlowMeansAboveTheFactorTimesThePeersMedian) {
  OutlierOptions o = options();
  o.slow_factor = 3;
  OutlierEjector e(o);
  e.resize(4);
  // Peers at 20, 30 and 40 ms: median 30; 95 ms is more than 3 times that, 85 ms is not.
  EXPECT_EQ(e.slowServers(windows({{100, 20}, {100, 30}, {100, 40}, {100, 95}})), std::vector<uint32_t>{3});
  EXPECT_TRUE(e.slowServers(windows({{100, 20}, {100, 30}, {100, 40}, {100, 85}})).empty());
  // An even number of peers: the median is the mean of the middle two (20 and 40: 30).
  EXPECT_EQ(e.slowServers(windows({{100, 10}, {100, 20}, {100, 40}, {100, 95}, {100, 50}})),
            std::vector<uint32_t>{3});
}

TEST(OutlierEjector, SlowNeedsEnoughRequestsAPeerAndTheFloor) {
  OutlierOptions o = options();
  o.slow_factor = 3;
  OutlierEjector e(o);
  e.resize(3);
  // Too few requests to judge (19 < 20), or no peer with enough of them.
  EXPECT_TRUE(e.slowServers(windows({{100, 10}, {19, 500}})).empty());
  EXPECT_TRUE(e.slowServers(windows({{10, 10}, {100, 500}})).empty());
  // Ten times slower, but a few milliseconds: noise, not a sick server.
  EXPECT_TRUE(e.slowServers(windows({{100, 0}, {100, 5}})).empty());
  // An ejected server is neither judged nor a peer.
  EXPECT_EQ(e.slowServers(windows({{100, 10}, {100, 500}, {100, 10}})), std::vector<uint32_t>{1});
  ASSERT_TRUE(e.eject(1, OutlierReason::Slow, t0, 3, 2));
  EXPECT_TRUE(e.slowServers(windows({{100, 10}, {100, 500}, {100, 10}})).empty());
  // Off without a factor.
  OutlierEjector off(options());
  off.resize(2);
  EXPECT_TRUE(off.slowServers(windows({{100, 10}, {100, 5000}})).empty());
}

TEST(OutlierSignals, ARunReachingItsThresholdIsToldOnce) {
  std::vector<std::pair<uint32_t, OutlierReason>> told;
  OutlierSignals s(3, 3, 2, [&](uint32_t id, OutlierReason r) { told.emplace_back(id, r); });
  s.answered(1, 500);
  s.answered(1, 502);
  s.answered(1, 200);  // ends the run
  s.answered(1, 503);
  s.answered(1, 500);
  EXPECT_TRUE(told.empty());
  s.answered(1, 500);
  s.answered(1, 500);  // past the threshold: not told again until cleared
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0], std::make_pair(1u, OutlierReason::Consecutive5xx));
  s.clear(1);
  s.answered(1, 500);
  s.answered(1, 500);
  s.answered(1, 500);
  EXPECT_EQ(told.size(), 2u);
  // Failures count apart; a 4xx is an answer, which ends the run.
  s.failed(2);
  s.answered(2, 404);
  s.failed(2);
  EXPECT_EQ(told.size(), 2u);
  s.failed(2);
  ASSERT_EQ(told.size(), 3u);
  EXPECT_EQ(told[2], std::make_pair(2u, OutlierReason::ConsecutiveFailures));
  // A new server (a reload) counts too.
  s.grow(4);
  s.failed(3);
  s.failed(3);
  EXPECT_EQ(told.size(), 4u);
}

TEST(OutlierSignals, AZeroThresholdJudgesNothing) {
  int told = 0;
  OutlierSignals s(1, 0, 0, [&](uint32_t, OutlierReason) { ++told; });
  for (int i = 0; i < 100; ++i) {
    s.answered(0, 500);
    s.failed(0);
  }
  EXPECT_EQ(told, 0);
}

TEST(RetryBudget, AShareOfTheRequestsInFlightOrTheFloor) {
  // 20 % of 50 requests in flight: 10 retries.
  EXPECT_TRUE(retryFits(9, 50, 20, 3));
  EXPECT_FALSE(retryFits(10, 50, 20, 3));
  // At low load the floor decides: a single request is retried.
  EXPECT_TRUE(retryFits(0, 1, 20, 3));
  EXPECT_TRUE(retryFits(2, 4, 20, 3));
  EXPECT_FALSE(retryFits(3, 4, 20, 3));
  // No floor and no share: no retry at all; 100 %: never short.
  EXPECT_FALSE(retryFits(0, 1, 0, 0));
  EXPECT_TRUE(retryFits(49, 50, 100, 0));
}

TEST(RetryBudget, CountsEveryWorkersRequestsAndItsOwnSlots) {
  std::vector<std::unique_ptr<ProxyStats>> workers;
  workers.push_back(std::make_unique<ProxyStats>(1));
  workers.push_back(std::make_unique<ProxyStats>(1));
  RetryBudget budget(workers);
  workers[0]->inflight.add(20);
  workers[1]->inflight.add(19);  // with the asking request: 40 in flight, 20 %: 8 retries
  for (int i = 0; i < 8; ++i) {
    EXPECT_TRUE(budget.acquire(20, 3)) << i;
  }
  EXPECT_FALSE(budget.acquire(20, 3));
  EXPECT_EQ(budget.inflight(), 8u);
  budget.release();
  EXPECT_TRUE(budget.acquire(20, 3));
  EXPECT_FALSE(budget.acquire(20, 3));
}

}  // namespace
}  // namespace fulcrum::lb
