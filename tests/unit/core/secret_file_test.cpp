#include "core/secret_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace fulcrum::core {
namespace {

class SecretFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("fulcrum-secret-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(SecretFileTest, CreatesPrivateFileOnceThenReadsIt) {
  std::string value;
  std::string error;
  auto path = dir_ / "sub" / "token";
  ASSERT_TRUE(loadOrCreateSecretFile(path, [] { return std::string("first-secret"); }, value, error)) << error;
  EXPECT_EQ(value, "first-secret");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_TRUE(loadOrCreateSecretFile(path, [] { return std::string("second"); }, value, error)) << error;
  EXPECT_EQ(value, "first-secret");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_ / "sub"), {}), 1) << "no temporary left";
}

TEST_F(SecretFileTest, RacingCreatorsAllEndWithTheSameSecret) {
  auto path = dir_ / "token";
  std::filesystem::create_directories(dir_);
  std::vector<std::string> seen(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < seen.size(); ++i) {
    threads.emplace_back([&, i] {
      std::string error;
      EXPECT_TRUE(loadOrCreateSecretFile(path, [i] { return "secret-" + std::to_string(i); }, seen[i], error))
          << error;
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  for (const auto& value : seen) {
    EXPECT_EQ(value, seen[0]);
  }
}

TEST_F(SecretFileTest, RefusesEmptyFileAndEmptyMake) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "empty") << "\n";
  std::string value;
  std::string error;
  EXPECT_FALSE(loadOrCreateSecretFile(dir_ / "empty", [] { return std::string("x"); }, value, error));
  EXPECT_NE(error.find("empty secret"), std::string::npos) << error;
  EXPECT_FALSE(loadOrCreateSecretFile(dir_ / "none", [] { return std::string(); }, value, error));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "none"));
}

}  // namespace
}  // namespace fulcrum::core
