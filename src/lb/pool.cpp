#include "lb/pool.h"

#include <algorithm>
#include <stdexcept>

#include "core/log.h"

namespace fulcrum::lb {

UpstreamConn::UpstreamConn(core::EventLoop& loop, uint32_t server, core::Fd fd, uint32_t events)
    : loop_(loop), server_(server), fd_(std::move(fd)), events_(events) {
  loop_.add(fd_.get(), events_, this);
}

UpstreamConn::~UpstreamConn() {
  loop_.remove(fd_.get());
}

void UpstreamConn::onIoEvents(uint32_t events) {
  if (owner_ != nullptr) {
    owner_->onUpstreamEvents(events);
  } else if (parked_in_ != nullptr) {
    parked_in_->dropIdle(this);
  }
}

void UpstreamConn::setEvents(uint32_t events) {
  if (events != events_) {
    events_ = events;
    loop_.modify(fd_.get(), events_, this);
  }
}

WorkerPool::WorkerPool(core::EventLoop& loop, const std::vector<Backend>& backends,
                       std::string_view algorithm, const PoolOptions& options)
    : loop_(loop),
      backends_(backends),
      algorithm_(algorithm),
      options_(options),
      up_(backends.size(), true),
      in_rotation_(backends.size(), true),
      ejected_(backends.size(), false),
      idle_(backends.size()),
      sweep_timer_(loop, [this] { sweepIdle(); }),
      ramp_timer_(loop, [this] { rebuild(); }) {
  core::Random random = core::Random::fromOs();
  active_ = makeBalancer(algorithm, core::Random(random.next()), options_.balance);
  backup_ = makeBalancer(algorithm, core::Random(random.next()), options_.balance);
  if (!active_ || !backup_) {
    throw std::invalid_argument("unknown balancing algorithm");
  }
  rebuild();
  sweep_timer_.armAfter(std::chrono::seconds(1));
}

WorkerPool::~WorkerPool() = default;

namespace {

// The algorithms whose shares follow the weights request by request: a weight change takes
// effect at once and moves no key (the hashing ones would remap keys at every step of a ramp).
bool rampsWeights(std::string_view algorithm) {
  return algorithm == "roundrobin" || algorithm == "leastconn" || algorithm == "random2";
}

}  // namespace

uint32_t slowStartWeight(uint32_t weight, uint32_t scale, core::Duration elapsed, core::Duration period) {
  const uint64_t full = uint64_t{weight} * scale;
  if (period <= core::Duration::zero() || elapsed >= period) {
    return static_cast<uint32_t>(full);
  }
  const double share = std::max(0.0, std::chrono::duration<double>(elapsed) / std::chrono::duration<double>(period));
  return static_cast<uint32_t>(std::clamp<uint64_t>(static_cast<uint64_t>(static_cast<double>(full) * share), 1, full));
}

void WorkerPool::startRamp(uint32_t id) {
  if (slow_start_applies_ && id < usable_since_.size()) {
    usable_since_[id] = loop_.now();
  }
}

void WorkerPool::rebuild() {
  slow_start_applies_ = options_.slow_start > core::Duration::zero() && rampsWeights(algorithm_);
  usable_since_.resize(backends_.size(), core::TimePoint{});
  // With slow start every weight is scaled up (as far as 256 allows, at most 16 times) so that
  // a server of weight 1 ramps in steps too; the shares between servers at full weight stay.
  uint32_t scale = 1;
  if (slow_start_applies_) {
    uint32_t heaviest = 1;
    for (const Backend& b : backends_) {
      heaviest = std::max(heaviest, std::clamp<uint32_t>(b.weight, 1, 256));
    }
    scale = std::clamp<uint32_t>(256 / heaviest, 1, 16);
  }
  const core::TimePoint now = loop_.now();
  bool ramping = false;
  std::vector<ServerEntry> active;
  std::vector<ServerEntry> backup;
  for (const Backend& b : backends_) {
    if (!inService(b.id)) {
      continue;
    }
    uint32_t weight = b.weight;
    if (slow_start_applies_) {
      const core::Duration elapsed = now - usable_since_[b.id];
      weight = slowStartWeight(std::clamp<uint32_t>(b.weight, 1, 256), scale, elapsed, options_.slow_start);
      ramping = ramping || elapsed < options_.slow_start;
    }
    (b.backup ? backup : active).push_back(ServerEntry{b.id, weight, b.name});
  }
  if (ramping) {
    // Sixteen steps over the ramp (none closer than 50 ms apart).
    ramp_timer_.armAfter(std::max<core::Duration>(options_.slow_start / 16, std::chrono::milliseconds(50)));
  } else {
    ramp_timer_.disarm();
  }
  active_->setServers(active);
  backup_->setServers(backup);
  use_backup_ = active.empty();
}

int WorkerPool::pick(const PickContext& context) {
  if (use_backup_) {
    return backup_->pick(context);
  }
  int id = active_->pick(context);
  if (id == kNoServer) {
    // Every active server failed this request before health checks caught up: a backup
    // beats a 503.
    id = backup_->pick(context);
  }
  return id;
}

int WorkerPool::pickWithSlot(const PickContext& context, bool& full, bool& slot) {
  full = false;
  slot = false;
  ServerSlots& slots = *options_.slots;
  exclude_.assign(context.exclude.begin(), context.exclude.end());
  PickContext ctx = context;
  // The balancer picks as usual; a server at its limit is set aside and the pick goes on among
  // the others. Backups stand in for failed active servers, never for busy ones: when the
  // active servers are full the request waits for them.
  Balancer* order[2] = {use_backup_ ? backup_.get() : active_.get(), use_backup_ ? nullptr : backup_.get()};
  for (Balancer* balancer : order) {
    if (balancer == nullptr || full) {
      break;
    }
    for (size_t guard = 0; guard <= backends_.size(); ++guard) {
      ctx.exclude = exclude_;
      int id = balancer->pick(ctx);
      if (id == kNoServer) {
        break;
      }
      auto uid = static_cast<uint32_t>(id);
      if (!slots.limited(uid)) {
        return id;
      }
      if (slots.tryAcquire(uid)) {
        slot = true;
        return id;
      }
      full = true;
      exclude_.push_back(uid);
    }
  }
  return kNoServer;
}

uint64_t WorkerPool::waitForSlot(SlotWaiter* waiter) {
  uint64_t ticket = options_.slots->enqueue(options_.worker);
  if (ticket != 0) {
    waiters_.emplace(ticket, waiter);  // a delivery is posted, so it finds this entry
  }
  return ticket;
}

void WorkerPool::cancelWait(uint64_t ticket) {
  waiters_.erase(ticket);
  options_.slots->cancel(ticket);
}

void WorkerPool::deliverSlot(uint64_t ticket, uint32_t server) {
  auto it = waiters_.find(ticket);
  if (it == waiters_.end()) {
    options_.slots->release(server);  // its waiter gave up meanwhile: the next one takes it
    return;
  }
  SlotWaiter* waiter = it->second;
  waiters_.erase(it);
  waiter->onSlot(server);
}

void WorkerPool::onRequestStart(uint32_t id) {
  (backends_[id].backup ? backup_ : active_)->onRequestStart(id);
}

void WorkerPool::onRequestEnd(uint32_t id) {
  (backends_[id].backup ? backup_ : active_)->onRequestEnd(id);
}

bool WorkerPool::usable(uint32_t id) const {
  return id < backends_.size() && inService(id) && (!backends_[id].backup || use_backup_);
}

int WorkerPool::findByName(std::string_view name) const {
  for (const Backend& b : backends_) {
    if (b.name == name && !b.removed) {
      return static_cast<int>(b.id);
    }
  }
  return kNoServer;
}

bool WorkerPool::anyUsable() const {
  return std::any_of(backends_.begin(), backends_.end(),
                     [this](const Backend& b) { return up_[b.id] && !b.removed; });
}

void WorkerPool::applyServers(const std::vector<Backend>& backends, std::string_view algorithm) {
  const size_t known = backends_.size();
  backends_ = backends;
  up_.resize(backends_.size(), false);  // new servers: down until their first check passes
  in_rotation_.resize(backends_.size(), true);
  ejected_.resize(backends_.size(), false);
  idle_.resize(backends_.size());
  for (const Backend& b : backends_) {
    if (b.removed && b.id < known) {
      closeIdle(b.id);
    }
  }
  if (algorithm != algorithm_) {
    core::Random random = core::Random::fromOs();
    std::unique_ptr<Balancer> active = makeBalancer(algorithm, core::Random(random.next()), options_.balance);
    std::unique_ptr<Balancer> backup = makeBalancer(algorithm, core::Random(random.next()), options_.balance);
    if (active && backup) {  // the reload validated the name: never otherwise
      active_ = std::move(active);
      backup_ = std::move(backup);
      algorithm_ = algorithm;
    }
  }
  rebuild();
}

void WorkerPool::closeIdle(uint32_t id) {
  for (auto& conn : idle_[id]) {
    retire(std::move(conn));  // we run from a posted message, inside an event batch
  }
  countIdle(id, 0, idle_[id].size());
  idle_[id].clear();
}

void WorkerPool::setUp(uint32_t id, bool up) {
  if (id >= up_.size() || up_[id] == up) {
    return;
  }
  up_[id] = up;
  if (!up) {
    closeIdle(id);
  } else {
    startRamp(id);
  }
  rebuild();
}

void WorkerPool::setInRotation(uint32_t id, bool in_rotation) {
  if (id >= in_rotation_.size() || in_rotation_[id] == in_rotation) {
    return;
  }
  in_rotation_[id] = in_rotation;
  if (in_rotation) {
    startRamp(id);  // back from maintenance or a drain, as from down
  }
  rebuild();
}

void WorkerPool::setEjected(uint32_t id, bool ejected) {
  if (id >= ejected_.size() || ejected_[id] == ejected) {
    return;
  }
  ejected_[id] = ejected;
  if (!ejected) {
    startRamp(id);
  }
  rebuild();
}

std::unique_ptr<UpstreamConn> WorkerPool::takeIdle(uint32_t id) {
  auto& list = idle_[id];
  if (list.empty()) {
    return nullptr;
  }
  // Most recently parked first: it is the least likely to have been closed by the server.
  std::unique_ptr<UpstreamConn> conn = std::move(list.back());
  list.pop_back();
  conn->reused = true;
  countIdle(id, 0, 1);
  if (options_.stats != nullptr) {
    options_.stats->reused[id].add();
  }
  return conn;
}

void WorkerPool::putIdle(std::unique_ptr<UpstreamConn> conn) {
  uint32_t id = conn->server();
  auto& list = idle_[id];
  if (!up_[id] || backends_[id].removed || list.size() >= options_.max_idle_per_server) {
    retire(std::move(conn));
    return;
  }
  conn->setEvents(EPOLLIN | EPOLLRDHUP);
  conn->park(this, loop_.now());
  list.push_back(std::move(conn));
  countIdle(id, 1, 0);
}

void WorkerPool::dropIdle(UpstreamConn* conn) {
  auto& list = idle_[conn->server()];
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i].get() == conn) {
      const uint32_t id = conn->server();
      retire(std::move(list[i]));  // we are inside this connection's own callback
      list.erase(list.begin() + static_cast<long>(i));
      countIdle(id, 0, 1);
      return;
    }
  }
}

void WorkerPool::retire(std::unique_ptr<UpstreamConn> conn) {
  conn->park(nullptr, {});  // a late event in this batch reaches no one
  loop_.deferDelete(std::move(conn));
}

void WorkerPool::countIdle(uint32_t id, size_t parked, size_t left) {
  if (options_.stats != nullptr) {
    options_.stats->idle[id].add(parked);
    options_.stats->idle[id].sub(left);
  }
}

void WorkerPool::sweepIdle() {
  core::TimePoint cutoff = loop_.now() - options_.idle_timeout;
  for (uint32_t id = 0; id < idle_.size(); ++id) {
    auto& list = idle_[id];
    // Oldest first in each list: drop the front run of expired connections.
    size_t expired = 0;
    while (expired < list.size() && list[expired]->since() < cutoff) {
      ++expired;
    }
    if (expired > 0) {
      list.erase(list.begin(), list.begin() + static_cast<long>(expired));
      countIdle(id, 0, expired);
    }
  }
  sweep_timer_.armAfter(std::chrono::seconds(1));
}

}  // namespace fulcrum::lb
