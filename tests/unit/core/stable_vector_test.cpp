#include "core/stable_vector.h"

#include <gtest/gtest.h>

namespace fulcrum::core {
namespace {

TEST(StableVectorTest, GrowsWithoutMovingElements) {
  StableVector<int, 4, 8> v(3);
  EXPECT_EQ(v.size(), 3u);
  int* first = &v[0];
  int* third = &v[2];
  v[2] = 7;
  v.grow(13);  // across three more chunks
  EXPECT_EQ(v.size(), 13u);
  EXPECT_EQ(&v[0], first);
  EXPECT_EQ(&v[2], third);
  EXPECT_EQ(v[2], 7);
  EXPECT_EQ(v[12], 0);  // new elements are value-initialized
  v.grow(5);            // never shrinks
  EXPECT_EQ(v.size(), 13u);
  v.grow(1000);  // capped at kChunk * kMaxChunks
  EXPECT_EQ(v.size(), v.maxSize());
  EXPECT_EQ(v.maxSize(), 32u);
  v[31] = 1;
  EXPECT_EQ(v[31], 1);
}

}  // namespace
}  // namespace fulcrum::core
