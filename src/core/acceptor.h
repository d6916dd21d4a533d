#pragma once
// The accepting side of every listener (lb HTTP and TCP frontends, web nodes, stats, agents):
// a batch of accepts per wake-up, and what to do when the process runs out of descriptors or
// kernel memory. accept() failing with EMFILE leaves the connection in the backlog, so a
// level-triggered listener would wake the loop again at once: a spin at 100 % of a core and a
// log line per turn. Instead the listener stops being polled, is retried after a backoff
// (100 ms doubling to 1 s), and resumes at once when one of our connections closes (as HAProxy
// and nginx do). The condition is logged at most once a second, with what was suppressed.
#include <sys/resource.h>

#include <cstdint>
#include <functional>
#include <string>

#include "core/address.h"
#include "core/event_loop.h"
#include "core/fd.h"

namespace fulcrum::core {

class Acceptor final : public IoHandler {
 public:
  // Called for each accepted connection (non-blocking, close-on-exec, TCP_NODELAY); owns `fd`.
  using OnAccept = std::function<void(Fd fd, const SocketAddress& peer)>;

  // `what` names the listener in log lines, followed by its address ("lb http 127.0.0.1:8080").
  Acceptor(EventLoop& loop, Fd listener, std::string what, OnAccept on_accept, int batch = 64);
  ~Acceptor() override;
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  void onIoEvents(uint32_t events) override;
  // One of the connections this listener feeds has closed: a descriptor is free again.
  void connectionClosed();
  // Stops listening for good and closes the listener (drain).
  void close();

  bool open() const { return static_cast<bool>(listener_); }
  bool paused() const { return paused_; }
  // Accept failures for want of resources since start (EMFILE, ENFILE, ENOBUFS, ENOMEM).
  uint64_t exhaustedTotal() const { return exhausted_total_; }

 private:
  void pause(int err);
  void resume();

  EventLoop& loop_;
  Fd listener_;
  std::string what_;
  OnAccept on_accept_;
  int batch_;
  Timer retry_;
  Duration backoff_;
  bool paused_ = false;
  uint64_t exhausted_total_ = 0;
  uint64_t suppressed_ = 0;  // failures not logged since the last line
  TimePoint last_log_{};
  bool logged_ = false;
};

// Raises the soft RLIMIT_NOFILE to the hard limit (once, at start); returns the soft limit now
// in force.
rlim_t raiseFileLimit();
// Warns (once per call site, at start) when `needed` descriptors exceed the soft limit: `who`'s
// max_connections cannot all be served. Returns whether they fit.
bool fileLimitFits(uint64_t needed, std::string_view who);

}  // namespace fulcrum::core
