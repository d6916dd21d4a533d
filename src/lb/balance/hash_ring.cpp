#include "lb/balance/hash_ring.h"

#include <algorithm>
#include <charconv>
#include <string>

namespace fulcrum::lb {

uint32_t HashRing::pointsPerWeight(uint64_t total_weight) {
  if (total_weight == 0) {
    return kPointsPerWeight;
  }
  return static_cast<uint32_t>(std::clamp<uint64_t>(kMaxPoints / total_weight, 1, kPointsPerWeight));
}

void HashRing::build(std::span<const ServerEntry> servers) {
  members_.assign(servers);
  struct Point {
    uint64_t hash;
    uint32_t owner;
  };
  uint64_t total_weight = 0;
  for (const ServerEntry& server : servers) {
    total_weight += server.weight;
  }
  uint32_t per_weight = pointsPerWeight(total_weight);
  std::vector<Point> points;
  points.reserve(total_weight * per_weight);
  std::string key;
  for (const ServerEntry& server : servers) {
    key.assign(server.name);
    key += '#';
    size_t prefix = key.size();
    for (uint32_t i = 0; i < per_weight * server.weight; ++i) {
      char digits[16];
      char* end = std::to_chars(digits, digits + sizeof digits, i).ptr;
      key.resize(prefix);
      key.append(digits, end);
      points.push_back({hashBytes(key), server.id});
    }
  }
  // Ordered by owner on a (rare) equal hash too, so the ring never depends on the input order.
  std::sort(points.begin(), points.end(), [](const Point& a, const Point& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.owner < b.owner;
  });
  hashes_.clear();
  owners_.clear();
  hashes_.reserve(points.size());
  owners_.reserve(points.size());
  for (const Point& point : points) {
    hashes_.push_back(point.hash);
    owners_.push_back(point.owner);
  }
}

int HashRing::lookup(uint64_t key, std::span<const uint32_t> exclude) const {
  if (hashes_.empty()) {
    return kNoServer;
  }
  size_t i = static_cast<size_t>(std::lower_bound(hashes_.begin(), hashes_.end(), key) - hashes_.begin());
  if (i == hashes_.size()) {
    i = 0;
  }
  if (exclude.empty()) {
    return static_cast<int>(owners_[i]);
  }
  if (members_.allExcluded(exclude)) {
    return kNoServer;
  }
  while (isExcluded(owners_[i], exclude)) {  // ends: some owner is not excluded
    if (++i == owners_.size()) {
      i = 0;
    }
  }
  return static_cast<int>(owners_[i]);
}

}  // namespace fulcrum::lb
