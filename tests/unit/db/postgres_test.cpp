// PostgresNode against a real PostgreSQL (see pg_fixture.h). Real time is unavoidable: every
// wait is a bounded poll.
#include "db/postgres.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config/loader.h"
#include "core/address.h"
#include "core/fd.h"
#include "core/socket.h"
#include "db/pg_process.h"
#include "pg_fixture.h"
#include "test_support.h"
#include "tls/site_pki.h"

namespace fulcrum::db {
namespace {

using pg::loadOrCreateSecret;
using pg::slotNameFor;
using testing::freePort;
using testing::waitFor;

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;
using Rows = std::vector<std::vector<std::string>>;

using PostgresTest = testing::PostgresFixture;

TEST_F(PostgresTest, PrimaryAuthFenceCrashAndStop) {
  PostgresNode& node = makeNode("db-01");
  Status initialized = node.initPrimary(app());
  ASSERT_TRUE(initialized.ok) << initialized.error;
  EXPECT_TRUE(node.isRunning());
  EXPECT_GT(node.pid(), 0);

  auto status = node.status();
  ASSERT_TRUE(status.ok) << status.error;
  EXPECT_FALSE(status.value.in_recovery);
  EXPECT_EQ(status.value.timeline, 1u);
  EXPECT_GT(status.value.current_lsn, 0u);
  EXPECT_EQ(status.value.lsn(), status.value.current_lsn);
  EXPECT_FALSE(status.value.read_only);

  // Secrets: generated, 0600; the application role logs in over TCP with its password only.
  struct stat st {};
  ASSERT_EQ(::stat((base_ / "secrets" / "db.password").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto password = loadOrCreateSecret(base_ / "secrets" / "db.password");
  ASSERT_TRUE(password.ok);
  ToolOutput created = psqlTcp(node, "site", password.value, "CREATE TABLE notes (id int PRIMARY KEY)");
  EXPECT_EQ(created.exit_code, 0) << created.err;
  EXPECT_NE(psqlTcp(node, "site", "wrong", "SELECT 1").exit_code, 0);
  ToolOutput superuser = psqlTcp(node, "postgres", "", "SELECT 1");
  EXPECT_NE(superuser.exit_code, 0);
  EXPECT_NE(superuser.err.find("no pg_hba.conf entry"), std::string::npos) << superuser.err;

  // Fence: new sessions are read-only (at once: fence() returns once they are), other sessions
  // are ended (our own on the app database reconnects); unfence lifts it.
  EXPECT_EQ(one(node, "SELECT count(*) FROM notes"), "0");
  ASSERT_TRUE(node.fence().ok);
  EXPECT_TRUE(node.status().value.read_only);
  EXPECT_EQ(one(node, "SELECT current_setting('default_transaction_read_only')"), "on");
  ToolOutput refused = psqlTcp(node, "site", password.value, "INSERT INTO notes VALUES (1)");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("read-only transaction"), std::string::npos) << refused.err;
  ASSERT_TRUE(node.unfence().ok);
  EXPECT_TRUE(waitFor([&] { return !node.status().value.read_only; }, seconds(5)));
  EXPECT_EQ(psqlTcp(node, "site", password.value, "INSERT INTO notes VALUES (1)").exit_code, 0);

  // A dead postmaster is reaped and reported at once; a restart recovers it.
  const pid_t first = node.pid();
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  std::optional<int> exit_status;
  ASSERT_TRUE(waitFor([&] { return (exit_status = node.pollExit()).has_value(); }, seconds(5)));
  EXPECT_TRUE(WIFSIGNALED(*exit_status) && WTERMSIG(*exit_status) == SIGKILL);
  EXPECT_FALSE(node.isRunning());
  EXPECT_EQ(node.pid(), -1);
  // The killed postmaster's backends notice its death and exit on their own; until then the
  // shared memory they hold blocks a restart, so retry a little.
  Status restarted;
  ASSERT_TRUE(waitFor([&] { return (restarted = node.start()).ok; }, seconds(15))) << restarted.error;
  EXPECT_EQ(one(node, "SELECT count(*) FROM notes"), "1");

  ASSERT_TRUE(node.stop(StopMode::Fast).ok);
  EXPECT_FALSE(node.isRunning());
  EXPECT_FALSE(std::filesystem::exists(node.options().data_dir / "postmaster.pid"));
  EXPECT_TRUE(node.stop().ok);  // nothing running: still success
}

TEST_F(PostgresTest, ReplicaPromotionAndRewind) {
  PostgresNode& primary = makeNode("db-01");
  Status initialized = primary.initPrimary(app());
  ASSERT_TRUE(initialized.ok) << initialized.error;
  auto created = primary.query("CREATE TABLE t (id int PRIMARY KEY, v text)", "site");
  ASSERT_TRUE(created.ok) << created.error;
  ASSERT_TRUE(primary.query("INSERT INTO t VALUES (1, 'before clone')", "site").ok);

  PostgresNode& replica = makeNode("db-02");
  Status cloned = replica.cloneReplica(primary.options().listen, slotNameFor("db-02"));
  ASSERT_TRUE(cloned.ok) << cloned.error;
  EXPECT_TRUE(std::filesystem::exists(replica.options().data_dir / "standby.signal"));
  Status started = replica.start();
  ASSERT_TRUE(started.ok) << started.error;

  ASSERT_TRUE(primary.query("INSERT INTO t VALUES (2, 'after clone')", "site").ok);
  EXPECT_TRUE(
      waitFor([&] { return one(replica, "SELECT v FROM t WHERE id = 2") == "after clone"; }, seconds(15)))
      << one(replica, "SELECT v FROM t WHERE id = 2");

  auto primary_status = primary.status();
  ASSERT_TRUE(primary_status.ok);
  PgStatus standby;
  EXPECT_TRUE(waitFor(
      [&] {
        auto s = replica.status();
        standby = s.value;
        return s.ok && s.value.receiver == "streaming" &&
               s.value.replay_lsn >= primary_status.value.current_lsn;
      },
      seconds(15)));
  EXPECT_TRUE(standby.in_recovery);
  EXPECT_EQ(standby.timeline, 1u);
  EXPECT_GE(standby.receive_lsn, standby.replay_lsn);
  EXPECT_EQ(standby.lsn(), standby.replay_lsn);
  auto replicas = primary.replicas();
  ASSERT_TRUE(replicas.ok) << replicas.error;
  ASSERT_EQ(replicas.value.size(), 1u);
  EXPECT_EQ(replicas.value[0].application_name, "db-02");
  EXPECT_EQ(replicas.value[0].state, "streaming");
  EXPECT_EQ(one(primary, "SELECT active FROM pg_replication_slots WHERE slot_name = 'db_02'", "postgres"),
            "t");
  EXPECT_NE(replica.query("INSERT INTO t VALUES (3, 'x')", "site").error.find("read-only"),
            std::string::npos);

  // Failover: the replica is promoted while the old primary still runs and takes one more write
  // (the split brain the agent's fencing prevents): that write must be rewound away.
  Status promoted = replica.promote();
  ASSERT_TRUE(promoted.ok) << promoted.error;
  Status checkpointed = replica.checkpoint();
  ASSERT_TRUE(checkpointed.ok) << checkpointed.error;
  auto new_status = replica.status();
  ASSERT_TRUE(new_status.ok) << new_status.error;
  EXPECT_FALSE(new_status.value.in_recovery);
  EXPECT_EQ(new_status.value.timeline, 2u);
  ASSERT_TRUE(primary.query("INSERT INTO t VALUES (99, 'lost on the old timeline')", "site").ok);
  auto written = replica.query("INSERT INTO t VALUES (3, 'on the new primary')", "site");
  ASSERT_TRUE(written.ok) << written.error;

  // The old primary crashes, is rewound against the new one and follows it.
  ASSERT_TRUE(primary.stop(StopMode::Immediate).ok);
  ASSERT_TRUE(replica.ensureSlot(slotNameFor("db-01")).ok);
  Status rewound = primary.rewind(replica.options().listen);
  ASSERT_TRUE(rewound.ok) << rewound.error;
  Status following = primary.follow(replica.options().listen, slotNameFor("db-01"));
  ASSERT_TRUE(following.ok) << following.error;
  started = primary.start();
  ASSERT_TRUE(started.ok) << started.error;
  EXPECT_TRUE(waitFor([&] { return one(primary, "SELECT v FROM t WHERE id = 3") == "on the new primary"; },
                      seconds(15)))
      << one(primary, "SELECT v FROM t WHERE id = 3");
  EXPECT_EQ(one(primary, "SELECT count(*) FROM t WHERE id = 99"), "0");
  auto old_status = primary.status();
  ASSERT_TRUE(old_status.ok) << old_status.error;
  EXPECT_TRUE(old_status.value.in_recovery);
  EXPECT_TRUE(waitFor([&] { return primary.status().value.receiver == "streaming"; }, seconds(10)));
  EXPECT_EQ(primary.status().value.timeline, 2u);
  auto now_replicas = replica.replicas();
  ASSERT_TRUE(now_replicas.ok);
  ASSERT_EQ(now_replicas.value.size(), 1u);
  EXPECT_EQ(now_replicas.value[0].application_name, "db-01");
}

// The local socket's rule and ident map are the agent's: rewritten at every start, so a cluster
// from an older build (peer without a map) or another node's copy works, TCP rules unchanged.
TEST_F(PostgresTest, AccessFilesRewrittenAtEachStart) {
  PostgresNode& node = makeNode("db-01");
  Status initialized = node.initPrimary(app());
  ASSERT_TRUE(initialized.ok) << initialized.error;
  const std::filesystem::path hba = node.options().data_dir / "pg_hba.conf";
  const std::filesystem::path ident = node.options().data_dir / "pg_ident.conf";
  auto read = [](const std::filesystem::path& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  std::string rules = read(hba);
  EXPECT_NE(rules.find("\nlocal all \"postgres\" peer map=fulcrum\n"), std::string::npos) << rules;
  EXPECT_EQ(rules.find("trust"), std::string::npos) << rules;
  const std::string tcp_rules = rules.substr(rules.find("\nhost "));
  EXPECT_NE(read(ident).find("\nfulcrum \"postgres\" \"postgres\"\n"), std::string::npos) << read(ident);
  if (::geteuid() == 0) {
    EXPECT_NE(read(ident).find("\nfulcrum \"root\" \"postgres\"\n"), std::string::npos) << read(ident);
  }

  // What an older build left: peer without a map, initdb's empty pg_ident.conf.
  ASSERT_TRUE(node.stop().ok);
  ASSERT_TRUE(writeFileAs(node.osUser(), hba, "local all \"postgres\" peer" + tcp_rules, 0600).ok);
  ASSERT_TRUE(writeFileAs(node.osUser(), ident, "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n", 0600).ok);
  Status started = node.start();
  ASSERT_TRUE(started.ok) << started.error;
  EXPECT_EQ(one(node, "SELECT 1", "postgres"), "1");
  EXPECT_EQ(read(hba), rules);
  auto password = loadOrCreateSecret(base_ / "secrets" / "db.password");
  ASSERT_TRUE(password.ok);
  EXPECT_EQ(psqlTcp(node, "site", password.value, "SELECT 1").exit_code, 0);

  // A map that does not admit us: the refusal says why (as root; otherwise we are the OS user).
  if (::geteuid() == 0) {
    ASSERT_TRUE(writeFileAs(node.osUser(), ident, "fulcrum \"postgres\" \"postgres\"\n", 0600).ok);
    ASSERT_TRUE(node.query("SELECT pg_reload_conf()").ok);
    std::string refused;
    EXPECT_TRUE(
        waitFor([&] { return (refused = node.query("SELECT 1", "template1").error) != ""; }, seconds(5)));
    EXPECT_NE(refused.find("Peer authentication failed"), std::string::npos) << refused;
    EXPECT_NE(refused.find("map 'fulcrum'"), std::string::npos) << refused;
  }
}

// [security] internal_tls: certificates from the site CA (tls/site_pki.h) for two db nodes; the
// site file exists only to name them and their addresses.
config::Site tlsSite(const std::filesystem::path& base, const std::vector<PostgresOptions>& nodes) {
  std::string text = "[site]\nname = \"t\"\nstate_dir = \"state\"\n[security]\ninternal_tls = true\n";
  for (const PostgresOptions& n : nodes) {
    text += "[[db.node]]\nname = \"" + n.node + "\"\npg = \"" + n.listen.toString() +
            "\"\nagent = \"127.0.0.1:" + std::to_string(freePort()) + "\"\n";
  }
  text += "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\nmanaged = false\n";
  config::LoadResult loaded = config::loadSiteString(text, base / "site.toml");
  EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors[0].toString());
  return loaded.site;
}

TEST_F(PostgresTest, InternalTlsTakesCertificatesOnlyAndReplicatesOverTls) {
  std::vector<PostgresOptions> options = {nodeOptions("db-01"), nodeOptions("db-02")};
  const config::Site site = tlsSite(base_, options);
  auto issued = tls::ensureSiteCertificates(site);
  ASSERT_TRUE(issued.ok) << issued.error;
  for (PostgresOptions& o : options) {
    auto own = tls::nodeTls(site, o.node);
    ASSERT_TRUE(own.ok) << own.error;
    o.tls = ServerTls{own.value.ca_cert, own.value.cert,    own.value.key, "site", "site",
                      {"web-01"},        {"db-01", "db-02"}};
  }
  PostgresNode& primary = addNode(options[0]);
  Status initialized = primary.initPrimary(app());
  ASSERT_TRUE(initialized.ok) << initialized.error;
  auto read = [](const std::filesystem::path& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::filesystem::path hba = primary.options().data_dir / "pg_hba.conf";
  const std::string rules = read(hba);
  EXPECT_NE(rules.find("\nhostssl \"site\" \"site\" 0.0.0.0/0 cert map=fulcrum_cert\n"), std::string::npos)
      << rules;
  EXPECT_EQ(rules.find("\nhost "), std::string::npos) << rules;
  const std::string ident = read(primary.options().data_dir / "pg_ident.conf");
  EXPECT_NE(ident.find("\nfulcrum_cert \"web-01\" \"site\"\n"), std::string::npos) << ident;
  EXPECT_NE(ident.find("\nfulcrum_cert \"db-02\" \"replicator\"\n"), std::string::npos) << ident;
  // The server's key is its own copy, private to the postgres user.
  struct stat key {};
  ASSERT_EQ(::stat((primary.options().run_dir / "tls" / "node.key").c_str(), &key), 0);
  EXPECT_EQ(key.st_uid, primary.osUser().uid);
  EXPECT_EQ(key.st_mode & 0777, 0600u);

  // The password is never asked for: without a certificate, no login.
  auto password = loadOrCreateSecret(base_ / "secrets" / "db.password");
  ASSERT_TRUE(password.ok);
  ToolOutput refused = psqlTcp(primary, "site", password.value, "SELECT 1");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("connection requires a valid client certificate"), std::string::npos)
      << refused.err;

  // A clone, its WAL stream and a rewind: each a TLS client with the node's certificate.
  ASSERT_TRUE(primary.query("CREATE TABLE t (v text)", "site").ok);
  PostgresNode& replica = addNode(options[1]);
  Status cloned = replica.cloneReplica(primary.options().listen, slotNameFor("db-02"));
  ASSERT_TRUE(cloned.ok) << cloned.error;
  Status started = replica.start();
  ASSERT_TRUE(started.ok) << started.error;
  const std::string stream_sql =
      "SELECT s.ssl, s.client_dn LIKE '%/CN=db-02' FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid)"
      " WHERE r.application_name = 'db-02' AND r.state = 'streaming'";
  EXPECT_TRUE(waitFor(
      [&] {
        return primary.query(stream_sql).value == Rows{{"t", "t"}};
      },
      seconds(15)))
      << one(primary, stream_sql, "postgres");
  ASSERT_TRUE(primary.stop().ok);
  ASSERT_TRUE(replica.promote().ok);
  ASSERT_TRUE(replica.checkpoint().ok);
  ASSERT_TRUE(replica.query("INSERT INTO t VALUES ('on the new timeline')", "site").ok);
  Status rewound = primary.rewind(replica.options().listen);
  ASSERT_TRUE(rewound.ok) << rewound.error;
  ASSERT_TRUE(primary.follow(replica.options().listen, slotNameFor("db-01")).ok);
  ASSERT_TRUE(replica.ensureSlot(slotNameFor("db-01")).ok);
  started = primary.start();
  ASSERT_TRUE(started.ok) << started.error;
  EXPECT_TRUE(waitFor([&] { return one(primary, "SELECT v FROM t") == "on the new timeline"; }, seconds(15)))
      << one(primary, "SELECT v FROM t");

  // internal_tls off again: the password rules are back at the next start.
  ASSERT_TRUE(replica.stop().ok);
  PostgresOptions plain = options[1];
  plain.tls.reset();
  nodes_.pop_back();
  PostgresNode& again = addNode(plain);
  started = again.start();
  ASSERT_TRUE(started.ok) << started.error;
  EXPECT_NE(read(again.options().data_dir / "pg_hba.conf")
                .find("\nhost \"site\" \"site\" 0.0.0.0/0 scram-sha-256\n"),
            std::string::npos);
  EXPECT_EQ(psqlTcp(again, "site", password.value, "SELECT 1").exit_code, 0);
}

TEST_F(PostgresTest, RefusesUnreachableDataDirAndMissingCluster) {
  std::filesystem::path hidden = base_ / "hidden";
  std::filesystem::create_directories(hidden);
  ASSERT_EQ(::chmod(hidden.c_str(), 0700), 0);
  PostgresOptions options;
  options.node = "db-03";
  options.bin_dir = bin_;
  options.data_dir = hidden / "data";
  options.run_dir = base_ / "run3";
  options.listen = *core::SocketAddress::parse("127.0.0.1:1");
  PostgresNode node(options);
  if (::geteuid() == 0) {
    EXPECT_NE(node.initError().find("not searchable by OS user postgres"), std::string::npos)
        << node.initError();
  }
  options.data_dir = base_ / "empty";
  PostgresNode empty(options);
  EXPECT_EQ(empty.initError(), "");
  EXPECT_FALSE(empty.initialized());
  EXPECT_NE(empty.start().error.find("holds no cluster"), std::string::npos);
}

}  // namespace
}  // namespace fulcrum::db
