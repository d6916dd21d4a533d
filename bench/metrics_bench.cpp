// The request path's share of metrics: one histogram observation and the counters a proxied
// request bumps, against the whole request's cost in lb-compare.sh (tens of microseconds).
#include <benchmark/benchmark.h>

#include <cstdint>

#include "core/counter.h"
#include "core/histogram.h"

namespace {

void BM_HistogramObserve(benchmark::State& state) {
  fulcrum::core::Histogram h;
  uint64_t us = 1;
  for (auto _ : state) {
    h.observe(us);
    us = (us * 1103515245 + 12345) % 20'000'000;  // spread over every bucket
  }
  benchmark::DoNotOptimize(h.snapshot().count());
}
BENCHMARK(BM_HistogramObserve);

// What one proxied request records: the per-request counters, two histograms.
void BM_RequestMetrics(benchmark::State& state) {
  fulcrum::core::Counter requests, inflight, by_class, bytes;
  fulcrum::core::Histogram server_time, total_time;
  uint64_t us = 1;
  for (auto _ : state) {
    requests.add();
    inflight.add();
    inflight.sub();
    by_class.add();
    bytes.add(512);
    server_time.observe(us);
    total_time.observe(us + 40);
    us = (us * 1103515245 + 12345) % 200'000;
  }
  benchmark::DoNotOptimize(requests.get() + total_time.snapshot().count());
}
BENCHMARK(BM_RequestMetrics);

}  // namespace
