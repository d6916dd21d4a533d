// What `fulcrum db` refuses until synchronous replication is built.
#include <gtest/gtest.h>

#include <string>

#include "config/features.h"
#include "config/loader.h"

namespace fulcrum::config {
namespace {

Site load(const std::string& db_settings) {
  std::string text = "[site]\nname = \"t\"\n[db]\n" + db_settings +
                     "[[db.node]]\nname = \"db-1\"\npg = \"127.0.0.1:15432\"\nagent = \"127.0.0.1:8008\"\n"
                     "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\nmanaged = false\n";
  auto result = loadSiteString(text, "/tmp/site.toml");
  EXPECT_TRUE(result.ok());
  return result.site;
}

TEST(DbFeaturesTest, FailoverRuns) {
  EXPECT_TRUE(dbNotBuiltYet(load("")).empty());  // failover = true by default
}

TEST(DbFeaturesTest, SynchronousIsRefused) {
  auto refused = dbNotBuiltYet(load("failover = false\nsynchronous = true\n"));
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0].toString().find("db.synchronous"), std::string::npos);
  EXPECT_NE(refused[0].toString().find("not supported yet"), std::string::npos);
}

TEST(DbFeaturesTest, AsyncWithoutFailoverRuns) {
  Site site = load("failover = false\n");
  EXPECT_TRUE(dbNotBuiltYet(site).empty());
  // A managed etcd is still noted by `check` (it needs `fulcrum up`), but `fulcrum db` runs.
  for (const auto& note : notBuiltYet(site)) {
    EXPECT_EQ(note.toString().find("db."), std::string::npos) << note.toString();
  }
}

}  // namespace
}  // namespace fulcrum::config
