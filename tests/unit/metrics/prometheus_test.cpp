#include "metrics/prometheus.h"

#include <gtest/gtest.h>

#include "core/histogram.h"

namespace fulcrum {
namespace {

TEST(Histogram, BucketsByUpperBound) {
  core::Histogram h;
  h.observe(0);
  h.observe(500);   // le 0.0005 is inclusive
  h.observe(501);   // next bucket
  h.observe(20'000'000);  // beyond the last bound: +Inf
  auto s = h.snapshot();
  EXPECT_EQ(s.buckets[0], 2u);
  EXPECT_EQ(s.buckets[1], 1u);
  EXPECT_EQ(s.buckets[core::kHistogramBuckets - 1], 1u);
  EXPECT_EQ(s.count(), 4u);
  EXPECT_EQ(s.sum_us, 20'001'001u);
}

TEST(Histogram, QuantileInterpolatesLikePrometheus) {
  core::HistogramSnapshot s;
  EXPECT_EQ(s.quantileUs(0.99), 0u);
  // 100 observations in (1 ms, 2.5 ms]: the median sits halfway through that bucket.
  s.buckets[2] = 100;
  EXPECT_EQ(s.quantileUs(0.5), 1750u);
  EXPECT_EQ(s.quantileUs(1.0), 2500u);
  // one slow outlier beyond 10 s: p99 stays in the fast bucket, p100 reports the last bound.
  s.buckets[core::kHistogramBuckets - 1] = 1;
  EXPECT_LE(s.quantileUs(0.99), 2500u);
  EXPECT_EQ(s.quantileUs(1.0), 10'000'000u);
}

TEST(Histogram, SnapshotsAddAndSubtract) {
  core::Histogram a, b;
  a.observe(100);
  b.observe(3000);
  core::HistogramSnapshot total;
  a.addTo(total);
  b.addTo(total);
  EXPECT_EQ(total.count(), 2u);
  auto before = total;
  b.observe(3000);
  core::HistogramSnapshot after;
  a.addTo(after);
  b.addTo(after);
  auto d = after.since(before);
  EXPECT_EQ(d.count(), 1u);
  EXPECT_EQ(d.buckets[3], 1u);
  EXPECT_EQ(d.sum_us, 3000u);
}

TEST(PrometheusWriter, HistogramIsCumulativeInSeconds) {
  core::Histogram h;
  h.observe(400);
  h.observe(2000);
  metrics::PrometheusWriter w;
  w.family("x_seconds", "histogram", "Test.");
  w.histogram("x_seconds", {{"node", "a\"b"}}, h.snapshot());
  const std::string& t = w.text();
  EXPECT_NE(t.find("# TYPE x_seconds histogram\n"), std::string::npos);
  EXPECT_NE(t.find("x_seconds_bucket{node=\"a\\\"b\",le=\"0.0005\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_seconds_bucket{node=\"a\\\"b\",le=\"0.001\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_seconds_bucket{node=\"a\\\"b\",le=\"0.0025\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_seconds_bucket{node=\"a\\\"b\",le=\"10\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_seconds_bucket{node=\"a\\\"b\",le=\"+Inf\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_seconds_sum{node=\"a\\\"b\"} 0.0024\n"), std::string::npos) << t;
  EXPECT_NE(t.find("x_seconds_count{node=\"a\\\"b\"} 2\n"), std::string::npos) << t;
}

TEST(PrometheusWriter, HistogramWithoutLabels) {
  metrics::PrometheusWriter w;
  w.histogram("y_seconds", {}, core::HistogramSnapshot{});
  EXPECT_NE(w.text().find("y_seconds_bucket{le=\"+Inf\"} 0\n"), std::string::npos) << w.text();
  EXPECT_NE(w.text().find("y_seconds_count 0\n"), std::string::npos) << w.text();
}

}  // namespace
}  // namespace fulcrum
