// FenceFile and the library built into the binary, without PostgreSQL (fence_test.cpp runs a
// real server against them).
#include "db/fence_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace fulcrum::db {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

int64_t clockNs(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string readAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class FenceFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fulcrum-fence-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
};

TEST_F(FenceFileTest, CreatedDisarmedWithItsLayout) {
  const mode_t old_umask = ::umask(077);
  auto fence = FenceFile::open(dir_ / "fence");
  ::umask(old_umask);
  ASSERT_TRUE(fence.ok) << fence.error;
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "fence").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, FULCRUM_FENCE_FILE_SIZE);
  EXPECT_EQ(st.st_mode & 07777, 0644u);  // whatever the umask: the PostgreSQL user reads it
  const std::string bytes = readAll(dir_ / "fence");
  EXPECT_EQ(bytes.substr(0, 8), "FULCRFN1");
  const FulcrumFenceLayout layout = fence.value->read();
  EXPECT_EQ(layout.version, 1u);
  EXPECT_EQ(layout.deadline_boottime_ns, 0);
  EXPECT_EQ(layout.deadline_realtime_ns, 0);
  EXPECT_FALSE(fence.value->deadline());
}

TEST_F(FenceFileTest, ArmConvertsTheSteadyDeadlineToBothClocks) {
  auto fence = FenceFile::open(dir_ / "fence");
  ASSERT_TRUE(fence.ok) << fence.error;
  const auto deadline = SteadyClock::now() + seconds(5);
  fence.value->arm(deadline);
  const int64_t boot_now = clockNs(CLOCK_BOOTTIME);
  const int64_t real_now = clockNs(CLOCK_REALTIME);
  const FulcrumFenceLayout layout = fence.value->read();
  const int64_t slack = std::chrono::nanoseconds(milliseconds(200)).count();
  const int64_t five = std::chrono::nanoseconds(seconds(5)).count();
  EXPECT_NEAR(static_cast<double>(layout.deadline_boottime_ns - boot_now), static_cast<double>(five),
              static_cast<double>(slack));
  EXPECT_NEAR(static_cast<double>(layout.deadline_realtime_ns - real_now), static_cast<double>(five),
              static_cast<double>(slack));
  EXPECT_EQ(fence.value->deadline(), deadline);

  // A deadline already past is written as past, never as 0 (which the server reads as disarmed:
  // fenced either way, but the file says what the agent meant).
  fence.value->arm(SteadyClock::now() - seconds(1));
  const FulcrumFenceLayout past = fence.value->read();
  EXPECT_GT(past.deadline_boottime_ns, 0);
  EXPECT_LT(past.deadline_boottime_ns, clockNs(CLOCK_BOOTTIME));
  EXPECT_LT(past.deadline_realtime_ns, clockNs(CLOCK_REALTIME));

  fence.value->disarm();
  EXPECT_EQ(fence.value->read().deadline_boottime_ns, 0);
  EXPECT_EQ(fence.value->read().deadline_realtime_ns, 0);
  EXPECT_FALSE(fence.value->deadline());
}

TEST_F(FenceFileTest, ReopenedInPlaceNeverReplaced) {
  auto first = FenceFile::open(dir_ / "fence");
  ASSERT_TRUE(first.ok) << first.error;
  first.value->arm(SteadyClock::now() + seconds(30));
  const FulcrumFenceLayout armed = first.value->read();
  struct stat before {};
  ASSERT_EQ(::stat((dir_ / "fence").c_str(), &before), 0);

  // A second opener (a restarted agent) sees the same inode and the deadline the first armed,
  // and its writes reach the first mapping (as they reach every PostgreSQL process).
  auto second = FenceFile::open(dir_ / "fence");
  ASSERT_TRUE(second.ok) << second.error;
  struct stat after {};
  ASSERT_EQ(::stat((dir_ / "fence").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(second.value->read().deadline_boottime_ns, armed.deadline_boottime_ns);
  second.value->disarm();
  EXPECT_EQ(first.value->read().deadline_boottime_ns, 0);
}

TEST_F(FenceFileTest, ForeignOrShortFileIsResetToFenced) {
  {
    std::ofstream out(dir_ / "short", std::ios::binary);
    out << "not a fence file";
  }
  auto fence = FenceFile::open(dir_ / "short");
  ASSERT_TRUE(fence.ok) << fence.error;
  EXPECT_EQ(std::filesystem::file_size(dir_ / "short"), static_cast<uintmax_t>(FULCRUM_FENCE_FILE_SIZE));
  const FulcrumFenceLayout layout = fence.value->read();
  EXPECT_EQ(layout.magic, FULCRUM_FENCE_MAGIC);
  EXPECT_EQ(layout.deadline_boottime_ns, 0);
  EXPECT_EQ(layout.deadline_realtime_ns, 0);

  std::filesystem::create_directory(dir_ / "a-directory");
  EXPECT_FALSE(FenceFile::open(dir_ / "a-directory").ok);
  EXPECT_FALSE(FenceFile::open(dir_ / "missing" / "fence").ok);
}

TEST_F(FenceFileTest, LibraryIsTheBuiltModule) {
  const std::string_view bytes = fenceLibraryBytes();
  ASSERT_GT(bytes.size(), 4096u);
  EXPECT_EQ(bytes.substr(0, 4), std::string_view("\x7f"
                                                 "ELF",
                                                 4));
  // PostgreSQL looks these up by name: the module magic, the entry point, the worker.
  for (const char* symbol : {"Pg_magic_func", "_PG_init", "fulcrum_fence_main"}) {
    EXPECT_NE(bytes.find(symbol), std::string_view::npos) << symbol;
  }
  ASSERT_TRUE(writeFenceLibrary(dir_ / "fulcrum_fence.so").ok);
  EXPECT_EQ(readAll(dir_ / "fulcrum_fence.so"), bytes);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "fulcrum_fence.so").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  ASSERT_TRUE(writeFenceLibrary(dir_ / "fulcrum_fence.so").ok);  // again, over the first
  EXPECT_FALSE(std::filesystem::exists(dir_ / "fulcrum_fence.so.tmp"));
}

TEST_F(FenceFileTest, ServerVersionMustMatchTheLibrary) {
  const std::string major = std::to_string(fenceLibraryPgMajor());
  EXPECT_TRUE(
      checkFenceLibraryFits("postgres (PostgreSQL) " + major + ".18 (Debian " + major + ".18-0+deb12u1)\n")
          .ok);
  EXPECT_TRUE(checkFenceLibraryFits("postgres (PostgreSQL) " + major + ".0").ok);
  Status other =
      checkFenceLibraryFits("postgres (PostgreSQL) " + std::to_string(fenceLibraryPgMajor() + 1) + ".2\n");
  EXPECT_FALSE(other.ok);
  EXPECT_NE(other.error.find("for PostgreSQL " + major), std::string::npos) << other.error;
  EXPECT_NE(other.error.find("pg_bin"), std::string::npos) << other.error;
  EXPECT_FALSE(checkFenceLibraryFits("").ok);
  EXPECT_FALSE(checkFenceLibraryFits("postgres (PostgreSQL) " + major + "0.1").ok);
}

}  // namespace
}  // namespace fulcrum::db
