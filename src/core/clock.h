#pragma once
// Time is injected: production code reads a MonotonicClock, unit tests drive a ManualClock,
// so timers, health checks and rate limits are tested on simulated time with no sleeps.
#include <chrono>

namespace fulcrum::core {

using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::steady_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class MonotonicClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  static MonotonicClock& instance();
};

class ManualClock final : public Clock {
 public:
  TimePoint now() const override { return now_; }
  void advance(Duration d) { now_ += d; }
  void set(TimePoint t) { now_ = t; }

 private:
  TimePoint now_{std::chrono::seconds(1000)};
};

inline std::chrono::milliseconds millis(uint64_t ms) {
  return std::chrono::milliseconds(ms);
}

}  // namespace fulcrum::core
