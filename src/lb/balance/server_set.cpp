#include "lb/balance/server_set.h"

#include <algorithm>

namespace fulcrum::lb {

std::vector<ServerEntry> usableServers(std::span<const ServerEntry> servers) {
  std::vector<ServerEntry> usable;
  usable.reserve(servers.size());
  std::vector<uint8_t> seen;
  for (const ServerEntry& server : servers) {
    if (server.id >= seen.size()) {
      seen.resize(server.id + 1, 0);
    }
    if (seen[server.id] != 0) {
      continue;
    }
    seen[server.id] = 1;
    ServerEntry entry = server;
    entry.weight = std::clamp(server.weight, kMinWeight, kMaxWeight);
    usable.push_back(entry);
  }
  return usable;
}

void Membership::assign(std::span<const ServerEntry> servers) {
  member_.assign(member_.size(), 0);
  size_ = 0;
  for (const ServerEntry& server : servers) {
    if (server.id >= member_.size()) {
      member_.resize(server.id + 1, 0);
    }
    if (member_[server.id] == 0) {
      member_[server.id] = 1;
      ++size_;
    }
  }
}

bool Membership::allExcluded(std::span<const uint32_t> exclude) const {
  if (exclude.size() < size_) {
    return false;  // too few exclusions to cover the set: the common retry case
  }
  uint32_t covered = 0;
  for (size_t i = 0; i < exclude.size(); ++i) {
    if (contains(exclude[i]) && !isExcluded(exclude[i], exclude.first(i))) {
      ++covered;
    }
  }
  return covered == size_;
}

void InflightCounts::cover(std::span<const ServerEntry> servers) {
  for (const ServerEntry& server : servers) {
    if (server.id >= counts_.size()) {
      counts_.resize(server.id + 1, 0);
    }
  }
}

}  // namespace fulcrum::lb
