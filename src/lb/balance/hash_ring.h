#pragma once
// A consistent-hash ring (Karger et al.; ketama) for source and uri. Each server owns
// 160 * weight points at hashBytes("name#0"), hashBytes("name#1"), ...; a key belongs to the
// first point at or after it, wrapping. Points depend only on a server's own name and weight, so
// when a server leaves only the keys it owned move (each to the next point's owner) and they
// come back when it returns: of N equal servers, ~1/N of keys move.
//
// The ring is rebuilt on the worker's loop at every set change, so its size is capped: past a
// total weight of 1024 (164k points, 2 MB, ~25 ms to build) each unit of weight gets fewer than
// 160 points. Shares still follow the weights, but that count depends on the total, so a set
// change there also moves the keys of the points that count adds or drops (a server's points
// are always a prefix name#0..name#k-1, so only that difference moves).
#include <cstdint>
#include <span>
#include <vector>

#include "core/hash_mix.h"
#include "lb/balance/balancer.h"
#include "lb/balance/server_set.h"

namespace fulcrum::lb {

using core::mixKey;  // spreads a caller's key, which may be a weak hash (core/hash_mix.h)

class HashRing {
 public:
  static constexpr uint32_t kPointsPerWeight = 160;
  static constexpr uint64_t kMaxPoints = uint64_t{kPointsPerWeight} * 1024;

  // Points per unit of weight for a set whose weights sum to `total_weight`.
  static uint32_t pointsPerWeight(uint64_t total_weight);

  // `servers` as given by usableServers().
  void build(std::span<const ServerEntry> servers);
  // The owner of the first point at or after `key` whose owner is not excluded; kNoServer when
  // the ring is empty or every server is excluded. O(log points) (+ a short walk on a retry).
  int lookup(uint64_t key, std::span<const uint32_t> exclude) const;
  // Bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads"):
  // the first owner from `key` on, not excluded, with fewer than its bound of requests in
  // flight: ceil(factor/100 * (total + 1) * weight / total_weight). The bounds sum to more than
  // the requests in flight, so one is always under its bound; with exclusions leaving none, the
  // plain lookup. A key moves only while its server is full, and comes back as it drains.
  int lookupBounded(uint64_t key, std::span<const uint32_t> exclude, const InflightCounts& inflight,
                    uint64_t total_inflight, uint32_t factor_percent) const;
  size_t points() const { return hashes_.size(); }

 private:
  std::vector<uint64_t> hashes_;  // sorted; searched alone, so the search touches less memory
  std::vector<uint32_t> owners_;  // owners_[i] owns hashes_[i]
  std::vector<uint32_t> weights_;  // by id
  uint64_t total_weight_ = 0;
  Membership members_;
};

// source and uri: a ring, and (with a balance factor) the loads that bound it. Each worker's
// balancer counts its own requests in flight, so the bound holds per worker thread.
class BoundedHashRing {
 public:
  explicit BoundedHashRing(uint32_t factor_percent) : factor_(factor_percent) {}
  void setServers(std::span<const ServerEntry> servers) {
    std::vector<ServerEntry> usable = usableServers(servers);
    ring_.build(usable);
    inflight_.cover(usable);
  }
  int pick(uint64_t key, std::span<const uint32_t> exclude) const {
    return factor_ == 0 ? ring_.lookup(key, exclude) : ring_.lookupBounded(key, exclude, inflight_, total_, factor_);
  }
  void start(uint32_t id) {
    if (factor_ != 0) {
      inflight_.start(id);
      ++total_;
    }
  }
  void end(uint32_t id) {
    if (factor_ != 0 && inflight_[id] > 0) {
      inflight_.end(id);
      --total_;
    }
  }
  uint32_t inflight(uint32_t id) const { return inflight_[id]; }

 private:
  HashRing ring_;
  InflightCounts inflight_;
  uint64_t total_ = 0;
  uint32_t factor_;
};

}  // namespace fulcrum::lb
