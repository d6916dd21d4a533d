#include "core/event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "core/log.h"

namespace fulcrum::core {

MonotonicClock& MonotonicClock::instance() {
  static MonotonicClock clock;
  return clock;
}

namespace {
// A sentinel handler address for the wake eventfd.
IoHandler* const kWakeHandler = nullptr;
}  // namespace

Timer::Timer(EventLoop& loop, std::function<void()> callback)
    : loop_(loop), slot_(loop.allocTimer(this, std::move(callback))) {}

Timer::~Timer() {
  loop_.releaseTimer(slot_);
}

void Timer::armAfter(Duration after) {
  loop_.armTimer(slot_, loop_.now() + after);
}
void Timer::armAt(TimePoint deadline) {
  loop_.armTimer(slot_, deadline);
}
void Timer::disarm() {
  loop_.timers_[slot_].armed = false;
}
bool Timer::armed() const {
  return loop_.timers_[slot_].armed;
}

EventLoop::EventLoop(const Clock& clock)
    : clock_(clock),
      now_(clock.now()),
      epoll_fd_(epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (!epoll_fd_ || !wake_fd_) {
    throw std::runtime_error(std::string("event loop: ") + std::strerror(errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = kWakeHandler;
  epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev);
  events_.resize(256);
}

EventLoop::~EventLoop() {
  deferred_.clear();
}

bool EventLoop::add(int fd, uint32_t events, IoHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  return epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
}

bool EventLoop::modify(int fd, uint32_t events, IoHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  return epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, fd, &ev) == 0;
}

void EventLoop::remove(int fd) {
  epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  (void)n;
}

void EventLoop::deferDelete(std::unique_ptr<Deletable> object) {
  deferred_.push_back(std::move(object));
}

void EventLoop::stop() {
  post([this] { stop_requested_ = true; });
}

void EventLoop::run() {
  while (!stop_requested_) {
    runOnce(std::chrono::seconds(60));
  }
  drainPosted();
  deferred_.clear();
}

int EventLoop::epollTimeoutMs(Duration max_wait) {
  Duration wait = max_wait;
  if (!heap_.empty()) {
    Duration until = heap_.top().deadline - clock_.now();
    if (until < wait) {
      wait = until;
    }
  }
  if (wait <= Duration::zero()) {
    return 0;
  }
  // Round up so a timer never fires a millisecond early and spins.
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(wait).count());
}

void EventLoop::runOnce(Duration max_wait) {
  int n =
      epoll_wait(epoll_fd_.get(), events_.data(), static_cast<int>(events_.size()), epollTimeoutMs(max_wait));
  now_ = clock_.now();
  if (n < 0 && errno != EINTR) {
    log::error("epoll_wait: {}", std::strerror(errno));
  }
  for (int i = 0; i < n; ++i) {
    auto* handler = static_cast<IoHandler*>(events_[i].data.ptr);
    if (handler == kWakeHandler) {
      uint64_t count;
      ssize_t r = ::read(wake_fd_.get(), &count, sizeof count);
      (void)r;
      drainPosted();
      continue;
    }
    handler->onIoEvents(events_[i].events);
  }
  if (n == static_cast<int>(events_.size()) && events_.size() < 4096) {
    events_.resize(events_.size() * 2);
  }
  runExpiredTimers();
  runBatchEnd();
  deferred_.clear();
}

void EventLoop::runBatchEnd() {
  // A hook may queue more (its own flush waking another); bounded so a hook that always
  // re-queues cannot hold the loop.
  for (int round = 0; round < 8 && !batch_end_.empty(); ++round) {
    batch_running_.swap(batch_end_);
    for (size_t i = 0; i < batch_running_.size(); ++i) {
      if (BatchHook* hook = batch_running_[i]) {
        hook->onBatchEnd();
      }
    }
    batch_running_.clear();
  }
}

void EventLoop::cancelBatchEnd(BatchHook* hook) {
  for (BatchHook*& h : batch_end_) {
    if (h == hook) {
      h = nullptr;
    }
  }
  for (BatchHook*& h : batch_running_) {
    if (h == hook) {
      h = nullptr;
    }
  }
}

void EventLoop::drainPosted() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(posted_mutex_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) {
    fn();
  }
}

uint32_t EventLoop::allocTimer(Timer* timer, std::function<void()> callback) {
  uint32_t slot;
  if (!free_timers_.empty()) {
    slot = free_timers_.back();
    free_timers_.pop_back();
  } else {
    slot = static_cast<uint32_t>(timers_.size());
    timers_.emplace_back();
  }
  TimerSlot& s = timers_[slot];
  s.timer = timer;
  s.callback = std::move(callback);
  s.armed = false;
  s.queued = false;
  return slot;
}

void EventLoop::releaseTimer(uint32_t slot) {
  TimerSlot& s = timers_[slot];
  s.timer = nullptr;
  s.callback = nullptr;
  s.armed = false;
  s.queued = false;
  ++s.seq;  // every entry still in the heap for this slot is now stale
  free_timers_.push_back(slot);
}

void EventLoop::pushEntry(uint32_t slot, TimePoint deadline) {
  TimerSlot& s = timers_[slot];
  ++s.seq;
  s.queued = true;
  s.queued_deadline = deadline;
  heap_.push(HeapEntry{deadline, slot, s.seq});
}

void EventLoop::armTimer(uint32_t slot, TimePoint deadline) {
  TimerSlot& s = timers_[slot];
  s.deadline = deadline;
  s.armed = true;
  // A queued entry that fires no later than the new deadline will re-queue itself when it
  // pops; only an earlier deadline needs a new entry.
  if (!s.queued || deadline < s.queued_deadline) {
    pushEntry(slot, deadline);
  }
}

void EventLoop::runExpiredTimers() {
  TimePoint now = clock_.now();
  now_ = now;
  while (!heap_.empty() && heap_.top().deadline <= now) {
    HeapEntry entry = heap_.top();
    heap_.pop();
    TimerSlot& s = timers_[entry.slot];
    if (entry.seq != s.seq) {
      continue;  // superseded or released
    }
    s.queued = false;
    if (!s.armed) {
      continue;
    }
    if (s.deadline > now) {
      pushEntry(entry.slot, s.deadline);  // re-armed later since this entry was queued
      continue;
    }
    s.armed = false;
    // Copy: the callback may destroy the timer (and so clear the slot) while it runs.
    auto callback = s.callback;
    callback();
  }
}

}  // namespace fulcrum::core
