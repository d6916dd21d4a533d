// Finding PostgreSQL's programs under a Debian-style root.
#include "pg/pg_bin.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace fulcrum::pg {
namespace {

TEST(PgBinTest, FindPgBinPicksNewestVersion) {
  char tmpl[] = "/tmp/fulcrum-pgbin-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::filesystem::path root = tmpl;
  for (const char* version : {"9.6", "15", "13", "16"}) {
    std::filesystem::create_directories(root / version / "bin");
    if (std::string(version) != "16") {  // 16 has no server binary: skipped
      std::ofstream(root / version / "bin" / "postgres") << "#!/bin/sh\n";
      std::filesystem::permissions(root / version / "bin" / "postgres", std::filesystem::perms::owner_all);
    }
  }
  std::filesystem::create_directories(root / "common" / "bin");
  auto found = findPgBin("", root);
  ASSERT_TRUE(found.ok) << found.error;
  EXPECT_EQ(found.value, root / "15" / "bin");
  EXPECT_EQ(findPgBin(root / "13" / "bin", root).value, root / "13" / "bin");
  EXPECT_FALSE(findPgBin(root / "16" / "bin", root).ok);
  EXPECT_FALSE(findPgBin("", root / "none").ok);
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace fulcrum::pg
