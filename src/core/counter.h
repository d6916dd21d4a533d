#pragma once
// A counter written by one thread and read by any: the writer does a plain load+store (no
// locked instruction on the request path), readers see a value that is at most a moment old.
#include <atomic>
#include <cstdint>

namespace fulcrum::core {

class Counter {
 public:
  void add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void sub(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
  }
  uint64_t get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

}  // namespace fulcrum::core
