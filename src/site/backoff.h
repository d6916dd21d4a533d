#pragma once
// When `up` restarts a crashed child: 0.5 s after the first crash, doubling up to 30 s, and back
// to 0.5 s once a run has lasted 60 s (a child that crashes now and then is not penalised).
#include <chrono>

namespace fulcrum::site {

class RestartBackoff {
 public:
  using Duration = std::chrono::milliseconds;
  explicit RestartBackoff(Duration initial = std::chrono::milliseconds(500),
                          Duration max = std::chrono::seconds(30), Duration stable = std::chrono::seconds(60));

  // The child exited after running for `ran`: how long to wait before starting it again.
  Duration onExit(std::chrono::steady_clock::duration ran);

 private:
  Duration initial_;
  Duration max_;
  Duration stable_;
  Duration next_;
};

}  // namespace fulcrum::site
