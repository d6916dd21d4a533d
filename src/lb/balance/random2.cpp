// random2: the power of two choices (Mitzenmacher; Envoy's least_request, HAProxy's "random(2)").
// Draw two distinct servers at random, each with probability proportional to its weight, and
// take the one with fewer in-flight requests for its weight; on a tie, the first drawn. Idle
// servers are therefore chosen in proportion to their weights, and a loaded one is avoided
// without scanning the set.
//
// A weighted draw is O(1): Vose's alias table, one random number per draw. When the second draw
// repeats the first it is drawn again from the cumulative weights with the first's span cut out
// (O(log n), never loops). That makes the second exactly "by weight among the others":
// p_j + p_i * p_j / (1 - p_i) = p_j / (1 - p_i). A retry (exclude naming a server of the set)
// draws by scanning the set: rare.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "lb/balance/algorithms.h"
#include "lb/balance/server_set.h"

namespace fulcrum::lb {

namespace {

struct Server {
  uint32_t id;
  uint32_t weight;
};

// One column of the alias table: a uniform point below `threshold` lands on `server`, others
// (up to the total weight) on `alias`.
struct Column {
  uint64_t threshold;
  uint32_t server;
  uint32_t alias;
};

uint64_t mulHigh(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
}

class RandomTwo final : public Balancer {
 public:
  explicit RandomTwo(core::Random random) : random_(random) {}

  void setServers(std::span<const ServerEntry> input) override {
    std::vector<ServerEntry> usable = usableServers(input);
    inflight_.cover(usable);
    members_.assign(usable);
    servers_.clear();
    ends_.clear();
    total_ = 0;
    for (const ServerEntry& entry : usable) {
      servers_.push_back({entry.id, entry.weight});
      total_ += entry.weight;
      ends_.push_back(total_);
    }
    buildAliasTable();
  }

  int pick(const PickContext& context) override {
    if (members_.containsAny(context.exclude)) {
      return pickExcluding(context.exclude);
    }
    if (servers_.size() <= 1) {
      return servers_.empty() ? kNoServer : static_cast<int>(servers_[0].id);
    }
    uint32_t first = draw();
    uint32_t second = draw();
    if (second == first) {
      second = drawOtherThan(first);
    }
    return static_cast<int>(lessLoaded(servers_[first], servers_[second]).id);
  }

  void onRequestStart(uint32_t id) override { inflight_.start(id); }
  void onRequestEnd(uint32_t id) override { inflight_.end(id); }

 private:
  // Vose: columns of capacity total_; each under-full server's column is topped up by an
  // over-full one, until every column is full. All in integers, so exact.
  void buildAliasTable() {
    size_t n = servers_.size();
    columns_.assign(n, Column{});
    std::vector<uint64_t> mass(n);
    std::vector<uint32_t> under;
    std::vector<uint32_t> over;
    for (uint32_t i = 0; i < n; ++i) {
      mass[i] = uint64_t{servers_[i].weight} * n;
      columns_[i] = Column{total_, i, i};
      (mass[i] < total_ ? under : over).push_back(i);
    }
    while (!under.empty() && !over.empty()) {
      uint32_t small = under.back();
      uint32_t large = over.back();
      under.pop_back();
      over.pop_back();
      columns_[small] = Column{mass[small], small, large};
      mass[large] -= total_ - mass[small];
      (mass[large] < total_ ? under : over).push_back(large);
    }
  }

  // A server index, by weight. The 128-bit product of one random number and n gives the column
  // (high half) and a uniform fraction for the coin (low half).
  uint32_t draw() {
    unsigned __int128 product = static_cast<unsigned __int128>(random_.next()) * servers_.size();
    const Column& column = columns_[static_cast<size_t>(product >> 64)];
    return mulHigh(static_cast<uint64_t>(product), total_) < column.threshold ? column.server : column.alias;
  }

  // By weight among all but `first`: a point of the cumulative weights with first's span cut out.
  uint32_t drawOtherThan(uint32_t first) {
    uint64_t weight = servers_[first].weight;
    uint64_t point = random_.below(total_ - weight);
    point += point >= ends_[first] - weight ? weight : 0;
    return static_cast<uint32_t>(std::upper_bound(ends_.begin(), ends_.end(), point) - ends_.begin());
  }

  // `first` unless `second` has fewer in-flight requests per unit of weight.
  const Server& lessLoaded(const Server& first, const Server& second) const {
    uint64_t load_first = uint64_t{inflight_[first.id]} * second.weight;
    uint64_t load_second = uint64_t{inflight_[second.id]} * first.weight;
    return load_second < load_first ? second : first;
  }

  // The same two weighted draws, over the servers not yet tried.
  int pickExcluding(std::span<const uint32_t> exclude) {
    if (members_.allExcluded(exclude)) {
      return kNoServer;
    }
    uint64_t left = 0;
    for (const Server& server : servers_) {
      left += isExcluded(server.id, exclude) ? 0 : server.weight;
    }
    const Server* first = drawExcluding(exclude, nullptr, random_.below(left));
    if (left == first->weight) {
      return static_cast<int>(first->id);  // the only one left
    }
    const Server* second = drawExcluding(exclude, first, random_.below(left - first->weight));
    return static_cast<int>(lessLoaded(*first, *second).id);
  }

  // The server at `point` of the cumulative weights of the servers neither excluded nor `skip`.
  const Server* drawExcluding(std::span<const uint32_t> exclude, const Server* skip, uint64_t point) const {
    for (const Server& server : servers_) {
      if (&server == skip || isExcluded(server.id, exclude)) {
        continue;
      }
      if (point < server.weight) {
        return &server;
      }
      point -= server.weight;
    }
    return nullptr;  // unreachable: point < the weights left
  }

  core::Random random_;
  std::vector<Server> servers_;
  std::vector<Column> columns_;  // alias table, one column per server
  std::vector<uint64_t> ends_;   // cumulative weights: server i spans [ends_[i] - w_i, ends_[i])
  uint64_t total_ = 0;
  Membership members_;
  InflightCounts inflight_;
};

}  // namespace

std::unique_ptr<Balancer> makeRandomTwo(core::Random random) {
  return std::make_unique<RandomTwo>(random);
}

}  // namespace fulcrum::lb
