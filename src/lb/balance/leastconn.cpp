// leastconn: the server with the fewest in-flight requests for its weight, i.e. the smallest
// (inflight + 1) / weight (HAProxy's leastconn; the +1 makes an idle heavy server beat an idle
// light one). Ties go to the server picked least recently, so equal servers take turns.
//
// The servers sit in a binary min-heap on that order, each server's heap position kept by id:
// pick() takes the top, onRequestStart/End move one server, all O(log n) and allocation-free.
// A retry (exclude not empty) scans the set instead: rare, and n is small.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "lb/balance/algorithms.h"
#include "lb/balance/server_set.h"

namespace fulcrum::lb {

namespace {

constexpr int32_t kNotInSet = -1;

// Everything the heap order reads, together: one cache line per comparison side.
struct ServerState {
  uint64_t last_pick = 0;  // value of picks_ when last chosen; 0 = never
  uint32_t inflight = 0;   // kept for servers out of the set too
  uint32_t weight = 1;
  int32_t position = kNotInSet;  // index in heap_
};

class LeastConn final : public Balancer {
 public:
  void setServers(std::span<const ServerEntry> input) override {
    std::vector<ServerEntry> servers = usableServers(input);
    for (uint32_t id : heap_) {
      state_[id].position = kNotInSet;
    }
    heap_.clear();
    members_.assign(servers);
    for (const ServerEntry& server : servers) {
      grow(server.id);
      state_[server.id].weight = server.weight;
      state_[server.id].position = static_cast<int32_t>(heap_.size());
      heap_.push_back(server.id);
    }
    for (size_t i = heap_.size() / 2; i-- > 0;) {
      siftDown(i);
    }
  }

  int pick(const PickContext& context) override {
    if (heap_.empty()) {
      return kNoServer;
    }
    size_t chosen = 0;
    if (members_.containsAny(context.exclude)) {
      chosen = heap_.size();
      for (size_t i = 0; i < heap_.size(); ++i) {
        if (!isExcluded(heap_[i], context.exclude) &&
            (chosen == heap_.size() || before(heap_[i], heap_[chosen]))) {
          chosen = i;
        }
      }
      if (chosen == heap_.size()) {
        return kNoServer;
      }
    }
    uint32_t id = heap_[chosen];
    state_[id].last_pick = ++picks_;  // to the back of its tie group
    siftDown(chosen);
    return static_cast<int>(id);
  }

  void onRequestStart(uint32_t id) override {
    grow(id);  // allocates only for an id setServers() never gave
    ++state_[id].inflight;
    if (state_[id].position != kNotInSet) {
      siftDown(static_cast<size_t>(state_[id].position));
    }
  }

  void onRequestEnd(uint32_t id) override {
    if (id >= state_.size() || state_[id].inflight == 0) {
      return;
    }
    --state_[id].inflight;
    if (state_[id].position != kNotInSet) {
      siftUp(static_cast<size_t>(state_[id].position));
    }
  }

 private:
  void grow(uint32_t id) {
    if (id >= state_.size()) {
      state_.resize(id + 1);
    }
  }

  // Whether server a comes before server b.
  bool before(uint32_t a, uint32_t b) const {
    const ServerState& sa = state_[a];
    const ServerState& sb = state_[b];
    // (inflight_a + 1) / weight_a < (inflight_b + 1) / weight_b, exactly: each side < 2^41.
    uint64_t load_a = (uint64_t{sa.inflight} + 1) * sb.weight;
    uint64_t load_b = (uint64_t{sb.inflight} + 1) * sa.weight;
    if (load_a != load_b) {
      return load_a < load_b;
    }
    if (sa.last_pick != sb.last_pick) {
      return sa.last_pick < sb.last_pick;
    }
    return a < b;
  }

  void place(size_t i, uint32_t id) {
    heap_[i] = id;
    state_[id].position = static_cast<int32_t>(i);
  }

  void siftUp(size_t i) {
    uint32_t id = heap_[i];
    while (i > 0) {
      size_t parent = (i - 1) / 2;
      if (!before(id, heap_[parent])) {
        break;
      }
      place(i, heap_[parent]);
      i = parent;
    }
    place(i, id);
  }

  void siftDown(size_t i) {
    uint32_t id = heap_[i];
    for (;;) {
      size_t child = 2 * i + 1;
      if (child >= heap_.size()) {
        break;
      }
      if (child + 1 < heap_.size() && before(heap_[child + 1], heap_[child])) {
        ++child;
      }
      if (!before(heap_[child], id)) {
        break;
      }
      place(i, heap_[child]);
      i = child;
    }
    place(i, id);
  }

  std::vector<ServerState> state_;  // by id; never shrinks, so in-flight counts survive
  std::vector<uint32_t> heap_;      // ids of the set, best first
  Membership members_;
  uint64_t picks_ = 0;
};

}  // namespace

std::unique_ptr<Balancer> makeLeastConn() {
  return std::make_unique<LeastConn>();
}

}  // namespace fulcrum::lb
