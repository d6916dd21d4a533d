#include "lb/health/health_checker.h"

namespace fulcrum::lb {

void StateTimes::change(core::TimePoint now, bool up) {
  if (up == up_) {
    return;  // not a change: the spell goes on
  }
  if (!up_) {
    down_before_ += now - changed_;
  }
  up_ = up;
  changed_ = now;
}

}  // namespace fulcrum::lb
