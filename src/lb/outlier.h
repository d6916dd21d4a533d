#pragma once
// Outlier ejection ([lb.outlier], Envoy's outlier detection): a server answering a run of 5xx,
// failing a run of requests (connect failures, resets, timeouts), or far slower than its peers is
// taken out of rotation for a time that grows with each ejection, even while its health check
// passes; never more than a set share of the servers at once, and never the last usable one.
//
// The workers feed each server's runs into shared atomics (OutlierSignals); a run reaching its
// threshold is posted once to the main thread, where OutlierDetector decides (OutlierEjector
// holds the rules, apart so they are tested on simulated time) and tells every worker's pool.
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/event_loop.h"
#include "core/stable_vector.h"
#include "lb/pool.h"

namespace fulcrum::lb {

enum class OutlierReason : uint8_t { Consecutive5xx, ConsecutiveFailures, Slow };
inline constexpr std::array<OutlierReason, 3> kOutlierReasons{
    OutlierReason::Consecutive5xx, OutlierReason::ConsecutiveFailures, OutlierReason::Slow};
// "consecutive_5xx", "consecutive_failures", "slow": the metrics' reason label.
std::string_view outlierReasonName(OutlierReason reason);

struct OutlierOptions {
  uint32_t consecutive_5xx = 5;       // 0: runs of 5xx are not judged
  uint32_t consecutive_failures = 5;  // 0: runs of failures are not judged
  uint32_t slow_factor = 0;           // 0: response times are not compared
  core::Duration interval = std::chrono::seconds(10);
  uint32_t min_requests = 20;
  core::Duration base_ejection = std::chrono::seconds(30);
  core::Duration max_ejection = std::chrono::seconds(300);
  uint32_t max_ejection_percent = 50;
};

// A server never counts as slow below this mean: on a fast network a few hundred microseconds
// against a hundred is noise, not a sick server.
inline constexpr uint64_t kSlowFloorUs = 10'000;

// Each server's current runs of 5xx answers and of failures, shared by every worker: one relaxed
// load per answer while a server answers well, an atomic add per 5xx or failure.
class OutlierSignals {
 public:
  // Called on the worker's thread each time a run reaches its threshold (once per run: the run
  // counts on past it until clear()).
  using OnRun = std::function<void(uint32_t server, OutlierReason reason)>;

  OutlierSignals(size_t servers, uint32_t consecutive_5xx, uint32_t consecutive_failures, OnRun on_run);
  // More servers (a reload): on the main thread, before any worker hears of the new ids.
  void grow(size_t servers) { runs_.grow(servers); }
  // A worker got a response head from `server`: a 5xx extends its run of them, anything else
  // ends both runs.
  void answered(uint32_t server, int status);
  // A connect failure, reset or timeout on `server` (the failures passive health checks count).
  void failed(uint32_t server);
  // Starts both runs of `server` over (the main thread, once it has judged one).
  void clear(uint32_t server);

 private:
  struct Runs {
    std::atomic<uint32_t> errors{0};
    std::atomic<uint32_t> failures{0};
  };
  core::StableVector<Runs> runs_;
  uint32_t consecutive_5xx_;
  uint32_t consecutive_failures_;
  OnRun on_run_;
};

// One server's responses over an interval: how many, and their summed response time.
struct ServerWindow {
  uint64_t responses = 0;
  uint64_t time_us = 0;
};

// The rules: who may be ejected, for how long, who returns when, and who is slow. No clock of
// its own: every call says what time it is.
class OutlierEjector {
 public:
  explicit OutlierEjector(const OutlierOptions& options) : options_(options) {}
  const OutlierOptions& options() const { return options_; }
  void resize(size_t servers);

  // Ejects `server` for `reason` unless it is ejected already, ejecting it would take more than
  // max_ejection_percent of the `pool` (servers in the table; one may always be ejected), or
  // leave no usable server (`usable_others`: servers up, in rotation and not ejected, besides
  // it). The time is base_ejection times the server's ejections (this one included), at most
  // max_ejection. Returns it, or nothing when the server stays; `refusal` then says why.
  std::optional<core::Duration> eject(uint32_t server, OutlierReason reason, core::TimePoint now, size_t pool,
                                      size_t usable_others, std::string* refusal = nullptr);
  // Servers whose time is over at `now`: they are no longer ejected.
  std::vector<uint32_t> expire(core::TimePoint now);
  std::optional<core::TimePoint> nextExpiry() const;
  // Once an interval: a server back for a whole interval since its last change has its count of
  // ejections lowered by one (Envoy's decay), so a long-healthy server starts short again.
  void decay(core::TimePoint now);
  // The servers, not ejected, with at least min_requests responses in `window` (by id) whose mean
  // response time is above slow_factor times the median of the other such servers' means (and
  // above kSlowFloorUs). Empty when slow_factor is 0 or no server has a peer to compare with.
  std::vector<uint32_t> slowServers(const std::vector<ServerWindow>& window) const;

  bool ejected(uint32_t server) const { return server < state_.size() && state_[server].ejected; }
  core::TimePoint ejectedUntil(uint32_t server) const { return state_[server].until; }
  OutlierReason lastReason(uint32_t server) const { return state_[server].reason; }
  // The multiplier of the next ejection's time, less one.
  uint32_t ejections(uint32_t server) const { return state_[server].multiplier; }
  uint64_t ejectionsTotal(uint32_t server, OutlierReason reason) const {
    return state_[server].totals[static_cast<size_t>(reason)];
  }
  size_t ejectedCount() const;

 private:
  struct State {
    bool ejected = false;
    core::TimePoint until{};
    core::TimePoint changed{};  // ejected or returned
    uint32_t multiplier = 0;
    OutlierReason reason = OutlierReason::Consecutive5xx;
    std::array<uint64_t, kOutlierReasons.size()> totals{};
  };
  OutlierOptions options_;
  std::vector<State> state_;
};

// The main thread's side: judges the runs the workers post, compares response times each
// interval, returns servers when their time is over, and logs each change.
class OutlierDetector {
 public:
  struct Hooks {
    // Every worker's pool takes the server out of (or back into) rotation.
    std::function<void(uint32_t server, bool ejected)> apply;
    // Up by its health checks and still in the table (the admin state is told with setInRotation).
    std::function<bool(uint32_t server)> healthy;
    // Responses so far and their summed response time, all workers (cumulative).
    std::function<ServerWindow(uint32_t server)> totals;
  };

  OutlierDetector(core::EventLoop& loop, const OutlierOptions& options, const std::vector<Backend>& backends,
                  Hooks hooks);
  OutlierDetector(const OutlierDetector&) = delete;
  OutlierDetector& operator=(const OutlierDetector&) = delete;

  // For the workers (ProxyOptions::outlier).
  OutlierSignals& signals() { return signals_; }
  void start();
  // The server table grew or lost servers (a reload), before the workers hear of it.
  void serversChanged();
  // The admin state: a server out of rotation is not usable (it never counts as a peer left).
  void setInRotation(uint32_t server, bool in_rotation);
  const OutlierEjector& ejector() const { return ejector_; }
  core::TimePoint now() const { return loop_.now(); }

 private:
  void onRun(uint32_t server, OutlierReason reason);
  void tryEject(uint32_t server, OutlierReason reason, const std::string& detail);
  void onInterval();
  void onExpiry();
  void armExpiry();
  size_t poolSize() const;
  size_t usableOthers(uint32_t server) const;

  core::EventLoop& loop_;
  const std::vector<Backend>& backends_;
  Hooks hooks_;
  OutlierEjector ejector_;
  OutlierSignals signals_;
  std::vector<bool> in_rotation_;
  std::vector<std::string> last_refusal_;  // the last refusal logged, by server
  std::vector<ServerWindow> last_totals_;  // at the last interval
  core::Timer interval_timer_;
  core::Timer expiry_timer_;
};

}  // namespace fulcrum::lb
