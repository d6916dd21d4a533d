#include "core/ip_filter.h"

#include <gtest/gtest.h>

namespace fulcrum::core {
namespace {

IpPrefix prefix(const char* ip, uint8_t len) {
  return IpPrefix{*IpAddress::parse(ip), len};
}

IpAddress ip(const char* text) {
  return *IpAddress::parse(text);
}

TEST(IpFilter, DenyWinsAndAnEmptyAllowListAdmitsEveryone) {
  IpFilter open({}, {prefix("10.0.0.0", 8)});
  EXPECT_EQ(open.admit(ip("192.0.2.1")), IpFilter::Verdict::Allowed);
  EXPECT_EQ(open.admit(ip("10.1.2.3")), IpFilter::Verdict::Denied);
  IpFilter both({prefix("10.0.0.0", 8), prefix("2001:db8::", 32)}, {prefix("10.9.0.0", 16)});
  EXPECT_EQ(both.admit(ip("10.1.2.3")), IpFilter::Verdict::Allowed);
  EXPECT_EQ(both.admit(ip("10.9.2.3")), IpFilter::Verdict::Denied);
  EXPECT_EQ(both.admit(ip("192.0.2.1")), IpFilter::Verdict::NotAllowed);
  EXPECT_EQ(both.admit(ip("2001:db8::5")), IpFilter::Verdict::Allowed);
  EXPECT_EQ(both.admit(ip("2001:db9::5")), IpFilter::Verdict::NotAllowed);
  EXPECT_EQ(both.denied(), 1u);
  EXPECT_EQ(both.notAllowed(), 2u);
}

TEST(IpFilter, MappedIpv4IsJudgedAsIpv4) {
  // A client reaching a dual-stack [::] listener shows up as ::ffff:a.b.c.d.
  IpFilter filter({}, {prefix("203.0.113.0", 24)});
  EXPECT_EQ(filter.check(ip("::ffff:203.0.113.7")), IpFilter::Verdict::Denied);
  EXPECT_EQ(filter.check(ip("::ffff:198.51.100.7")), IpFilter::Verdict::Allowed);
  EXPECT_EQ(unmapIpv4(ip("::1")), ip("::1"));
}

}  // namespace
}  // namespace fulcrum::core
