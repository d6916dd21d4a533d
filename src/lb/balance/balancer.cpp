#include "lb/balance/balancer.h"

#include <bit>
#include <cstring>

#include "lb/balance/algorithms.h"
#include "lb/balance/hash_ring.h"

namespace fulcrum::lb {

std::unique_ptr<Balancer> makeBalancer(std::string_view algorithm, core::Random random,
                                       const BalancerOptions& options) {
  if (algorithm == "roundrobin") {
    return makeRoundRobin();
  }
  if (algorithm == "static-rr") {
    return makeStaticRoundRobin();
  }
  if (algorithm == "leastconn") {
    return makeLeastConn();
  }
  if (algorithm == "source") {
    return makeSourceHash(options.hash_balance_factor);
  }
  if (algorithm == "uri") {
    return makeUriHash(options.hash_balance_factor);
  }
  if (algorithm == "random2") {
    return makeRandomTwo(random);
  }
  if (algorithm == "maglev") {
    return makeMaglev();
  }
  return nullptr;
}

const std::vector<std::string_view>& balancerNames() {
  static const std::vector<std::string_view> names = {"roundrobin", "static-rr", "leastconn", "source",
                                                      "uri",        "random2",   "maglev"};
  return names;
}

namespace {

// Odd 64-bit constants with balanced bits (the ones wyhash uses).
constexpr uint64_t kSecret0 = 0xa0761d6478bd642fULL;
constexpr uint64_t kSecret1 = 0xe7037ed1a0b428dbULL;
constexpr uint64_t kSecret2 = 0x8ebc6af09c88c6e3ULL;
constexpr uint64_t kSecret3 = 0x589965cc75374cc3ULL;

// The 128-bit product folded to 64 bits: every input bit reaches most output bits.
uint64_t foldMultiply(uint64_t a, uint64_t b) {
  unsigned __int128 product = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(product) ^ static_cast<uint64_t>(product >> 64);
}

// Little-endian on every host, so the hash is the same everywhere.
uint64_t load64(const unsigned char* p) {
  uint64_t value = 0;
  std::memcpy(&value, p, sizeof value);
  if constexpr (std::endian::native == std::endian::big) {
    value = __builtin_bswap64(value);
  }
  return value;
}

// 0..8 bytes, little-endian, zero-padded.
uint64_t loadPartial(const unsigned char* p, size_t n) {
  uint64_t value = 0;
  for (size_t i = 0; i < n; ++i) {
    value |= uint64_t{p[i]} << (8 * i);
  }
  return value;
}

}  // namespace

// wyhash-style: 16 bytes at a time folded into the state with one 64x64->128 multiply, the
// length mixed into the last block, then a full-avalanche finalizer. Only the value matters
// (it places ring points and picks servers), so it must never change: tests pin known outputs.
uint64_t hashBytes(std::string_view bytes, uint64_t seed) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t left = bytes.size();
  uint64_t h = mixKey(seed ^ kSecret0);
  while (left > 16) {
    h = foldMultiply(load64(p) ^ kSecret1, load64(p + 8) ^ h);
    p += 16;
    left -= 16;
  }
  uint64_t a = left > 8 ? load64(p) : loadPartial(p, left);
  uint64_t b = left > 8 ? loadPartial(p + 8, left - 8) : 0;
  h = foldMultiply(a ^ kSecret2 ^ bytes.size(), b ^ h ^ kSecret3);
  return mixKey(h);
}

}  // namespace fulcrum::lb
