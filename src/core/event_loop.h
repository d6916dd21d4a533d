#pragma once
// One epoll event loop per thread. Everything registered with a loop is touched only by the
// loop's own thread; other threads talk to it with post(). The request path takes no mutex:
// post() does, but it is only for control messages (stop, config, health changes).
#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <vector>

#include "core/clock.h"
#include "core/fd.h"

namespace fulcrum::core {

class EventLoop;

// Receives readiness events for one fd. The handler must outlive its registration.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  virtual void onIoEvents(uint32_t events) = 0;  // EPOLLIN / EPOLLOUT / EPOLLERR / EPOLLHUP bits
};

// Objects that may be destroyed from inside their own callback hand themselves to
// EventLoop::deferDelete and are freed after the current event batch (Envoy's deferredDelete).
class Deletable {
 public:
  virtual ~Deletable() = default;
};

// Work a handler defers to the end of the current batch of events, after every ready socket has
// been read: an HTTP/2 connection writes once for every stream that got bytes in the batch.
class BatchHook {
 public:
  virtual ~BatchHook() = default;
  virtual void onBatchEnd() = 0;
};

// A one-shot timer owned by the code that uses it. Re-arming to a later deadline is O(1)
// (no heap push), so per-request idle timeouts cost almost nothing.
class Timer {
 public:
  Timer(EventLoop& loop, std::function<void()> callback);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void armAfter(Duration after);
  void armAt(TimePoint deadline);
  void disarm();
  bool armed() const;

 private:
  EventLoop& loop_;
  uint32_t slot_;
};

class EventLoop {
 public:
  explicit EventLoop(const Clock& clock = MonotonicClock::instance());
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Registration; false (errno set) on failure.
  bool add(int fd, uint32_t events, IoHandler* handler);
  bool modify(int fd, uint32_t events, IoHandler* handler);
  void remove(int fd);

  // Thread-safe: runs `fn` on this loop's thread soon.
  void post(std::function<void()> fn);
  // Frees `object` after the current batch of events (callable only on the loop thread).
  void deferDelete(std::unique_ptr<Deletable> object);

  // Calls `hook` once at the end of the current batch (before deferred deletions). A hook queued
  // twice in one batch runs twice; its owner keeps a flag. cancelBatchEnd before the owner dies
  // (other than by deferDelete, which frees after the hooks ran).
  void atBatchEnd(BatchHook* hook) { batch_end_.push_back(hook); }
  void cancelBatchEnd(BatchHook* hook);

  // Runs until stop() (thread-safe).
  void run();
  void stop();
  // One iteration: waits at most `max_wait` (or until the next timer) and dispatches.
  void runOnce(Duration max_wait);
  // Fires every timer due at the clock's current time (for tests on a ManualClock).
  void runExpiredTimers();

  // The clock's time, cached at the start of each iteration.
  TimePoint now() const { return now_; }
  const Clock& clock() const { return clock_; }
  void updateTime() { now_ = clock_.now(); }
  bool stopping() const { return stop_requested_; }

 private:
  friend class Timer;
  struct TimerSlot {
    Timer* timer = nullptr;
    std::function<void()> callback;
    TimePoint deadline{};
    TimePoint queued_deadline{};
    uint64_t seq = 0;  // bumped on every push and on release: older heap entries are stale
    bool armed = false;
    bool queued = false;
  };
  struct HeapEntry {
    TimePoint deadline;
    uint32_t slot;
    uint64_t seq;
    bool operator>(const HeapEntry& o) const { return deadline > o.deadline; }
  };

  uint32_t allocTimer(Timer* timer, std::function<void()> callback);
  void releaseTimer(uint32_t slot);
  void armTimer(uint32_t slot, TimePoint deadline);
  void pushEntry(uint32_t slot, TimePoint deadline);
  int epollTimeoutMs(Duration max_wait);
  void drainPosted();
  void runBatchEnd();

  const Clock& clock_;
  TimePoint now_;
  Fd epoll_fd_;
  Fd wake_fd_;  // eventfd for post() and stop()
  bool stop_requested_ = false;
  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;
  std::vector<std::unique_ptr<Deletable>> deferred_;
  std::vector<BatchHook*> batch_end_;
  std::vector<BatchHook*> batch_running_;
  std::vector<TimerSlot> timers_;
  std::vector<uint32_t> free_timers_;
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, std::greater<>> heap_;
  std::vector<epoll_event> events_;
};

}  // namespace fulcrum::core
