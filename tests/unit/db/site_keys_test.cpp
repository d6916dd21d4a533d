// What the agents read back from etcd: every key and value checked before it is believed
// (written by hand, by an older build, or by an attacker through etcd's gateway).
#include "db/site_keys.h"

#include <gtest/gtest.h>

#include "db/elector.h"

namespace fulcrum::db {
namespace {

const std::set<std::string> kNodes = {"db-01", "db-02", "db-03"};

// The values readSite() expects, by key; absent keys stay nullopt.
class Keys {
 public:
  Keys() : keys_(siteKeys("shop", kNodes)), values_(keys_.size()) {}

  Keys& set(const std::string& key, std::string value, etcd::LeaseId lease = 0, int64_t revision = 10) {
    for (size_t i = 0; i < keys_.size(); ++i) {
      if (keys_[i] == key) {
        values_[i] = etcd::KeyValue{key, std::move(value), revision, revision, 1, lease};
        return *this;
      }
    }
    ADD_FAILURE() << "not a site key: " << key;
    return *this;
  }
  SiteView read() const { return readSite("shop", kNodes, values_); }

 private:
  std::vector<std::string> keys_;
  std::vector<std::optional<etcd::KeyValue>> values_;
};

std::string member(const std::string& name, const std::string& lsn = "0/10") {
  return R"({"name":")" + name + R"(","role":"replica","pg":"127.0.0.1:5432","lsn":")" + lsn + R"("})";
}

bool ignored(const SiteView& view, const std::string& key) {
  for (const auto& i : view.ignored) {
    if (i.key == key) {
      return true;
    }
  }
  return false;
}

TEST(SiteKeysTest, ReadsOnlyTheSitesOwnExactKeys) {
  auto keys = siteKeys("shop", kNodes);
  ASSERT_EQ(keys.size(), 10u);
  EXPECT_EQ(keys[0], initializeKey("shop"));
  EXPECT_EQ(keys[1], leaderKey("shop"));
  EXPECT_EQ(keys[4], restoreKey("shop"));
  EXPECT_EQ(keys[5], pauseKey("shop"));
  EXPECT_EQ(keys[6], scheduledKey("shop"));
  EXPECT_EQ(keys[7], memberKey("shop", "db-01"));
  EXPECT_EQ(keys[9], memberKey("shop", "db-03"));
}

TEST(SiteKeysTest, AScheduledSwitchoverNamesConfiguredNodesOrIsIgnored) {
  const ScheduledSwitchover planned{"db-01", "db-02", 1796292900};
  EXPECT_EQ(decodeScheduled(encodeScheduled(planned)), planned);
  auto view = Keys().set(scheduledKey("shop"), encodeScheduled(planned)).read();
  ASSERT_TRUE(view.scheduled);
  EXPECT_EQ(*view.scheduled, planned);
  EXPECT_TRUE(Keys().set(scheduledKey("shop"), encodeScheduled({"db-01", "", 5})).read().scheduled);  // any replica
  for (const char* bad : {"soon", "{}", R"({"from":"db-01","to":"db-02","at":"tomorrow"})",
                          R"({"from":"db-01","to":"db-02","at":0})", R"({"from":"db-09","to":"db-02","at":5})",
                          R"({"from":"db-01","to":"db-09","at":5})"}) {
    auto odd = Keys().set(scheduledKey("shop"), bad).read();
    EXPECT_FALSE(odd.scheduled) << bad;
    EXPECT_TRUE(ignored(odd, scheduledKey("shop"))) << bad;
  }
}

TEST(SiteKeysTest, APauseRecordPausesAndGarbageDoesNot) {
  const PauseRecord record{"operator", 1796292900};
  EXPECT_EQ(decodePause(encodePause(record)), record);
  auto view = Keys().set(pauseKey("shop"), encodePause(record)).read();
  ASSERT_TRUE(view.pause);
  EXPECT_EQ(view.pause->by, "operator");
  for (const char* bad : {"yes", "{}", R"({"by":1,"since":2})", R"({"by":"x","since":"now"})"}) {
    auto odd = Keys().set(pauseKey("shop"), bad).read();
    EXPECT_FALSE(odd.pause) << bad;
    EXPECT_TRUE(ignored(odd, pauseKey("shop"))) << bad;
  }
}

TEST(SiteKeysTest, RestoreHoldIsBelievedOnlyWithALeaseAndAKnownNode) {
  const RestoreHold hold{"r1", "db-01", RestoreHold::State::Done, 4};
  EXPECT_EQ(decodeRestoreHold(encodeRestoreHold(hold)), hold);
  auto view = Keys().set(restoreKey("shop"), encodeRestoreHold(hold), 80).read();
  ASSERT_TRUE(view.restore);
  EXPECT_EQ(*view.restore, hold);
  // Without a lease it would hold the cluster for good; a stranger's name, or garbage, is no hold.
  EXPECT_FALSE(Keys().set(restoreKey("shop"), encodeRestoreHold(hold)).read().restore);
  EXPECT_TRUE(ignored(Keys().set(restoreKey("shop"), encodeRestoreHold(hold)).read(), restoreKey("shop")));
  EXPECT_FALSE(Keys().set(restoreKey("shop"), R"({"id":"r","node":"db-09","state":"done"})", 80).read().restore);
  EXPECT_FALSE(Keys().set(restoreKey("shop"), R"({"id":"r","node":"db-01","state":"later"})", 80).read().restore);
  EXPECT_FALSE(Keys().set(restoreKey("shop"), R"({"id":"r","node":"db-01","state":"done","timeline":-1})", 80)
                   .read()
                   .restore);
  EXPECT_FALSE(Keys().set(restoreKey("shop"), "[1,2]", 80).read().restore);
}

TEST(SiteKeysTest, ValidSiteIsBelieved) {
  auto view = Keys()
                  .set(initializeKey("shop"), R"({"node":"db-01","sysid":"7312345678901234567"})")
                  .set(leaderKey("shop"), "db-01", 77)
                  .set(syncKey("shop"), R"({"leader":"db-01","sync":["db-02"]})")
                  .set(switchoverKey("shop"), R"({"from":"db-01","to":"db-02"})", 78)
                  .set(memberKey("shop", "db-02"), member("db-02"), 79)
                  .read();
  EXPECT_TRUE(view.ignored.empty());
  EXPECT_EQ(view.leader.state, LeaderKey::State::Held);
  EXPECT_EQ(view.leader.name, "db-01");
  ASSERT_TRUE(view.init);
  EXPECT_EQ(view.init->state, InitRecord::State::Initialized);
  EXPECT_EQ(view.init->sysid, 7312345678901234567ull);
  ASSERT_TRUE(view.sync);
  ASSERT_TRUE(view.intent);
  ASSERT_EQ(view.members.size(), 1u);
  EXPECT_EQ(view.members[0].name, "db-02");
}

TEST(SiteKeysTest, ImpostorMemberRecordsAreIgnored) {
  // A record claiming to be db-02 under another node's key, one without a lease, one too large,
  // one with an unknown role.
  auto view = Keys()
                  .set(memberKey("shop", "db-01"), member("db-02", "FF/0"), 5)
                  .set(memberKey("shop", "db-02"), member("db-02", "FF/0"), 0)
                  .set(memberKey("shop", "db-03"), std::string(kMaxMemberBytes + 1, '['), 5)
                  .read();
  EXPECT_TRUE(view.members.empty());
  EXPECT_TRUE(ignored(view, memberKey("shop", "db-01")));
  EXPECT_TRUE(ignored(view, memberKey("shop", "db-02")));
  EXPECT_TRUE(ignored(view, memberKey("shop", "db-03")));
  std::string why;
  EXPECT_FALSE(checkedMember("shop", kNodes, memberKey("shop", "db-99"), member("db-99"), &why));
  EXPECT_NE(why.find("db-99"), std::string::npos);
  EXPECT_FALSE(checkedMember("shop", kNodes, memberKey("shop", "db-01"),
                             R"({"name":"db-01","role":"boss","pg":"127.0.0.1:1","lsn":"0/1"})", &why));
  EXPECT_TRUE(checkedMember("shop", kNodes, memberKey("shop", "db-01"), member("db-01"), &why));
}

TEST(SiteKeysTest, LeaderKeyStates) {
  EXPECT_EQ(Keys().read().leader.state, LeaderKey::State::Free);
  auto unleased = Keys().set(leaderKey("shop"), "db-02", 0, 42).read();
  EXPECT_EQ(unleased.leader.state, LeaderKey::State::Unleased);
  EXPECT_EQ(unleased.leader.name, "db-02");
  EXPECT_EQ(unleased.leader.mod_revision, 42);
  EXPECT_TRUE(ignored(unleased, leaderKey("shop")));
  auto foreign = Keys().set(leaderKey("shop"), "db-99", 5).read();
  EXPECT_EQ(foreign.leader.state, LeaderKey::State::Foreign);
  EXPECT_TRUE(ignored(foreign, leaderKey("shop")));
}

TEST(SiteKeysTest, IntentsNeedALeaseAndConfiguredNodes) {
  // A stale intent without a lease once blocked every failover, silently.
  auto stale = Keys().set(switchoverKey("shop"), R"({"from":"db-02","to":"db-99"})", 0).read();
  EXPECT_FALSE(stale.intent);
  EXPECT_TRUE(ignored(stale, switchoverKey("shop")));
  auto unknown = Keys().set(switchoverKey("shop"), R"({"from":"db-02","to":"db-99"})", 7).read();
  EXPECT_FALSE(unknown.intent);
  auto self = Keys().set(switchoverKey("shop"), R"({"from":"db-02","to":"db-02"})", 7).read();
  EXPECT_FALSE(self.intent);
  auto garbage = Keys().set(switchoverKey("shop"), "[1,2", 7).read();
  EXPECT_FALSE(garbage.intent);
}

TEST(SiteKeysTest, SyncRecordsNameOnlyConfiguredNodes) {
  auto ok = Keys().set(syncKey("shop"), R"({"leader":"db-01","sync":[]})").read();
  EXPECT_TRUE(ok.sync);
  auto stranger = Keys().set(syncKey("shop"), R"({"leader":"db-01","sync":["db-09"]})").read();
  EXPECT_FALSE(stranger.sync);
  EXPECT_TRUE(ignored(stranger, syncKey("shop")));
  auto itself = Keys().set(syncKey("shop"), R"({"leader":"db-01","sync":["db-01"]})").read();
  EXPECT_FALSE(itself.sync);
  auto nested = Keys().set(syncKey("shop"), std::string(200000, '[')).read();
  EXPECT_FALSE(nested.sync);
}

TEST(SiteKeysTest, InitRecords) {
  auto initializing = decodeInit(encodeInit({InitRecord::State::Initializing, "db-01", {}}));
  EXPECT_EQ(initializing.state, InitRecord::State::Initializing);
  EXPECT_EQ(initializing.node, "db-01");
  auto done = decodeInit(encodeInit({InitRecord::State::Initialized, "db-01", 99}));
  EXPECT_EQ(done.state, InitRecord::State::Initialized);
  EXPECT_EQ(done.sysid, 99u);
  // An older build's bare node name, garbage, a bad identifier: the cluster exists, identity
  // unknown, never a reason to run initdb.
  auto legacy = decodeInit("db-02");
  EXPECT_EQ(legacy.state, InitRecord::State::Unknown);
  EXPECT_EQ(legacy.node, "db-02");
  EXPECT_EQ(decodeInit("{garbage").state, InitRecord::State::Unknown);
  EXPECT_EQ(decodeInit(R"({"node":"db-01","sysid":"0"})").state, InitRecord::State::Unknown);
  EXPECT_EQ(decodeInit(R"({"node":"db-01","sysid":12})").state, InitRecord::State::Unknown);
  EXPECT_EQ(decodeInit(R"({"initializing":true})").state, InitRecord::State::Unknown);
  EXPECT_EQ(decodeInit("").state, InitRecord::State::Unknown);
}

}  // namespace
}  // namespace fulcrum::db
