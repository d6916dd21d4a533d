#include "lb/server_slots.h"

#include <algorithm>
#include <stdexcept>

namespace fulcrum::lb {

ServerSlots::ServerSlots(const std::vector<SlotLimits>& servers, size_t max_queue, Deliver deliver)
    : servers_(std::make_unique<Server[]>(kMaxServers)), max_queue_(max_queue), deliver_(std::move(deliver)) {
  setServers(servers);
  for (size_t i = 0; i < servers.size(); ++i) {
    servers_[i].up = true;  // the servers the lb starts with start up, as in the pools
  }
}

void ServerSlots::setServers(const std::vector<SlotLimits>& servers) {
  if (servers.size() > kMaxServers) {
    throw std::length_error("too many servers for the slot table");
  }
  std::lock_guard lock(mu_);
  bool any = false;
  for (size_t i = 0; i < servers.size(); ++i) {
    any = any || (servers[i].max_conn != 0 && !servers[i].removed);
    Server& s = servers_[i];
    s.limit.store(servers[i].max_conn);
    s.backup = servers[i].backup;
    s.removed = servers[i].removed;
    if (i >= size_.load()) {
      s.up = false;  // a server a reload adds is down until its first check passes (as in the pools)
    }
  }
  size_.store(std::max(size_.load(), servers.size()));
  any_limited_.store(any);
  dispatchLocked();
}

void ServerSlots::setUp(uint32_t id, bool up) {
  std::lock_guard lock(mu_);
  if (id < size_) {
    servers_[id].up = up;
    dispatchLocked();
  }
}

void ServerSlots::setInRotation(uint32_t id, bool in_rotation) {
  std::lock_guard lock(mu_);
  if (id < size_) {
    servers_[id].in_rotation = in_rotation;
    dispatchLocked();
  }
}

void ServerSlots::setEjected(uint32_t id, bool ejected) {
  std::lock_guard lock(mu_);
  if (id < size_) {
    servers_[id].ejected = ejected;
    dispatchLocked();
  }
}

bool ServerSlots::tryAcquire(uint32_t id) {
  if (id >= size_ || queued_.load() > 0) {
    return false;
  }
  Server& s = servers_[id];
  uint32_t active = s.active.load(std::memory_order_relaxed);
  for (;;) {
    uint32_t limit = s.limit.load(std::memory_order_relaxed);
    if (limit != 0 && active >= limit) {
      return false;
    }
    if (s.active.compare_exchange_weak(active, active + 1)) {
      return true;
    }
  }
}

void ServerSlots::release(uint32_t id) {
  servers_[id].active.fetch_sub(1);
  // Ordered after the decrement (both sequentially consistent): a waiter queued meanwhile is
  // seen here, or its own dispatch sees the free slot.
  if (queued_.load() > 0) {
    std::lock_guard lock(mu_);
    dispatchLocked();
  }
}

uint64_t ServerSlots::enqueue(uint32_t worker) {
  std::lock_guard lock(mu_);
  if (queue_.size() >= max_queue_.load(std::memory_order_relaxed)) {
    return 0;
  }
  uint64_t ticket = next_ticket_++;
  queue_.push_back(Waiter{worker, ticket});
  queued_.store(queue_.size());
  dispatchLocked();
  return ticket;
}

bool ServerSlots::cancel(uint64_t ticket) {
  std::lock_guard lock(mu_);
  // Tickets are queued in increasing order: a binary search finds one.
  auto it = std::lower_bound(queue_.begin(), queue_.end(), ticket,
                             [](const Waiter& w, uint64_t t) { return w.ticket < t; });
  if (it == queue_.end() || it->ticket != ticket) {
    return false;
  }
  queue_.erase(it);
  queued_.store(queue_.size());
  return true;
}

void ServerSlots::dispatchLocked() {
  const size_t n = size_.load();
  if (queue_.empty() || n == 0) {
    return;
  }
  // Backups take waiters only while no active server can (as the balancers pick).
  bool active_usable = false;
  for (size_t i = 0; i < n && !active_usable; ++i) {
    const Server& s = servers_[i];
    active_usable = !s.backup && s.usable();
  }
  while (!queue_.empty()) {
    size_t chosen = n;
    for (size_t k = 0; k < n; ++k) {
      size_t i = (next_server_ + k) % n;
      Server& s = servers_[i];
      if (!s.usable() || s.backup == active_usable) {
        continue;
      }
      uint32_t limit = s.limit.load();
      uint32_t active = s.active.load();
      // A worker's tryAcquire may race for the same slot: the add decides.
      while (limit == 0 || active < limit) {
        if (s.active.compare_exchange_weak(active, active + 1)) {
          chosen = i;
          break;
        }
      }
      if (chosen != n) {
        break;
      }
    }
    if (chosen == n) {
      return;
    }
    next_server_ = chosen + 1;
    Waiter w = queue_.front();
    queue_.pop_front();
    queued_.store(queue_.size());
    deliver_(w.worker, w.ticket, static_cast<uint32_t>(chosen));
  }
}

}  // namespace fulcrum::lb
