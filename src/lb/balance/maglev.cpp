// maglev: the client address (PickContext::client_hash, as for `source`) picks a slot of a
// Maglev lookup table (maglev.h). Compared with `source`: one memory read per pick and a more
// even spread, at the price of slightly more disruption when the set changes.
#include "lb/balance/maglev.h"

#include <algorithm>
#include <memory>
#include <string_view>

#include "lb/balance/algorithms.h"
#include "lb/balance/hash_ring.h"

namespace fulcrum::lb {

namespace {

constexpr uint64_t kOffsetSeed = 0x6d61676c65762d6fULL;  // "maglev-o"
constexpr uint64_t kSkipSeed = 0x6d61676c65762d73ULL;    // "maglev-s"
constexpr int32_t kFree = -1;

struct Claimant {
  std::string_view name;
  uint32_t id;
  uint32_t weight;
  uint64_t slot;  // the next slot of this server's permutation to try
  uint64_t skip;  // permutation step: 1..kSize-1, so with a prime size every slot comes up
  uint64_t due;   // takes a turn in rounds where round * weight >= due
};

class Maglev final : public Balancer {
 public:
  void setServers(std::span<const ServerEntry> servers) override { table_.build(usableServers(servers)); }
  int pick(const PickContext& context) override {
    return table_.lookup(context.client_hash, context.exclude);
  }

 private:
  MaglevTable table_;
};

}  // namespace

void MaglevTable::build(std::span<const ServerEntry> servers) {
  members_.assign(servers);
  slots_.clear();
  if (servers.empty()) {
    return;
  }
  std::vector<Claimant> claimants;
  uint32_t max_weight = 0;
  for (const ServerEntry& server : servers) {
    uint64_t offset = hashBytes(server.name, kOffsetSeed) % kSize;
    uint64_t skip = hashBytes(server.name, kSkipSeed) % (kSize - 1) + 1;
    claimants.push_back({server.name, server.id, server.weight, offset, skip, 0});
    max_weight = std::max(max_weight, server.weight);
  }
  std::sort(claimants.begin(), claimants.end(), [](const Claimant& a, const Claimant& b) {
    return a.name != b.name ? a.name < b.name : a.id < b.id;
  });
  std::vector<int32_t> owner(kSize, kFree);  // index into claimants
  uint32_t filled = 0;
  for (uint64_t round = 1; filled < kSize; ++round) {
    for (size_t i = 0; i < claimants.size() && filled < kSize; ++i) {
      Claimant& c = claimants[i];
      if (round * c.weight < c.due) {
        continue;
      }
      c.due += max_weight;
      while (owner[c.slot] != kFree) {
        c.slot = (c.slot + c.skip) % kSize;
      }
      owner[c.slot] = static_cast<int32_t>(i);
      c.slot = (c.slot + c.skip) % kSize;
      ++filled;
    }
  }
  slots_.reserve(kSize);
  for (int32_t index : owner) {
    slots_.push_back(claimants[static_cast<size_t>(index)].id);
  }
}

int MaglevTable::lookup(uint64_t key, std::span<const uint32_t> exclude) const {
  if (slots_.empty()) {
    return kNoServer;
  }
  size_t slot = static_cast<size_t>(mixKey(key) % kSize);
  if (exclude.empty()) {
    return static_cast<int>(slots_[slot]);
  }
  if (members_.allExcluded(exclude)) {
    return kNoServer;
  }
  while (isExcluded(slots_[slot], exclude)) {  // ends: some server is not excluded
    if (++slot == kSize) {
      slot = 0;
    }
  }
  return static_cast<int>(slots_[slot]);
}

std::unique_ptr<Balancer> makeMaglev() {
  return std::make_unique<Maglev>();
}

}  // namespace fulcrum::lb
