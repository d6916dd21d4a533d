// POST /switchover, pure: the body, the choice of the target, the intent in etcd.
#include "db/switchover.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace fulcrum::db
