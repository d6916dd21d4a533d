#pragma once
// Per-server concurrency limits ([[web.node]] max_conn, HAProxy's server maxconn) and the one
// queue of requests waiting for a free slot, shared by every worker thread of an lb: a limit
// holds across the workers, and a waiter from any worker is served in arrival order.
//
// The request path touches this only for servers with a limit: a slot is one atomic add (a
// compare-and-swap under the limit). The queue is behind a mutex, taken only while requests
// wait. A freed slot goes straight to the oldest waiter (the count does not drop), posted to
// its worker's loop; a waiter that gave up meanwhile passes it on.
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "core/clock.h"

namespace fulcrum::lb {

struct SlotLimits {
  uint32_t max_conn = 0;  // 0: no limit
  bool backup = false;
  bool removed = false;
};

class ServerSlots {
 public:
  // Gives waiter `ticket` of worker `worker` a slot on `server`: called under the queue's lock,
  // it must only post (to that worker's loop).
  using Deliver = std::function<void(uint32_t worker, uint64_t ticket, uint32_t server)>;

  ServerSlots(const std::vector<SlotLimits>& servers, size_t max_queue, Deliver deliver);
  ServerSlots(const ServerSlots&) = delete;
  ServerSlots& operator=(const ServerSlots&) = delete;

  // --- main thread: the server table (a reload) and each server's state ---------------------
  // Grows with new ids (never shrinks); a raised limit serves waiters at once.
  void setServers(const std::vector<SlotLimits>& servers);
  // Whether a server takes requests (health up, in rotation): only those get queued requests.
  // A server starts up, as in the workers' pools.
  void setUp(uint32_t id, bool up);
  void setInRotation(uint32_t id, bool in_rotation);
  void setEjected(uint32_t id, bool ejected);  // [lb.outlier]

  // --- any worker -------------------------------------------------------------------------
  bool limited(uint32_t id) const {
    return id < size_ && servers_[id].limit.load(std::memory_order_relaxed) != 0;
  }
  // A slot on `id` unless it is full or requests already wait (they go first). Only for a
  // limited server.
  bool tryAcquire(uint32_t id);
  // Gives back a slot taken by tryAcquire or delivered to a waiter.
  void release(uint32_t id);
  // Queues a waiter; 0 when the queue is full. The slot may be delivered before this returns
  // (posted: the caller's loop runs it later).
  uint64_t enqueue(uint32_t worker);
  // The waiter gives up (timeout, client gone). False when its slot is already on the way: the
  // delivery then finds no waiter and releases it.
  bool cancel(uint64_t ticket);

  size_t queued() const { return queued_.load(std::memory_order_relaxed); }
  uint32_t active(uint32_t id) const {
    return id < size_ ? servers_[id].active.load(std::memory_order_relaxed) : 0;
  }
  // Some server has a limit: requests go through the slots (else the pools pick as before).
  bool anyLimited() const { return any_limited_.load(std::memory_order_relaxed); }
  void setMaxQueue(size_t max_queue) { max_queue_.store(max_queue, std::memory_order_relaxed); }

  // Upper bound on servers, fixed at construction: the per-server array never moves, so
  // workers read it without the lock while a reload appends.
  static constexpr size_t kMaxServers = 16384;  // as ProxyStats::backends

 private:
  struct Server {
    std::atomic<uint32_t> active{0};
    std::atomic<uint32_t> limit{0};
    // Written on the main thread under mu_, read by dispatch under mu_.
    bool backup = false;
    bool removed = false;
    bool up = true;
    bool in_rotation = true;
    bool ejected = false;
    bool usable() const { return up && in_rotation && !ejected && !removed; }
  };
  struct Waiter {
    uint32_t worker = 0;
    uint64_t ticket = 0;
  };

  // Hands free slots of usable servers to the oldest waiters. Holds mu_.
  void dispatchLocked();

  std::unique_ptr<Server[]> servers_;
  std::atomic<size_t> size_{0};
  std::atomic<size_t> max_queue_;
  std::atomic<bool> any_limited_{false};
  Deliver deliver_;
  std::mutex mu_;
  std::deque<Waiter> queue_;
  std::atomic<size_t> queued_{0};
  uint64_t next_ticket_ = 1;
  size_t next_server_ = 0;  // where the next dispatch starts looking (spreads waiters)
};

}  // namespace fulcrum::lb
