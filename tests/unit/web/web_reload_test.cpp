#include "web/web_reload.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "../config/site_fixture.h"
#include "config/loader.h"

namespace fulcrum::web {
namespace {

// A guestbook site with two web nodes and two db nodes; `extra` is appended (TOML tables).
std::string siteText(std::string_view web_1_listen = "127.0.0.1:9001", std::string_view docroot = "www",
                     std::string_view db_2_pg = "127.0.0.1:5433", std::string_view extra = "") {
  return fmt::format(
      "[site]\nname = \"t\"\n[web]\ndocroot = \"{}\"\n"
      "[[web.node]]\nname = \"web-1\"\nlisten = \"{}\"\n"
      "[[web.node]]\nname = \"web-2\"\nlisten = \"127.0.0.1:9002\"\n"
      "[db]\nmax_lag_bytes = 1000\n"
      "[[db.node]]\nname = \"db-1\"\npg = \"127.0.0.1:5432\"\nagent = \"127.0.0.1:8008\"\n"
      "[[db.node]]\nname = \"db-2\"\npg = \"{}\"\nagent = \"127.0.0.1:8009\"\n{}",
      docroot, web_1_listen, db_2_pg, extra);
}

// The site's directory holds the docroots the tests name (the loader wants them to exist).
class WebReloadTest : public ::testing::Test {
 protected:
  void SetUp() override { std::filesystem::create_directory(dir_.dir() / "other"); }
  config::Site load(const std::string& text) {
    config::LoadResult result = dir_.load(text);
    EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
    return result.site;
  }
  config::testing::SiteDir dir_;
};

TEST_F(WebReloadTest, TheSameFileChangesNothing) {
  const config::Site site = load(siteText());
  WebReloadPlan plan = planWebReload(site, site, "web-1");
  EXPECT_TRUE(plan.report.changes.empty());
  EXPECT_TRUE(plan.report.needs_restart.empty());
  EXPECT_FALSE(plan.docroot);
  EXPECT_FALSE(plan.max_lag_bytes);
}

TEST_F(WebReloadTest, DocrootAndMaxLagApplyInPlace) {
  config::Site running = load(siteText());
  std::string next_text = siteText("127.0.0.1:9001", "other");
  next_text.replace(next_text.find("max_lag_bytes = 1000"), 20, "max_lag_bytes = 5000");
  const config::Site next = load(next_text);
  WebReloadPlan plan = planWebReload(running, next, "web-1");
  ASSERT_TRUE(plan.docroot);
  EXPECT_EQ(*plan.docroot, dir_.dir() / "other");
  ASSERT_TRUE(plan.max_lag_bytes);
  EXPECT_EQ(*plan.max_lag_bytes, 5000u);
  const std::string dir = dir_.dir().string();
  EXPECT_EQ(plan.report.changes,
            (std::vector<std::string>{"web.docroot: " + dir + "/www -> " + dir + "/other",
                                      "db.max_lag_bytes: 1000 -> 5000"}));
  EXPECT_TRUE(plan.report.needs_restart.empty());
  applyWebPlan(running, plan);
  EXPECT_TRUE(planWebReload(running, next, "web-1").report.changes.empty());
}

TEST_F(WebReloadTest, ListenAndLimitsNeedARestartAndStayNamed) {
  config::Site running = load(siteText());
  const config::Site next =
      load(siteText("127.0.0.1:9011", "www", "127.0.0.1:5433", "[lb.limits]\nmax_body_bytes = 1024\n"));
  WebReloadPlan plan = planWebReload(running, next, "web-1");
  EXPECT_TRUE(plan.report.changes.empty());
  EXPECT_EQ(plan.report.needs_restart, (std::vector<std::string>{
                                           "web.node[0].listen: 127.0.0.1:9001 -> 127.0.0.1:9011",
                                           "lb.limits.max_body_bytes: 10485760 -> 1024",
                                       }));
  // Nothing of it is taken in: the next reload names it again.
  applyWebPlan(running, plan);
  EXPECT_EQ(planWebReload(running, next, "web-1").report.needs_restart.size(), 2u);
  // Another node's listen address is not this node's business.
  EXPECT_EQ(planWebReload(running, next, "web-2").report.needs_restart.size(), 1u);
}

TEST_F(WebReloadTest, InternalTlsNeedsARestart) {
  const config::Site running = load(siteText());
  const config::Site next =
      load(siteText("127.0.0.1:9001", "www", "127.0.0.1:5433", "[security]\ninternal_tls = true\n"));
  WebReloadPlan plan = planWebReload(running, next, "web-1");
  EXPECT_TRUE(plan.report.changes.empty());
  EXPECT_EQ(plan.report.needs_restart, (std::vector<std::string>{"security.internal_tls: false -> true"}));
}

TEST_F(WebReloadTest, ANewDbNodeListIsAppliedAndAnEmptyOneRefused) {
  config::Site running = load(siteText());
  const config::Site next = load(siteText("127.0.0.1:9001", "www", "127.0.0.1:6433"));
  WebReloadPlan plan = planWebReload(running, next, "web-1");
  ASSERT_TRUE(plan.db_nodes);
  ASSERT_EQ(plan.db_nodes->size(), 2u);
  EXPECT_EQ((*plan.db_nodes)[1].pg.toString(), "127.0.0.1:6433");
  EXPECT_EQ(
      plan.report.changes,
      (std::vector<std::string>{"db.node: db-1@127.0.0.1:5432, db-2@127.0.0.1:5433 -> db-1@127.0.0.1:5432, "
                                "db-2@127.0.0.1:6433"}));
  EXPECT_TRUE(plan.report.needs_restart.empty());
  applyWebPlan(running, plan);
  EXPECT_FALSE(planWebReload(running, next, "web-1").db_nodes);

  std::string none = siteText();
  none.erase(none.find("[[db.node]]"));
  WebReloadPlan refused = planWebReload(running, load(none), "web-1");
  ASSERT_EQ(refused.report.errors.size(), 1u);
  EXPECT_NE(refused.report.errors[0].find(": web.app: the guestbook needs its database"), std::string::npos);
}

TEST_F(WebReloadTest, ANodeGoneFromTheFileAppliesNothing) {
  const config::Site running = load(siteText());
  std::string next_text = siteText("127.0.0.1:9001", "other");
  next_text.replace(next_text.find("name = \"web-2\""), 14, "name = \"web-3\"");
  WebReloadPlan plan = planWebReload(running, load(next_text), "web-2");
  EXPECT_FALSE(plan.docroot);
  EXPECT_TRUE(plan.report.changes.empty());
  ASSERT_EQ(plan.report.needs_restart.size(), 1u);
  EXPECT_NE(plan.report.needs_restart[0].find("web-2 is no longer in the file"), std::string::npos);
}

}  // namespace
}  // namespace fulcrum::web
