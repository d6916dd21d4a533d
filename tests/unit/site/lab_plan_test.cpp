// `fulcrum lab`'s hosts: grouped by address from the topology alone, with names that fit the
// kernel's limits and a bridge address of the same subnet.
#include "site/lab_plan.h"

#include <gtest/gtest.h>

#include "config/loader.h"

namespace fulcrum::site {
namespace {

constexpr const char* kLab = R"([site]
name = "lab"
state_dir = "/srv/lab"
[[lb.node]]
name = "lb-01"
http = "10.77.0.11:80"
stats = "10.77.0.11:8404"
db_write = "10.77.0.11:5000"
[web]
docroot = "/"
app = "none"
[[web.node]]
name = "web-01"
listen = "10.77.0.21:80"
[[web.node]]
name = "web-02"
listen = "10.77.0.22:80"
[[db.node]]
name = "db-01"
pg = "10.77.0.31:5432"
agent = "10.77.0.31:8008"
[etcd]
endpoints = ["10.77.0.41:2379", "10.77.0.42:2379", "10.77.0.43:2379"]
)";

config::Site load(const std::string& text) {
  auto result = config::loadSiteString(text, "/srv/lab.toml");
  EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
  return result.site;
}

std::vector<ChildSpec> children(const config::Site& site) {
  PlanOptions o;
  o.self_exe = "/bin/fulcrum";
  o.etcd_exe = "/usr/bin/etcd";
  o.etcd_peer_ports = chooseEtcdPeerPorts(site, [](const core::SocketAddress&) { return true; });
  return planChildren(site, o);
}

TEST(LabPlanTest, EveryAddressIsAHostAndEveryChildIsOnOne) {
  auto site = load(kLab);
  auto kids = children(site);
  LabPlan plan;
  std::string error;
  ASSERT_TRUE(planLab(site, kids, plan, error)) << error;
  std::vector<std::string> first;
  for (const auto& h : plan.hosts) {
    first.push_back(h.addresses.front().toString());
  }
  // Every etcd endpoint is a host of its own member.
  EXPECT_EQ(first, (std::vector<std::string>{"10.77.0.11", "10.77.0.21", "10.77.0.22", "10.77.0.31",
                                             "10.77.0.41", "10.77.0.42", "10.77.0.43"}));
  for (const auto& child : kids) {
    EXPECT_NE(plan.hostOf(child.name), nullptr) << child.name;
  }
  EXPECT_EQ(plan.hostOf("lb-01")->addresses.size(), 1u);  // http, stats and db_write share it
  EXPECT_EQ(plan.hostOf("db-01")->netns, "fl-" + plan.tag + "-10.77.0.31");
  ASSERT_NE(plan.hostOf("etcd-2"), nullptr);
  EXPECT_EQ(plan.hostOf("etcd-2")->addresses.front().toString(), "10.77.0.42");
  EXPECT_EQ(plan.inside_name, "eth0");
  EXPECT_EQ(plan.prefix_len, 24);
  EXPECT_EQ(plan.bridge_address.toString(), "10.77.0.254");
  EXPECT_LE(plan.bridge.size(), 15u);
  for (const auto& h : plan.hosts) {
    EXPECT_LE(h.veth.size(), 15u) << h.veth;
  }
}

TEST(LabPlanTest, NodesSharingAnAddressShareAHostAndANodeJoinsItsAddresses) {
  std::string text = kLab;
  // web-02 on web-01's address; lb-01's stats on a second address of its own.
  text.replace(text.find("10.77.0.22:80"), 13, "10.77.0.21:81");
  text.replace(text.find("10.77.0.11:8404"), 15, "10.77.0.12:8404");
  auto site = load(text);
  LabPlan plan;
  std::string error;
  ASSERT_TRUE(planLab(site, children(site), plan, error)) << error;
  EXPECT_EQ(plan.hostOf("web-01"), plan.hostOf("web-02"));
  EXPECT_EQ(plan.hostOf("web-01")->nodes, (std::vector<std::string>{"web-01", "web-02"}));
  ASSERT_EQ(plan.hostOf("lb-01")->addresses.size(), 2u);
  EXPECT_EQ(plan.hostOf("lb-01")->addresses[1].toString(), "10.77.0.12");
}

TEST(LabPlanTest, TheVipIsNotAHostButSetsTheSubnetAndTheInterfaceName) {
  std::string text = kLab;
  text += "[lb.vip]\naddress = \"10.77.0.254/23\"\ninterface = \"ens3\"\nvrid = 7\n";
  auto site = load(text);
  LabPlan plan;
  std::string error;
  ASSERT_TRUE(planLab(site, children(site), plan, error)) << error;
  EXPECT_EQ(plan.hosts.size(), 7u);
  EXPECT_EQ(plan.prefix_len, 23);
  EXPECT_EQ(plan.inside_name, "ens3");
  EXPECT_EQ(plan.bridge_address.toString(), "10.77.1.254");
  ASSERT_TRUE(plan.vip.has_value());
  EXPECT_EQ(plan.vip->toString(), "10.77.0.254");
}

TEST(LabPlanTest, LbsSharingTheVipStayOnTheirOwnHosts) {
  // Both lbs listen on the virtual IP (only the VRRP master holds it): that shared address
  // must not put them on one host, where the second could not bind it.
  std::string text = kLab;
  text.replace(text.find("http = \"10.77.0.11:80\""), 22, "http = \"10.77.0.100:80\"");
  text += "[[lb.node]]\nname = \"lb-02\"\nhttp = \"10.77.0.100:80\"\nstats = \"10.77.0.12:8404\"\n";
  text += "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\n";
  auto site = load(text);
  LabPlan plan;
  std::string error;
  ASSERT_TRUE(planLab(site, children(site), plan, error)) << error;
  ASSERT_NE(plan.hostOf("lb-01"), nullptr);
  ASSERT_NE(plan.hostOf("lb-02"), nullptr);
  EXPECT_NE(plan.hostOf("lb-01"), plan.hostOf("lb-02"));
  EXPECT_EQ(plan.hostOf("lb-01")->addresses, (std::vector<core::IpAddress>{plan.hostOf("lb-01")->addresses.front()}));
  EXPECT_EQ(plan.hostOf("lb-01")->addresses.front().toString(), "10.77.0.11");
  EXPECT_EQ(plan.hostOf("lb-02")->addresses.front().toString(), "10.77.0.12");
  for (const auto& h : plan.hosts) {
    for (const auto& a : h.addresses) {
      EXPECT_NE(a.toString(), "10.77.0.100") << h.netns;
    }
  }
}

TEST(LabPlanTest, RefusesLoopbackWildcardAndSeveralSubnets) {
  LabPlan plan;
  std::string error;
  std::string text = kLab;
  text.replace(text.find("10.77.0.21:80"), 13, "127.0.0.1:9001");
  auto loopback = load(text);
  EXPECT_FALSE(planLab(loopback, children(loopback), plan, error));
  EXPECT_NE(error.find("127.0.0.1 (web-01"), std::string::npos) << error;
  EXPECT_NE(error.find("real addresses"), std::string::npos) << error;

  text = kLab;
  text.replace(text.find("10.77.0.21:80"), 13, "0.0.0.0:9001");
  auto wildcard = load(text);
  EXPECT_FALSE(planLab(wildcard, children(wildcard), plan, error));
  EXPECT_NE(error.find("0.0.0.0"), std::string::npos) << error;

  text = kLab;
  text.replace(text.find("10.77.0.21:80"), 13, "10.78.0.21:80");
  auto two = load(text);
  EXPECT_FALSE(planLab(two, children(two), plan, error));
  EXPECT_NE(error.find("10.78.0.21 is not in 10.77.0.0/24"), std::string::npos) << error;
}

TEST(LabPlanTest, TheTagFollowsTheStateDirectory) {
  EXPECT_EQ(labTag("/srv/lab"), labTag("/srv/lab/"));
  EXPECT_NE(labTag("/srv/lab"), labTag("/srv/lab2"));
  EXPECT_EQ(labTag("/srv/lab").size(), 6u);
}

}  // namespace
}  // namespace fulcrum::site
