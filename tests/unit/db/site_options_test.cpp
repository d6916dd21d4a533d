#include "db/site_options.h"

#include <gtest/gtest.h>

namespace fulcrum::db {
namespace {

using std::chrono::milliseconds;

config::Site siteWithTtl(uint32_t ttl_ms) {
  config::Site site;
  site.site.name = "www.foobar.com";
  site.db.leader_ttl_ms = ttl_ms;
  site.etcd.endpoints = {*core::SocketAddress::parse("127.0.0.1:12379"),
                         *core::SocketAddress::parse("127.0.0.2:12379")};
  return site;
}

TEST(SiteOptionsTest, ElectorFollowsTheSite) {
  ElectorOptions options = electorOptions(siteWithTtl(5000), "db-02");
  EXPECT_EQ(options.key, "/fulcrum/www.foobar.com/leader");
  EXPECT_EQ(options.node, "db-02");
  EXPECT_EQ(options.timing.ttl, milliseconds(5000));
  EXPECT_EQ(options.timing.validate(), "");
}

TEST(SiteOptionsTest, CallTimeoutsFollowTheLeaseTtl) {
  EtcdClientOptions options = etcdClientOptions(siteWithTtl(5000));
  ASSERT_EQ(options.endpoints.size(), 2u);
  EXPECT_EQ(options.endpoints[1].toString(), "127.0.0.2:12379");
  EXPECT_EQ(options.request_timeout, milliseconds(1250));
  EXPECT_EQ(options.connect_timeout, milliseconds(500));
  EXPECT_EQ(etcdClientOptions(siteWithTtl(600)).request_timeout, milliseconds(200));
  EXPECT_EQ(etcdClientOptions(siteWithTtl(600)).connect_timeout, milliseconds(100));
  EXPECT_EQ(etcdClientOptions(siteWithTtl(60000)).request_timeout, milliseconds(2000));
}

}  // namespace
}  // namespace fulcrum::db
