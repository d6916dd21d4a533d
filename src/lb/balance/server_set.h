#pragma once
// What every algorithm needs about the usable set: clean entries, O(1) membership by id, the
// retry exclusions, and in-flight counts that outlive set changes.
#include <cstdint>
#include <span>
#include <vector>

#include "lb/balance/balancer.h"

namespace fulcrum::lb {

inline constexpr uint32_t kMinWeight = 1;
inline constexpr uint32_t kMaxWeight = 256;

// The entries an algorithm builds from: weights clamped to 1..256 and repeated ids dropped (the
// first wins), in the caller's order. Names point into the caller's storage: use them only
// inside setServers().
std::vector<ServerEntry> usableServers(std::span<const ServerEntry> servers);

// The retry list is a handful of ids at most: a linear scan beats any set.
inline bool isExcluded(uint32_t id, std::span<const uint32_t> exclude) {
  for (uint32_t excluded : exclude) {
    if (excluded == id) {
      return true;
    }
  }
  return false;
}

// Which ids the current set holds.
class Membership {
 public:
  void assign(std::span<const ServerEntry> servers);
  bool contains(uint32_t id) const { return id < member_.size() && member_[id] != 0; }
  uint32_t size() const { return size_; }
  // Whether any of `ids` is in the set: a retry list naming only servers that have left since
  // needs no special handling.
  bool containsAny(std::span<const uint32_t> ids) const {
    for (uint32_t id : ids) {
      if (contains(id)) {
        return true;
      }
    }
    return false;
  }
  // True when excluding `exclude` leaves no server (so also when the set is empty). O(1) unless
  // the retry list is at least as long as the set.
  bool allExcluded(std::span<const uint32_t> exclude) const;

 private:
  std::vector<uint8_t> member_;  // by id
  uint32_t size_ = 0;
};

// Requests in flight per server id, kept across setServers(): a request that started on a server
// that has since left still ends there.
class InflightCounts {
 public:
  // Grows the table to cover `servers`, so start() on the request path does not allocate.
  void cover(std::span<const ServerEntry> servers);
  void start(uint32_t id) {
    if (id >= counts_.size()) {
      counts_.resize(id + 1, 0);  // an id never given to setServers(): rare, tolerated
    }
    ++counts_[id];
  }
  void end(uint32_t id) {
    if (id < counts_.size() && counts_[id] > 0) {
      --counts_[id];
    }
  }
  uint32_t operator[](uint32_t id) const { return id < counts_.size() ? counts_[id] : 0; }

 private:
  std::vector<uint32_t> counts_;  // by id
};

}  // namespace fulcrum::lb
