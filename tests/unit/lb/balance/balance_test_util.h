#pragma once
// Small pools and pick loops shared by the balancer tests.
#include <cstdint>
#include <deque>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "lb/balance/balancer.h"

namespace fulcrum::lb::testing {

// Servers with ids 0..n-1 (or the ids given) named "a", "b", ... (letters for n <= 26, else
// "node-<id>"), with the given weights. Owns the names the entries point at.
class TestPool {
 public:
  explicit TestPool(const std::vector<uint32_t>& weights) {
    for (size_t i = 0; i < weights.size(); ++i) {
      add(static_cast<uint32_t>(i), weights[i], weights.size() <= 26);
    }
  }
  static TestPool equal(size_t n) { return TestPool(std::vector<uint32_t>(n, 1)); }
  static TestPool withIds(const std::vector<uint32_t>& ids) {
    TestPool pool({});
    for (uint32_t id : ids) {
      pool.add(id, 1, false);
    }
    return pool;
  }

  const std::vector<ServerEntry>& entries() const { return entries_; }
  // The entries without server `id`.
  std::vector<ServerEntry> without(uint32_t id) const {
    std::vector<ServerEntry> rest;
    for (const ServerEntry& entry : entries_) {
      if (entry.id != id) {
        rest.push_back(entry);
      }
    }
    return rest;
  }

 private:
  void add(uint32_t id, uint32_t weight, bool letters) {
    names_.push_back(letters ? std::string(1, static_cast<char>('a' + id)) : "node-" + std::to_string(id));
    entries_.push_back(ServerEntry{id, weight, names_.back()});
  }

  std::deque<std::string> names_;  // a deque: growing it never moves a name
  std::vector<ServerEntry> entries_;
};

inline char letter(int id) {
  return id < 0 ? '-' : static_cast<char>('a' + id);
}

// `n` picks with a default context, as letters ("aabacaa").
inline std::string pickSequence(Balancer& balancer, int n) {
  std::string sequence;
  for (int i = 0; i < n; ++i) {
    sequence += letter(balancer.pick(PickContext{}));
  }
  return sequence;
}

// A context whose hashing keys vary with `i`, so every algorithm sees different requests.
struct VariedContext {
  std::string uri;
  PickContext context;
  explicit VariedContext(uint64_t i, std::span<const uint32_t> exclude = {})
      : uri("/item/" + std::to_string(i)) {
    context.client_hash = hashBytes(std::to_string(i), 7);
    context.uri = uri;
    context.exclude = exclude;
  }
  VariedContext(const VariedContext&) = delete;  // context.uri points into uri
  VariedContext& operator=(const VariedContext&) = delete;
};

// How often each id is picked over `n` varied requests.
inline std::map<int, int> pickCounts(Balancer& balancer, int n, std::span<const uint32_t> exclude = {}) {
  std::map<int, int> counts;
  for (int i = 0; i < n; ++i) {
    VariedContext varied(static_cast<uint64_t>(i), exclude);
    ++counts[balancer.pick(varied.context)];
  }
  return counts;
}

// Like pickCounts(), but every request stays in flight until `concurrency` later ones have
// started (constant concurrency), so load-aware algorithms see load.
inline std::map<int, int> pickCountsUnderLoad(Balancer& balancer, int n, size_t concurrency) {
  std::map<int, int> counts;
  std::deque<uint32_t> inflight;
  for (int i = 0; i < n; ++i) {
    VariedContext varied(static_cast<uint64_t>(i));
    int id = balancer.pick(varied.context);
    ++counts[id];
    if (id == kNoServer) {
      continue;
    }
    balancer.onRequestStart(static_cast<uint32_t>(id));
    inflight.push_back(static_cast<uint32_t>(id));
    if (inflight.size() > concurrency) {
      balancer.onRequestEnd(inflight.front());
      inflight.pop_front();
    }
  }
  return counts;
}

}  // namespace fulcrum::lb::testing
