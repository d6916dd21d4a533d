#pragma once
// Reads waiting for a replica to replay their read-your-writes token, ordered by token: one
// replay position learned from a replica answers every waiter at or below it at once, so the
// router needs one check per replica per tick however many reads wait. Pure bookkeeping: the
// router decides what to check and where the answered reads run.
#include <map>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "web/db_routing.h"

namespace fulcrum::web {

template <typename T>
class TokenWaiters {
 public:
  void push(Lsn token, core::TimePoint deadline, T item) {
    by_token_.emplace(token, Entry{deadline, std::move(item)});
  }
  bool empty() const { return by_token_.empty(); }
  size_t size() const { return by_token_.size(); }
  // The largest token waiting; needs !empty().
  Lsn highest() const { return by_token_.rbegin()->first; }

  // Removes the waiters whose token is at or below `replayed`, oldest token first (equal tokens
  // in arrival order).
  std::vector<T> takeReplayed(Lsn replayed) {
    std::vector<T> out;
    auto end = by_token_.upper_bound(replayed);
    for (auto it = by_token_.begin(); it != end; ++it) {
      out.push_back(std::move(it->second.item));
    }
    by_token_.erase(by_token_.begin(), end);
    return out;
  }
  // Removes the waiters whose deadline has passed at `now`.
  std::vector<T> takeExpired(core::TimePoint now) {
    std::vector<T> out;
    for (auto it = by_token_.begin(); it != by_token_.end();) {
      if (now >= it->second.deadline) {
        out.push_back(std::move(it->second.item));
        it = by_token_.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }
  std::vector<T> takeAll() { return takeReplayed(~Lsn{0}); }

 private:
  struct Entry {
    core::TimePoint deadline;
    T item;
  };
  std::multimap<Lsn, Entry> by_token_;
};

}  // namespace fulcrum::web
