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
  weights_.clear();
  total_weight_ = 0;
  for (const ServerEntry& server : servers) {
    if (server.id >= weights_.size()) {
      weights_.resize(server.id + 1, 0);
    }
    weights_[server.id] = server.weight;
    total_weight_ += server.weight;
  }
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

int HashRing::lookupBounded(uint64_t key, std::span<const uint32_t> exclude, const InflightCounts& inflight,
                            uint64_t total_inflight, uint32_t factor_percent) const {
  if (hashes_.empty() || total_weight_ == 0 || members_.allExcluded(exclude)) {
    return kNoServer;
  }
  size_t i = static_cast<size_t>(std::lower_bound(hashes_.begin(), hashes_.end(), key) - hashes_.begin());
  // (total + 1) counts the request being placed; the product stays far inside 64 bits (a
  // factor of at most 1000, weights of at most 256).
  const uint64_t scaled = (total_inflight + 1) * factor_percent;
  for (size_t step = 0; step < hashes_.size(); ++step, ++i) {
    if (i == hashes_.size()) {
      i = 0;
    }
    const uint32_t owner = owners_[i];
    if (isExcluded(owner, exclude)) {
      continue;
    }
    const uint64_t weight = weights_[owner];
    const uint64_t bound = (scaled * weight + 100 * total_weight_ - 1) / (100 * total_weight_);
    if (inflight[owner] < bound) {
      return static_cast<int>(owner);
    }
  }
  return lookup(key, exclude);
}

}  // namespace fulcrum::lb
