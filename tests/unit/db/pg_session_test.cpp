// PgSession against a real PostgreSQL (see pg_fixture.h): answers, errors, deadlines that hold
// while the server is frozen (SIGSTOP), and reconnecting after the server restarts.
#include "db/pg_session.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <string>
#include <vector>

#include "pg_fixture.h"
#include "test_support.h"

namespace fulcrum::db {
namespace {

using testing::waitFor;

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

class PgSessionTest : public testing::PostgresFixture {
 protected:
  // A running primary and a session on its local socket as the superuser.
  void SetUp() override {
    PostgresFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    node_ = &makeNode("db-01");
    Status initialized = node_->initPrimary(app());
    ASSERT_TRUE(initialized.ok) << initialized.error;
  }

  void TearDown() override {
    for (pid_t frozen : frozen_) {
      ::kill(frozen, SIGCONT);  // whatever a failed assertion left stopped
    }
    PostgresFixture::TearDown();
  }

  std::vector<std::pair<std::string, std::string>> params(const std::string& user = "postgres") const {
    return {{"host", node_->options().run_dir.string()},
            {"port", std::to_string(node_->options().listen.port())},
            {"user", user},
            {"dbname", "postgres"},
            {"application_name", "pg-session-test"}};
  }

  void freeze(pid_t pid) {
    frozen_.push_back(pid);
    ASSERT_EQ(::kill(pid, SIGSTOP), 0);
  }

  static milliseconds since(SteadyClock::time_point start) {
    return std::chrono::duration_cast<milliseconds>(SteadyClock::now() - start);
  }

  PostgresNode* node_ = nullptr;
  std::vector<pid_t> frozen_;
};

TEST_F(PgSessionTest, RowsErrorsAndOneStatementPerCall) {
  PgSession session(params());
  EXPECT_FALSE(session.connected());
  auto rows = session.query("SELECT 1, NULL::text, 'a b' UNION ALL SELECT 2, 'x', ''", milliseconds(5000));
  ASSERT_TRUE(rows.ok) << rows.error;
  EXPECT_EQ(rows.value, (PgRows{{"1", "", "a b"}, {"2", "x", ""}}));
  const int backend = session.backendPid();
  EXPECT_GT(backend, 0);

  auto command = session.query("CREATE TABLE t (id int)", milliseconds(5000));
  ASSERT_TRUE(command.ok) << command.error;
  EXPECT_TRUE(command.value.empty());

  // The server's primary message; the connection stays and keeps working.
  auto missing = session.query("SELECT * FROM missing", milliseconds(5000));
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.error, "relation \"missing\" does not exist");
  auto multiple = session.query("SELECT 1; SELECT 2", milliseconds(5000));
  EXPECT_FALSE(multiple.ok);
  EXPECT_NE(multiple.error.find("multiple commands"), std::string::npos) << multiple.error;
  EXPECT_EQ(session.backendPid(), backend);

  // 90% of each call's timeout is the session's statement_timeout (a SET when it differs).
  EXPECT_EQ(session.query("SHOW statement_timeout", milliseconds(5000)).value, (PgRows{{"4500ms"}}));
  EXPECT_EQ(session.query("SHOW statement_timeout", milliseconds(4000)).value, (PgRows{{"3600ms"}}));

  // A transaction left open is not carried into the next call.
  ASSERT_TRUE(session.query("BEGIN", milliseconds(5000)).ok);
  EXPECT_FALSE(session.connected());
  EXPECT_EQ(session.query("SELECT count(*) FROM t", milliseconds(5000)).value, (PgRows{{"0"}}));
}

TEST_F(PgSessionTest, ConnectionErrorsSayWhy) {
  // The local socket admits only the superuser.
  PgSession app_user(params("site"));
  auto refused = app_user.query("SELECT 1", milliseconds(5000));
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.error.find("no pg_hba.conf entry"), std::string::npos) << refused.error;
  EXPECT_FALSE(app_user.connected());

  auto no_server = params();
  no_server[1].second = std::to_string(testing::freePort());
  PgSession nowhere(no_server);
  auto absent = nowhere.query("SELECT 1", milliseconds(5000));
  EXPECT_FALSE(absent.ok);
  EXPECT_NE(absent.error.find("No such file or directory"), std::string::npos) << absent.error;
}

TEST_F(PgSessionTest, DeadlinesHoldAgainstAFrozenServer) {
  PgSession session(params());
  ASSERT_TRUE(session.query("SELECT 1", milliseconds(5000)).ok);
  const pid_t backend = session.backendPid();

  // A frozen backend: the call fails at its deadline, and the connection is dropped.
  freeze(backend);
  auto start = SteadyClock::now();
  auto frozen = session.query("SELECT 2", milliseconds(300));
  milliseconds took = since(start);
  EXPECT_FALSE(frozen.ok);
  EXPECT_EQ(frozen.error, "query timed out after 300 ms");
  EXPECT_GE(took, milliseconds(300));
  EXPECT_LT(took, milliseconds(1500));
  EXPECT_FALSE(session.connected());

  // The whole server frozen: the cancel request cannot be answered, connecting cannot finish;
  // each call still returns at its deadline.
  ASSERT_TRUE(session.query("SELECT 1", milliseconds(5000)).ok);
  const pid_t second = session.backendPid();
  freeze(second);
  freeze(node_->pid());
  start = SteadyClock::now();
  EXPECT_EQ(session.query("SELECT 3", milliseconds(300)).error, "query timed out after 300 ms");
  EXPECT_LT(since(start), milliseconds(1500));
  start = SteadyClock::now();
  EXPECT_EQ(session.query("SELECT 4", milliseconds(300)).error, "connecting timed out after 300 ms");
  EXPECT_LT(since(start), milliseconds(1500));

  for (pid_t pid : {node_->pid(), second, backend}) {
    ASSERT_EQ(::kill(pid, SIGCONT), 0);
  }
  frozen_.clear();
  auto rows = session.query("SELECT 5", milliseconds(5000));
  ASSERT_TRUE(rows.ok) << rows.error;
  EXPECT_EQ(rows.value, (PgRows{{"5"}}));
  // The abandoned backends do not linger: cancelled, or they find their client gone.
  EXPECT_TRUE(waitFor(
      [&] {
        auto left = session.query("SELECT count(*) FROM pg_stat_activity WHERE pid IN (" +
                                      std::to_string(backend) + ", " + std::to_string(second) + ")",
                                  milliseconds(5000));
        return left.ok && left.value == PgRows{{"0"}};
      },
      seconds(10)));

  // The server's own statement_timeout ends a statement that runs too long, just before the
  // client's deadline: the connection stays.
  const int kept = session.backendPid();
  start = SteadyClock::now();
  auto slow = session.query("SELECT pg_sleep(5)", milliseconds(1000));
  EXPECT_LT(since(start), milliseconds(2000));
  EXPECT_EQ(slow.error, "canceling statement due to statement timeout");
  EXPECT_EQ(session.backendPid(), kept);
}

TEST_F(PgSessionTest, ReconnectsAfterRestartAndTermination) {
  PgSession session(params());
  PgSession other(params());
  ASSERT_TRUE(session.query("SELECT 1", milliseconds(5000)).ok);
  const int first = session.backendPid();

  // Terminated while idle: the next call notices before sending and reconnects.
  auto terminated =
      other.query("SELECT pg_terminate_backend(" + std::to_string(first) + ")", milliseconds(5000));
  ASSERT_TRUE(terminated.ok) << terminated.error;
  ASSERT_TRUE(waitFor(
      [&] {
        return other
                   .query("SELECT count(*) FROM pg_stat_activity WHERE pid = " + std::to_string(first),
                          milliseconds(5000))
                   .value == PgRows{{"0"}};
      },
      seconds(10)));
  auto again = session.query("SELECT 2", milliseconds(5000));
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_NE(session.backendPid(), first);

  // The server restarted under a connected session.
  ASSERT_TRUE(node_->stop(StopMode::Fast).ok);
  auto down = session.query("SELECT 3", milliseconds(2000));
  EXPECT_FALSE(down.ok);
  EXPECT_FALSE(session.connected());
  Status started = node_->start();
  ASSERT_TRUE(started.ok) << started.error;
  auto up = session.query("SELECT 4", milliseconds(5000));
  ASSERT_TRUE(up.ok) << up.error;
  EXPECT_EQ(up.value, (PgRows{{"4"}}));
}

}  // namespace
}  // namespace fulcrum::db
