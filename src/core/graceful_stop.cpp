#include "core/graceful_stop.h"

#include <signal.h>

#include <atomic>

#include "core/log.h"
#include "core/signals.h"

namespace fulcrum::core {

void runUntilStopped(EventLoop& main_loop, WorkerGroup& workers, const StopHooks& hooks) {
  const size_t total = workers.size();
  std::atomic<size_t> idle_workers{0};
  bool stopping = false;
  Timer grace_timer(main_loop, [&] {
    log::warn("drain grace period over; closing remaining connections");
    main_loop.stop();
  });
  auto drain = [&](std::string_view why) {
    if (stopping) {
      return;
    }
    stopping = true;
    log::info("{}: draining connections", why);
    if (hooks.on_stop) {
      hooks.on_stop();
    }
    grace_timer.armAfter(hooks.grace);
    workers.postAll([&](EventLoop&, unsigned i) {
      hooks.drain_worker(i, [&main_loop, &idle_workers, total] {
        if (idle_workers.fetch_add(1) + 1 == total) {
          main_loop.stop();
        }
      });
    });
  };
  if (hooks.drain_now != nullptr) {
    *hooks.drain_now = drain;
  }
  SignalWatcher signals(main_loop, {SIGINT, SIGTERM, SIGHUP, SIGUSR1}, [&](int sig) {
    if (sig == SIGUSR1) {
      log::reopen();  // logrotate's postrotate
      return;
    }
    if (sig == SIGHUP) {
      hooks.on_reload();
      return;
    }
    drain(sig == SIGINT ? "SIGINT" : "SIGTERM");
  });
  main_loop.run();
  // Workers are joined before the counters and hooks captured above go out of scope.
  workers.stopAll();
  workers.join();
}

}  // namespace fulcrum::core
