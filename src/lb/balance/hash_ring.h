#pragma once
// A consistent-hash ring (Karger et al.; ketama) for source and uri. Each server owns
// 160 * weight points at hashBytes("name#i"); a key belongs to the first point at or after it,
// wrapping. Points depend only on a server's own name and weight, so when a server leaves only
// the keys it owned move (each to the next point's owner) and they come back when it returns:
// of N equal servers, ~1/N of keys move. Memory: 12 bytes a point, 160 * sum(weights) points.
#include <cstdint>
#include <span>
#include <vector>

#include "lb/balance/balancer.h"
#include "lb/balance/server_set.h"

namespace fulcrum::lb {

// Spreads a caller's 64-bit key, which may be a weak hash, over all 64 bits (murmur3's
// finalizer: a bijection, every input bit flips about half the output bits).
inline uint64_t mixKey(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  key *= 0xc4ceb9fe1a85ec53ULL;
  key ^= key >> 33;
  return key;
}

class HashRing {
 public:
  static constexpr uint32_t kPointsPerWeight = 160;

  // `servers` as given by usableServers().
  void build(std::span<const ServerEntry> servers);
  // The owner of the first point at or after `key` whose owner is not excluded; kNoServer when
  // the ring is empty or every server is excluded. O(log points) (+ a short walk on a retry).
  int lookup(uint64_t key, std::span<const uint32_t> exclude) const;
  size_t points() const { return hashes_.size(); }

 private:
  std::vector<uint64_t> hashes_;  // sorted; searched alone, so the search touches less memory
  std::vector<uint32_t> owners_;  // owners_[i] owns hashes_[i]
  Membership members_;
};

}  // namespace fulcrum::lb
