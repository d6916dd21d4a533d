// Synchronous mode, pure: synchronous_standby_names, the sync key, the leader's steps and who
// may be promoted. The protocol is in src/db/sync_state.h.
#include "db/sync_state.h"

#include <gtest/gtest.h>

namespace fulcrum::db {
namespace {

using Kind = SyncStep::Kind;

TEST(SyncStateTest, StandbyNamesQuoteEveryName) {
  EXPECT_EQ(standbyNamesValue({}), "");
  EXPECT_EQ(standbyNamesValue({"db-2"}), R"(ANY 1 ("db-2"))");
  EXPECT_EQ(standbyNamesValue({"db-3", "db-2"}), R"(ANY 1 ("db-2", "db-3"))");
  // Upper case, spaces, commas and quotes stay part of one name.
  EXPECT_EQ(standbyNamesValue({"Db 1", "a,\"b"}), R"(ANY 1 ("Db 1", "a,""b"))");
}

TEST(SyncStateTest, KeyRoundTripAndRejectsOthers) {
  SyncState s{"db-1", {"db-2", "db-3"}};
  auto back = decodeSync(encodeSync(s));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->leader, "db-1");
  EXPECT_EQ(back->sync, (std::set<std::string>{"db-2", "db-3"}));
  EXPECT_FALSE(decodeSync("{}"));
  EXPECT_FALSE(decodeSync(R"({"leader":"db-1","sync":"db-2"})"));
  EXPECT_FALSE(decodeSync("not json"));
  EXPECT_EQ(syncKey("s"), "/fulcrum/s/sync");
}

SyncReplica streaming(std::string name, Lsn flush = 100, bool counted = true) {
  return SyncReplica{std::move(name), true, counted, flush};
}

SyncInputs leader(std::set<std::string> key, std::optional<std::set<std::string>> pg,
                  std::vector<SyncReplica> replicas) {
  SyncInputs in;
  in.me = "db-1";
  in.key = SyncState{"db-1", std::move(key)};
  in.pg = std::move(pg);
  in.nodes = {"db-2", "db-3"};
  in.replicas = std::move(replicas);
  in.current_lsn = 500;
  return in;
}

// Three steps from `in` (applied to it): the key lists `names`, then PostgreSQL names them,
// then nothing is left to do.
void expectListedThenNamed(SyncInputs& in, const std::set<std::string>& names) {
  SyncStep step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::WriteKey);
  EXPECT_EQ(step.key.sync, names);
  in.key = step.key;
  step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::SetPg);
  EXPECT_EQ(step.pg, names);
  in.pg = step.pg;
  EXPECT_EQ(nextSyncStep(in).kind, Kind::None);
}

TEST(SyncStateTest, NewLeaderEmptiesTheKeyFirst) {
  SyncInputs in = leader({"db-1", "db-3"}, std::nullopt, {streaming("db-2")});
  in.key->leader = "db-2";  // written by the previous leader
  SyncStep step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::WriteKey);
  EXPECT_EQ(step.key.leader, "db-1");
  EXPECT_TRUE(step.key.sync.empty());
  in.key.reset();  // no key at all (first leader)
  EXPECT_EQ(nextSyncStep(in).kind, Kind::WriteKey);
}

TEST(SyncStateTest, WidensTheKeyBeforePostgres) {
  SyncInputs in = leader({}, std::set<std::string>{}, {streaming("db-2"), streaming("db-3")});
  expectListedThenNamed(in, {"db-2", "db-3"});
}

TEST(SyncStateTest, UnknownPostgresSettingIsSetFromHealthyReplicas) {
  SyncInputs in = leader({"db-2", "db-3"}, std::nullopt, {streaming("db-2")});
  SyncStep step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::SetPg);
  EXPECT_EQ(step.pg, (std::set<std::string>{"db-2"}));
}

TEST(SyncStateTest, IgnoresStrangersSelfAndNonStreaming) {
  SyncReplica catching = streaming("db-3");
  catching.streaming = false;
  SyncInputs in = leader({}, std::set<std::string>{},
                         {streaming("db-1"), streaming("db-2-clone"), streaming("pg_basebackup"), catching});
  EXPECT_TRUE(healthySyncNames(in).empty());
  EXPECT_EQ(nextSyncStep(in).kind, Kind::None);
}

TEST(SyncStateTest, NarrowsPostgresFirstThenTheKeyOnceSafe) {
  // db-3 stopped streaming: commits must stop counting on it first.
  SyncReplica gone = streaming("db-3", 90);
  gone.streaming = false;
  SyncInputs in =
      leader({"db-2", "db-3"}, std::set<std::string>{"db-2", "db-3"}, {streaming("db-2", 100), gone});
  SyncStep step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::SetPg);
  EXPECT_EQ(step.pg, (std::set<std::string>{"db-2"}));
  in.pg = step.pg;
  // Its walsender has not reloaded yet: it may still acknowledge commits alone.
  step = nextSyncStep(in);
  EXPECT_EQ(step.kind, Kind::Wait);
  // Reloaded: remember where the primary is now...
  in.replicas[1].counted = false;
  step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::RecordLsn);
  EXPECT_EQ(step.lsn, 500u);
  in.narrow_lsn = step.lsn;
  // ...and unlist db-3 only once db-2 has flushed that far.
  EXPECT_EQ(nextSyncStep(in).kind, Kind::Wait);
  in.replicas[0].flush_lsn = 500;
  step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::WriteKey);
  EXPECT_EQ(step.key.sync, (std::set<std::string>{"db-2"}));
  // A disconnected replica (no walsender at all) counts for nothing either.
  in = leader({"db-2", "db-3"}, std::set<std::string>{"db-2"}, {streaming("db-2", 100)});
  EXPECT_EQ(nextSyncStep(in).kind, Kind::RecordLsn);
}

TEST(SyncStateTest, NoHealthyReplicaEmptiesTheKeyBeforeCommitsStopWaiting) {
  SyncInputs in = leader({"db-2"}, std::set<std::string>{"db-2"}, {});
  SyncStep step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::WriteKey);
  EXPECT_TRUE(step.key.sync.empty());
  in.key = step.key;
  step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::SetPg);
  EXPECT_TRUE(step.pg.empty());
  in.pg = step.pg;
  EXPECT_EQ(nextSyncStep(in).kind, Kind::None);
}

TEST(SyncStateTest, StrictKeepsCommitsWaitingWithNoHealthyReplica) {
  // The last synchronous replica is gone: commits keep waiting for it, nothing changes.
  SyncInputs in = leader({"db-2"}, std::set<std::string>{"db-2"}, {});
  in.strict = true;
  EXPECT_EQ(nextSyncStep(in).kind, Kind::None);
  // A replica that streams but is not listed yet is listed before it may acknowledge.
  in.replicas = {SyncReplica{"db-3", false, false, 0}};  // connected, still catching up
  EXPECT_EQ(nextSyncStep(in).kind, Kind::None);
  in.replicas = {streaming("db-3", 100, false)};
  SyncStep step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::WriteKey);
  EXPECT_EQ(step.key.sync, (std::set<std::string>{"db-2", "db-3"}));
}

TEST(SyncStateTest, StrictNewLeaderListsEveryNodeThenWaitsForThem) {
  // Nobody listed and commits not waiting (a key emptied, synchronous_standby_names unknown).
  SyncInputs in = leader({}, std::nullopt, {});
  in.strict = true;
  expectListedThenNamed(in, {"db-2", "db-3"});
  // An empty setting (commits not waiting) is never left alone either.
  in.pg = std::set<std::string>{};
  EXPECT_EQ(nextSyncStep(in).kind, Kind::SetPg);
  // Once one streams, the ordinary steps narrow to it: PostgreSQL first, then the key.
  in.pg = std::set<std::string>{"db-2", "db-3"};
  in.replicas = {streaming("db-3", 600)};
  SyncStep step = nextSyncStep(in);
  ASSERT_EQ(step.kind, Kind::SetPg);
  EXPECT_EQ(step.pg, (std::set<std::string>{"db-3"}));
}

MemberRecord member(std::string name, Lsn received, std::optional<std::string> seen = "",
                    std::string role = "replica") {
  MemberRecord m;
  m.name = std::move(name);
  m.role = std::move(role);
  m.received = received;
  m.seen_leader = std::move(seen);
  return m;
}

TEST(SyncStateTest, OnlyTheMostAdvancedListedReplicaPromotes) {
  std::optional<SyncState> key = SyncState{"db-1", {"db-2", "db-3"}};
  std::vector<MemberRecord> members = {member("db-2", 200), member("db-3", 300)};
  EXPECT_FALSE(maySyncPromote(key, "db-2", 200, members).allowed);
  EXPECT_TRUE(maySyncPromote(key, "db-3", 300, members).allowed);
  // Equal positions: the lower name.
  members[1].received = 200;
  EXPECT_TRUE(maySyncPromote(key, "db-2", 200, members).allowed);
  EXPECT_FALSE(maySyncPromote(key, "db-3", 200, members).allowed);
}

TEST(SyncStateTest, UnlistedOrUnknownNeverPromotes) {
  std::vector<MemberRecord> members = {member("db-2", 200), member("db-3", 100)};
  EXPECT_FALSE(maySyncPromote(std::nullopt, "db-2", 200, members).allowed);
  std::optional<SyncState> key = SyncState{"db-1", {"db-3"}};
  auto verdict = maySyncPromote(key, "db-2", 900, members);
  EXPECT_FALSE(verdict.allowed);
  EXPECT_NE(verdict.why.find("not a synchronous replica"), std::string::npos);
  key->sync.clear();  // no replica was synchronous: nobody may be promoted
  EXPECT_FALSE(maySyncPromote(key, "db-2", 900, members).allowed);
}

TEST(SyncStateTest, WaitsForEveryOtherListedReplicaToReportAfterTheLeaderLeft) {
  std::optional<SyncState> key = SyncState{"db-1", {"db-2", "db-3"}};
  // db-3 missing: it may hold the only copy of the latest acknowledged commit.
  EXPECT_FALSE(maySyncPromote(key, "db-2", 500, {member("db-2", 500)}).allowed);
  // db-3's record predates the leader's departure: its position may have grown since.
  EXPECT_FALSE(maySyncPromote(key, "db-2", 500, {member("db-3", 100, "db-1")}).allowed);
  EXPECT_FALSE(maySyncPromote(key, "db-2", 500, {member("db-3", 100, std::nullopt)}).allowed);
  // db-3 is not running: its WAL on disk is unknown.
  EXPECT_FALSE(maySyncPromote(key, "db-2", 500, {member("db-3", 0, "", "stopped")}).allowed);
  EXPECT_TRUE(maySyncPromote(key, "db-2", 500, {member("db-3", 100)}).allowed);
  // The old leader's own record (listed by mistake or not) is never waited for.
  key->sync.insert("db-1");
  EXPECT_TRUE(maySyncPromote(key, "db-2", 500, {member("db-3", 100)}).allowed);
}

TEST(SyncStateTest, AsynchronousPromotionKeepsTheLagBoundAndTheMostAdvanced) {
  MemberRecord peer = member("db-1", 0);
  peer.lsn = 1000;
  const std::vector<MemberRecord> members = {peer};
  EXPECT_TRUE(mayAsyncPromote("db-2", 1001, 1500, 1000, members, true).allowed);
  EXPECT_FALSE(mayAsyncPromote("db-2", 499, 1500, 1000, members, true).allowed);  // 1001 bytes behind
  EXPECT_TRUE(mayAsyncPromote("db-2", 0, std::nullopt, 1000, {}, true).allowed);  // position never seen
  PromoteVerdict behind = mayAsyncPromote("db-2", 999, 1500, 1000, members, false);
  EXPECT_FALSE(behind.allowed);
  EXPECT_NE(behind.why.find("db-1 has replayed further"), std::string::npos) << behind.why;
  // Level: automatic failover lets the lower name go first; a manual one may choose either.
  EXPECT_FALSE(mayAsyncPromote("db-2", 1000, 1500, 1000, members, true).allowed);
  EXPECT_TRUE(mayAsyncPromote("db-2", 1000, 1500, 1000, members, false).allowed);
  EXPECT_TRUE(mayAsyncPromote("db-0", 1000, 1500, 1000, members, true).allowed);
  std::vector<MemberRecord> stopped = members;
  stopped[0].role = "stopped";
  EXPECT_TRUE(mayAsyncPromote("db-2", 999, 1500, 1000, stopped, true).allowed);
}

}  // namespace
}  // namespace fulcrum::db
