#include "core/histogram.h"

namespace fulcrum::core {

uint64_t HistogramSnapshot::quantileUs(double q) const {
  uint64_t total = count();
  if (total == 0) {
    return 0;
  }
  double rank = q * static_cast<double>(total);
  uint64_t below = 0;
  for (size_t i = 0; i < kHistogramBuckets; ++i) {
    uint64_t in = buckets[i];
    if (in > 0 && static_cast<double>(below + in) >= rank) {
      if (i == kHistogramBoundsUs.size()) {
        return kHistogramBoundsUs.back();
      }
      double lo = i == 0 ? 0.0 : static_cast<double>(kHistogramBoundsUs[i - 1]);
      double hi = static_cast<double>(kHistogramBoundsUs[i]);
      double frac = (rank - static_cast<double>(below)) / static_cast<double>(in);
      return static_cast<uint64_t>(lo + (hi - lo) * frac);
    }
    below += in;
  }
  return kHistogramBoundsUs.back();
}

}  // namespace fulcrum::core
