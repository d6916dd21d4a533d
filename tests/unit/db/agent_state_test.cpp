// The agent's REST semantics and member records, on observed snapshots: no etcd, no PostgreSQL.
#include "db/agent_state.h"

#include <gtest/gtest.h>

#include "db/elector.h"

namespace fulcrum::db {
namespace {

NodeView primary() {
  NodeView v;
  v.pg_running = true;
  v.status_ok = true;
  v.pg.in_recovery = false;
  v.pg.timeline = 1;
  v.pg.current_lsn = 0x3000000;
  v.leader = true;
  v.may_write = true;
  v.leader_lsn = 0x3000000;
  return v;
}

NodeView replica(Lsn replayed) {
  NodeView v;
  v.pg_running = true;
  v.status_ok = true;
  v.pg.in_recovery = true;
  v.pg.timeline = 1;
  v.pg.replay_lsn = replayed;
  v.pg.receiver = "streaming";
  v.pg.sender = "127.0.0.1:5432";
  v.leader_lsn = 0x3000000;
  v.leader_pg = "127.0.0.1:5432";
  v.leader_timeline = 1;
  return v;
}

TEST(AgentStateTest, PrimaryOnlyWhileLeaderMayWrite) {
  NodeView v = primary();
  EXPECT_EQ(primaryStatus(v), 200);
  EXPECT_EQ(healthStatus(v), 200);
  EXPECT_EQ(replicaStatus(v, std::nullopt), 503);
  EXPECT_EQ(v.role(), "primary");
  EXPECT_EQ(v.lagBytes(), 0u);

  NodeView fenced = v;
  fenced.may_write = false;  // lease past its fence deadline
  EXPECT_EQ(primaryStatus(fenced), 503);
  NodeView not_leader = v;
  not_leader.leader = false;
  not_leader.may_write = false;
  EXPECT_EQ(primaryStatus(not_leader), 503);
  NodeView read_only = v;
  read_only.pg.read_only = true;
  EXPECT_EQ(primaryStatus(read_only), 503);
  NodeView recovering = v;
  recovering.pg.in_recovery = true;
  EXPECT_EQ(primaryStatus(recovering), 503);
}

TEST(AgentStateTest, DownPostgresAnswersNothingButStopped) {
  NodeView v = primary();
  v.pg_running = false;
  EXPECT_EQ(healthStatus(v), 503);
  EXPECT_EQ(primaryStatus(v), 503);
  EXPECT_EQ(replicaStatus(v, std::nullopt), 503);
  EXPECT_EQ(v.role(), "stopped");
  EXPECT_EQ(v.lagBytes(), std::nullopt);
  NodeView unanswered = primary();
  unanswered.status_ok = false;
  EXPECT_EQ(healthStatus(unanswered), 503);
}

TEST(AgentStateTest, ReplicaStreamingAndLagBound) {
  NodeView v = replica(0x3000000 - 100);
  EXPECT_EQ(replicaStatus(v, std::nullopt), 200);
  EXPECT_EQ(primaryStatus(v), 503);
  EXPECT_EQ(v.lagBytes(), 100u);
  EXPECT_EQ(replicaStatus(v, 100), 200);
  EXPECT_EQ(replicaStatus(v, 99), 503);
  NodeView unknown_leader = v;
  unknown_leader.leader_lsn.reset();
  EXPECT_EQ(replicaStatus(unknown_leader, std::nullopt), 200);
  EXPECT_EQ(replicaStatus(unknown_leader, 1u << 30), 503);  // a bound cannot be checked
  NodeView not_streaming = v;
  not_streaming.pg.receiver = "";
  EXPECT_EQ(replicaStatus(not_streaming, std::nullopt), 503);
  EXPECT_EQ(healthStatus(not_streaming), 200);
}

TEST(AgentStateTest, ReplicaHealthyOnlyStreamingFromTheLeaderOnItsTimeline) {
  NodeView from_former_primary = replica(0x3000000);
  from_former_primary.pg.sender = "127.0.0.1:5433";  // streams, but from another node
  EXPECT_EQ(replicaStatus(from_former_primary, std::nullopt), 503);
  EXPECT_EQ(readOnlyStatus(from_former_primary, std::nullopt), 503);
  NodeView old_timeline = replica(0x3000000);
  old_timeline.leader_timeline = 2;  // the leader moved on; this one receives timeline 1
  EXPECT_EQ(replicaStatus(old_timeline, std::nullopt), 503);
  NodeView no_leader = replica(0x3000000);
  no_leader.leader_pg.clear();  // nobody to check it against
  EXPECT_EQ(replicaStatus(no_leader, std::nullopt), 503);
}

TEST(AgentStateTest, DivergenceFromTheLeadersHistory) {
  // Leader on timeline 3: timeline 1 ended at 0/5000000, timeline 2 at 0/6000000.
  const std::vector<TimelineSwitch> history = {{1, 0x5000000}, {2, 0x6000000}};
  EXPECT_EQ(divergence(3, 0x9000000, 3, history), Divergence::No);
  EXPECT_EQ(divergence(2, 0x6000000, 3, history), Divergence::No);   // up to the switch: follows
  EXPECT_EQ(divergence(2, 0x6000001, 3, history), Divergence::Yes);  // a former primary's last writes
  EXPECT_EQ(divergence(1, 0x4000000, 3, history), Divergence::No);
  EXPECT_EQ(divergence(1, 0x5800000, 3, history), Divergence::Yes);
  EXPECT_EQ(divergence(4, 0x1, 3, history), Divergence::Yes);  // a timeline the leader never had
  EXPECT_EQ(divergence(5, 0x1, 6, {{1, 0x5000000}, {2, 0x6000000}, {4, 0x7000000}, {6 - 1, 0x8000000}}),
            Divergence::No);
  EXPECT_EQ(divergence(3, 0x1, 6, {{1, 0x5000000}, {2, 0x6000000}, {4, 0x7000000}, {5, 0x8000000}}),
            Divergence::Yes);                                          // timeline 3 is a sibling branch
  EXPECT_EQ(divergence(2, 0x1, 3, {}), Divergence::Unknown);           // an older leader published none
  EXPECT_EQ(divergence(2, 0x1, 20, {{9, 0x1}}), Divergence::Unknown);  // list cut: cannot tell
}

TEST(AgentStateTest, TimelineHistoryFiles) {
  auto parsed = parseTimelineHistory(
      "1\t0/5000000\tno recovery target specified\n\n"
      "2\t0/6000148\tno recovery target specified\n# comment\n");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, (std::vector<TimelineSwitch>{{1, 0x5000000}, {2, 0x6000148}}));
  EXPECT_FALSE(parseTimelineHistory("x\t0/1\n"));
  EXPECT_FALSE(parseTimelineHistory("1\tzz\n"));
  EXPECT_FALSE(parseTimelineHistory("0\t0/1\n"));
  MemberRecord m;
  m.name = "db-1";
  m.role = "primary";
  m.pg = "127.0.0.1:1";
  for (uint32_t i = 1; i <= kMaxHistory + 4; ++i) {
    m.history.push_back({i, Lsn{i} << 24});
  }
  auto back = decodeMember(encodeMember(m));
  ASSERT_TRUE(back);
  ASSERT_EQ(back->history.size(), kMaxHistory);  // the most recent switches
  EXPECT_EQ(back->history.back(), m.history.back());
  EXPECT_FALSE(decodeMember(R"({"name":"a","role":"primary","pg":"x","lsn":"0/1","history":[[1]]})"));
  EXPECT_FALSE(decodeMember(R"({"name":"a","role":"primary","pg":"x","lsn":"0/1","history":[["a","0/1"]]})"));
}

TEST(AgentStateTest, PatroniReadOnlySyncAndAsyncChecks) {
  NodeView leader = primary();
  EXPECT_EQ(readOnlyStatus(leader, std::nullopt), 200);
  EXPECT_EQ(readOnlyStatus(leader, 0), 200);  // the lag bound is a replica's
  EXPECT_EQ(syncStatus(leader, std::nullopt), 503);
  EXPECT_EQ(asyncStatus(leader, std::nullopt), 503);
  NodeView fenced = primary();
  fenced.may_write = false;
  EXPECT_EQ(readOnlyStatus(fenced, std::nullopt), 503);  // neither a writable leader nor a replica

  NodeView async = replica(0x3000000 - 100);
  EXPECT_EQ(readOnlyStatus(async, std::nullopt), 200);
  EXPECT_EQ(asyncStatus(async, std::nullopt), 200);
  EXPECT_EQ(syncStatus(async, std::nullopt), 503);
  NodeView sync = replica(0x3000000 - 100);
  sync.sync_standby = true;
  EXPECT_EQ(syncStatus(sync, std::nullopt), 200);
  EXPECT_EQ(asyncStatus(sync, std::nullopt), 503);
  EXPECT_EQ(syncStatus(sync, 100), 200);
  EXPECT_EQ(syncStatus(sync, 99), 503);
  EXPECT_EQ(readOnlyStatus(sync, 99), 503);
  NodeView stopped = sync;
  stopped.pg_running = false;
  EXPECT_EQ(syncStatus(stopped, std::nullopt), 503);
  EXPECT_EQ(readOnlyStatus(stopped, std::nullopt), 503);
}

TEST(AgentStateTest, LagParameter) {
  bool ok = false;
  EXPECT_EQ(lagParameter("", ok), std::nullopt);
  EXPECT_TRUE(ok);
  EXPECT_EQ(lagParameter("lag=1024", ok), 1024u);
  EXPECT_TRUE(ok);
  EXPECT_EQ(lagParameter("x=1&lag=7", ok), 7u);
  EXPECT_TRUE(ok);
  EXPECT_EQ(lagParameter("lag=1MB", ok), std::nullopt);
  EXPECT_FALSE(ok);
  EXPECT_EQ(lagParameter("lag=", ok), std::nullopt);
  EXPECT_FALSE(ok);
  EXPECT_EQ(lagParameter("lag=-1", ok), std::nullopt);
  EXPECT_FALSE(ok);
}

TEST(AgentStateTest, MemberRecordRoundTrip) {
  MemberRecord m{"db-02", "replica", "127.0.0.1:15433", "127.0.0.1:8009", 3, 0x16B374D848, "streaming"};
  auto back = decodeMember(encodeMember(m));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->name, "db-02");
  EXPECT_EQ(back->role, "replica");
  EXPECT_EQ(back->pg, "127.0.0.1:15433");
  EXPECT_EQ(back->agent, "127.0.0.1:8009");
  EXPECT_EQ(back->timeline, 3u);
  EXPECT_EQ(back->lsn, 0x16B374D848u);
  EXPECT_EQ(back->receiver, "streaming");
  EXPECT_NE(encodeMember(m).find("\"16/B374D848\""), std::string::npos);
  EXPECT_FALSE(decodeMember("not json"));
  EXPECT_FALSE(decodeMember("[]"));
  EXPECT_FALSE(decodeMember(R"({"name":"a","role":"primary","pg":"x","lsn":"bad"})"));
  EXPECT_FALSE(decodeMember(R"({"name":1,"role":"primary","pg":"x","lsn":"0/0"})"));
  // Not read the leader key yet: no "leader" field, so nobody takes the record as fresh.
  EXPECT_FALSE(back->seen_leader);
  EXPECT_EQ(back->received, 0u);
}

TEST(AgentStateTest, MemberRecordCarriesReceivedAndSeenLeader) {
  MemberRecord m{"db-02", "replica", "127.0.0.1:15433", "", 3, 0x100, "streaming", 0x180, ""};
  auto back = decodeMember(encodeMember(m));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->received, 0x180u);
  ASSERT_TRUE(back->seen_leader);
  EXPECT_EQ(*back->seen_leader, "");
  m.seen_leader = "db-01";
  EXPECT_EQ(decodeMember(encodeMember(m))->seen_leader, "db-01");
  // A record without "received" (an older agent) holds at least what it replayed.
  auto old = decodeMember(R"({"name":"a","role":"replica","pg":"x","lsn":"0/10"})");
  ASSERT_TRUE(old);
  EXPECT_EQ(old->received, 0x10u);
  EXPECT_FALSE(decodeMember(R"({"name":"a","role":"replica","pg":"x","lsn":"0/10","received":"x"})"));
}

TEST(AgentStateTest, Keys) {
  EXPECT_EQ(memberKey("shop", "db-01"), "/fulcrum/shop/members/db-01");
  EXPECT_EQ(membersPrefix("shop"), "/fulcrum/shop/members/");
  EXPECT_EQ(initializeKey("shop"), "/fulcrum/shop/initialize");
  EXPECT_EQ(sitePrefix("shop"), "/fulcrum/shop/");
  EXPECT_EQ(sitePrefix("www.foo-bar_1.com"), "/fulcrum/www.foo-bar_1.com/");
  // No site's keys lie under another site's prefix.
  EXPECT_EQ(sitePrefix("a/members/x"), "/fulcrum/a%2Fmembers%2Fx/");
  EXPECT_EQ(sitePrefix("a b%"), "/fulcrum/a%20b%25/");
  EXPECT_NE(memberKey("a", "x").rfind(sitePrefix("a/members"), 0), 0u);
  EXPECT_EQ(leaderKey("a/b"), "/fulcrum/a%2Fb/leader");
}

TEST(AgentStateTest, MemberRecordCarriesTheSystemIdentifier) {
  MemberRecord m;
  m.name = "db-1";
  m.role = "primary";
  m.pg = "127.0.0.1:5432";
  m.sysid = 7312345678901234567ull;  // beyond a double's exact integers
  auto back = decodeMember(encodeMember(m));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->sysid, m.sysid);
  m.sysid.reset();
  back = decodeMember(encodeMember(m));
  ASSERT_TRUE(back);
  EXPECT_FALSE(back->sysid);
  EXPECT_FALSE(decodeMember(R"({"name":"a","role":"replica","pg":"x","lsn":"0/10","sysid":"0"})"));
  EXPECT_FALSE(decodeMember(R"({"name":"a","role":"replica","pg":"x","lsn":"0/10","sysid":12})"));
}

}  // namespace
}  // namespace fulcrum::db
