#pragma once
// Active and passive health checks of the servers behind a load balancer. Runs on one event
// loop (the load balancer's main thread); state changes are published to the workers by the
// caller's OnChange callback, so the request path never waits on a check.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/address.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "tls/client_context.h"

namespace fulcrum::lb {

struct HealthTarget {
  uint32_t id = 0;  // the server's index in the pool
  std::string name;
  core::SocketAddress address;  // where the check goes (an agent may answer for the server)
  // This server's check path, when it differs from HealthOptions::path (a database frontend
  // asks one agent both /primary and /replica?lag=N).
  std::optional<std::string> path;
  // Checked without TLS even when HealthOptions::tls is set (a peer that serves plain HTTP
  // beside others that need the site's TLS).
  bool plain = false;
  // [[web.node]] send_proxy: 1 or 2, the check opens with a PROXY header of that version (LOCAL,
  // UNKNOWN: the lb's own connection); 0: none.
  uint8_t send_proxy = 0;
};

struct HealthOptions {
  std::string path = "/healthz";  // HTTP GET expecting 2xx/3xx; "" = TCP connect check only
  core::Duration interval = std::chrono::seconds(2);
  core::Duration timeout = std::chrono::seconds(1);
  uint32_t rise = 2;      // consecutive successes to go up
  uint32_t fall = 3;      // consecutive failures (active or passive) to go down
  int expect_status = 0;  // 0: any 2xx or 3xx passes; else only this status (Patroni's 200)
  // false: servers start UP (HAProxy's default). true: they start DOWN and the first passing
  // check brings them UP (HAProxy's `init-state down`): a database frontend must not send a
  // write to a node before its agent has said it is the primary.
  bool start_down = false;
  // > 0: read the whole response body (up to this many bytes) and hand it to the OnResult
  // callback; 0: the check ends at the response head (a body is never looked at).
  uint64_t max_body_bytes = 0;
  // [security] internal_tls: checks speak TLS from this context, as requests do (not owned).
  tls::ClientContext* tls = nullptr;
};

// The rise/fall state machine of one server, kept apart so it is tested on its own.
class RiseFall {
 public:
  RiseFall(uint32_t rise, uint32_t fall, bool initially_up);
  // Down, and the first success alone brings it up (later rises need `rise` again).
  static RiseFall downUntilFirstSuccess(uint32_t rise, uint32_t fall);
  // Records one check result; returns true when this result flips the state.
  bool record(bool ok);
  bool up() const { return up_; }
  uint32_t consecutiveFailures() const { return failures_; }
  // New thresholds (a reload); the state and the current run of results are kept.
  void setThresholds(uint32_t rise, uint32_t fall);

 private:
  uint32_t rise_;
  uint32_t fall_;
  bool up_;
  uint32_t successes_ = 0;
  uint32_t failures_ = 0;
};

// When a server's health state last changed and how long it has been down in all (HAProxy's
// LastChg and Dwntme), counted from when its checks began. Pure: the caller passes the time.
class StateTimes {
 public:
  StateTimes(core::TimePoint now, bool up) : up_(up), changed_(now) {}
  // The state flipped to `up` at `now`.
  void change(core::TimePoint now, bool up);
  core::Duration sinceChange(core::TimePoint now) const { return now - changed_; }
  // Every down spell so far, the current one included.
  core::Duration downtime(core::TimePoint now) const {
    return up_ ? down_before_ : down_before_ + (now - changed_);
  }

 private:
  bool up_;
  core::TimePoint changed_;
  core::Duration down_before_{};  // the down spells already over
};

// What the checks of one server have seen, for /metrics and /api/state (read on the checker's
// loop thread).
struct CheckStats {
  bool checked = false;           // an active check has finished
  bool last_ok = false;           // the last active check passed
  double last_duration_s = 0;     // how long the last active check took
  // The last active check as HAProxy's stats page shows it (LastChk): its result code (L4OK,
  // L4CON, L4TOUT, L6OK, L6RSP, L6TOUT, L7OK, L7STS, L7RSP, L7TOUT, SOCKERR), the HTTP status
  // (0 without an answer) and the reason in words.
  std::string last_result;
  int last_status = 0;
  std::string last_reason;
  // As of the read (HealthChecker::stats): seconds since the state last changed (or its checks
  // began), and the time spent down in all, the current down spell included.
  double since_change_s = 0;
  double downtime_s = 0;
  uint64_t passed = 0;            // active checks that passed
  uint64_t failed = 0;            // active checks that failed
  uint64_t passive_failures = 0;  // failures reported by the workers (reportFailure)
  uint64_t went_up = 0;           // state changes to UP
  uint64_t went_down = 0;         // state changes to DOWN
};

class HealthChecker {
 public:
  // Called on the checker's loop thread for every state change, with a human-readable reason:
  // the result that flipped it ("HTTP 500", "connect: Connection refused", "timeout after 1000 ms",
  // "HTTP 200", "connected" for a TCP check, or the reason given to reportFailure).
  using OnChange = std::function<void(uint32_t id, bool up, std::string_view reason)>;
  // Called on the loop thread after every check (not for passive failures), before any
  // OnChange: whether it passed, its reason, the status (0 without an HTTP answer) and the body
  // read under HealthOptions::max_body_bytes (empty when that is 0). Must not destroy the checker.
  using OnResult =
      std::function<void(uint32_t id, bool ok, std::string_view reason, int status, std::string_view body)>;

  HealthChecker(core::EventLoop& loop, std::vector<HealthTarget> targets, HealthOptions options,
                OnChange on_change);
  // Cancels every check in flight: sockets are closed and leave the loop, timers are disarmed.
  // Safe from inside on_change (the probes are freed by the loop after the current batch).
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Starts checking; the first check of each server is spread over the first interval.
  void start();
  // Set before start().
  void setOnResult(OnResult on_result) { on_result_ = std::move(on_result); }
  // A reload. setOptions: the next check of every server uses the new path, interval, timeout and
  // thresholds; states and counts are kept. add: a server new to the pool, down until its first
  // check passes, checked within one interval. remove: its checks stop (one in flight is
  // abandoned), isUp() is false and on_change is never called for it again.
  void setOptions(const HealthOptions& options);
  void add(HealthTarget target);
  void remove(uint32_t id);
  // Passive check: a worker saw a connect failure, reset or timeout on this server. Counts
  // toward `fall` like a failed active check. Call on the checker's loop thread.
  void reportFailure(uint32_t id, std::string_view reason);
  bool isUp(uint32_t id) const;
  size_t size() const;
  // The counts of server `id` (all zero for an unknown id).
  CheckStats stats(uint32_t id) const;

 private:
  struct Probe;
  void schedule(size_t index, core::Duration delay);
  void runProbe(size_t index);
  // Ends the check in flight, schedules the next one and records the result. Callers return
  // right after it: on_change, called last, may destroy the checker. `result`: the result code,
  // when the check's phase does not tell it.
  void finishProbe(size_t index, bool ok, std::string reason, std::string_view result = {});
  // Feeds one result to the server's RiseFall; on a flip logs it and calls on_change (last).
  void record(size_t index, bool ok, std::string_view reason);
  Probe* find(uint32_t id) const;

  core::EventLoop& loop_;
  HealthOptions options_;
  OnChange on_change_;
  OnResult on_result_;
  std::vector<std::unique_ptr<Probe>> probes_;
  bool started_ = false;
};

}  // namespace fulcrum::lb
