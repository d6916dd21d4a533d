#include "web/password_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fulcrum::web {
namespace {

class PasswordFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (std::filesystem::temp_directory_path() / "fulcrum-pw-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    dir_ = templ;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path path() const { return dir_ / "db.password"; }
  // Replaced as the agents do it: written under another name, then renamed into place.
  void replace(const std::string& text) {
    std::filesystem::path tmp = dir_ / "db.password.new";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, path());
  }

  std::filesystem::path dir_;
};

TEST_F(PasswordFileTest, MissingReadsEmptyUntilTheFileAppears) {
  PasswordFile file(path());
  EXPECT_EQ(file.get(), "");
  EXPECT_EQ(file.get(), "");
  EXPECT_EQ(file.reads(), 0u);
  replace("s3cret \r\nsecond line\n");
  EXPECT_EQ(file.get(), "s3cret");  // first line, trailing blanks and CR dropped
  EXPECT_EQ(file.reads(), 1u);
}

TEST_F(PasswordFileTest, ReadOnceWhileUnchanged) {
  replace("one\n");
  PasswordFile file(path());
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(file.get(), "one");
  }
  EXPECT_EQ(file.reads(), 1u);
}

TEST_F(PasswordFileTest, RereadWhenReplacedRewrittenOrRemoved) {
  replace("one\n");
  PasswordFile file(path());
  EXPECT_EQ(file.get(), "one");
  // Same length, new inode.
  replace("two\n");
  EXPECT_EQ(file.get(), "two");
  EXPECT_EQ(file.reads(), 2u);
  // Rewritten in place with another length (same inode).
  std::ofstream(path(), std::ios::trunc) << "three\n";
  EXPECT_EQ(file.get(), "three");
  EXPECT_EQ(file.reads(), 3u);
  std::filesystem::remove(path());
  EXPECT_EQ(file.get(), "");
  replace("four\n");
  EXPECT_EQ(file.get(), "four");
  EXPECT_EQ(file.reads(), 4u);
}

}  // namespace
}  // namespace fulcrum::web
