// `fulcrum db list`: the cluster read from every agent's /status, whatever they answer.
#include "site/db_cli.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "config/loader.h"

namespace fulcrum::site {
namespace {

config::Site twoNodes() {
  auto r = config::loadSiteString(
      "[site]\nname = \"shop\"\n"
      "[[db.node]]\nname = \"db-1\"\npg = \"127.0.0.1:5432\"\nagent = \"127.0.0.1:8008\"\n"
      "[[db.node]]\nname = \"db-2\"\npg = \"127.0.0.1:5433\"\nagent = \"127.0.0.1:8009\"\n",
      "/etc/fulcrum/site.toml");
  EXPECT_TRUE(r.ok());
  return r.site;
}

TEST(DbCliTest, ReadsTheLeaderAndEachMember) {
  const std::string leader =
      R"({"role":"primary","pg_running":true,"operation":null,"timeline":3,"leader":"db-1",)"
      R"("lease":{"held":true,"may_write":true},"sync":{"mode":"synchronous"},"lag_bytes":null})";
  const std::string replica =
      R"({"role":"replica","pg_running":true,"operation":null,"timeline":3,"leader":"db-1",)"
      R"("lease":{"held":false},"receiver":"streaming","lag_bytes":128,"lag_seconds":0.25,"pending_restart":true})";
  DbClusterView v = readDbCluster(twoNodes(), {leader, replica}, {"", ""});
  EXPECT_EQ(v.leader, "db-1");
  EXPECT_EQ(v.timeline, 3);
  EXPECT_TRUE(v.synchronous);
  ASSERT_EQ(v.members.size(), 2u);
  EXPECT_EQ(v.members[0].role, "leader");
  EXPECT_EQ(v.members[1].role, "replica");
  EXPECT_EQ(v.members[1].receiver, "streaming");
  EXPECT_EQ(v.members[1].lag_bytes, 128);
  EXPECT_EQ(v.members[1].lag_seconds, 0.25);
  const std::string table = formatDbCluster(v);
  EXPECT_NE(table.find("Cluster: shop  leader: db-1  timeline: 3  synchronous: yes"), std::string::npos) << table;
  auto j = nlohmann::json::parse(dbClusterJson(v));
  EXPECT_EQ(j["leader"], "db-1");
  EXPECT_EQ(j["members"][1]["lag_seconds"], 0.25);
  EXPECT_TRUE(j["members"][0]["lag_bytes"].is_null());
  EXPECT_EQ(j["members"][0]["pending_restart"], false);
  EXPECT_EQ(j["members"][1]["pending_restart"], true);
  EXPECT_NE(table.find("0.2  pending"), std::string::npos) << table;
}

TEST(DbCliTest, AnAgentDownOrAnsweringGarbageIsOneRow) {
  DbClusterView v = readDbCluster(
      twoNodes(), {std::nullopt, R"({"role":7,"timeline":"x","operation":{"what":"pg_basebackup from db-1"},"leader":4})"},
      {"connect 127.0.0.1:8008: Connection refused", ""});
  EXPECT_FALSE(v.leader.has_value());
  EXPECT_EQ(v.members[0].state, "unreachable");
  EXPECT_NE(v.members[0].error.find("Connection refused"), std::string::npos);
  EXPECT_EQ(v.members[1].state, "cloning");
  EXPECT_EQ(v.members[1].role, "");
  EXPECT_EQ(v.members[1].timeline, 0);
  const std::string table = formatDbCluster(v);
  EXPECT_NE(table.find("leader: none"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(dbClusterJson(v))["leader"], nullptr);
}

}  // namespace
}  // namespace fulcrum::site

namespace fulcrum::site {
namespace {

TEST(DbCliTest, HistoryTableShowsEachTimelineAndStripsControlCharacters) {
  const std::string answer =
      R"({"leader":"db-2","timeline":3,"history":[)"
      R"({"timeline":1,"lsn":"0/0","at":null,"leader":null,"reason":"initdb"},)"
      R"({"timeline":2,"lsn":"0/3000148","at":"2026-12-03 10:00:00+00","leader":"db-2","reason":"failover: leader db-1's lease ended"},)"
      R"({"timeline":3,"lsn":"0/5000000","at":"2026-12-03 11:00:00+00","leader":"db-1","reason":"evil\u001b[2J"},)"
      R"("garbage",{"timeline":"4"}]})";
  const std::string table = formatDbHistory(answer);
  EXPECT_NE(table.find("  2  0/3000148      2026-12-03 10:00:00+00   db-2         failover: leader db-1's lease ended\n"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("  1  0/0            -"), std::string::npos) << table;
  EXPECT_EQ(table.find('\x1b'), std::string::npos);
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 4);  // header + 3 timelines
  EXPECT_EQ(formatDbHistory("not json"), "");
  EXPECT_EQ(formatDbHistory(R"({"history":5})"), "");
}

}  // namespace
}  // namespace fulcrum::site
