#pragma once
// Process signals delivered as events on an event loop (signalfd). blockSignals() must run in
// main before any thread starts, so every thread inherits the mask and only the loop sees them.
#include <functional>
#include <initializer_list>

#include "core/event_loop.h"

namespace fulcrum::core {

// Blocks SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1 and SIGUSR2 in the calling thread (and threads it
// starts later), and ignores SIGPIPE.
void blockSignals();

class SignalWatcher final : public IoHandler {
 public:
  SignalWatcher(EventLoop& loop, std::initializer_list<int> signals, std::function<void(int)> on_signal);
  ~SignalWatcher() override;
  void onIoEvents(uint32_t events) override;

 private:
  EventLoop& loop_;
  Fd fd_;
  std::function<void(int)> on_signal_;
};

}  // namespace fulcrum::core
