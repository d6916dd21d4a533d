// Reading the nodes' own answers into `fulcrum status` rows, and printing them.
#include "site/status.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

namespace fulcrum::site {
namespace {

TEST(StatusTest, PrometheusCounterSumsEverySampleOfExactlyThatName) {
  const char* text =
      "# HELP fulcrum_web_requests_total HTTP requests handled.\n"
      "# TYPE fulcrum_web_requests_total counter\n"
      "fulcrum_web_requests_total{node=\"web-1\"} 41\n"
      "fulcrum_web_requests_total_other 1000\n"
      "fulcrum_web_requests_total{node=\"web-1\",x=\"y\"} 1\n"
      "fulcrum_web_responses_total{code=\"2xx\"} 7\n";
  EXPECT_EQ(prometheusCounter(text, "fulcrum_web_requests_total"), 42.0);
  EXPECT_EQ(prometheusCounter("plain 3", "plain"), 3.0);
  EXPECT_FALSE(prometheusCounter(text, "fulcrum_lb_requests_total").has_value());
  EXPECT_FALSE(prometheusCounter("x{a=\"b\"} nope\n", "x").has_value());
}

TEST(StatusTest, EtcdLeaderIsTheMemberWhoseIdIsTheLeaders) {
  // etcd 3.4's answer to POST /v3/maintenance/status, trimmed.
  EXPECT_TRUE(
      etcdIsLeader(R"({"header":{"cluster_id":"53","member_id":"15276464775160152042","raft_term":"2"},)"
                   R"("version":"3.4.23","leader":"15276464775160152042","raftIndex":"9"})"));
  EXPECT_FALSE(
      etcdIsLeader(R"({"header":{"cluster_id":"53","member_id":"14064376165603949834","raft_term":"2"},)"
                   R"("version":"3.4.23","leader":"15276464775160152042","raftIndex":"9"})"));
  EXPECT_FALSE(etcdIsLeader(R"({"header":{"member_id":"0"},"leader":"0"})"));  // no leader
  EXPECT_FALSE(etcdIsLeader(R"({"error":"etcdserver: no leader","code":14})"));
  EXPECT_FALSE(etcdIsLeader(""));
}

TEST(StatusTest, AgentStatusGivesRoleTimelineAndLag) {
  NodeStatus primary;
  readAgentStatus(R"({"role":"primary","timeline":2,"lag_bytes":null,"lease":{"held":true,"may_write":true}})",
                  primary);
  EXPECT_TRUE(primary.healthy);
  EXPECT_EQ(primary.health, "primary tl 2");
  EXPECT_FALSE(primary.lag_bytes.has_value());

  NodeStatus fenced;
  readAgentStatus(R"({"role":"primary","timeline":2,"lease":{"held":false,"may_write":false}})", fenced);
  EXPECT_FALSE(fenced.healthy);
  EXPECT_EQ(fenced.health, "primary tl 2, fenced");

  NodeStatus replica;
  readAgentStatus(R"({"role":"replica","timeline":2,"lag_bytes":4096,"lag_seconds":0.5,"receiver":"streaming",)"
                  R"("leader":"db-1","lease":{"held":false,"may_write":false}})",
                  replica);
  EXPECT_TRUE(replica.healthy);
  EXPECT_EQ(replica.health, "replica tl 2, streaming");
  EXPECT_EQ(replica.lag_bytes, 4096);
  EXPECT_EQ(replica.lag_seconds, 0.5);
  EXPECT_EQ(replica.db_leader, "db-1");

  // A replica that streams from nobody serves stale reads: up, but not healthy.
  NodeStatus adrift;
  readAgentStatus(R"({"role":"replica","timeline":2,"lag_bytes":null,"leader":null})", adrift);
  EXPECT_FALSE(adrift.healthy);
  EXPECT_EQ(adrift.health, "replica tl 2, not streaming");
  EXPECT_EQ(adrift.db_leader, "");

  NodeStatus stopped;
  readAgentStatus(R"({"role":"stopped","timeline":0})", stopped);
  EXPECT_FALSE(stopped.healthy);
  EXPECT_EQ(stopped.health, "postgres stopped");

  NodeStatus garbage;
  readAgentStatus("not json", garbage);
  EXPECT_FALSE(garbage.healthy);
}

TEST(StatusTest, WronglyTypedFieldsReadAsUnknownNotAsACrash) {
  NodeStatus odd;
  readAgentStatus(R"({"role":1,"timeline":"two","lease":{"held":"yes","may_write":1},"lag_bytes":"x"})", odd);
  EXPECT_FALSE(odd.healthy);
  EXPECT_EQ(odd.health, "unknown");
  EXPECT_FALSE(odd.lag_bytes.has_value());
}

TEST(StatusTest, ANodesTextCannotDriveTheTerminalOrBreakTheTable) {
  NodeStatus evil;
  evil.role = "db";
  evil.name = "db-1";
  evil.address = "127.0.0.1:1";
  evil.up = true;
  evil.health = "postgres \x1b[2J\x1b]0;pwned\x07 stopped\nsecond line" + std::string(300, 'x');
  const std::string table = formatTable({evil});
  EXPECT_EQ(table.find('\x1b'), std::string::npos);
  EXPECT_EQ(table.find('\x07'), std::string::npos);
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 3) << table;  // the db line, the header and one row
  EXPECT_NE(table.find("..."), std::string::npos);
}

TEST(StatusTest, TheLeadersArchivingGetsAColumn) {
  NodeStatus failing;
  readAgentStatus(R"({"role":"primary","timeline":2,"lease":{"held":true,"may_write":true},)"
                  R"("backup":{"archive":{"ok":false,"ready_segments":7}}})",
                  failing);
  EXPECT_EQ(failing.archive, "FAILING (7 waiting)");
  NodeStatus fine;
  readAgentStatus(R"({"role":"primary","timeline":2,"backup":{"archive":{"ok":true,"ready_segments":0}}})", fine);
  EXPECT_EQ(fine.archive, "ok");
  NodeStatus replica;  // only the leader archives
  readAgentStatus(R"({"role":"replica","timeline":2,"backup":{"archive":null}})", replica);
  EXPECT_EQ(replica.archive, "");
  std::vector<NodeStatus> rows = {failing, replica};
  const std::string table = formatTable(rows);
  EXPECT_NE(table.find("ARCHIVE"), std::string::npos);
  EXPECT_NE(table.find("FAILING (7 waiting)"), std::string::npos);
  EXPECT_EQ(formatTable({replica}).find("ARCHIVE"), std::string::npos);  // no [db.backup]: no column
}

TEST(StatusTest, LoadBalancerStateCountsServersUpAndReturnsRequests) {
  NodeStatus row;
  auto requests = readLbState(
      R"({"node":"lb-1","totals":{"requests":1234},"servers":[{"name":"a","health":"up"},{"name":"b","health":"down"}]})",
      row);
  EXPECT_EQ(requests, 1234.0);
  EXPECT_TRUE(row.healthy);
  EXPECT_EQ(row.health, "1/2 servers up");

  NodeStatus none_up;
  readLbState(R"({"totals":{"requests":0},"servers":[{"name":"a","health":"down"}]})", none_up);
  EXPECT_FALSE(none_up.healthy);
}

std::vector<NodeStatus> sample() {
  NodeStatus db{"db", "db-1", "127.0.0.1:15432", true, true, "primary tl 1"};
  db.db_leader = "db-1";
  db.db_timeline = 1;
  NodeStatus web{"web", "web-1", "127.0.0.1:9001", true, true, "ok", 12.5};
  NodeStatus down{"web", "web-2", "127.0.0.1:9002", false, false, "connect 127.0.0.1:9002: Connection refused"};
  NodeStatus replica{"db", "db-2", "127.0.0.1:15433", true, true, "replica tl 1, streaming", std::nullopt, 128, 0.25};
  replica.db_leader = "db-1";
  replica.db_timeline = 1;
  return {db, web, down, replica};
}

TEST(StatusTest, TableHasAHeaderAndOneAlignedLinePerNode) {
  // Free-text health last: a long error never pushes the other columns.
  std::string table = formatTable(sample());
  EXPECT_EQ(table,
            "database: leader db-1  timeline 1  synchronous no  paused no\n"
            "ROLE       NAME         ADDRESS                STATE      REQ/S              LAG  HEALTH\n"
            "db         db-1         127.0.0.1:15432        up             -                -  primary tl 1\n"
            "web        web-1        127.0.0.1:9001         up          12.5                -  ok\n"
            "web        web-2        127.0.0.1:9002         down           -                -  connect "
            "127.0.0.1:9002: Connection refused\n"
            "db         db-2         127.0.0.1:15433        up             -       128 B 0.2s  replica tl 1, streaming\n");
}

TEST(StatusTest, TheDatabaseLineSaysWhenNobodyLeadsOrFailoverIsPaused) {
  std::vector<NodeStatus> rows = sample();
  rows[0].up = false;  // the leader's agent is gone: the replica's view is shown
  rows[3].db_leader = "";
  rows[3].db_paused = true;
  EXPECT_EQ(formatDbHeader(rows),
            "database: leader NONE  synchronous no  paused YES (no automatic failover: `fulcrum db resume`)\n");
  rows[3].up = false;
  EXPECT_EQ(formatDbHeader(rows), "database: no agent answered with the cluster's state\n");
  EXPECT_EQ(formatDbHeader({rows[1]}), "");  // no database nodes: no line
}

TEST(StatusTest, JsonIsAnArrayOfObjectsWithNullsForUnknowns) {
  auto j = nlohmann::json::parse(formatJson(sample()));
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 4u);
  EXPECT_EQ(j[0]["role"], "db");
  EXPECT_EQ(j[0]["state"], "up");
  EXPECT_TRUE(j[0]["requests_per_s"].is_null());
  EXPECT_EQ(j[1]["requests_per_s"], 12.5);
  EXPECT_EQ(j[2]["state"], "down");
  EXPECT_EQ(j[2]["healthy"], false);
  EXPECT_EQ(j[3]["lag_bytes"], 128);
  EXPECT_EQ(j[3]["lag_seconds"], 0.25);
  EXPECT_TRUE(j[3]["stopped_at"].is_null());
}

TEST(StatusTest, UpsListMarksANodeStoppedByAnOperatorAndExplainsTheDownOnes) {
  std::vector<NodeStatus> rows = sample();
  rows.push_back(
      {"web", "web-3", "127.0.0.1:9003", false, false, "connect 127.0.0.1:9003: Connection refused"});
  const auto list = nlohmann::json::parse(R"({"ok": true, "nodes": [
      {"name": "db-1", "role": "db", "state": "stopped", "pid": null, "crashes": 0, "stopped_at": 1764806400.5},
      {"name": "web-1", "role": "web", "state": "running", "pid": 42, "crashes": 0},
      {"name": "web-2", "role": "web", "state": "restarting", "pid": null, "crashes": 3},
      {"name": "web-3", "role": "web", "state": "gave_up", "pid": null, "crashes": 1, "last_error": "exit code 2"},
      {"name": "db-2", "role": "web", "state": "stopped", "stopped_at": 1},
      {"name": "elsewhere", "role": "lb", "state": "stopped", "stopped_at": 1},
      "not an object"]})");
  applyUpList(list, rows);
  EXPECT_EQ(rows[0].stopped_at, 1764806400.5);
  EXPECT_FALSE(rows[0].up);
  EXPECT_NE(rows[0].health.find("stopped by operator at "), std::string::npos) << rows[0].health;
  EXPECT_NE(rows[0].health.find("fulcrum start db-1"), std::string::npos) << rows[0].health;
  EXPECT_EQ(rows[1].health, "ok");  // running: the node's own answer stands
  EXPECT_EQ(rows[2].health,
            "connect 127.0.0.1:9002: Connection refused; fulcrum up restarts it (crashes: 3)");
  EXPECT_FALSE(rows[3].stopped_at.has_value()) << "same name, another role";
  EXPECT_EQ(rows[4].health,
            "connect 127.0.0.1:9003: Connection refused; fulcrum up gave up restarting it (exit code 2)");

  const std::string table = formatTable(rows);
  EXPECT_NE(table.find("127.0.0.1:15432        stopped        -"), std::string::npos) << table;
  auto j = nlohmann::json::parse(formatJson(rows));
  EXPECT_EQ(j[0]["state"], "stopped");
  EXPECT_EQ(j[0]["stopped_at"], 1764806400.5);
  EXPECT_EQ(j[2]["state"], "down");
}

TEST(StatusTest, UpsListOfTheWrongShapeChangesNothing) {
  std::vector<NodeStatus> rows = sample();
  applyUpList(nlohmann::json::parse(R"({"ok": false, "error": "x"})"), rows);
  applyUpList(nlohmann::json::parse(R"({"nodes": {"db-1": "stopped"}})"), rows);
  applyUpList(nlohmann::json::parse(R"({"nodes": [{"name": "db-1", "role": "db", "state": "stopped"}]})"),
              rows);
  EXPECT_EQ(formatTable(rows), formatTable(sample()));
}

}  // namespace
}  // namespace fulcrum::site
