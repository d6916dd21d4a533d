#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lb/health/health_checker.h"

namespace fulcrum::lb {
namespace {

// Feeds "S"/"F" results; returns the positions that flipped the state.
std::vector<size_t> flips(RiseFall& rf, std::string_view results) {
  std::vector<size_t> out;
  for (size_t i = 0; i < results.size(); ++i) {
    if (rf.record(results[i] == 'S')) {
      out.push_back(i);
    }
  }
  return out;
}

TEST(RiseFallTest, StartsInTheGivenState) {
  EXPECT_TRUE(RiseFall(2, 3, true).up());
  EXPECT_FALSE(RiseFall(2, 3, false).up());
  EXPECT_EQ(RiseFall(2, 3, true).consecutiveFailures(), 0u);
}

TEST(RiseFallTest, GoesDownOnExactlyTheFallthFailure) {
  RiseFall rf(2, 3, true);
  EXPECT_FALSE(rf.record(false));
  EXPECT_TRUE(rf.up());
  EXPECT_FALSE(rf.record(false));
  EXPECT_TRUE(rf.up());
  EXPECT_TRUE(rf.record(false));
  EXPECT_FALSE(rf.up());
  EXPECT_EQ(rf.consecutiveFailures(), 3u);
}

TEST(RiseFallTest, ComesUpOnExactlyTheRisethSuccess) {
  RiseFall rf(3, 2, false);
  EXPECT_FALSE(rf.record(true));
  EXPECT_FALSE(rf.record(true));
  EXPECT_FALSE(rf.up());
  EXPECT_TRUE(rf.record(true));
  EXPECT_TRUE(rf.up());
}

TEST(RiseFallTest, DownUntilFirstSuccessComesUpOnTheFirstSuccess) {
  RiseFall rf = RiseFall::downUntilFirstSuccess(3, 2);
  EXPECT_FALSE(rf.up());
  EXPECT_EQ(flips(rf, "S"), (std::vector<size_t>{0}));
  EXPECT_TRUE(rf.up());
  // Afterwards the usual thresholds: down after 2 failures, up again only after 3 successes.
  EXPECT_EQ(flips(rf, "FFSSS"), (std::vector<size_t>{1, 4}));
}

TEST(RiseFallTest, DownUntilFirstSuccessNeedsRiseAfterAFailure) {
  RiseFall rf = RiseFall::downUntilFirstSuccess(3, 2);
  EXPECT_EQ(flips(rf, "FSSS"), (std::vector<size_t>{3}));
}

TEST(RiseFallTest, FurtherFailuresWhileDownDoNotFlipAgain) {
  RiseFall rf(2, 2, true);
  EXPECT_EQ(flips(rf, "FFFFFFFFFF"), (std::vector<size_t>{1}));
  EXPECT_FALSE(rf.up());
  EXPECT_EQ(rf.consecutiveFailures(), 10u);
}

TEST(RiseFallTest, SuccessesWhileUpNeverFlip) {
  RiseFall rf(2, 3, true);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(rf.record(true));
  }
  EXPECT_TRUE(rf.up());
  EXPECT_EQ(rf.consecutiveFailures(), 0u);
}

TEST(RiseFallTest, SuccessResetsTheFailureCount) {
  RiseFall rf(2, 3, true);
  EXPECT_TRUE(flips(rf, "FFSFFSFF").empty());
  EXPECT_TRUE(rf.up());
  EXPECT_EQ(rf.consecutiveFailures(), 2u);
  EXPECT_TRUE(rf.record(false));
  EXPECT_FALSE(rf.up());
}

TEST(RiseFallTest, ConsecutiveFailuresCountsAndResets) {
  RiseFall rf(2, 5, true);
  rf.record(false);
  rf.record(false);
  EXPECT_EQ(rf.consecutiveFailures(), 2u);
  rf.record(true);
  EXPECT_EQ(rf.consecutiveFailures(), 0u);
  rf.record(false);
  EXPECT_EQ(rf.consecutiveFailures(), 1u);
}

TEST(RiseFallTest, FailureResetsTheSuccessCountWhileDown) {
  RiseFall rf(3, 1, false);
  EXPECT_TRUE(flips(rf, "SSFSSFSSF").empty());
  EXPECT_FALSE(rf.up());
  EXPECT_EQ(flips(rf, "SSS"), (std::vector<size_t>{2}));
  EXPECT_TRUE(rf.up());
}

TEST(RiseFallTest, RiseOneFallOneFollowsEveryResult) {
  RiseFall rf(1, 1, true);
  EXPECT_EQ(flips(rf, "FSFSSFF"), (std::vector<size_t>{0, 1, 2, 3, 5}));
  EXPECT_FALSE(rf.up());
}

TEST(RiseFallTest, ZeroThresholdsActAsOne) {
  RiseFall rf(0, 0, true);
  EXPECT_TRUE(rf.record(false));
  EXPECT_FALSE(rf.up());
  EXPECT_TRUE(rf.record(true));
  EXPECT_TRUE(rf.up());
  EXPECT_FALSE(rf.record(true));
}

TEST(RiseFallTest, DownThenUpThenDownAgain) {
  RiseFall rf(2, 3, true);
  //                       0123456789012345
  EXPECT_EQ(flips(rf, "FFFSFSSFFSFFFSSS"), (std::vector<size_t>{2, 6, 12, 14}));
  EXPECT_TRUE(rf.up());
}

TEST(RiseFallTest, FlapsAreAbsorbedByTheThresholds) {
  RiseFall rf(2, 2, true);
  EXPECT_TRUE(flips(rf, "FSFSFSFSFSFSFSFS").empty());  // never two in a row
  EXPECT_TRUE(rf.up());
  RiseFall down(2, 2, false);
  EXPECT_TRUE(flips(down, "SFSFSFSFSFSFSFSF").empty());
  EXPECT_FALSE(down.up());
}

// A long pseudo-random sequence against a second formulation: the state flips exactly when the
// current run of equal results reaches the threshold of the opposite state.
TEST(RiseFallTest, LongSequencesMatchARunLengthModel) {
  uint64_t seed = 0x9e3779b97f4a7c15ULL;
  auto next = [&seed] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(seed >> 33);
  };
  for (uint32_t rise = 1; rise <= 4; ++rise) {
    for (uint32_t fall = 1; fall <= 4; ++fall) {
      for (bool initially_up : {true, false}) {
        RiseFall rf(rise, fall, initially_up);
        bool model_up = initially_up;
        bool last = true;
        uint32_t run = 0;
        int flip_count = 0;
        for (int i = 0; i < 5000; ++i) {
          // Bursty results: a run of 1..6 equal results, so both thresholds are reached.
          bool ok = (next() % 100) < 55;
          uint32_t burst = 1 + next() % 6;
          for (uint32_t b = 0; b < burst; ++b) {
            run = (run > 0 && ok == last) ? run + 1 : 1;
            last = ok;
            bool model_flip = ok != model_up && run == (ok ? rise : fall);
            if (model_flip) {
              model_up = ok;
              ++flip_count;
            }
            ASSERT_EQ(rf.record(ok), model_flip) << "rise=" << rise << " fall=" << fall << " i=" << i;
            ASSERT_EQ(rf.up(), model_up);
            ASSERT_EQ(rf.consecutiveFailures(), ok ? 0u : run);
          }
        }
        EXPECT_GT(flip_count, 100) << "rise=" << rise << " fall=" << fall;
      }
    }
  }
}

}  // namespace
}  // namespace fulcrum::lb
