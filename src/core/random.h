#pragma once
// An injectable random source: production seeds from the OS, tests from a fixed seed.
#include <cstdint>

namespace fulcrum::core {

// xoshiro256** by Blackman and Vigna: fast, good quality, not for cryptography.
class Random {
 public:
  explicit Random(uint64_t seed);
  static Random fromOs();  // seeded from getrandom(2)
  uint64_t next();
  // Uniform in [0, bound); bound > 0.
  uint64_t below(uint64_t bound);

 private:
  uint64_t s_[4];
};

}  // namespace fulcrum::core
