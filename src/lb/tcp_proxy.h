#pragma once
// A TCP (layer 4) proxy of one worker thread: accepts clients on its own listener, picks a
// server (retrying connect failures on another), then streams bytes both ways with
// backpressure and half-close. A server marked down has every session cut at once (HAProxy's
// `on-marked-down shutdown-sessions`): no client keeps talking to a demoted database primary.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/acceptor.h"
#include "core/connection_set.h"
#include "core/counter.h"
#include "core/event_loop.h"
#include "core/fd.h"
#include "lb/pool.h"

namespace fulcrum::lb {

struct TcpProxyOptions {
  std::string name = "tcp";  // the frontend, in log lines
  core::Duration connect_timeout = std::chrono::seconds(2);
  // No byte either way for this long closes the session. Database sessions sit idle for long
  // stretches (pooled connections), so this is far longer than an HTTP keep-alive.
  core::Duration idle_timeout = std::chrono::minutes(30);
  uint32_t retries = 2;              // connect failures redispatched to another server
  uint32_t max_connections = 20000;  // per worker
  // A direction that has carried this many bytes moves them with splice(2) through a pipe
  // (no copy through user space); 0 = never. Small exchanges stay on recv/send: a pipe costs
  // two descriptors and two syscalls to set up.
  uint64_t splice_after = 256 * 1024;
};

struct TcpServerStats {
  core::Counter sessions;          // sessions connected to this server
  core::Counter active;            // sessions connected now
  core::Counter connect_failures;  // refused, unreachable or timed out
  core::Counter cut;               // sessions closed because the server was marked down
};

struct TcpProxyStats {
  explicit TcpProxyStats(size_t servers) : servers(servers) {}
  core::Counter connections_total;
  core::Counter connections_active;
  core::Counter refused;    // over max_connections
  core::Counter no_server;  // closed without a server: none up, or every attempt failed
  core::Counter retries;
  core::Counter bytes_in;   // from clients
  core::Counter bytes_out;  // to clients
  core::Counter spliced;    // directions that switched to splice(2)
  std::vector<TcpServerStats> servers;
};

class TcpSession;

class TcpProxyWorker final {
 public:
  // Called on this worker's thread for every connect failure (a passive health check).
  using FailureReporter = std::function<void(uint32_t server, const std::string& reason)>;

  // `servers` get a WorkerPool of their own (backups serve only while no active server is up).
  TcpProxyWorker(core::EventLoop& loop, core::Fd listener, const std::vector<Backend>& servers,
                 std::string_view algorithm, const TcpProxyOptions& options, TcpProxyStats& stats,
                 FailureReporter report_failure);
  ~TcpProxyWorker();

  // A health change: a server marked down takes no new session and every open one is cut.
  void setUp(uint32_t server, bool up);
  // Stops accepting; `on_idle` runs once the last session has ended.
  void drain(std::function<void()> on_idle);
  size_t sessionCount() const { return sessions_.size(); }

  core::EventLoop& loop() { return loop_; }
  core::Acceptor& acceptor() { return sessions_.acceptor(); }
  WorkerPool& pool() { return pool_; }
  const TcpProxyOptions& options() const { return options_; }
  TcpProxyStats& stats() { return stats_; }
  void reportFailure(uint32_t server, const std::string& reason) { report_failure_(server, reason); }
  void unlink(TcpSession* session);

 private:
  TcpSession* accept(core::Fd fd, const core::SocketAddress& peer);

  core::EventLoop& loop_;
  WorkerPool pool_;
  const TcpProxyOptions options_;
  TcpProxyStats& stats_;
  FailureReporter report_failure_;
  core::ConnectionSet<TcpSession> sessions_;
};

}  // namespace fulcrum::lb
