#pragma once
// The servers behind a load balancer as one worker thread sees them: which are up, the
// balancers choosing among them, in-flight counts and idle keep-alive connections. One
// WorkerPool per worker thread; changes arrive as messages on the worker's loop, so the
// request path reads all of this without a lock.
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/address.h"
#include "core/counter.h"
#include "core/event_loop.h"
#include "core/fd.h"
#include "core/stable_vector.h"
#include "lb/balance/balancer.h"
#include "lb/server_slots.h"
#include "tls/tls_transport.h"

namespace fulcrum::lb {

// A server as the lb knows it. `id` is its index in the lb's server table, stable for the
// process's life: a reload that removes a server marks it `removed` (its in-flight requests end,
// it takes no new ones, its counters stay), and one that adds a server appends a new id.
struct Backend {
  uint32_t id = 0;
  std::string name;
  core::SocketAddress address;
  std::string address_text;
  uint32_t weight = 1;
  bool backup = false;
  bool removed = false;
  uint32_t max_conn = 0;  // concurrent requests at most (ServerSlots); 0: no limit
  // [[web.node]] send_proxy: 1 or 2, the PROXY protocol version each new connection starts with; 0: none.
  uint8_t send_proxy = 0;
};

class WorkerPool;

// A request waiting in the lb's queue for a slot on a server with max_conn.
class SlotWaiter {
 public:
  virtual ~SlotWaiter() = default;
  // Its slot on `server` (held: the waiter gives it back through WorkerPool::releaseSlot).
  virtual void onSlot(uint32_t server) = 0;
};

// Receives the events of an upstream connection while it is attached to a request.
class UpstreamOwner {
 public:
  virtual ~UpstreamOwner() = default;
  virtual void onUpstreamEvents(uint32_t events) = 0;
};

// A connection to a server. It stays registered with the worker's epoll for its whole life,
// whether parked idle in the pool or serving a request, so handing it over costs no syscall.
// A readable event while parked means the server closed it (or sent garbage): it is dropped.
// Closed through WorkerPool::retire(): an event for it may still wait in the current batch.
class UpstreamConn final : public core::IoHandler, public core::Deletable {
 public:
  UpstreamConn(core::EventLoop& loop, uint32_t server, core::Fd fd, uint32_t events);
  ~UpstreamConn() override;
  UpstreamConn(const UpstreamConn&) = delete;
  UpstreamConn& operator=(const UpstreamConn&) = delete;

  void onIoEvents(uint32_t events) override;
  // Changes the epoll interest set (no syscall when unchanged).
  void setEvents(uint32_t events);
  int fd() const { return fd_.get(); }
  uint32_t server() const { return server_; }
  // [security] internal_tls: the connection speaks TLS through `tls` (set before any byte
  // moves). Plain connections use the socket directly, with no indirection.
  void setTls(std::unique_ptr<tls::TlsTransport> tls) { tls_ = std::move(tls); }
  tls::TlsTransport* tls() const { return tls_.get(); }
  ssize_t read(core::Buffer& buf, size_t max_total) {
    return tls_ ? tls_->read(buf, max_total) : buf.readFrom(fd_.get(), max_total);
  }
  ssize_t write(core::Buffer& buf) { return tls_ ? tls_->write(buf) : buf.writeTo(fd_.get()); }
  void shutdownWrite() {
    if (tls_) {
      tls_->shutdownWrite();
    } else {
      ::shutdown(fd_.get(), SHUT_WR);
    }
  }
  // epoll events TLS needs for its own progress (a read that must write first, or the reverse).
  uint32_t extraEvents() const { return tls_ ? tls_->extraEvents() : 0; }
  void setOwner(UpstreamOwner* owner) { owner_ = owner; }
  void park(WorkerPool* pool, core::TimePoint since) {
    owner_ = nullptr;
    parked_in_ = pool;
    since_ = since;
  }
  core::TimePoint since() const { return since_; }
  bool reused = false;

 private:
  core::EventLoop& loop_;
  uint32_t server_;
  core::Fd fd_;
  std::unique_ptr<tls::TlsTransport> tls_;  // freed before the socket it works on
  uint32_t events_;
  UpstreamOwner* owner_ = nullptr;
  WorkerPool* parked_in_ = nullptr;
  core::TimePoint since_{};
};

// One worker's keep-alive connections to each server, by server id: written by the worker, read
// by the stats listener.
// Grown by the main thread like ProxyStats::backends.
struct PoolStats {
  explicit PoolStats(size_t servers) : idle(servers), reused(servers) {}
  void grow(size_t servers) {
    idle.grow(servers);
    reused.grow(servers);
  }
  core::StableVector<core::Counter> idle;    // parked now
  core::StableVector<core::Counter> reused;  // requests sent on a parked connection
};

struct PoolOptions {
  // Parked connections per server (per worker). High enough never to churn at a busy moment: an
  // HTTP/2 client alone may have 100 requests in flight, and the idle ones are closed after
  // idle_timeout anyway, so what is kept never exceeds the recent peak of requests in flight.
  size_t max_idle_per_server = 8192;
  core::Duration idle_timeout = std::chrono::seconds(10);
  PoolStats* stats = nullptr;  // sized for the backends; none when null
  BalancerOptions balance;      // [lb] hash_balance_factor (a change needs a restart)
  // [lb] slow_start_ms: a server that comes up (or back from maintenance) ramps its weight from
  // almost nothing to its full share over this time, for the algorithms whose shares follow the
  // weights from request to request (roundrobin, leastconn, random2); 0: at once.
  core::Duration slow_start{};
  // [[web.node]] max_conn: the slots and queue every worker shares (not owned); null when no
  // server has a limit. `worker` is this pool's index in its deliveries.
  ServerSlots* slots = nullptr;
  uint32_t worker = 0;
};

// The weight a server has `elapsed` into its slow start of `period`: its share grows linearly
// from 1/`scale` of its weight; `scale` multiplies every weight of the set so that a weight of 1
// can ramp too (at most 256 in all).
uint32_t slowStartWeight(uint32_t weight, uint32_t scale, core::Duration elapsed, core::Duration period);

class WorkerPool {
 public:
  WorkerPool(core::EventLoop& loop, const std::vector<Backend>& backends, std::string_view algorithm,
             const PoolOptions& options);
  ~WorkerPool();

  const std::vector<Backend>& backends() const { return backends_; }
  const Backend& backend(uint32_t id) const { return backends_[id]; }

  // Picks a server for a request; kNoServer when none is usable. Active servers that are up
  // take all traffic; backups only while no active server is up, or once a request has been
  // refused by every active one (context.exclude).
  int pick(const PickContext& context);
  void onRequestStart(uint32_t id);
  void onRequestEnd(uint32_t id);

  // With server limits (max_conn): picks as pick() does among the servers with a free slot and
  // takes the slot; kNoServer with `full` set when every server that could take the request is
  // at its limit (the request may wait in the queue). `slot` tells whether a slot was taken.
  int pickWithSlot(const PickContext& context, bool& full, bool& slot);
  bool limitsSlots() const { return options_.slots != nullptr && options_.slots->anyLimited(); }
  ServerSlots* slots() const { return options_.slots; }
  // A server that takes requests now: up, in rotation, not ejected, not removed (and not a
  // backup while an active server is up).
  bool usable(uint32_t id) const;
  // The id of the server named `name` (sticky cookies), or kNoServer.
  int findByName(std::string_view name) const;
  // Queues `waiter` for the next free slot; 0 when the queue is full. Cancelled with cancelWait
  // (also when its slot is on the way: the slot then goes to the next waiter).
  uint64_t waitForSlot(SlotWaiter* waiter);
  void cancelWait(uint64_t ticket);
  void releaseSlot(uint32_t id) { options_.slots->release(id); }
  // A slot the queue gave ticket `ticket` (posted to this worker's loop).
  void deliverSlot(uint64_t ticket, uint32_t server);

  // A reload's new server table (every id so far, removed ones marked) and algorithm, on this
  // worker's loop. Servers keep their state by id; new ids start down (the checker brings them
  // up); removed ones take no new request, their idle connections close, and their in-flight
  // requests end normally. A changed algorithm starts new balancers.
  void applyServers(const std::vector<Backend>& backends, std::string_view algorithm);
  // Health (from the checker) and admin changes, applied on this worker's loop. A server takes
  // new requests only while it is up and in rotation (admin state "ready").
  void setUp(uint32_t id, bool up);
  void setInRotation(uint32_t id, bool in_rotation);
  // [lb.outlier]: an ejected server takes no new requests whatever its health and admin state.
  void setEjected(uint32_t id, bool ejected);
  bool isUp(uint32_t id) const { return up_[id]; }
  bool anyUsable() const;

  // A parked connection to `id`, or null.
  std::unique_ptr<UpstreamConn> takeIdle(uint32_t id);
  // Parks a healthy keep-alive connection (closed instead when the pool is full or the server down).
  void putIdle(std::unique_ptr<UpstreamConn> conn);
  // A parked connection saw an event: the server closed it. Called from its own callback.
  void dropIdle(UpstreamConn* conn);
  // Closes a connection from inside an event batch: it is detached now and freed after the
  // batch, since an event for it may still be waiting in this one.
  void retire(std::unique_ptr<UpstreamConn> conn);
  size_t idleCount(uint32_t id) const { return idle_[id].size(); }

 private:
  void rebuild();
  // Up, in rotation, not ejected, not removed: what the balancers choose among.
  bool inService(uint32_t id) const {
    return up_[id] && in_rotation_[id] && !ejected_[id] && !backends_[id].removed;
  }
  void startRamp(uint32_t id);
  void closeIdle(uint32_t id);
  void sweepIdle();
  void countIdle(uint32_t id, size_t parked, size_t left);

  core::EventLoop& loop_;
  std::vector<Backend> backends_;
  std::string algorithm_;
  PoolOptions options_;
  std::vector<bool> up_;
  std::vector<bool> in_rotation_;
  std::vector<bool> ejected_;
  std::vector<core::TimePoint> usable_since_;  // by id: when it last became usable (slow start)
  bool slow_start_applies_ = false;            // options_.slow_start set, and a dynamic algorithm
  std::unique_ptr<Balancer> active_;
  std::unique_ptr<Balancer> backup_;
  bool use_backup_ = false;
  std::vector<std::vector<std::unique_ptr<UpstreamConn>>> idle_;
  core::Timer sweep_timer_;
  core::Timer ramp_timer_;  // rebuilds the balancers while a server ramps up
  std::unordered_map<uint64_t, SlotWaiter*> waiters_;  // this worker's requests in the queue
  std::vector<uint32_t> exclude_;                       // pickWithSlot's scratch
};

}  // namespace fulcrum::lb
