#include <algorithm>
#include <limits>

#include "lb/health/health_checker.h"

namespace fulcrum::lb {

namespace {

void countUp(uint32_t& counter) {
  // Saturates: a server checked for years must not wrap back to "0 consecutive failures".
  if (counter < std::numeric_limits<uint32_t>::max()) {
    ++counter;
  }
}

}  // namespace

// A threshold of 0 would make every result flip the state back and forth: treat it as 1.
RiseFall::RiseFall(uint32_t rise, uint32_t fall, bool initially_up)
    : rise_(std::max<uint32_t>(rise, 1)), fall_(std::max<uint32_t>(fall, 1)), up_(initially_up) {}

RiseFall RiseFall::downUntilFirstSuccess(uint32_t rise, uint32_t fall) {
  RiseFall state(rise, fall, false);
  state.successes_ = state.rise_ - 1;
  return state;
}

void RiseFall::setThresholds(uint32_t rise, uint32_t fall) {
  rise_ = std::max<uint32_t>(rise, 1);
  fall_ = std::max<uint32_t>(fall, 1);
}

bool RiseFall::record(bool ok) {
  if (ok) {
    failures_ = 0;
    countUp(successes_);
    if (!up_ && successes_ >= rise_) {
      up_ = true;
      return true;
    }
    return false;
  }
  successes_ = 0;
  countUp(failures_);
  if (up_ && failures_ >= fall_) {
    up_ = false;
    return true;
  }
  return false;
}

}  // namespace fulcrum::lb
