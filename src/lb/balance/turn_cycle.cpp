#include "lb/balance/turn_cycle.h"

#include <numeric>

namespace fulcrum::lb {

void TurnCycleBalancer::setServers(std::span<const ServerEntry> input) {
  std::vector<ServerEntry> servers = usableServers(input);
  members_.assign(servers);
  turns_.clear();
  if (servers.empty()) {
    next_ = 0;
    return;
  }
  uint32_t divisor = 0;
  for (const ServerEntry& server : servers) {
    divisor = std::gcd(divisor, server.weight);
  }
  std::vector<uint32_t> weights;
  uint32_t total = 0;
  for (const ServerEntry& server : servers) {
    weights.push_back(server.weight / divisor);
    total += weights.back();
  }
  for (uint32_t index : buildCycle(weights, total)) {
    turns_.push_back(servers[index].id);
  }
  next_ %= turns_.size();
}

int TurnCycleBalancer::pick(const PickContext& context) {
  if (turns_.empty()) {
    return kNoServer;
  }
  if (!context.exclude.empty() && members_.allExcluded(context.exclude)) {
    return kNoServer;
  }
  for (;;) {  // ends: some server of the cycle is not excluded
    uint32_t id = turns_[next_];
    if (++next_ == turns_.size()) {
      next_ = 0;
    }
    if (!isExcluded(id, context.exclude)) {
      return static_cast<int>(id);
    }
  }
}

}  // namespace fulcrum::lb
