// POST /switchover, pure: the body, the choice of the target, the intent in etcd.
#include "db/switchover.h"

#include <gtest/gtest.h>

#include "db/backup_catalog.h"

namespace fulcrum::db {
namespace {

TEST(SwitchoverTest, ParsesTheBody) {
  auto to = parseSwitchoverRequest(R"({"to":"db-2"})");
  ASSERT_TRUE(to.ok);
  EXPECT_EQ(to.value.to, "db-2");
  auto any = parseSwitchoverRequest("{}");
  ASSERT_TRUE(any.ok);
  EXPECT_FALSE(any.value.to);
  for (const char* bad :
       {"", "null", "[]", R"({"to":2})", R"({"to":""})", R"({"target":"db-2"})", "{", R"("db-2")"}) {
    EXPECT_FALSE(parseSwitchoverRequest(bad).ok) << bad;
  }
}

TEST(SwitchoverTest, ParsesAScheduleAndACancel) {
  auto later = parseSwitchoverRequest(R"({"to":"db-2","at":"2026-12-04 03:00:00+01:00"})");
  ASSERT_TRUE(later.ok) << later.error;
  EXPECT_EQ(later.value.at, parseTime("2026-12-04 02:00:00"));
  auto unix_time = parseSwitchoverRequest(R"({"at":"@1796292900"})");
  ASSERT_TRUE(unix_time.ok);
  EXPECT_EQ(unix_time.value.at, 1796292900);
  EXPECT_FALSE(unix_time.value.to);
  auto cancel = parseSwitchoverRequest(R"({"cancel":true})");
  ASSERT_TRUE(cancel.ok);
  EXPECT_TRUE(cancel.value.cancel);
  for (const char* bad : {R"({"at":"tomorrow"})", R"({"at":1796292900})", R"({"cancel":false})",
                          R"({"cancel":true,"to":"db-2"})", R"({"cancel":true,"at":"@5"})", R"({"cancel":"yes"})"}) {
    EXPECT_FALSE(parseSwitchoverRequest(bad).ok) << bad;
  }
}

TEST(SwitchoverTest, RefusesDuplicateKeysAndLargeBodies) {
  // Last-wins would make {"to":"db-02","to":"db-03"} promote a node the caller may not have meant.
  auto dup = parseSwitchoverRequest(R"({"to":"db-02","to":"db-03"})");
  ASSERT_FALSE(dup.ok);
  EXPECT_NE(dup.error.find("duplicate key 'to'"), std::string::npos) << dup.error;
  EXPECT_FALSE(parseSwitchoverRequest("{\"to\":\"" + std::string(5000, 'a') + "\"}").ok);
}

TEST(SwitchoverTest, IntentRoundTrip) {
  auto back = decodeSwitchover(encodeSwitchover({"db-1", "db-2"}));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->from, "db-1");
  EXPECT_EQ(back->to, "db-2");
  EXPECT_FALSE(decodeSwitchover(R"({"from":"db-1"})"));
  EXPECT_FALSE(decodeSwitchover("[]"));
  EXPECT_EQ(switchoverKey("s"), "/fulcrum/s/switchover");
}

MemberRecord replica(std::string name, Lsn received, uint32_t timeline = 2) {
  MemberRecord m;
  m.name = std::move(name);
  m.role = "replica";
  m.receiver = "streaming";
  m.timeline = timeline;
  m.received = received;
  return m;
}

SwitchoverInputs cluster() {
  SwitchoverInputs in;
  in.me = "db-1";
  in.nodes = {"db-1", "db-2", "db-3"};
  in.timeline = 2;
  MemberRecord me = replica("db-1", 900);
  me.role = "primary";
  in.members = {me, replica("db-2", 800), replica("db-3", 850)};
  return in;
}

SwitchoverRequest to(std::optional<std::string> name) {
  return SwitchoverRequest{std::move(name)};
}

TEST(SwitchoverTest, NamedTargetMustBeAHealthyStreamingReplica) {
  SwitchoverInputs in = cluster();
  EXPECT_EQ(chooseSwitchoverTarget(to("db-2"), in).target, "db-2");
  EXPECT_EQ(chooseSwitchoverTarget(to("db-9"), in).status, 400);
  EXPECT_EQ(chooseSwitchoverTarget(to("db-1"), in).status, 409);
  in.members[1].receiver = "";
  EXPECT_EQ(chooseSwitchoverTarget(to("db-2"), in).status, 409);
  in = cluster();
  in.members[1].timeline = 1;  // still on the old timeline
  EXPECT_EQ(chooseSwitchoverTarget(to("db-2"), in).status, 409);
  in = cluster();
  in.members.erase(in.members.begin() + 1);  // agent down
  EXPECT_EQ(chooseSwitchoverTarget(to("db-2"), in).status, 409);
}

TEST(SwitchoverTest, SynchronousModeNeedsAListedTarget) {
  SwitchoverInputs in = cluster();
  in.sync = SyncState{"db-1", {"db-3"}};
  SwitchoverChoice refused = chooseSwitchoverTarget(to("db-2"), in);
  EXPECT_EQ(refused.status, 409);
  EXPECT_NE(refused.error.find("synchronous"), std::string::npos);
  EXPECT_EQ(chooseSwitchoverTarget(to("db-3"), in).target, "db-3");
  // Any: the listed one, even though another is further ahead.
  in.members[1].received = 2000;
  EXPECT_EQ(chooseSwitchoverTarget(to(std::nullopt), in).target, "db-3");
}

TEST(SwitchoverTest, AnyPicksTheMostAdvancedOr503) {
  SwitchoverInputs in = cluster();
  EXPECT_EQ(chooseSwitchoverTarget(to(std::nullopt), in).target, "db-3");
  in.members[1].received = 850;  // tie: the lower name
  EXPECT_EQ(chooseSwitchoverTarget(to(std::nullopt), in).target, "db-2");
  in.members[1].role = "stopped";
  in.members[2].receiver = "";
  EXPECT_EQ(chooseSwitchoverTarget(to(std::nullopt), in).status, 503);
}

FailoverInputs leaderless() {
  FailoverInputs in;
  in.me = "db-2";
  in.nodes = {"db-1", "db-2", "db-3"};
  in.running_replica = true;
  in.replayed = 1000;
  in.mine = 1000;
  in.last_leader_lsn = 1500;
  in.max_lag_bytes = 1000;
  return in;
}

TEST(ManualFailoverTest, OnlyOnTheCandidateOfALeaderlessCluster) {
  EXPECT_EQ(checkManualFailover({}, leaderless()).status, 200);
  EXPECT_EQ(checkManualFailover({"db-2"}, leaderless()).status, 200);
  EXPECT_EQ(checkManualFailover({"db-9"}, leaderless()).status, 400);
  FailoverCheck elsewhere = checkManualFailover({"db-3"}, leaderless());
  EXPECT_EQ(elsewhere.status, 409);
  EXPECT_NE(elsewhere.error.find("send it to db-3's agent"), std::string::npos) << elsewhere.error;

  FailoverInputs led = leaderless();
  led.leader = "db-1";
  led.leader_agent = "127.0.0.1:8008";
  FailoverCheck refused = checkManualFailover({}, led);
  EXPECT_EQ(refused.status, 409);
  EXPECT_NE(refused.error.find("db-1 holds the leader key (agent 127.0.0.1:8008)"), std::string::npos)
      << refused.error;
  led.leader = "db-2";
  EXPECT_EQ(checkManualFailover({}, led).status, 409);

  FailoverInputs stopped = leaderless();
  stopped.running_replica = false;
  EXPECT_EQ(checkManualFailover({}, stopped).status, 503);
  FailoverInputs intent = leaderless();
  intent.intent_for_other = true;
  EXPECT_EQ(checkManualFailover({}, intent).status, 409);
}

TEST(ManualFailoverTest, AsynchronousKeepsTheLagBound) {
  FailoverInputs in = leaderless();
  in.replayed = 499;  // 1001 bytes behind
  FailoverCheck far = checkManualFailover({}, in);
  EXPECT_EQ(far.status, 409);
  EXPECT_NE(far.error.find("1001 bytes behind"), std::string::npos) << far.error;
  in.replayed = 500;
  EXPECT_EQ(checkManualFailover({}, in).status, 200);
  in.last_leader_lsn.reset();  // never saw the leader's position: as automatic failover, allowed
  in.replayed = 0;
  EXPECT_EQ(checkManualFailover({}, in).status, 200);
}

TEST(ManualFailoverTest, NoOtherReplicaMayHaveReplayedFurther) {
  FailoverInputs in = leaderless();
  MemberRecord peer = replica("db-3", 1200);
  peer.lsn = 1000;  // replayed as far: db-2 may lead, db-3 follows
  in.members = {peer};
  EXPECT_EQ(checkManualFailover({}, in).status, 200);
  in.members[0].lsn = 1001;  // further: it could not follow db-2's new timeline
  FailoverCheck ahead = checkManualFailover({}, in);
  EXPECT_EQ(ahead.status, 409);
  EXPECT_NE(ahead.error.find("db-3 has replayed further"), std::string::npos) << ahead.error;
  in.members[0].role = "stopped";  // a record of a node that is down does not count
  EXPECT_EQ(checkManualFailover({}, in).status, 200);
}

TEST(ManualFailoverTest, SynchronousModeKeepsEveryAcknowledgedCommit) {
  FailoverInputs in = leaderless();
  in.sync_mode = true;
  in.sync = SyncState{"db-1", {"db-3"}};
  FailoverCheck unlisted = checkManualFailover({}, in);
  EXPECT_EQ(unlisted.status, 409);
  EXPECT_NE(unlisted.error.find("could lose acknowledged commits"), std::string::npos) << unlisted.error;
  in.sync = SyncState{"db-1", {"db-2"}};
  EXPECT_EQ(checkManualFailover({}, in).status, 200);
  in.sync.reset();
  EXPECT_EQ(checkManualFailover({}, in).status, 409);
}

}  // namespace
}  // namespace fulcrum::db
