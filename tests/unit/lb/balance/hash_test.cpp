// hashBytes: stable values, and the mixing quality the hash algorithms rely on.
#include <gtest/gtest.h>

#include <bit>
#include <set>
#include <string>

#include "core/random.h"
#include "lb/balance/balancer.h"

namespace fulcrum::lb {
namespace {

std::string randomBytes(core::Random& random, size_t n) {
  std::string bytes(n, '\0');
  for (char& c : bytes) {
    c = static_cast<char>(random.below(256));
  }
  return bytes;
}

TEST(HashBytesTest, KnownValuesNeverChange) {
  // Ring points and Maglev tables come from these values: every process and version must agree.
  EXPECT_EQ(hashBytes(""), 0xa9152e28f86ff5a8ULL);
  EXPECT_EQ(hashBytes("a"), 0x421dad583ba8cd5cULL);
  EXPECT_EQ(hashBytes("abc"), 0xdeb0354bd6b462f9ULL);
  EXPECT_EQ(hashBytes("/index.html"), 0x5578699bce587c43ULL);
  EXPECT_EQ(hashBytes("0123456789abcdef"), 0x19785aa3c6cd299fULL);
  EXPECT_EQ(hashBytes("0123456789abcdefg"), 0x87b08c3fc1e6f920ULL);
  EXPECT_EQ(hashBytes("web-1#0"), 0x94831b5460dd8de1ULL);
  EXPECT_EQ(hashBytes("abc", 1), 0x318a5ccb0c1f69edULL);
}

TEST(HashBytesTest, SeedGivesAnIndependentHash) {
  EXPECT_NE(hashBytes("abc", 0), hashBytes("abc", 1));
  EXPECT_NE(hashBytes("", 0), hashBytes("", 1));
  int differing = std::popcount(hashBytes("node-1", 1) ^ hashBytes("node-1", 2));
  EXPECT_GT(differing, 16);
}

TEST(HashBytesTest, TrailingZeroBytesAndLengthCount) {
  using namespace std::string_literals;
  std::set<uint64_t> hashes;
  std::string zeros;
  for (int n = 0; n <= 40; ++n) {
    EXPECT_TRUE(hashes.insert(hashBytes(zeros)).second) << n << " zero bytes";
    zeros += '\0';
  }
  EXPECT_NE(hashBytes("a"), hashBytes("a\0"s));
}

TEST(HashBytesTest, EveryPrefixHashesDifferently) {
  core::Random random(1);
  std::string bytes = randomBytes(random, 300);
  std::set<uint64_t> hashes;
  for (size_t n = 0; n <= bytes.size(); ++n) {
    EXPECT_TRUE(hashes.insert(hashBytes(std::string_view(bytes).substr(0, n))).second) << n;
  }
}

TEST(HashBytesTest, SameBytesAtAnyAlignment) {
  std::string buffer = "xxxxxxxx/some/request/path?query=1";
  std::string_view path = "/some/request/path?query=1";
  for (size_t offset = 0; offset < 8; ++offset) {
    std::string shifted = buffer.substr(8 - offset);
    EXPECT_EQ(hashBytes(std::string_view(shifted).substr(offset)), hashBytes(path));
  }
}

TEST(HashBytesTest, NoCollisionsAmongSimilarKeys) {
  std::set<uint64_t> hashes;
  for (int i = 0; i < 200000; ++i) {
    hashes.insert(hashBytes("/item/" + std::to_string(i)));
  }
  EXPECT_EQ(hashes.size(), 200000u);
}

TEST(HashBytesTest, EveryInputBitFlipsHalfTheOutput) {
  core::Random random(2);
  std::vector<int> flips(64, 0);
  int trials = 0;
  for (int sample = 0; sample < 300; ++sample) {
    std::string bytes = randomBytes(random, 1 + random.below(40));
    uint64_t base = hashBytes(bytes);
    for (size_t bit = 0; bit < bytes.size() * 8; ++bit) {
      std::string flipped = bytes;
      flipped[bit / 8] = static_cast<char>(flipped[bit / 8] ^ (1 << (bit % 8)));
      uint64_t diff = base ^ hashBytes(flipped);
      for (int out = 0; out < 64; ++out) {
        flips[static_cast<size_t>(out)] += static_cast<int>((diff >> out) & 1);
      }
      ++trials;
    }
  }
  for (int out = 0; out < 64; ++out) {
    double p = static_cast<double>(flips[static_cast<size_t>(out)]) / trials;
    EXPECT_NEAR(p, 0.5, 0.02) << "output bit " << out;
  }
}

TEST(HashBytesTest, LowBitsSpreadEvenly) {
  // Sequential keys into 64 buckets: a chi-square well under the 99.9% bound (103 for 63 dof).
  std::vector<int> buckets(64, 0);
  constexpr int kKeys = 64000;
  for (int i = 0; i < kKeys; ++i) {
    ++buckets[hashBytes(std::to_string(i)) % 64];
  }
  double chi2 = 0;
  for (int count : buckets) {
    chi2 += (count - 1000.0) * (count - 1000.0) / 1000.0;
  }
  EXPECT_LT(chi2, 103.0);
}

}  // namespace
}  // namespace fulcrum::lb
