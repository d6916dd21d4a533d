#pragma once
// The lookup table of Google's Maglev (Eisenbud et al., NSDI 2016). Each server has its own
// permutation of the table's slots (from hashes of its name); servers take turns claiming their
// next free preferred slot until the table is full. Every server ends up with almost exactly its
// share of slots, and a lookup is one array read. When a server leaves, its slots go to others
// and a few more slots change hands than consistent hashing would move (the paper's trade-off).
#include <cstdint>
#include <span>
#include <vector>

#include "lb/balance/balancer.h"
#include "lb/balance/server_set.h"

namespace fulcrum::lb {

class MaglevTable {
 public:
  // A prime well above 100x the servers a pool has, as the paper advises. 256 KiB of ids.
  static constexpr uint32_t kSize = 65537;

  // `servers` as given by usableServers(). Weights: a server of weight w takes w turns for every
  // heaviest server's w_max (Envoy's weighted Maglev). The table depends only on the servers'
  // names, ids and weights, not on their order.
  void build(std::span<const ServerEntry> servers);
  // The server of `key`'s slot, or of the next slot whose server is not excluded; kNoServer when
  // the table is empty or every server is excluded.
  int lookup(uint64_t key, std::span<const uint32_t> exclude) const;
  std::span<const uint32_t> slots() const { return slots_; }

 private:
  std::vector<uint32_t> slots_;  // server ids; empty when there are no servers
  Membership members_;
};

}  // namespace fulcrum::lb
