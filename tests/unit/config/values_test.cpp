#include "config/values.h"

#include <gtest/gtest.h>

#include <array>

namespace fulcrum::config {
namespace {

core::SocketAddress addr(const char* text) {
  return *core::SocketAddress::parse(text);
}

TEST(SiteAddress, AcceptsIpv4AndBracketedIpv6) {
  std::string error;
  auto v4 = parseSiteAddress("10.1.2.3:65535", error);
  ASSERT_TRUE(v4.has_value()) << error;
  EXPECT_EQ(v4->toString(), "10.1.2.3:65535");
  auto v6 = parseSiteAddress("[fe80::1]:1", error);
  ASSERT_TRUE(v6.has_value()) << error;
  EXPECT_EQ(v6->family(), AF_INET6);
  EXPECT_EQ(v6->port(), 1);
}

TEST(SiteAddress, RefusesPortZeroAndNames) {
  std::string error;
  EXPECT_FALSE(parseSiteAddress("127.0.0.1:0", error));
  EXPECT_EQ(error, "port 0 not allowed in '127.0.0.1:0': a topology file needs fixed ports");
  EXPECT_FALSE(parseSiteAddress("db.internal:5432", error));
  EXPECT_EQ(error, "bad address 'db.internal:5432': host names are not allowed, use an IP address");
  EXPECT_FALSE(parseSiteAddress("127.0.0.1:+80", error));
  EXPECT_FALSE(parseSiteAddress("127.0.0.1: 80", error));
  EXPECT_FALSE(parseSiteAddress("[fe80::1%eth0]:80", error));
}

TEST(Cidr, BareAddressIsAHostRoute) {
  std::string error;
  auto v4 = parseCidr("192.168.1.7", error);
  ASSERT_TRUE(v4.has_value()) << error;
  EXPECT_EQ(v4->prefix_len, 32);
  EXPECT_EQ(v4->text, "192.168.1.7");
  auto v6 = parseCidr("2001:db8::1", error);
  ASSERT_TRUE(v6.has_value()) << error;
  EXPECT_EQ(v6->prefix_len, 128);
}

TEST(Cidr, NetworksMatchTheirMembers) {
  std::string error;
  auto net = parseCidr("10.32.0.0/11", error);
  ASSERT_TRUE(net.has_value()) << error;
  EXPECT_TRUE(core::IpAddress::parse("10.63.255.255")->inPrefix(net->network, net->prefix_len));
  EXPECT_FALSE(core::IpAddress::parse("10.64.0.0")->inPrefix(net->network, net->prefix_len));
  auto all = parseCidr("0.0.0.0/0", error);
  ASSERT_TRUE(all.has_value()) << error;
  EXPECT_EQ(all->prefix_len, 0);
}

TEST(Cidr, SuggestsTheNetworkWhenHostBitsAreSet) {
  std::string error;
  EXPECT_FALSE(parseCidr("10.32.1.0/11", error));
  EXPECT_EQ(error, "bad CIDR '10.32.1.0/11': host bits are set; did you mean '10.32.0.0/11'?");
  EXPECT_FALSE(parseCidr("2001:db8::1/32", error));
  EXPECT_EQ(error, "bad CIDR '2001:db8::1/32': host bits are set; did you mean '2001:db8::/32'?");
}

TEST(Cidr, RefusesMalformedPrefixes) {
  std::string error;
  for (const char* text : {"10.0.0.0/-1", "10.0.0.0/8/8", "10.0.0.0/0008", "/8", "10.0.0.0/ 8"}) {
    EXPECT_FALSE(parseCidr(text, error)) << text;
  }
}

TEST(InterfaceAddress, KeepsHostBits) {
  std::string error;
  auto vip = parseInterfaceAddress("10.77.0.100/24", error);
  ASSERT_TRUE(vip.has_value()) << error;
  EXPECT_EQ(vip->network, *core::IpAddress::parse("10.77.0.100"));
  EXPECT_EQ(vip->prefix_len, 24);
  EXPECT_FALSE(parseInterfaceAddress("10.77.0.100/0", error));
}

struct ClashCase {
  const char* a;
  const char* b;
  bool clash;
};

class ListenersClash : public ::testing::TestWithParam<ClashCase> {};

TEST_P(ListenersClash, IsSymmetric) {
  const ClashCase& c = GetParam();
  EXPECT_EQ(listenersClash(addr(c.a), addr(c.b)), c.clash) << c.a << " vs " << c.b;
  EXPECT_EQ(listenersClash(addr(c.b), addr(c.a)), c.clash) << c.b << " vs " << c.a;
}

INSTANTIATE_TEST_SUITE_P(Table, ListenersClash,
                         ::testing::Values(ClashCase{"127.0.0.1:80", "127.0.0.1:80", true},
                                           ClashCase{"127.0.0.1:80", "127.0.0.1:81", false},
                                           ClashCase{"127.0.0.1:80", "127.0.0.2:80", false},
                                           ClashCase{"0.0.0.0:80", "127.0.0.1:80", true},
                                           ClashCase{"0.0.0.0:80", "0.0.0.0:81", false},
                                           ClashCase{"0.0.0.0:80", "[::1]:80", false},
                                           ClashCase{"[::]:80", "127.0.0.1:80", true},
                                           ClashCase{"[::]:80", "[::1]:80", true},
                                           ClashCase{"[::1]:80", "127.0.0.1:80", false},
                                           ClashCase{"[::1]:80", "[::1]:80", true}));

TEST(EditDistance, CountsEditsAndTranspositions) {
  EXPECT_EQ(editDistance("", ""), 0u);
  EXPECT_EQ(editDistance("abc", ""), 3u);
  EXPECT_EQ(editDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(editDistance("algoritm", "algorithm"), 1u);
  EXPECT_EQ(editDistance("algorihtm", "algorithm"), 1u);
}

TEST(ClosestMatch, SuggestsOnlyPlausibleTypos) {
  constexpr std::array<std::string_view, 4> keys = {"name", "listen", "weight", "threads"};
  EXPECT_EQ(closestMatch("lisen", keys), "listen");
  EXPECT_EQ(closestMatch("wieght", keys), "weight");
  EXPECT_EQ(closestMatch("NAME", keys), "name");
  EXPECT_EQ(closestMatch("x", keys), "");
  EXPECT_EQ(closestMatch("priority", keys), "");
}

}  // namespace
}  // namespace fulcrum::config
