// PostgresNode against a real PostgreSQL (Debian's postgresql package), on free loopback ports,
// with every node's data under a fresh directory in /tmp (searchable by the postgres user, which
// runs the servers when the tests run as root). Skipped, with a message, when PostgreSQL or its
// OS user is missing. Real time is unavoidable: every wait is a bounded poll.
#include "db/postgres.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/address.h"
#include "core/fd.h"
#include "core/socket.h"
#include "db/pg_process.h"
#include "test_support.h"

namespace fulcrum::db {
namespace {

using testing::freePort;
using testing::waitFor;

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;
using Rows = std::vector<std::vector<std::string>>;

class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto bin = findPgBin("");
    if (!bin.ok) {
      GTEST_SKIP() << "PostgreSQL not installed: " << bin.error;
    }
    bin_ = bin.value;
    auto user = resolveOsUser("postgres");
    if (!user.ok) {
      GTEST_SKIP() << "no PostgreSQL OS user: " << user.error;
    }
    char tmpl[] = "/tmp/fulcrum-pg-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    ASSERT_EQ(::chmod(base_.c_str(), 0755), 0);  // postgres must traverse it
  }

  void TearDown() override {
    nodes_.clear();  // each destructor stops (and if need be kills and reaps) its postmaster
    if (!base_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(base_, ignored);
    }
  }

  PostgresNode& makeNode(const std::string& name) {
    PostgresOptions options;
    options.node = name;
    options.bin_dir = bin_;
    options.data_dir = base_ / name / "data";
    options.run_dir = base_ / name / "run";
    options.listen = *core::SocketAddress::parse("127.0.0.1:" + std::to_string(freePort()));
    options.replication_password_file = base_ / "secrets" / "replication.password";
    options.durable = false;
    options.settings = {{"fsync", "off"}, {"shared_buffers", "16MB"}, {"max_connections", "20"}};
    options.tool_timeout = milliseconds(30000);
    options.start_timeout = milliseconds(30000);
    options.stop_timeout = milliseconds(10000);
    nodes_.push_back(std::make_unique<PostgresNode>(options));
    EXPECT_EQ(nodes_.back()->initError(), "");
    return *nodes_.back();
  }

  AppDatabase app() const {
    AppDatabase app;
    app.database = "site";
    app.user = "site";
    app.password_file = base_ / "secrets" / "db.password";
    return app;
  }

  // psql over TCP as `user`, with the password from a .pgpass file (as a client would connect).
  ToolOutput psqlTcp(PostgresNode& node, const std::string& user, const std::string& password,
                     const std::string& sql) {
    std::filesystem::path pass = base_ / ("pgpass-" + user);
    EXPECT_TRUE(writeFileAs(node.osUser(), pass,
                            "*:*:*:" + pgpassField(user) + ":" + pgpassField(password) + "\n", 0600)
                    .ok);
    ToolRun run;
    run.argv = {node.program("psql").string(),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "host=127.0.0.1 port=" + std::to_string(node.options().listen.port()) + " user=" + user +
                    " dbname=site passfile=" + pass.string() + " connect_timeout=5",
                "-c",
                sql};
    run.timeout = milliseconds(10000);
    auto output = runTool(node.osUser(), run);
    EXPECT_TRUE(output.ok) << output.error;
    return output.value;
  }

  static std::string one(PostgresNode& node, const std::string& sql, const std::string& db = "site") {
    auto rows = node.query(sql, db);
    if (!rows.ok || rows.value.size() != 1 || rows.value[0].size() != 1) {
      return "<" + (rows.ok ? std::to_string(rows.value.size()) + " rows" : rows.error) + ">";
    }
    return rows.value[0][0];
  }

  std::filesystem::path bin_;
  std::filesystem::path base_;
  std::vector<std::unique_ptr<PostgresNode>> nodes_;
};

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

  // Fence: new sessions are read-only; unfence lifts it.
  ASSERT_TRUE(node.fence().ok);
  EXPECT_TRUE(node.status().value.read_only);
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
