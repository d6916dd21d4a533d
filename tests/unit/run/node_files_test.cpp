#include "run/node_files.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace fulcrum::run {
namespace {

class NodeFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("fulcrum-run-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A child process that holds node `name`'s pid file until killed; its pid once the file is
  // there (bounded wait).
  pid_t holdInChild(const std::string& name) {
    int ready[2];
    EXPECT_EQ(::pipe(ready), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      std::string error;
      auto file = PidFile::create(dir_, name, error);
      char ok = file ? '1' : '0';
      (void)!::write(ready[1], &ok, 1);
      ::pause();
      ::_exit(0);
    }
    ::close(ready[1]);
    char ok = 0;
    EXPECT_EQ(::read(ready[0], &ok, 1), 1);
    ::close(ready[0]);
    EXPECT_EQ(ok, '1');
    return pid;
  }

  std::filesystem::path dir_;
};

TEST_F(NodeFilesTest, APidFileNamesItsLiveHolderAndNotADeadOne) {
  EXPECT_FALSE(runningPid(dir_, "web-1").has_value());
  pid_t child = holdInChild("web-1");
  ASSERT_GT(child, 0);
  EXPECT_EQ(runningPid(dir_, "web-1"), child);
  EXPECT_FALSE(runningPid(dir_, "web-2").has_value());

  // A second process of the same node is refused while the first lives.
  // (This process would not conflict with its own lock, so only a live other holder is tested.)
  std::string error;
  EXPECT_EQ(PidFile::create(dir_, "web-1", error), nullptr);
  EXPECT_NE(error.find("already runs here"), std::string::npos) << error;

  // Killed -9: the file stays, the lock goes, and nobody is named.
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(std::filesystem::exists(pidPath(dir_, "web-1")));
  EXPECT_FALSE(runningPid(dir_, "web-1").has_value());
  // The next start takes the stale file over and removes it when it ends.
  {
    auto file = PidFile::create(dir_, "web-1", error);
    ASSERT_NE(file, nullptr) << error;
  }
  EXPECT_FALSE(std::filesystem::exists(pidPath(dir_, "web-1")));
}

TEST_F(NodeFilesTest, ReloadReportsRoundTripAndCountUp) {
  EXPECT_FALSE(readReloadReport(dir_, "lb-1").has_value());
  ReloadReport first;
  first.changes = {"server web-3 added", "algorithm roundrobin -> leastconn"};
  first.needs_restart = {"lb.node[0].threads"};
  writeReloadReport(dir_, "lb-1", first);
  auto read = readReloadReport(dir_, "lb-1");
  ASSERT_TRUE(read.has_value());
  EXPECT_TRUE(read->ok);
  EXPECT_EQ(read->node, "lb-1");
  EXPECT_EQ(read->pid, ::getpid());
  EXPECT_EQ(read->changes, first.changes);
  EXPECT_EQ(read->needs_restart, first.needs_restart);

  ReloadReport refused;
  refused.ok = false;
  refused.errors = {"site.toml:3:7: lb.algorithm: unknown algorithm 'fastest'"};
  writeReloadReport(dir_, "lb-1", refused);
  auto second = readReloadReport(dir_, "lb-1");
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(second->ok);
  EXPECT_GT(second->sequence, read->sequence);
  EXPECT_NE(second->summary().find("refused"), std::string::npos);
  EXPECT_NE(second->summary().find("site.toml:3:7"), std::string::npos);

  EXPECT_FALSE(ReloadReport::fromJson("not json").has_value());
  EXPECT_FALSE(ReloadReport::fromJson(R"({"ok": "yes"})").has_value());
}

}  // namespace
}  // namespace fulcrum::run
