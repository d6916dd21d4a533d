#include "lb/reload_plan.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "config/loader.h"

namespace fulcrum::lb {
namespace {

config::Site load(const std::string& text) {
  config::LoadResult r = config::loadSiteString(text, "/tmp/reload-plan-test.toml");
  EXPECT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors.front().toString());
  return r.site;
}

const std::string kLb = R"(
[[lb.node]]
name = "lb-1"
http = "127.0.0.1:8080"
stats = "127.0.0.1:8404"
)";

std::string site(const std::string& lb, const std::string& web) { return lb + kLb + web; }

// docroot: any directory that exists (the default, next to the file, does not here).
const std::string kWeb = R"(
[web]
docroot = "/tmp"
[[web.node]]
name = "web-1"
listen = "127.0.0.1:8081"
[[web.node]]
name = "web-2"
listen = "127.0.0.1:8082"
[[web.node]]
name = "web-3"
listen = "127.0.0.1:8083"
weight = 2
)";

bool mentions(const std::vector<std::string>& lines, const std::string& part) {
  return std::any_of(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(part) != std::string::npos; });
}

TEST(ReloadPlanTest, AnUnchangedFileChangesNothing) {
  config::Site a = load(site("", kWeb));
  ReloadPlan plan = planReload(a, load(site("", kWeb)), "lb-1");
  EXPECT_TRUE(plan.empty());
  EXPECT_TRUE(plan.needs_restart.empty());
  EXPECT_TRUE(plan.added.empty() && plan.removed.empty() && plan.updated.empty());
}

TEST(ReloadPlanTest, ServersAreMatchedByName) {
  config::Site a = load(site("", kWeb));
  // web-1 unchanged, web-2 moved, web-3 reweighted and made a backup, web-4 new; none removed.
  config::Site b = load(site("", R"(
[web]
docroot = "/tmp"
[[web.node]]
name = "web-1"
listen = "127.0.0.1:8081"
[[web.node]]
name = "web-2"
listen = "127.0.0.1:9082"
[[web.node]]
name = "web-3"
listen = "127.0.0.1:8083"
weight = 5
backup = true
[[web.node]]
name = "web-4"
listen = "127.0.0.1:8084"
)"));
  ReloadPlan plan = planReload(a, b, "lb-1");
  ASSERT_EQ(plan.added.size(), 2u);
  EXPECT_EQ(plan.added[0].name, "web-2");  // a new id at the new address...
  EXPECT_EQ(plan.added[1].name, "web-4");
  EXPECT_EQ(plan.removed, std::vector<std::string>{"web-2"});  // ...the old one drains
  ASSERT_EQ(plan.updated.size(), 1u);
  EXPECT_EQ(plan.updated[0].name, "web-3");
  EXPECT_EQ(plan.updated[0].weight, 5u);
  EXPECT_TRUE(plan.updated[0].backup);
  EXPECT_TRUE(mentions(plan.changes, "web-3 weight 2 -> 5"));
  EXPECT_TRUE(mentions(plan.changes, "web-3 is now a backup"));
  EXPECT_TRUE(mentions(plan.changes, "web-2 moved from 127.0.0.1:8082 to 127.0.0.1:9082"));
  EXPECT_TRUE(plan.needs_restart.empty());

  // And back: web-4 removed.
  ReloadPlan back = planReload(b, a, "lb-1");
  EXPECT_TRUE(std::find(back.removed.begin(), back.removed.end(), "web-4") != back.removed.end());
  EXPECT_TRUE(mentions(back.changes, "server web-4 removed"));
}

TEST(ReloadPlanTest, TunablesAlgorithmAndHealthApply) {
  config::Site a = load(site("", kWeb));
  config::Site b = load(site(R"(
[lb]
algorithm = "leastconn"
retries = 1
[lb.health]
interval_ms = 500
[lb.timeouts]
server_ms = 5000
[lb.limits]
max_body_bytes = 1000
)",
                             kWeb));
  ReloadPlan plan = planReload(a, b, "lb-1");
  EXPECT_TRUE(plan.algorithm);
  EXPECT_TRUE(plan.health);
  EXPECT_TRUE(plan.tunables);
  EXPECT_TRUE(mentions(plan.changes, "algorithm roundrobin -> leastconn"));
  EXPECT_TRUE(mentions(plan.changes, "retries 2 -> 1"));
  EXPECT_TRUE(plan.needs_restart.empty());
  EXPECT_EQ(plan.effective.lb.algorithm, "leastconn");
  EXPECT_EQ(plan.effective.lb.limits.max_body_bytes, 1000u);
}

TEST(ReloadPlanTest, WhatNeedsARestartKeepsItsRunningValue) {
  config::Site a = load(site("", kWeb));
  config::Site b = load(R"(
[lb.limits]
max_connections = 10
rate_per_ip = 5
[lb.firewall]
deny = ["10.0.0.0/8"]
[[lb.node]]
name = "lb-1"
http = "127.0.0.1:9080"
stats = "127.0.0.1:8404"
threads = 3
[security]
internal_tls = true
)" + kWeb);
  ReloadPlan plan = planReload(a, b, "lb-1");
  EXPECT_TRUE(mentions(plan.needs_restart, "lb.node[0]"));
  EXPECT_TRUE(mentions(plan.needs_restart, "lb.limits"));
  EXPECT_TRUE(mentions(plan.needs_restart, "security.internal_tls"));
  EXPECT_FALSE(plan.effective.security.internal_tls);
  // The firewall is applied (checked at accept), the rest waits for a restart.
  EXPECT_TRUE(plan.firewall);
  EXPECT_EQ(plan.changes.size(), 1u);
  EXPECT_EQ(plan.effective.lb.firewall.deny.size(), 1u);
  // Still the running values: a second reload of the same file says the same again.
  EXPECT_EQ(plan.effective.lb.nodes[0].http.toString(), "127.0.0.1:8080");
  EXPECT_EQ(plan.effective.lb.limits.max_connections, a.lb.limits.max_connections);
  ReloadPlan again = planReload(plan.effective, b, "lb-1");
  EXPECT_EQ(again.needs_restart, plan.needs_restart);
}

TEST(ReloadPlanTest, LogSettingsWaitForARestart) {
  config::Site a = load(site("", kWeb));
  config::Site b = load("[site]\nlog_keep = 2\n" + site("[lb]\naccess_log = \"json\"\n", kWeb));
  ReloadPlan plan = planReload(a, b, "lb-1");
  EXPECT_TRUE(mentions(plan.needs_restart, "lb.access_log"));
  EXPECT_TRUE(mentions(plan.needs_restart, "site.log_max_bytes"));
  EXPECT_EQ(plan.effective.lb.access_log.format, "text");
  EXPECT_EQ(plan.effective.site.log_keep, 5u);
}

TEST(ReloadPlanTest, ProxyProtocolChanges) {
  config::Site a = load(site("", kWeb));
  std::string web = kWeb;
  web.replace(web.find("listen = \"127.0.0.1:8082\""), 25, "listen = \"127.0.0.1:8082\"\nsend_proxy = \"v2\"");
  config::Site b = load(site("[lb]\naccept_proxy = true\naccept_proxy_from = [\"10.0.0.0/8\"]\n", web));
  ReloadPlan plan = planReload(a, b, "lb-1");
  // The listeners keep reading what they read (a restart), ...
  EXPECT_TRUE(mentions(plan.needs_restart, "lb.accept_proxy"));
  EXPECT_FALSE(plan.effective.lb.accept_proxy);
  EXPECT_TRUE(plan.effective.lb.accept_proxy_from.empty());
  // ... while a server whose connections now open with a header is a new server, the old draining.
  EXPECT_EQ(plan.removed, std::vector<std::string>{"web-2"});
  ASSERT_EQ(plan.added.size(), 1u);
  EXPECT_EQ(plan.added[0].send_proxy, "v2");
  EXPECT_TRUE(mentions(plan.changes, "server web-2 send_proxy '' -> 'v2'"));
}

TEST(ReloadPlanTest, TheRetryBudgetAppliesOutlierEjectionWaitsForARestart) {
  config::Site a = load(site("", kWeb));
  config::Site b = load(site(R"(
[lb]
retry_budget_percent = 50
retry_budget_min = 1
[lb.outlier]
consecutive_5xx = 3
)",
                             kWeb));
  ReloadPlan plan = planReload(a, b, "lb-1");
  EXPECT_TRUE(plan.tunables);
  EXPECT_TRUE(mentions(plan.changes, "retry budget 50 % of the requests in flight, at least 1"));
  EXPECT_EQ(plan.effective.lb.retry_budget_percent, 50u);
  EXPECT_TRUE(mentions(plan.needs_restart, "lb.outlier"));
  EXPECT_FALSE(plan.effective.lb.outlier.enabled);
  ReloadPlan again = planReload(plan.effective, b, "lb-1");
  EXPECT_EQ(again.needs_restart, plan.needs_restart);
}

TEST(ReloadPlanTest, AFileWithoutThisNodeChangesNothing) {
  config::Site a = load(site("", kWeb));
  config::Site b = load(R"(
[[lb.node]]
name = "lb-2"
http = "127.0.0.1:8080"
)" + kWeb);
  ReloadPlan plan = planReload(a, b, "lb-1");
  EXPECT_TRUE(plan.empty());
  ASSERT_EQ(plan.needs_restart.size(), 1u);
  EXPECT_TRUE(mentions(plan.needs_restart, "no [[lb.node]] named 'lb-1'"));
  EXPECT_EQ(plan.effective.lb.nodes[0].name, "lb-1");
}

}  // namespace
}  // namespace fulcrum::lb
