#include "core/buffer.h"

#include <gtest/gtest.h>

namespace fulcrum::core {
namespace {

TEST(BufferTest, EraseMovesLaterBytesDown) {
  Buffer b;
  b.append("headXXXXbody-tail");
  b.consume(0);
  b.erase(4, 4);
  EXPECT_EQ(b.view(), "headbody-tail");
  b.erase(0, 0);
  EXPECT_EQ(b.view(), "headbody-tail");
  b.erase(8, 5);  // up to the end
  EXPECT_EQ(b.view(), "headbody");
}

TEST(BufferTest, EraseIsRelativeToTheReadPosition) {
  Buffer b;
  b.append("xxHELLO, WORLD");
  b.consume(2);
  b.erase(5, 2);
  EXPECT_EQ(b.view(), "HELLOWORLD");
  b.mutableData()[0] = 'h';
  EXPECT_EQ(b.view(), "hELLOWORLD");
}

}  // namespace
}  // namespace fulcrum::core
