#pragma once
// The main thread of every role: wait for signals; on SIGINT/SIGTERM drain every worker and
// return once all are idle, or when the grace period ends; on SIGHUP call the reload hook.
#include <functional>
#include <string_view>

#include "core/clock.h"
#include "core/event_loop.h"
#include "core/workers.h"

namespace fulcrum::core {

struct StopHooks {
  // Runs on worker `index`'s thread: stop accepting, close idle connections, and call `idle`
  // (from any thread) once the worker has no connection left.
  std::function<void(unsigned index, std::function<void()> idle)> drain_worker;
  std::function<void()> on_reload;  // SIGHUP, on the main thread
  std::function<void()> on_stop;    // SIGINT/SIGTERM, on the main thread, before the drain (optional)
  Duration grace = std::chrono::seconds(10);
  // Set by runUntilStopped (when not null) to a call that begins the drain as SIGTERM would,
  // logging `why`: for a drain the process decides itself (a successor took its listeners).
  std::function<void(std::string_view why)>* drain_now = nullptr;
};

// Runs `main_loop` until the workers are drained (or the grace period is over), then stops and
// joins the workers. Signals must have been blocked with blockSignals() before threads started.
void runUntilStopped(EventLoop& main_loop, WorkerGroup& workers, const StopHooks& hooks);

}  // namespace fulcrum::core
