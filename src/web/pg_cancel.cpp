#include "web/pg_cancel.h"

#include <libpq-fe.h>

#include <atomic>
#include <thread>

namespace fulcrum::web {

struct BoundedThreads::State {
  std::atomic<size_t> running{0};
};

BoundedThreads::BoundedThreads(size_t limit) : limit_(limit), state_(std::make_shared<State>()) {}

bool BoundedThreads::run(std::function<void()> task) {
  size_t now = state_->running.load();
  do {
    if (now >= limit_) {
      return false;
    }
  } while (!state_->running.compare_exchange_weak(now, now + 1));
  std::thread([state = state_, task = std::move(task)]() mutable {
    task();
    task = nullptr;  // what it holds is released before it counts as done
    state->running.fetch_sub(1);
    state->running.notify_all();
  }).detach();
  return true;
}

size_t BoundedThreads::running() const {
  return state_->running.load();
}

void BoundedThreads::waitBelow(size_t n) const {
  for (size_t now = state_->running.load(); now >= n; now = state_->running.load()) {
    state_->running.wait(now);
  }
}

bool cancelThenFinish(PGconn* conn) {
  static BoundedThreads* threads = new BoundedThreads(8);  // never destroyed: its threads may run at exit
  if (conn == nullptr) {
    return false;
  }
  // Owned from here: finished on whichever thread drops the last reference (this one when
  // nothing can be sent, the cancel's thread after its request otherwise).
  std::shared_ptr<PGconn> owned(conn, [](PGconn* c) { PQfinish(c); });
  std::shared_ptr<PGcancel> cancel(PQgetCancel(conn), [](PGcancel* c) { PQfreeCancel(c); });
  if (!cancel) {
    return false;
  }
  return threads->run([cancel, owned] {
    char error[256];
    PQcancel(cancel.get(), error, sizeof error);  // best effort: a failed request changes nothing
  });
}

}  // namespace fulcrum::web
