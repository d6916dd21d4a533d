#include "db/leader_lease.h"

#include <gtest/gtest.h>

#include <algorithm>

// Simulated time only: every instant is set on a ManualClock.
namespace fulcrum::db {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// ttl 3 s: renew every 1 s, retry every 300 ms, fence 600 ms before expiry (set here, not
// forTtl's policy, so these tests check the mechanism with round numbers).
LeaseTiming timing3s() {
  LeaseTiming t;
  t.ttl = seconds(3);
  t.renew_interval = seconds(1);
  t.retry_interval = milliseconds(300);
  t.safety_margin = milliseconds(600);
  return t;
}

class LeaderLeaseTest : public ::testing::Test {
 protected:
  core::ManualClock clock_;
  LeaderLease lease_{clock_, timing3s()};
  const core::TimePoint t0_ = clock_.now();
};

TEST(LeaseTimingTest, ForTtlDerivesIntervals) {
  LeaseTiming t = LeaseTiming::forTtl(seconds(3));
  EXPECT_EQ(t.ttl, seconds(3));
  EXPECT_EQ(t.renew_interval, milliseconds(1500));
  EXPECT_EQ(t.retry_interval, milliseconds(300));
  EXPECT_EQ(t.safety_margin, milliseconds(600));
  EXPECT_EQ(t.validate(), "");
  EXPECT_EQ(LeaseTiming::forTtl(milliseconds(5000)).validate(), "");
}

TEST(LeaseTimingTest, RejectsTimingThatFencesBeforeTheFirstRenewal) {
  LeaseTiming t = timing3s();
  EXPECT_EQ(t.validate(), "");
  t.renew_interval = milliseconds(2400);  // == ttl - margin
  EXPECT_NE(t.validate(), "");
  t = LeaseTiming::forTtl(seconds(3));
  t.safety_margin = seconds(3);
  EXPECT_NE(t.validate(), "");
  t = LeaseTiming::forTtl(seconds(3));
  t.retry_interval = milliseconds(0);
  EXPECT_NE(t.validate(), "");
  EXPECT_NE(LeaseTiming::forTtl(seconds(0)).validate(), "");
}

TEST_F(LeaderLeaseTest, WithoutLeaseIsFencedAndHasNothingToRenew) {
  LeaseDecision d = lease_.decide();
  EXPECT_FALSE(lease_.held());
  EXPECT_TRUE(d.fenced);
  EXPECT_FALSE(d.should_renew);
  EXPECT_EQ(d.next_action, core::TimePoint::max());
  EXPECT_FALSE(lease_.mayWrite());
}

TEST_F(LeaderLeaseTest, RenewsEveryThirdOfTheTtl) {
  lease_.acquired(t0_, seconds(3));
  LeaseDecision d = lease_.decide();
  EXPECT_FALSE(d.fenced);
  EXPECT_FALSE(d.should_renew);
  EXPECT_EQ(d.next_action, t0_ + seconds(1));

  clock_.advance(milliseconds(999));
  EXPECT_FALSE(lease_.decide().should_renew);
  clock_.advance(milliseconds(1));
  d = lease_.decide();
  EXPECT_TRUE(d.should_renew);
  EXPECT_FALSE(d.fenced);
  EXPECT_EQ(d.next_action, clock_.now());

  // The renewal is sent now and answered 50 ms later: the next one is due 1 s after the send.
  core::TimePoint sent = clock_.now();
  clock_.advance(milliseconds(50));
  lease_.renewed(sent, seconds(3));
  d = lease_.decide();
  EXPECT_FALSE(d.should_renew);
  EXPECT_EQ(d.next_action, sent + seconds(1));
  EXPECT_EQ(lease_.lastRenewalSent(), sent);
}

TEST_F(LeaderLeaseTest, FenceDeadlineCountsFromTheSendTimeNotTheAnswer) {
  // The grant was sent at t0 but its answer took 700 ms: etcd may have started the lease at
  // any point in between, so only t0 is safe to count from.
  clock_.advance(milliseconds(700));
  lease_.acquired(t0_, seconds(3));
  EXPECT_EQ(lease_.fenceDeadline(), t0_ + seconds(3) - milliseconds(600));

  // A renewal sent at t0+1s answered at t0+2.3s (a slow etcd): deadline from t0+1s.
  clock_.set(t0_ + seconds(1));
  core::TimePoint sent = clock_.now();
  clock_.set(t0_ + milliseconds(2300));
  lease_.renewed(sent, seconds(3));
  EXPECT_EQ(lease_.fenceDeadline(), sent + milliseconds(2400));

  clock_.set(sent + milliseconds(2399));
  EXPECT_TRUE(lease_.mayWrite());
  clock_.set(sent + milliseconds(2400));
  EXPECT_FALSE(lease_.mayWrite());
  EXPECT_TRUE(lease_.decide().fenced);
  // Strictly before the earliest instant etcd could expire the lease.
  EXPECT_LT(lease_.fenceDeadline(), sent + seconds(3));
}

TEST_F(LeaderLeaseTest, NextActionIsTheFenceDeadlineWhenItComesFirst) {
  LeaseTiming t = timing3s();
  t.renew_interval = milliseconds(2000);
  t.safety_margin = milliseconds(900);  // fence at 2.1 s, renew at 2 s
  LeaderLease lease(clock_, t);
  lease.acquired(t0_, seconds(3));
  EXPECT_EQ(lease.decide().next_action, t0_ + seconds(2));
  clock_.set(t0_ + seconds(2));
  lease.renewFailed();  // retry at 2.3 s, but the fence comes at 2.1 s
  LeaseDecision d = lease.decide();
  EXPECT_FALSE(d.should_renew);
  EXPECT_EQ(d.next_action, t0_ + milliseconds(2100));
}

TEST_F(LeaderLeaseTest, FailedRenewalsRetryAndFenceBeforeTheTtl) {
  lease_.acquired(t0_, seconds(3));
  clock_.set(t0_ + seconds(1));
  int attempts = 0;
  // Every renewal fails (etcd unreachable). The leader retries every 300 ms and fences itself
  // at t0 + 2.4 s, 600 ms before etcd could possibly expire the lease.
  while (!lease_.decide().fenced) {
    LeaseDecision d = lease_.decide();
    if (d.should_renew) {
      ++attempts;
      lease_.renewFailed();
      // Retry in 300 ms, unless the fence comes first (after the attempt at 2.2 s).
      EXPECT_EQ(lease_.decide().next_action,
                std::min(clock_.now() + milliseconds(300), t0_ + milliseconds(2400)));
    }
    clock_.set(lease_.decide().next_action);
  }
  EXPECT_EQ(clock_.now(), t0_ + milliseconds(2400));
  EXPECT_LT(clock_.now(), t0_ + seconds(3));
  EXPECT_EQ(attempts, 5);      // at 1.0, 1.3, 1.6, 1.9, 2.2 s
  EXPECT_TRUE(lease_.held());  // fenced, but etcd may still hold it: keep trying
  LeaseDecision d = lease_.decide();
  EXPECT_TRUE(d.fenced);
  EXPECT_EQ(d.next_action, t0_ + milliseconds(2500));
  clock_.set(d.next_action);
  EXPECT_TRUE(lease_.decide().should_renew);
}

TEST_F(LeaderLeaseTest, SuccessfulRenewalAfterFencingRecovers) {
  lease_.acquired(t0_, seconds(3));
  clock_.set(t0_ + milliseconds(2500));
  EXPECT_TRUE(lease_.decide().fenced);
  // etcd answers again, the lease still alive: nobody could have taken the key meanwhile.
  core::TimePoint sent = clock_.now();
  clock_.advance(milliseconds(20));
  lease_.renewed(sent, seconds(3));
  LeaseDecision d = lease_.decide();
  EXPECT_FALSE(d.fenced);
  EXPECT_TRUE(lease_.mayWrite());
  EXPECT_EQ(lease_.fenceDeadline(), sent + milliseconds(2400));
  EXPECT_EQ(d.next_action, sent + seconds(1));
}

TEST_F(LeaderLeaseTest, FailedRenewalExtendsNothing) {
  lease_.acquired(t0_, seconds(3));
  core::TimePoint deadline = lease_.fenceDeadline();
  clock_.set(t0_ + seconds(1));
  lease_.renewFailed();
  EXPECT_EQ(lease_.fenceDeadline(), deadline);
  EXPECT_EQ(lease_.lastRenewalSent(), t0_);
}

TEST_F(LeaderLeaseTest, OutOfOrderAnswersNeverMoveTheDeadlineBack) {
  lease_.acquired(t0_, seconds(3));
  core::TimePoint first = t0_ + seconds(1);
  core::TimePoint second = t0_ + seconds(2);
  clock_.set(t0_ + milliseconds(2100));
  lease_.renewed(second, seconds(3));
  lease_.renewed(first, seconds(3));  // the older renewal's answer arrives last
  EXPECT_EQ(lease_.fenceDeadline(), second + milliseconds(2400));
  EXPECT_EQ(lease_.lastRenewalSent(), second);
  EXPECT_EQ(lease_.decide().next_action, second + seconds(1));
}

TEST_F(LeaderLeaseTest, UsesTheShorterOfConfiguredAndGrantedTtl) {
  lease_.acquired(t0_, seconds(2));  // etcd granted less than configured (never in practice)
  EXPECT_EQ(lease_.fenceDeadline(), t0_ + seconds(2) - milliseconds(600));
  LeaderLease other(clock_, timing3s());
  other.acquired(t0_, seconds(10));  // etcd raised a short TTL to its minimum
  EXPECT_EQ(other.fenceDeadline(), t0_ + seconds(3) - milliseconds(600));
}

TEST_F(LeaderLeaseTest, LostIsFencedAtOnceAndIgnoresLateRenewals) {
  lease_.acquired(t0_, seconds(3));
  clock_.set(t0_ + milliseconds(500));
  lease_.lost();
  EXPECT_FALSE(lease_.held());
  EXPECT_TRUE(lease_.decide().fenced);
  EXPECT_FALSE(lease_.decide().should_renew);
  lease_.renewed(clock_.now(), seconds(3));  // a renewal answered after the loss counts for nothing
  EXPECT_FALSE(lease_.held());
  EXPECT_FALSE(lease_.mayWrite());
  // A new lease starts afresh.
  lease_.acquired(clock_.now(), seconds(3));
  EXPECT_TRUE(lease_.mayWrite());
  EXPECT_EQ(lease_.fenceDeadline(), clock_.now() + milliseconds(2400));
}

TEST_F(LeaderLeaseTest, SteadyRenewalsKeepTheLeaderUnfenced) {
  lease_.acquired(t0_, seconds(3));
  // An hour of simulated time, each renewal answered 30 ms after it is sent.
  int renewals = 0;
  while (clock_.now() < t0_ + std::chrono::hours(1)) {
    LeaseDecision d = lease_.decide();
    ASSERT_FALSE(d.fenced);
    if (d.should_renew) {
      core::TimePoint sent = clock_.now();
      clock_.advance(milliseconds(30));
      ASSERT_TRUE(lease_.mayWrite());
      lease_.renewed(sent, seconds(3));
      ++renewals;
      continue;
    }
    clock_.set(d.next_action);
  }
  EXPECT_EQ(renewals, 3599);  // sent at 1 s, 2 s, ... 3599 s
}

}  // namespace
}  // namespace fulcrum::db
