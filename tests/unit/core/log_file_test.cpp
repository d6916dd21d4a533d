#include "core/log_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fulcrum::core {
namespace {

namespace fs = std::filesystem;

class LogFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fulcrum-log-file-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string read(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  fs::path dir_;
};

TEST_F(LogFileTest, AppendsToWhatIsThere) {
  const fs::path path = dir_ / "a.log";
  std::ofstream(path) << "before\n";
  LogFile file;
  std::string error;
  ASSERT_TRUE(file.open(path, {}, error)) << error;
  EXPECT_EQ(file.size(), 7u);
  ASSERT_TRUE(file.write("after\n", error)) << error;
  EXPECT_EQ(read(path), "before\nafter\n");
}

TEST_F(LogFileTest, ReopenAfterAMoveWritesANewFileAtThePath) {
  const fs::path path = dir_ / "access.log";
  LogFile file;
  std::string error;
  ASSERT_TRUE(file.open(path, {}, error)) << error;
  ASSERT_TRUE(file.write("one\n", error));
  fs::rename(path, dir_ / "access.log.1");  // logrotate, before its postrotate SIGUSR1
  ASSERT_TRUE(file.write("two\n", error));  // still the old file until the reopen
  ASSERT_TRUE(file.reopen(error)) << error;
  ASSERT_TRUE(file.write("three\n", error));
  EXPECT_EQ(read(dir_ / "access.log.1"), "one\ntwo\n");
  EXPECT_EQ(read(path), "three\n");
  EXPECT_EQ(file.size(), 6u);
}

TEST_F(LogFileTest, RotatesBySizeKeepingTheNewestFiles) {
  const fs::path path = dir_ / "n.log";
  LogFile file;
  std::string error;
  ASSERT_TRUE(file.open(path, {.max_bytes = 10, .keep = 2}, error)) << error;
  for (const char* line : {"aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n", "gggg\n"}) {
    ASSERT_TRUE(file.write(line, error)) << error;
  }
  // Two lines (10 bytes) per file; a line is never split; path.3 would be the oldest: gone.
  EXPECT_EQ(read(path), "gggg\n");
  EXPECT_EQ(read(dir_ / "n.log.1"), "eeee\nffff\n");
  EXPECT_EQ(read(dir_ / "n.log.2"), "cccc\ndddd\n");
  EXPECT_FALSE(fs::exists(dir_ / "n.log.3"));
}

TEST_F(LogFileTest, AWriteLargerThanTheLimitGoesWholeIntoAFreshFile) {
  const fs::path path = dir_ / "big.log";
  LogFile file;
  std::string error;
  ASSERT_TRUE(file.open(path, {.max_bytes = 4, .keep = 1}, error)) << error;
  ASSERT_TRUE(file.write("0123456789\n", error));
  ASSERT_TRUE(file.write("x\n", error));
  EXPECT_EQ(read(dir_ / "big.log.1"), "0123456789\n");
  EXPECT_EQ(read(path), "x\n");
}

TEST_F(LogFileTest, AMissingDirectoryIsAnError) {
  LogFile file;
  std::string error;
  EXPECT_FALSE(file.open(dir_ / "no" / "such.log", {}, error));
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

TEST_F(LogFileTest, ShiftingMovesEachFileOneUpAndDropsTheOldest) {
  const fs::path path = dir_ / "x.log";
  std::ofstream(path) << "c";
  std::ofstream(dir_ / "x.log.2") << "a";  // a gap at .1 (removed by hand): left alone
  shiftRotatedFiles(path, 2);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(read(dir_ / "x.log.1"), "c");
  EXPECT_EQ(read(dir_ / "x.log.2"), "a");
  std::ofstream(path) << "d";
  shiftRotatedFiles(path, 2);
  EXPECT_EQ(read(dir_ / "x.log.1"), "d");
  EXPECT_EQ(read(dir_ / "x.log.2"), "c");
  EXPECT_FALSE(fs::exists(dir_ / "x.log.3"));
}

}  // namespace
}  // namespace fulcrum::core
