#include "lb/retry_budget.h"

#include <algorithm>

namespace fulcrum::lb {

bool retryFits(uint64_t retries, uint64_t requests, uint32_t percent, uint32_t min) {
  return retries < std::max<uint64_t>(min, requests * percent / 100);
}

bool RetryBudget::acquire(uint32_t percent, uint32_t min) {
  // Summed only when a retry is asked for: the request path keeps its per-worker counter.
  uint64_t requests = 1;  // the request that asks, whose failed attempt has just ended
  for (const auto& w : workers_) {
    requests += w->inflight.get();
  }
  uint64_t now = inflight_.load(std::memory_order_relaxed);
  while (retryFits(now, requests, percent, min)) {
    if (inflight_.compare_exchange_weak(now, now + 1, std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

}  // namespace fulcrum::lb
