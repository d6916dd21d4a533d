#include "web/db_routing.h"

#include <chrono>
#include <utility>

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

// Three nodes at 10.0.0.1-3:5432; the tests' primary writes timeline 2.
const std::vector<DbNodeConfig> kConfig = {{"db-1", "10.0.0.1", 5432},
                                           {"db-2", "10.0.0.2", 5432},
                                           {"db-3", "10.0.0.3", 5432},
                                           {"db-4", "10.0.0.4", 5432}};

NodeStatus primary(Lsn lsn, uint32_t timeline = 2) {
  NodeStatus s;
  s.reachable = true;
  s.lsn = lsn;
  s.timeline = timeline;
  return s;
}
// A replica streaming from node `upstream` (index into kConfig) on `timeline`.
NodeStatus replica(Lsn lsn, size_t upstream = 0, uint32_t timeline = 2) {
  NodeStatus s;
  s.reachable = true;
  s.in_recovery = true;
  s.lsn = lsn;
  s.timeline = timeline;
  s.receiver = WalReceiver{true, "streaming", timeline, kConfig[upstream].host, kConfig[upstream].port};
  return s;
}
NodeStatus down() {
  return {};
}

TEST(Routing, ThePrimaryIsTheOneReachableNodeOutOfRecoveryAndUnfenced) {
  EXPECT_EQ(choosePrimary({replica(1), primary(5), replica(2)}), std::optional<size_t>(1));
  EXPECT_EQ(choosePrimary({replica(1), replica(2)}), std::nullopt);
  EXPECT_EQ(choosePrimary({}), std::nullopt);
  // Unreachable: its last role does not count.
  NodeStatus gone = primary(5);
  gone.reachable = false;
  EXPECT_EQ(choosePrimary({gone, replica(2)}), std::nullopt);
  // Fenced by its agent (read-only out of recovery): not a primary; the other one is.
  NodeStatus fenced = primary(9);
  fenced.read_only = true;
  EXPECT_EQ(choosePrimary({fenced, primary(3)}), std::optional<size_t>(1));
  // Two claimants: neither takes writes.
  EXPECT_EQ(choosePrimary({primary(3), primary(4), replica(1)}), std::nullopt);
}

TEST(Routing, ANodeWhoseLeaseExpiredIsNoClaimant) {
  // A frozen old primary (fulcrum.fenced = 'on': its lease passed, it refuses commits) beside the
  // newly promoted one: writes go to the new one instead of stopping for the whole freeze.
  NodeStatus frozen = primary(900, 2);
  frozen.fenced = true;
  std::vector<NodeStatus> nodes = {frozen, primary(1000, 3), replica(1000, 1, 3)};
  EXPECT_FALSE(claimsPrimary(frozen));
  EXPECT_EQ(choosePrimary(nodes), std::optional<size_t>(1));
  // Nor is it a read target.
  EXPECT_EQ(readVerdict(nodes, kConfig, 0, 1, 1000), ReadVerdict::NotReplica);
  EXPECT_EQ(eligibleReplicas(nodes, kConfig, 1, 1000), (std::vector<size_t>{2}));
  // Alone, a fenced node is no primary either: writes wait.
  EXPECT_EQ(choosePrimary({frozen, replica(900, 0)}), std::nullopt);
  // 'off' (may write) and NULL (no fence library: an older node) both leave it a claimant.
  EXPECT_EQ(choosePrimary({primary(1), replica(1)}), std::optional<size_t>(0));
}

TEST(Routing, ReplicasWithinTheLagBoundServeReads) {
  std::vector<NodeStatus> nodes = {primary(1000), replica(990), replica(100), down()};
  EXPECT_EQ(lagBytes(1000, 990), 10u);
  EXPECT_EQ(lagBytes(1000, 2000), 0u);  // probes taken at different moments
  EXPECT_EQ(eligibleReplicas(nodes, kConfig, 0, 10), (std::vector<size_t>{1}));
  EXPECT_EQ(eligibleReplicas(nodes, kConfig, 0, 900), (std::vector<size_t>{1, 2}));
  EXPECT_EQ(eligibleReplicas(nodes, kConfig, 0, 0), (std::vector<size_t>{}));
  EXPECT_EQ(readVerdict(nodes, kConfig, 2, 0, 10), ReadVerdict::TooFarBehind);
  EXPECT_EQ(readVerdict(nodes, kConfig, 3, 0, 10), ReadVerdict::Down);
  EXPECT_EQ(readVerdict(nodes, kConfig, 0, 0, 10), ReadVerdict::NotReplica);
}

TEST(Routing, AReplicaOnAnOldTimelineServesNoReads) {
  // The incident: db-3 stayed on timeline 2 (holding rows the new primary never had), close to
  // the primary's position by byte distance alone.
  NodeStatus stale = replica(1000, 0, 2);
  std::vector<NodeStatus> nodes = {primary(1000, 3), replica(1000, 0, 3), stale};
  EXPECT_EQ(readVerdict(nodes, kConfig, 2, 0, 1 << 20), ReadVerdict::OtherTimeline);
  EXPECT_EQ(eligibleReplicas(nodes, kConfig, 0, 1 << 20), (std::vector<size_t>{1}));
  // The received timeline counts, even when the restartpoint's is already the new one.
  nodes[2].timeline = 3;
  EXPECT_EQ(readVerdict(nodes, kConfig, 2, 0, 1 << 20), ReadVerdict::OtherTimeline);
}

TEST(Routing, AReplicaStreamingFromAnotherNodeServesNoReads) {
  // db-3 streams from db-2 (or from an old primary, or something else entirely): not from the
  // primary, so nothing says it has the primary's history.
  std::vector<NodeStatus> nodes = {primary(1000), replica(1000, 0), replica(1000, 1)};
  EXPECT_EQ(readVerdict(nodes, kConfig, 2, 0, 1 << 20), ReadVerdict::OtherSender);
  // Same host, another port: another server.
  nodes[2].receiver->sender_host = "10.0.0.1";
  nodes[2].receiver->sender_port = 5433;
  EXPECT_EQ(readVerdict(nodes, kConfig, 2, 0, 1 << 20), ReadVerdict::OtherSender);
  // Hosts compare as addresses, not text.
  std::vector<DbNodeConfig> v6 = {{"db-1", "::1", 5432}, {"db-2", "::2", 5432}, {"db-3", "::3", 5432}};
  nodes[2].receiver->sender_host = "0:0::1";
  nodes[2].receiver->sender_port = 5432;
  EXPECT_EQ(readVerdict(nodes, v6, 2, 0, 1 << 20), ReadVerdict::Readable);
  EXPECT_EQ(eligibleReplicas(nodes, kConfig, 0, 1 << 20), (std::vector<size_t>{1}));
}

TEST(Routing, AReplicaThatIsNotStreamingServesNoReads) {
  std::vector<NodeStatus> nodes = {primary(1000), replica(1000), replica(1000)};
  nodes[1].receiver.reset();  // primary_conninfo = '': no WAL receiver at all
  EXPECT_EQ(readVerdict(nodes, kConfig, 1, 0, 1 << 20), ReadVerdict::NotStreaming);
  for (const char* status : {"waiting", "restarting", "starting", "stopping", ""}) {
    nodes[2].receiver->status = status;
    nodes[2].receiver->visible = std::string_view(status) != "";
    EXPECT_NE(readVerdict(nodes, kConfig, 2, 0, 1 << 20), ReadVerdict::Readable) << status;
  }
  // Its details hidden from the application role: it cannot be shown to follow the primary.
  nodes[2].receiver = WalReceiver{false, "", 0, "", 0};
  EXPECT_EQ(readVerdict(nodes, kConfig, 2, 0, 1 << 20), ReadVerdict::Hidden);
  EXPECT_EQ(eligibleReplicas(nodes, kConfig, 0, 1 << 20), (std::vector<size_t>{}));
}

TEST(Routing, WithNoPrimaryKnownReadsStayOnTheNewestTimeline) {
  // A failover: the new primary (db-2, timeline 3) is not reachable from here right now; it was
  // seen on timeline 3, so db-3 (still on 2, maybe diverged) must not serve, db-4 (on 3) may,
  // whether or not its receiver streams, and however far behind.
  NodeStatus new_primary = primary(2000, 3);
  new_primary.reachable = false;
  NodeStatus waiting = replica(10, 1, 3);
  waiting.receiver->status = "waiting";
  std::vector<NodeStatus> nodes = {down(), new_primary, replica(1500, 0, 2), waiting};
  EXPECT_EQ(choosePrimary(nodes), std::nullopt);
  EXPECT_EQ(highestTimeline(nodes), 3u);
  EXPECT_EQ(readVerdict(nodes, kConfig, 2, std::nullopt, 0), ReadVerdict::OtherTimeline);
  EXPECT_EQ(eligibleReplicas(nodes, kConfig, std::nullopt, 0), (std::vector<size_t>{3}));
  // Everyone on one timeline (the old primary simply died): every reachable replica serves.
  std::vector<NodeStatus> same = {down(), replica(1, 0), replica(2, 0)};
  EXPECT_EQ(eligibleReplicas(same, kConfig, std::nullopt, 0), (std::vector<size_t>{1, 2}));
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

TEST(Probe, ReadsAPrimarysRow) {
  auto s = parseProbeRow({"f", "0/3000148", "off", "", "3", "", "", "", "", ""});
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->reachable);
  EXPECT_FALSE(s->in_recovery);
  EXPECT_FALSE(s->read_only);
  EXPECT_FALSE(s->fenced);  // NULL: no fence library loaded
  EXPECT_EQ(s->lsn, 0x3000148u);
  EXPECT_EQ(s->timeline, 3u);
  EXPECT_FALSE(s->receiver);
  EXPECT_TRUE(parseProbeRow({"f", "0/1", "off", "on", "3", "", "", "", "", ""})->fenced);
  EXPECT_FALSE(parseProbeRow({"f", "0/1", "off", "off", "3", "", "", "", "", ""})->fenced);
  EXPECT_TRUE(parseProbeRow({"f", "0/1", "on", "off", "3", "", "", "", "", ""})->read_only);
}

TEST(Probe, ReadsAReplicasRow) {
  auto s = parseProbeRow({"t", "0/5000310", "off", "", "2", "4711", "streaming", "3", "10.0.0.1", "5432"});
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->in_recovery);
  EXPECT_EQ(s->lsn, 0x5000310u);
  ASSERT_TRUE(s->receiver);
  EXPECT_TRUE(s->receiver->visible);
  EXPECT_EQ(s->receiver->status, "streaming");
  EXPECT_EQ(s->receiver->received_tli, 3u);
  EXPECT_EQ(s->receiver->sender_host, "10.0.0.1");
  EXPECT_EQ(s->receiver->sender_port, 5432);
  EXPECT_EQ(s->timeline, 3u);  // the receiver's, newer than the last restartpoint's
  // No WAL receiver running.
  s = parseProbeRow({"t", "0/5000310", "off", "", "2", "", "", "", "", ""});
  EXPECT_FALSE(s->receiver);
  EXPECT_EQ(s->timeline, 2u);
  // Only the pid shows (no pg_read_all_stats).
  s = parseProbeRow({"t", "0/5000310", "off", "", "2", "4711", "", "", "", ""});
  ASSERT_TRUE(s->receiver);
  EXPECT_FALSE(s->receiver->visible);
  // A receiver still connecting: no sender yet.
  s = parseProbeRow({"t", "", "off", "", "2", "4711", "waiting", "", "", ""});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->lsn, 0u);
  EXPECT_EQ(s->receiver->sender_port, 0);
}

TEST(Probe, RefusesMalformedRows) {
  EXPECT_FALSE(parseProbeRow({}));
  EXPECT_FALSE(parseProbeRow({"f", "0/1", "off"}));  // an older probe's three columns
  EXPECT_FALSE(parseProbeRow({"x", "0/1", "off", "", "3", "", "", "", "", ""}));
  EXPECT_FALSE(parseProbeRow({"f", "0/1", "off", "", "", "", "", "", "", ""}));
  EXPECT_FALSE(parseProbeRow({"f", "0/1", "off", "", "3x", "", "", "", "", ""}));
}

TEST(Conninfo, QuotesWhatNeedsItAndSetsTheSessionsDeadlines) {
  DbSettings s;
  s.user = "site";
  s.database = "my db";
  s.application_name = "fulcrum-web-01";
  std::string info = conninfoFor(s, {"db-1", "127.0.0.1", 15432}, "p'w\\d");
  EXPECT_EQ(info,
            "host=127.0.0.1 port=15432 user=site dbname='my db' password='p\\'w\\\\d' "
            "application_name=fulcrum-web-01 sslmode=disable gssencmode=disable connect_timeout=2 "
            "keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3 tcp_user_timeout=5000 "
            "options='-c statement_timeout=2500 -c client_connection_check_interval=1000 "
            "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
            "-c tcp_user_timeout=5000'");
  // The server's statement deadline follows the router's longest wait, a little past it.
  s.write_deadline = std::chrono::seconds(4);
  EXPECT_NE(conninfoFor(s, {"db-1", "127.0.0.1", 15432}, "pw").find("-c statement_timeout=4500 "),
            std::string::npos);
}

TEST(Conninfo, UnderInternalTlsPresentsTheCertificateAndNoPassword) {
  DbSettings s;
  s.user = "site";
  s.database = "site";
  s.application_name = "fulcrum-web-01";
  s.tls = pg::ClientTls{"/s/tls/ca.crt", "/s/tls/web-01.crt", "/s/tls/web-01.key"};
  std::string info = conninfoFor(s, {"db-1", "10.0.0.5", 5432}, "unused");
  EXPECT_EQ(
      info.substr(0, info.find(" connect_timeout=")),
      "host=10.0.0.5 port=5432 user=site dbname=site application_name=fulcrum-web-01 sslmode=verify-full "
      "sslrootcert='/s/tls/ca.crt' sslcert='/s/tls/web-01.crt' sslkey='/s/tls/web-01.key' "
      "gssencmode=disable");
  EXPECT_EQ(info.find("password"), std::string::npos);
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

TEST(GuestbookRows, RetryAfterIsWholeSecondsRoundedUp) {
  DbReply reply;
  reply.status = 503;
  for (auto [after, header] : {std::pair{std::chrono::milliseconds(6200), "Retry-After: 7\r\n"},
                               std::pair{std::chrono::milliseconds(8000), "Retry-After: 8\r\n"},
                               std::pair{std::chrono::milliseconds(0), "Retry-After: 1\r\n"}}) {
    http::Response r;
    reply.retry_after = after;
    setDbFailure(r, reply);
    EXPECT_NE(r.headers.find(header), std::string::npos) << r.headers;
  }
}

}  // namespace
}  // namespace fulcrum::web
