#pragma once
// Spreading a 64-bit key over all 64 bits, for keys that may be weak hashes (balancing by client,
// the shards and buckets of the client table).
#include <cstdint>

namespace fulcrum::core {

// murmur3's finalizer: a bijection, every input bit flips about half of the output bits.
inline uint64_t mixKey(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  key *= 0xc4ceb9fe1a85ec53ULL;
  key ^= key >> 33;
  return key;
}

}  // namespace fulcrum::core
