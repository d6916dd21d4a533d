#include "site/backoff.h"

#include <algorithm>

namespace fulcrum::site {

RestartBackoff::RestartBackoff(Duration initial, Duration max, Duration stable)
    : initial_(initial), max_(std::max(max, initial)), stable_(stable), next_(initial) {}

RestartBackoff::Duration RestartBackoff::onExit(std::chrono::steady_clock::duration ran) {
  if (ran >= stable_) {
    next_ = initial_;
  }
  Duration delay = next_;
  next_ = std::min(next_ * 2, max_);
  return delay;
}

}  // namespace fulcrum::site
