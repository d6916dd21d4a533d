#include "core/workers.h"

#include <pthread.h>

#include <string>

namespace fulcrum::core {

unsigned resolveThreadCount(unsigned requested) {
  if (requested > 0) {
    return requested;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

WorkerGroup::~WorkerGroup() {
  stopAll();
  join();
}

void WorkerGroup::start(unsigned count, Init init) {
  for (unsigned i = 0; i < count; ++i) {
    loops_.push_back(std::make_unique<EventLoop>());
  }
  for (unsigned i = 0; i < count; ++i) {
    EventLoop* loop = loops_[i].get();
    threads_.emplace_back([loop, i, init] {
      std::string name = "worker-" + std::to_string(i);
      pthread_setname_np(pthread_self(), name.c_str());
      init(*loop, i);
      loop->run();
    });
  }
}

void WorkerGroup::postAll(const std::function<void(EventLoop&, unsigned)>& fn) {
  for (size_t i = 0; i < loops_.size(); ++i) {
    EventLoop* loop = loops_[i].get();
    loop->post([loop, i, fn] { fn(*loop, static_cast<unsigned>(i)); });
  }
}

void WorkerGroup::stopAll() {
  for (auto& loop : loops_) {
    loop->stop();
  }
}

void WorkerGroup::join() {
  for (auto& t : threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
  threads_.clear();
}

}  // namespace fulcrum::core
