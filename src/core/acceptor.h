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
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/address.h"
#include "core/counter.h"
#include "core/event_loop.h"
#include "core/fd.h"
#include "core/ip_filter.h"

namespace fulcrum::core {

// A listener behind another balancer ([lb] accept_proxy): every connection starts with a PROXY
// protocol header naming the client, read before the connection is handed on.
struct ProxyHeaderPolicy {
  // The peers allowed to send it (accept_proxy_from); null: any. Others are closed at accept.
  IpFilter* from = nullptr;
  Duration timeout = std::chrono::seconds(10);  // for the whole header (http_request_ms)
  size_t max_waiting = 20000;                   // connections still owing their header
  Counter* errors = nullptr;  // a malformed or late header, or a peer not in `from` (this thread's)
  // The header is taken when the first bytes carry a PROXY signature and the connection goes on
  // without one otherwise (a web node: the lb sends it, direct probes and scrapes do not).
  bool optional = false;
};

class Acceptor final : public IoHandler {
 public:
  // Called for each accepted connection (non-blocking, close-on-exec, TCP_NODELAY); owns `fd`.
  using OnAccept = std::function<void(Fd fd, const SocketAddress& peer)>;

  // `what` names the listener in log lines, followed by its address ("lb http 127.0.0.1:8080").
  Acceptor(EventLoop& loop, Fd listener, std::string what, OnAccept on_accept, int batch = 64);
  ~Acceptor() override;
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // Judges every peer with `filter` (not owned; null: everyone) right after accept: a refused
  // connection is closed before a byte is read.
  // With a PROXY header policy, `filter` judges the client the header names instead.
  void setFilter(IpFilter* filter) { filter_ = filter; }
  // From now on each connection owes a PROXY header first; the address it names (or the socket's
  // own, for a LOCAL or UNKNOWN header) is the peer given to OnAccept. The bytes after the header
  // stay in the socket for whoever reads next (TLS, HTTP).
  void expectProxyHeader(const ProxyHeaderPolicy& policy);
  void setProxyHeaderTimeout(Duration timeout) { proxy_policy_.timeout = timeout; }

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
  class PendingHeader;

  void pause(int err);
  void resume();
  void admit(Fd fd, const SocketAddress& peer);
  void waitForHeader(Fd fd, const SocketAddress& peer);
  void headerError(const SocketAddress& peer, std::string_view error);
  void headerDone(PendingHeader* pending, const SocketAddress* client, std::string_view error);

  EventLoop& loop_;
  Fd listener_;
  std::string what_;
  OnAccept on_accept_;
  int batch_;
  IpFilter* filter_ = nullptr;
  bool expect_proxy_ = false;
  ProxyHeaderPolicy proxy_policy_;
  std::list<std::unique_ptr<PendingHeader>> pending_;
  TimePoint last_header_log_{};
  uint64_t header_errors_unlogged_ = 0;
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
