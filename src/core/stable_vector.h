#pragma once
// A vector that grows without moving its elements: chunks of kChunk elements behind a fixed table
// of chunk pointers. One thread grows it; other threads may keep using elements they were told
// about (through a message posted after the growth, which orders the two) while it grows — what a
// plain std::vector's reallocation forbids. Per-server counters of a load balancer whose server
// set changes at runtime live in these.
#include <algorithm>
#include <array>
#include <cstddef>
#include <memory>

namespace fulcrum::core {

template <typename T, size_t kChunk = 64, size_t kMaxChunks = 256>
class StableVector {
 public:
  explicit StableVector(size_t n = 0) { grow(n); }
  StableVector(const StableVector&) = delete;
  StableVector& operator=(const StableVector&) = delete;

  static constexpr size_t maxSize() { return kChunk * kMaxChunks; }
  // Grows to at least `n` default-constructed elements (never shrinks; n is capped at maxSize()).
  // Only the growing thread may call size() while others use elements.
  void grow(size_t n) {
    n = n < maxSize() ? n : maxSize();
    while (size_ < n) {
      if (size_ % kChunk == 0) {
        chunks_[size_ / kChunk] = std::make_unique<std::array<T, kChunk>>();
      }
      size_ = std::min(n, (size_ / kChunk + 1) * kChunk);
    }
  }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return (*chunks_[i / kChunk])[i % kChunk]; }
  const T& operator[](size_t i) const { return (*chunks_[i / kChunk])[i % kChunk]; }

 private:
  std::array<std::unique_ptr<std::array<T, kChunk>>, kMaxChunks> chunks_{};
  size_t size_ = 0;
};

}  // namespace fulcrum::core
