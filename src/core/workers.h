#pragma once
// A fixed set of worker threads, each running its own EventLoop (shared-nothing).
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "core/event_loop.h"

namespace fulcrum::core {

// 0 means one per online CPU.
unsigned resolveThreadCount(unsigned requested);

class WorkerGroup {
 public:
  // `init` runs on each worker thread before its loop starts; what it builds lives in that thread.
  using Init = std::function<void(EventLoop& loop, unsigned index)>;

  WorkerGroup() = default;
  ~WorkerGroup();
  void start(unsigned count, Init init);
  // Runs `fn` on every worker loop.
  void postAll(const std::function<void(EventLoop&, unsigned)>& fn);
  void stopAll();
  void join();
  size_t size() const { return loops_.size(); }
  EventLoop& loop(size_t i) { return *loops_[i]; }

 private:
  std::vector<std::unique_ptr<EventLoop>> loops_;
  std::vector<std::thread> threads_;
};

}  // namespace fulcrum::core
