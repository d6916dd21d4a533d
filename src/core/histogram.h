#pragma once
// A latency histogram written by one thread and read by any, like core::Counter: the writer
// bumps one bucket and the sum with plain load+store (no locked instruction on the request
// path); a reader adds the histograms of every worker into a HistogramSnapshot.
//
// The bucket bounds are fixed and shared by every histogram in the program, so snapshots from
// any thread or role add bucket by bucket, and Prometheus rules can name one `le` set.
#include <array>
#include <atomic>
#include <cstdint>

namespace fulcrum::core {

// Upper bounds in microseconds, Prometheus' usual seconds buckets from 0.5 ms to 10 s; one more
// bucket (+Inf) takes the rest.
inline constexpr std::array<uint64_t, 14> kHistogramBoundsUs = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
inline constexpr size_t kHistogramBuckets = kHistogramBoundsUs.size() + 1;

struct HistogramSnapshot {
  std::array<uint64_t, kHistogramBuckets> buckets{};  // per bucket, not cumulative
  uint64_t sum_us = 0;

  uint64_t count() const {
    uint64_t n = 0;
    for (uint64_t b : buckets) {
      n += b;
    }
    return n;
  }
  HistogramSnapshot& operator+=(const HistogramSnapshot& o) {
    for (size_t i = 0; i < kHistogramBuckets; ++i) {
      buckets[i] += o.buckets[i];
    }
    sum_us += o.sum_us;
    return *this;
  }
  // this - earlier: what was observed between two snapshots of the same histograms.
  HistogramSnapshot since(const HistogramSnapshot& earlier) const {
    HistogramSnapshot d;
    for (size_t i = 0; i < kHistogramBuckets; ++i) {
      d.buckets[i] = buckets[i] - earlier.buckets[i];
    }
    d.sum_us = sum_us - earlier.sum_us;
    return d;
  }
  // The q-quantile (0 < q <= 1) in microseconds, interpolated linearly inside its bucket as
  // Prometheus' histogram_quantile does; the +Inf bucket answers its lower bound. 0 when empty.
  uint64_t quantileUs(double q) const;
};

class Histogram {
 public:
  void observe(uint64_t us) {
    size_t i = 0;
    while (i < kHistogramBoundsUs.size() && us > kHistogramBoundsUs[i]) {
      ++i;
    }
    auto& b = buckets_[i];
    b.store(b.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    sum_us_.store(sum_us_.load(std::memory_order_relaxed) + us, std::memory_order_relaxed);
  }
  // Adds this histogram into `into` (a reader on any thread).
  void addTo(HistogramSnapshot& into) const {
    for (size_t i = 0; i < kHistogramBuckets; ++i) {
      into.buckets[i] += buckets_[i].load(std::memory_order_relaxed);
    }
    into.sum_us += sum_us_.load(std::memory_order_relaxed);
  }
  HistogramSnapshot snapshot() const {
    HistogramSnapshot s;
    addTo(s);
    return s;
  }

 private:
  std::array<std::atomic<uint64_t>, kHistogramBuckets> buckets_{};
  std::atomic<uint64_t> sum_us_{0};
};

}  // namespace fulcrum::core
