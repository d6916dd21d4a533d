// `fulcrum firewall`: each host's nftables ruleset from the topology alone. The accept rules of
// examples/lab.toml's hosts are checked one by one; when nft is installed (and we may use
// netlink), `nft -c` parses every generated ruleset.
#include "site/firewall.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/loader.h"
#include "config/values.h"

namespace fulcrum::site {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

config::Site loadFile(const std::string& relative) {
  auto result = config::loadSiteFile(std::string(FULCRUM_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
  return result.site;
}

config::Site loadText(const std::string& text) {
  auto result = config::loadSiteString(text, "/srv/fw.toml");
  EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
  return result.site;
}

std::string ruleset(const config::Site& site, const std::string& node, const FirewallOptions& options = {}) {
  std::string out;
  std::string error;
  EXPECT_TRUE(firewallRuleset(site, node, options, out, error)) << error;
  return out;
}

// The port and VRRP accept rules, each without its comment: what the host lets in beyond the
// loopback, established and ICMP essentials every ruleset has.
std::vector<std::string> portRules(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    line.erase(0, line.find_first_not_of('\t'));
    if (line.rfind('#', 0) == 0 || line.find(" accept") == std::string::npos ||
        (line.find("dport") == std::string::npos && line.find("112") == std::string::npos)) {
      continue;
    }
    out.push_back(line.substr(0, line.find(" comment ")));
  }
  return out;
}

// The ruleset after its header comment (which names the node asked about).
std::string rules(const std::string& text) {
  return text.substr(text.find("\ntable inet fulcrum\n"));
}

TEST(Firewall, LabWebHostTakesItsPortFromTheLbsAndTheScraperOnly) {
  const auto site = loadFile("examples/lab.toml");
  const std::string text = ruleset(site, "web-02");
  EXPECT_THAT(portRules(text),
              ElementsAre("ip daddr 10.77.0.22 ip saddr { 10.77.0.11, 10.77.0.12, 10.77.0.51 } tcp dport 80 accept"));
  EXPECT_THAT(text, HasSubstr("policy drop;"));
  EXPECT_THAT(text, HasSubstr("iif lo accept"));
  EXPECT_THAT(text, HasSubstr("ct state established,related accept"));
  EXPECT_THAT(text, HasSubstr("nd-neighbor-solicit"));
  EXPECT_THAT(text, HasSubstr("comment \"web-02 listen: from the lb hosts and the monitoring host\""));
}

TEST(Firewall, LabDbHostTakesPostgresqlFromWebLbFrontendsAndOtherDbs) {
  const auto site = loadFile("examples/lab.toml");
  EXPECT_THAT(portRules(ruleset(site, "db-01")),
              ElementsAre("ip daddr 10.77.0.31 ip saddr { 10.77.0.11, 10.77.0.12, 10.77.0.21, 10.77.0.22, "
                          "10.77.0.23, 10.77.0.32, 10.77.0.33 } tcp dport 5432 accept",
                          "ip daddr 10.77.0.31 ip saddr { 10.77.0.11, 10.77.0.12, 10.77.0.21, 10.77.0.22, "
                          "10.77.0.23, 10.77.0.32, 10.77.0.33, 10.77.0.51 } tcp dport 8008 accept"));
}

TEST(Firewall, LabLbHostHasThePublicPortOnTheVipAndVrrpFromItsPeer) {
  const auto site = loadFile("examples/lab.toml");
  EXPECT_THAT(portRules(ruleset(site, "lb-01")),
              ElementsAre("ip daddr 10.77.0.100 tcp dport 80 accept",
                          "ip daddr 10.77.0.11 ip saddr { 10.77.0.12, 10.77.0.51 } tcp dport 8404 accept",
                          "ip daddr 10.77.0.100 ip saddr { 10.77.0.21, 10.77.0.22, 10.77.0.23 } tcp dport 5000 accept",
                          "ip daddr 10.77.0.100 ip saddr { 10.77.0.21, 10.77.0.22, 10.77.0.23 } tcp dport 5001 accept",
                          "ip saddr 10.77.0.12 ip daddr 224.0.0.18 ip protocol 112 accept"));
}

TEST(Firewall, LabEtcdMemberTakesClientsFromDbsAndPeersFromMembers) {
  const auto site = loadFile("examples/lab.toml");
  EXPECT_THAT(portRules(ruleset(site, "etcd-2")),
              ElementsAre("ip daddr 10.77.0.42 ip saddr { 10.77.0.11, 10.77.0.12, 10.77.0.31, 10.77.0.32, "
                          "10.77.0.33, 10.77.0.41, 10.77.0.43, 10.77.0.51 } tcp dport 2379 accept",
                          "ip daddr 10.77.0.42 ip saddr { 10.77.0.41, 10.77.0.43 } tcp dport 2380 accept"));
}

TEST(Firewall, LabMonitoringHostTakesNothingFromOtherHosts) {
  const auto site = loadFile("examples/lab.toml");
  const std::string text = ruleset(site, "prometheus");
  EXPECT_THAT(portRules(text), IsEmpty());
  EXPECT_THAT(text, HasSubstr("# prometheus web: from this host and the operator (--admin) only (10.77.0.51:9090)"));
  // The same host, asked by its other node.
  EXPECT_EQ(rules(text), rules(ruleset(site, "alertmanager")));
}

TEST(Firewall, NoPublicPortOutsideTheLbHosts) {
  const auto site = loadFile("examples/lab.toml");
  for (const auto& node : firewallNodeNames(site)) {
    if (node.rfind("lb-", 0) == 0) {
      continue;
    }
    for (const auto& rule : portRules(ruleset(site, node))) {
      EXPECT_THAT(rule, HasSubstr("saddr")) << node;
    }
  }
}

TEST(Firewall, AdminAddressesReachEveryPort) {
  const auto site = loadFile("examples/lab.toml");
  std::string error;
  FirewallOptions options;
  options.admin.push_back(*config::parseCidr("10.77.0.254", error));
  EXPECT_THAT(ruleset(site, "db-02", options),
              HasSubstr("ip saddr 10.77.0.254/32 accept comment \"operator (--admin): every port\""));
}

TEST(Firewall, UnknownNodeIsRefusedWithTheNodeNames) {
  const auto site = loadFile("examples/lab.toml");
  std::string out;
  std::string error;
  EXPECT_FALSE(firewallRuleset(site, "web-09", {}, out, error));
  EXPECT_THAT(error, HasSubstr("no node named \"web-09\""));
  EXPECT_THAT(error, HasSubstr("web-01, web-02, web-03"));
}

TEST(Firewall, LoopbackSiteIsOneHostWithOnlyItsPublicPorts) {
  const auto site = loadFile("examples/site.toml");
  const std::string lb = ruleset(site, site.lb.nodes.at(0).name);
  const std::string db = ruleset(site, site.db.nodes.at(0).name);
  EXPECT_EQ(rules(lb), rules(db));  // every node on 127.0.0.1: one host
  for (const auto& rule : portRules(lb)) {
    EXPECT_THAT(rule, ::testing::Not(HasSubstr("saddr"))) << "only the public ports: the rest is loopback";
  }
  EXPECT_THAT(portRules(lb), ::testing::Contains(HasSubstr("tcp dport 8080 accept")));
}

TEST(Firewall, AFilePathCannotEndACommentLine) {
  auto result = config::loadSiteString("[web]\ndocroot = \"/\"\napp = \"none\"\n[[web.node]]\nname = \"web-01\"\nlisten = \"10.0.0.21:80\"\n",
                                       "/srv/a\ntcp dport 22 accept\n#.toml");
  ASSERT_TRUE(result.ok()) << result.errors[0].toString();
  const std::string text = ruleset(result.site, "web-01");
  EXPECT_THAT(text, ::testing::Not(HasSubstr("\ntcp dport 22")));
  EXPECT_THAT(text, HasSubstr("/srv/a?tcp dport 22 accept?#.toml"));
}

constexpr const char* kIpv6 = R"([site]
name = "six"
state_dir = "/srv/six"
[[lb.node]]
name = "lb-01"
http = "[::]:8080"
stats = "[fd00::11]:8404"
[web]
docroot = "/"
app = "none"
[[web.node]]
name = "web-01"
listen = "[fd00::21]:80"
[[web.node]]
name = "web-02"
listen = "10.0.0.22:80"
[[db.node]]
name = "db-01"
pg = "[fd00::31]:5432"
agent = "[fd00::31]:8008"
)";

TEST(Firewall, Ipv6AddressesUseIp6Matches) {
  const auto site = loadText(kIpv6);
  EXPECT_THAT(portRules(ruleset(site, "web-01")),
              ElementsAre("ip6 daddr fd00::21 ip6 saddr fd00::11 tcp dport 80 accept"));
  // A wildcard [::] listener takes both families, from anyone.
  EXPECT_THAT(portRules(ruleset(site, "lb-01")), UnorderedElementsAre("tcp dport 8080 accept"));
  // An IPv4 listener hears only the lbs' IPv4 addresses: this lb has none.
  EXPECT_THAT(portRules(ruleset(site, "web-02")), IsEmpty());
  EXPECT_THAT(ruleset(site, "web-02"), HasSubstr("# web-02 listen: from the lb hosts and the monitoring host "
                                                 "(10.0.0.22:80): no other host connects to it"));
  EXPECT_THAT(portRules(ruleset(site, "db-01")),
              ElementsAre("ip6 daddr fd00::31 ip6 saddr fd00::21 tcp dport 5432 accept",
                          "ip6 daddr fd00::31 ip6 saddr { fd00::11, fd00::21 } tcp dport 8008 accept"));
}

// `nft -c` parses a ruleset (and checks it against the kernel) without applying it.
TEST(Firewall, NftAcceptsEveryGeneratedRuleset) {
  const char* nft = "/usr/sbin/nft";
  if (access(nft, X_OK) != 0) {
    GTEST_SKIP() << "nft is not installed (Debian nftables; scripts/deps.sh installs it)";
  }
  if (geteuid() != 0) {
    GTEST_SKIP() << "nft -c needs CAP_NET_ADMIN (root)";
  }
  const auto dir = std::filesystem::temp_directory_path() / ("fulcrum-fw-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  FirewallOptions options;
  std::string error;
  options.admin.push_back(*config::parseCidr("10.77.0.254", error));
  options.admin.push_back(*config::parseCidr("fd00::/64", error));
  for (const auto& site : {loadFile("examples/lab.toml"), loadFile("examples/site.toml"), loadText(kIpv6)}) {
    for (const auto& node : firewallNodeNames(site)) {
      const auto file = dir / (node + ".nft");
      std::ofstream(file) << ruleset(site, node, options);
      const std::string command = std::string(nft) + " -c -f " + file.string() + " 2>&1";
      EXPECT_EQ(std::system(command.c_str()), 0) << site.display_path << " " << node << ": " << command;
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fulcrum::site
