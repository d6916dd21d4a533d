#include "db/db_reload.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "../config/site_fixture.h"
#include "config/loader.h"

namespace fulcrum::db {
namespace {

std::string siteText(std::string_view db_settings, std::string_view db_2_agent = "127.0.0.1:8009") {
  return fmt::format(
      "[site]\nname = \"t\"\n[db]\n{}\n"
      "[[db.node]]\nname = \"db-1\"\npg = \"127.0.0.1:5432\"\nagent = \"127.0.0.1:8008\"\n"
      "[[db.node]]\nname = \"db-2\"\npg = \"127.0.0.1:5433\"\nagent = \"{}\"\n"
      "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\nmanaged = false\n",
      db_settings, db_2_agent);
}

config::Site load(const std::string& text) {
  config::LoadResult result = config::loadSiteString(text, "/srv/site/site.toml");
  EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
  return result.site;
}

TEST(DbReloadTest, MaxLagAndFailoverApplyAtOnce) {
  config::Site running = load(siteText("max_lag_bytes = 1000\nfailover = true"));
  const config::Site next = load(siteText("max_lag_bytes = 64\nfailover = false"));
  DbReloadPlan plan = planDbReload(running, next, "db-1");
  EXPECT_EQ(plan.report.changes,
            (std::vector<std::string>{"db.max_lag_bytes: 1000 -> 64", "db.failover: true -> false"}));
  EXPECT_TRUE(plan.report.needs_restart.empty());
  applyDbPlan(running, plan);
  EXPECT_EQ(running.db.max_lag_bytes, 64u);
  EXPECT_FALSE(running.db.failover);
  EXPECT_TRUE(planDbReload(running, next, "db-1").report.changes.empty());
}

TEST(DbReloadTest, WhatTheAgentFixedAtStartNeedsARestart) {
  config::Site running = load(siteText("max_lag_bytes = 1000"));
  const config::Site next = load(siteText(
      "max_lag_bytes = 1000\nleader_ttl_ms = 8000\nsynchronous = true\nuser = \"app\"", "127.0.0.1:8010"));
  DbReloadPlan plan = planDbReload(running, next, "db-2");
  EXPECT_TRUE(plan.report.changes.empty());
  EXPECT_EQ(plan.report.needs_restart,
            (std::vector<std::string>{
                "db.node[1].agent: 127.0.0.1:8009 -> 127.0.0.1:8010",
                "db.user: site -> app",
                "db.synchronous: false -> true",
                "db.leader_ttl_ms: 5000 -> 8000",
                "db.node: db-1@127.0.0.1:5432/127.0.0.1:8008, db-2@127.0.0.1:5433/127.0.0.1:8009 -> "
                "db-1@127.0.0.1:5432/127.0.0.1:8008, db-2@127.0.0.1:5433/127.0.0.1:8010",
            }));
  applyDbPlan(running, plan);
  EXPECT_EQ(running.db.leader_ttl_ms, 5000u);  // left as it runs
  EXPECT_FALSE(running.db.synchronous);
}

TEST(DbReloadTest, InternalTlsAndTheNamesItAdmitsNeedARestart) {
  const config::testing::SiteDir dir;  // the web nodes' docroot must exist
  auto site = [&](bool tls, bool second_web) {
    std::string text =
        siteText("max_lag_bytes = 1000") +
        "[web]\ndocroot = \"www\"\n[[web.node]]\nname = \"web-1\"\nlisten = \"127.0.0.1:8081\"\n";
    if (second_web) {
      text += "[[web.node]]\nname = \"web-2\"\nlisten = \"127.0.0.1:8082\"\n";
    }
    if (tls) {
      text += "[security]\ninternal_tls = true\n";
    }
    config::LoadResult result = dir.load(text);
    EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
    return result.site;
  };
  EXPECT_EQ(planDbReload(site(false, false), site(true, false), "db-1").report.needs_restart,
            (std::vector<std::string>{"security.internal_tls: false -> true"}));
  // pg_ident.conf maps the web nodes' certificate names to the application role at each start.
  EXPECT_EQ(planDbReload(site(true, false), site(true, true), "db-1").report.needs_restart,
            (std::vector<std::string>{
                "web.node, lb.node (the certificates admitted as the application): web-1 -> web-1, web-2"}));
  EXPECT_TRUE(planDbReload(site(false, false), site(false, true), "db-1").report.needs_restart.empty());
}

TEST(DbReloadTest, ANodeGoneFromTheFileAppliesNothing) {
  const config::Site running = load(siteText("max_lag_bytes = 1000"));
  std::string next_text = siteText("max_lag_bytes = 5");
  next_text.replace(next_text.find("name = \"db-2\""), 13, "name = \"db-3\"");
  DbReloadPlan plan = planDbReload(running, load(next_text), "db-2");
  EXPECT_FALSE(plan.max_lag_bytes);
  EXPECT_TRUE(plan.report.changes.empty());
  ASSERT_EQ(plan.report.needs_restart.size(), 1u);
  EXPECT_NE(plan.report.needs_restart[0].find("db-2 is no longer in the file"), std::string::npos);
}

}  // namespace
}  // namespace fulcrum::db
