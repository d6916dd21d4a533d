#pragma once
// Envoy's retry budget ([lb] retry_budget_percent, retry_budget_min): a retry goes out only while
// the retries in flight, every worker's, are fewer than a share of the requests in flight or than
// a small floor. A sick server then cannot turn each failing request into two or three (a retry
// storm on the servers left); at low load the floor keeps every retry.
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "lb/proxy.h"

namespace fulcrum::lb {

// Whether one more retry fits: `retries` in flight now, `requests` in flight (this one included).
bool retryFits(uint64_t retries, uint64_t requests, uint32_t percent, uint32_t min);

class RetryBudget {
 public:
  // `workers`: every worker's counters (their in-flight requests are the budget's base); the
  // vector is fixed before the workers start.
  explicit RetryBudget(const std::vector<std::unique_ptr<ProxyStats>>& workers) : workers_(workers) {}
  RetryBudget(const RetryBudget&) = delete;
  RetryBudget& operator=(const RetryBudget&) = delete;

  // Takes a slot for one retry if it fits (any worker's thread); each slot taken is given back
  // with release() when that attempt ends.
  bool acquire(uint32_t percent, uint32_t min);
  void release() { inflight_.fetch_sub(1, std::memory_order_relaxed); }
  uint64_t inflight() const { return inflight_.load(std::memory_order_relaxed); }

 private:
  const std::vector<std::unique_ptr<ProxyStats>>& workers_;
  std::atomic<uint64_t> inflight_{0};
};

}  // namespace fulcrum::lb
