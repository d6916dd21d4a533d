#pragma once
// The round-robin family (roundrobin, static-rr): a whole cycle of turns is worked out in
// setServers(), so pick() is one array read. A cycle holds sum(weights)/gcd(weights) turns (4
// bytes each). A retry passes over the tried servers' turns. The position in the cycle survives
// setServers() (modulo the new length), as HAProxy keeps its map index: a health change does not
// send every worker back to the same first server.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "lb/balance/balancer.h"
#include "lb/balance/server_set.h"

namespace fulcrum::lb {

class TurnCycleBalancer : public Balancer {
 public:
  void setServers(std::span<const ServerEntry> servers) final;
  // The next turn of the cycle; on a retry, the next turn whose server is not excluded.
  int pick(const PickContext& context) final;

 protected:
  // One full cycle as indexes into `servers` (already through usableServers()). `weights` are
  // the servers' weights divided by their gcd; `total` is their sum and the cycle's length.
  virtual std::vector<uint32_t> buildCycle(std::span<const uint32_t> weights, uint32_t total) const = 0;

 private:
  Membership members_;
  std::vector<uint32_t> turns_;  // server ids
  size_t next_ = 0;
};

}  // namespace fulcrum::lb
