#include "web/db_routing.h"

#include <gtest/gtest.h>

#include "web/guestbook_app.h"

namespace fulcrum::web {
namespace {

TEST(Lsn, ParsesAndFormatsPostgresText) {
  EXPECT_EQ(parseLsn("16/B374D848"), std::optional<Lsn>(0x16B374D848ull));
  EXPECT_EQ(parseLsn("0/0"), std::optional<Lsn>(0));
  EXPECT_EQ(parseLsn("FFFFFFFF/FFFFFFFF"), std::optional<Lsn>(~Lsn{0}));
  EXPECT_EQ(parseLsn("0/16b3f00"), std::optional<Lsn>(0x16B3F00));
  EXPECT_EQ(formatLsn(0x16B374D848ull), "16/B374D848");
  EXPECT_EQ(formatLsn(0), "0/0");
  for (Lsn lsn : {Lsn{0}, Lsn{1}, Lsn{0xFFFFFFFF}, Lsn{0x100000000}, ~Lsn{0}}) {
    EXPECT_EQ(parseLsn(formatLsn(lsn)), std::optional<Lsn>(lsn));
  }
  // The high half counts more than any low half: comparison is numeric, not textual.
  EXPECT_LT(*parseLsn("0/FFFFFFFF"), *parseLsn("1/0"));
  EXPECT_LT(*parseLsn("9/0"), *parseLsn("A/0"));
}

TEST(Lsn, RefusesMalformedText) {
  for (const char* bad : {"", "/", "16", "16/", "/B374D848", "1/2/3", "G/0", "0/123456789", "123456789/0",
                          " 0/1", "0/1 ", "-1/0", "0x1/0"}) {
    EXPECT_EQ(parseLsn(bad), std::nullopt) << bad;
  }
}

TEST(LsnCookie, FormatsAndFindsTheToken) {
  EXPECT_EQ(lsnSetCookie(0x16B374D848ull), "fulcrum_lsn=16/B374D848; Path=/; HttpOnly; SameSite=Lax");
  EXPECT_EQ(lsnFromCookieHeader("fulcrum_lsn=16/B374D848"), std::optional<Lsn>(0x16B374D848ull));
  EXPECT_EQ(lsnFromCookieHeader("a=1; fulcrum_lsn=0/10;b=2"), std::optional<Lsn>(0x10));
  EXPECT_EQ(lsnFromCookieHeader("  fulcrum_lsn=0/10  "), std::optional<Lsn>(0x10));
  EXPECT_EQ(lsnFromCookieHeader("fulcrum_lsn=0/10; fulcrum_lsn=0/20"), std::optional<Lsn>(0x20));
  // Malformed tokens are ignored (the read is served as if there were none), not errors.
  EXPECT_EQ(lsnFromCookieHeader("fulcrum_lsn=0/10; fulcrum_lsn=junk"), std::optional<Lsn>(0x10));
  for (const char* none : {"", "a=1", "fulcrum_lsn", "fulcrum_lsn=", "fulcrum_lsn=zz/1", "xfulcrum_lsn=0/1",
                           "fulcrum_lsnx=0/1", "FULCRUM_LSN=0/1"}) {
    EXPECT_EQ(lsnFromCookieHeader(none), std::nullopt) << none;
  }
}

NodeStatus primary(Lsn lsn) { return {true, false, false, lsn}; }
NodeStatus replica(Lsn lsn) { return {true, true, false, lsn}; }
NodeStatus down() { return {}; }

TEST(Routing, ThePrimaryIsTheOneReachableNodeOutOfRecoveryAndUnfenced) {
  EXPECT_EQ(choosePrimary({replica(1), primary(5), replica(2)}), std::optional<size_t>(1));
  EXPECT_EQ(choosePrimary({replica(1), replica(2)}), std::nullopt);
  EXPECT_EQ(choosePrimary({}), std::nullopt);
  // Unreachable: its last role does not count.
  NodeStatus gone = primary(5);
  gone.reachable = false;
  EXPECT_EQ(choosePrimary({gone, replica(2)}), std::nullopt);
  // Fenced (read-only out of recovery): not a primary; the other one is.
  NodeStatus fenced = primary(9);
  fenced.read_only = true;
  EXPECT_EQ(choosePrimary({fenced, primary(3)}), std::optional<size_t>(1));
  // Two claimants: neither takes writes.
  EXPECT_EQ(choosePrimary({primary(3), primary(4), replica(1)}), std::nullopt);
}

TEST(Routing, ReplicasWithinTheLagBoundServeReads) {
  std::vector<NodeStatus> nodes = {primary(1000), replica(990), replica(100), down()};
  EXPECT_EQ(lagBytes(1000, 990), 10u);
  EXPECT_EQ(lagBytes(1000, 2000), 0u);  // probes taken at different moments
  EXPECT_EQ(eligibleReplicas(nodes, 0, 10), (std::vector<size_t>{1}));
  EXPECT_EQ(eligibleReplicas(nodes, 0, 900), (std::vector<size_t>{1, 2}));
  EXPECT_EQ(eligibleReplicas(nodes, 0, 0), (std::vector<size_t>{}));
  // No primary known (failover): every reachable replica keeps serving.
  EXPECT_EQ(eligibleReplicas(nodes, std::nullopt, 0), (std::vector<size_t>{1, 2}));
}

TEST(Routing, ATokenNeedsAReplicaThatReplayedIt) {
  std::vector<NodeStatus> nodes = {primary(1000), replica(990), replica(500)};
  std::vector<size_t> eligible = {1, 2};
  EXPECT_EQ(replicasAtLeast(nodes, eligible, std::nullopt), eligible);
  EXPECT_EQ(replicasAtLeast(nodes, eligible, 500), eligible);
  EXPECT_EQ(replicasAtLeast(nodes, eligible, 501), (std::vector<size_t>{1}));
  EXPECT_EQ(replicasAtLeast(nodes, eligible, 990), (std::vector<size_t>{1}));
  EXPECT_EQ(replicasAtLeast(nodes, eligible, 991), (std::vector<size_t>{}));
}

TEST(Conninfo, QuotesEveryValueAndSetsTheSessionsDeadlines) {
  DbSettings s;
  s.user = "site";
  s.database = "my db";
  s.application_name = "fulcrum-web-01";
  std::string info = conninfoFor(s, {"db-1", "127.0.0.1", 15432}, "p'w\\d");
  EXPECT_EQ(info,
            "host='127.0.0.1' port=15432 user='site' dbname='my db' password='p\\'w\\\\d' "
            "application_name='fulcrum-web-01' sslmode=disable gssencmode=disable connect_timeout=2 "
            "keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3 tcp_user_timeout=5000 "
            "options='-c statement_timeout=2500 -c client_connection_check_interval=1000 "
            "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
            "-c tcp_user_timeout=5000'");
  // The server's statement deadline follows the router's longest wait, a little past it.
  s.write_deadline = std::chrono::seconds(4);
  EXPECT_NE(conninfoFor(s, {"db-1", "127.0.0.1", 15432}, "pw").find("-c statement_timeout=4500 "),
            std::string::npos);
}

TEST(GuestbookRows, ConvertsDatabaseRows) {
  auto m = messageFromRow({"42", "ann", "<b>hi</b>", "2026-11-27T14:30:00.123Z"});
  ASSERT_TRUE(m);
  EXPECT_EQ(m->id, 42);
  EXPECT_EQ(m->author, "ann");
  EXPECT_EQ(m->text, "<b>hi</b>");
  EXPECT_EQ(m->created_at, "2026-11-27T14:30:00.123Z");
  EXPECT_FALSE(messageFromRow({"42", "ann", "text"}));
  EXPECT_FALSE(messageFromRow({"4x", "ann", "text", "t"}));
  EXPECT_FALSE(messageFromRow({"", "ann", "text", "t"}));
}

TEST(GuestbookRows, DatabaseFailuresAnswerJsonWithRetryAfter) {
  http::Response r;
  DbReply reply;
  reply.status = 503;
  reply.error = "no primary";
  setDbFailure(r, reply);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, R"({"error":"no primary"})");
  EXPECT_NE(r.headers.find("Retry-After: 1\r\n"), std::string::npos);
  EXPECT_NE(r.headers.find("Content-Type: application/json\r\n"), std::string::npos);
  http::Response refused;
  reply.status = 400;
  setDbFailure(refused, reply);
  EXPECT_EQ(refused.status, 400);
  EXPECT_EQ(refused.headers.find("Retry-After"), std::string::npos);
}

}  // namespace
}  // namespace fulcrum::web
