// The Prometheus and Alertmanager files generated from a topology, and the embedded rules.
#include "site/monitoring.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "config/loader.h"

namespace fulcrum::site {
namespace {

constexpr const char* kSite = R"([site]
name = "shop"
state_dir = "/srv/state"
[[lb.node]]
name = "lb-1"
http = "127.0.0.1:8080"
stats = "127.0.0.1:8404"
[[lb.node]]
name = "lb-2"
http = "127.0.0.1:8081"
[web]
docroot = "/"
app = "none"
[[web.node]]
name = "web-1"
listen = "127.0.0.1:9001"
[[web.node]]
name = "web-2"
listen = "[::1]:9002"
[[db.node]]
name = "db-1"
pg = "127.0.0.1:15432"
agent = "127.0.0.1:8008"
[etcd]
endpoints = ["127.0.0.1:2379", "127.0.0.1:2479"]
managed = false
[monitoring]
interval_ms = 1500
)";

config::Site load(const std::string& text) {
  auto result = config::loadSiteString(text, "/srv/site.toml");
  EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
  return result.site;
}

std::string readFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(MonitoringTest, EveryNodeIsATargetWithItsRoleAsJobAndItsName) {
  std::string yml = prometheusConfig(load(kSite));
  EXPECT_NE(yml.find("  scrape_interval: 1500ms\n  scrape_timeout: 1500ms\n  evaluation_interval: 1500ms\n"),
            std::string::npos)
      << yml;
  EXPECT_NE(yml.find("    site: \"shop\"\n"), std::string::npos);
  EXPECT_NE(yml.find("rule_files:\n  - \"alerts.yml\"\n"), std::string::npos);
  EXPECT_NE(yml.find("        - targets: [\"127.0.0.1:9093\"]\n"), std::string::npos);
  auto target = [](const char* job, const char* address, const char* node) {
    return std::string("  - job_name: \"") + job + "\"\n    honor_labels: true\n    static_configs:\n" +
           "      - targets: [\"" + address + "\"]\n        labels:\n          node: \"" + node + "\"\n";
  };
  // lb-2 has no stats listener, hence no /metrics: not a target.
  EXPECT_NE(yml.find(target("lb", "127.0.0.1:8404", "lb-1")), std::string::npos) << yml;
  EXPECT_EQ(yml.find("lb-2"), std::string::npos);
  EXPECT_NE(yml.find("      - targets: [\"127.0.0.1:9001\"]\n        labels:\n          node: \"web-1\"\n"
                     "      - targets: [\"[::1]:9002\"]\n        labels:\n          node: \"web-2\"\n"),
            std::string::npos);
  EXPECT_NE(yml.find(target("db", "127.0.0.1:8008", "db-1")), std::string::npos);
  // etcd is scraped even when run elsewhere; members are named as `status` names them.
  EXPECT_NE(yml.find("      - targets: [\"127.0.0.1:2379\"]\n        labels:\n          node: \"etcd-1\"\n"),
            std::string::npos);
  EXPECT_NE(yml.find(target("prometheus", "127.0.0.1:9090", "prometheus")), std::string::npos);
  EXPECT_NE(yml.find(target("alertmanager", "127.0.0.1:9093", "alertmanager")), std::string::npos);
}

TEST(MonitoringTest, InternalTlsScrapesEveryNodeOverHttpsAsTheOperator) {
  std::string yml = prometheusConfig(load(std::string(kSite) + "[security]\ninternal_tls = true\n"));
  const std::string https =
      "    honor_labels: true\n"
      "    scheme: https\n"
      "    tls_config:\n"
      "      ca_file: \"/srv/state/tls/ca.crt\"\n"
      "      cert_file: \"/srv/state/tls/operator.crt\"\n"
      "      key_file: \"/srv/state/tls/operator.key\"\n"
      "    static_configs:\n";
  // The lbs' stats listeners, the web nodes, the agents and etcd speak HTTPS only under internal_tls.
  for (const char* job : {"lb", "web", "db", "etcd"}) {
    EXPECT_NE(yml.find(std::string("  - job_name: \"") + job + "\"\n" + https), std::string::npos)
        << job << yml;
  }
  for (const char* job : {"prometheus", "alertmanager"}) {
    EXPECT_NE(
        yml.find(std::string("  - job_name: \"") + job + "\"\n    honor_labels: true\n    static_configs:\n"),
        std::string::npos)
        << job << yml;
  }
}

TEST(MonitoringTest, NoAlertmanagerMeansNoAlertingSection) {
  std::string text = kSite;
  text += "alertmanager = \"\"\n";
  std::string yml = prometheusConfig(load(text));
  EXPECT_EQ(yml.find("alerting:"), std::string::npos);
  EXPECT_EQ(yml.find("alertmanager"), std::string::npos);
  // A long interval keeps the scrape timeout at Prometheus' 10 s.
  std::string slow = kSite;
  slow.replace(slow.find("interval_ms = 1500"), 18, "interval_ms = 60000");
  yml = prometheusConfig(load(slow));
  EXPECT_NE(yml.find("  scrape_interval: 60s\n  scrape_timeout: 10s\n"), std::string::npos) << yml;
}

TEST(MonitoringTest, AlertmanagerSendsNothingAnywhere) {
  std::string yml = alertmanagerConfig(load(kSite));
  EXPECT_NE(yml.find("receivers:\n  - name: \"site\"\n"), std::string::npos);
  EXPECT_EQ(yml.find("_configs:\n"), std::string::npos);  // no webhook, email, ... receiver
}

TEST(MonitoringTest, WritesTheThreeFilesWithTheEmbeddedRules) {
  std::string templ = (std::filesystem::temp_directory_path() / "fulcrum-monitoring-XXXXXX").string();
  ASSERT_NE(::mkdtemp(templ.data()), nullptr);
  const std::filesystem::path dir = std::filesystem::path(templ) / "out";
  config::Site site = load(kSite);
  std::string error;
  ASSERT_TRUE(writeMonitoringFiles(site, dir, error)) << error;
  EXPECT_EQ(readFile(dir / "prometheus.yml"), prometheusConfig(site));
  EXPECT_EQ(readFile(dir / "alertmanager.yml"), alertmanagerConfig(site));
  EXPECT_EQ(readFile(dir / "alerts.yml"), alertRules());
  EXPECT_EQ(alertRules(),
            readFile(std::filesystem::path(FULCRUM_SOURCE_DIR) / "deploy/prometheus/alerts.yml"));
  EXPECT_NE(alertRules().find("alert: FulcrumServerDown"), std::string_view::npos);
  std::filesystem::remove_all(templ);
}

}  // namespace
}  // namespace fulcrum::site
