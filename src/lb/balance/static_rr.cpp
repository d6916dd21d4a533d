// static-rr: HAProxy's static round robin, a precomputed map of turns. Here each server's turns
// sit at the centres of its equal shares of the cycle (server i's k-th turn at time
// (2k+1)/(2*weight_i), earlier servers first on a tie; stride scheduling), so they are evenly
// interleaved: 3:1 gives a a b a, 5:1:1 gives a a a b c a a. roundrobin's smooth order spreads a
// heavy server a little more evenly (a a b a c a a); both give every server exactly its weight's
// share of each cycle.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "lb/balance/algorithms.h"
#include "lb/balance/turn_cycle.h"

namespace fulcrum::lb {

namespace {

class StaticRoundRobin final : public TurnCycleBalancer {
 protected:
  std::vector<uint32_t> buildCycle(std::span<const uint32_t> weights, uint32_t total) const override {
    struct Turn {
      uint32_t server;
      uint32_t k;  // the server's k-th turn of the cycle
    };
    std::vector<Turn> turns;
    turns.reserve(total);
    for (uint32_t i = 0; i < weights.size(); ++i) {
      for (uint32_t k = 0; k < weights[i]; ++k) {
        turns.push_back({i, k});
      }
    }
    // (2a+1)/(2wa) < (2b+1)/(2wb), compared exactly by cross-multiplying.
    std::stable_sort(turns.begin(), turns.end(), [&](const Turn& a, const Turn& b) {
      return (2 * uint64_t{a.k} + 1) * weights[b.server] < (2 * uint64_t{b.k} + 1) * weights[a.server];
    });
    std::vector<uint32_t> cycle;
    cycle.reserve(total);
    for (const Turn& turn : turns) {
      cycle.push_back(turn.server);
    }
    return cycle;
  }
};

}  // namespace

std::unique_ptr<Balancer> makeStaticRoundRobin() {
  return std::make_unique<StaticRoundRobin>();
}

}  // namespace fulcrum::lb
