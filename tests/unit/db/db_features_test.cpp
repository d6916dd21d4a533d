// What `fulcrum db` refuses: nothing any more (synchronous replication is built).
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

TEST(DbFeaturesTest, SynchronousRuns) {
  Site site = load("synchronous = true\n");
  EXPECT_TRUE(site.db.synchronous);
  EXPECT_TRUE(dbNotBuiltYet(site).empty());
  for (const auto& note : notBuiltYet(site)) {
    EXPECT_EQ(note.toString().find("db.synchronous"), std::string::npos) << note.toString();
  }
}

TEST(DbFeaturesTest, AsyncWithoutFailoverRuns) {
  Site site = load("failover = false\n");
  EXPECT_TRUE(dbNotBuiltYet(site).empty());
  // `check` notes nothing about [db] either.
  for (const auto& note : notBuiltYet(site)) {
    EXPECT_EQ(note.toString().find("db."), std::string::npos) << note.toString();
  }
}

}  // namespace
}  // namespace fulcrum::config
