// The fence that holds without the agent, against a real PostgreSQL preloading fulcrum_fence.so
// (see pg_fixture.h): past the deadline in the fence file, no write commits, and the server
// stops itself; also when the whole server was frozen across the deadline. Real time is
// unavoidable here (the deadline is the server's clocks'): every wait is bounded.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "db/fence_file.h"
#include "db/postgres.h"
#include "pg_fixture.h"
#include "test_support.h"

namespace fulcrum::db {
namespace {

using testing::waitFor;

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

// One statement's outcome on a client connection.
struct Outcome {
  bool ok = false;
  std::string sqlstate;  // "" when the connection failed rather than the statement
  std::string message;
  std::string value;  // first field of the first row
};

// A plain libpq client (blocking calls: each server it talks to is running or gone, never
// frozen, when the test sends).
class Client {
 public:
  explicit Client(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);  // warnings: not the test's output
  }
  ~Client() { PQfinish(conn_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return PQstatus(conn_) == CONNECTION_OK; }
  std::string error() const { return PQerrorMessage(conn_); }
  int backendPid() const { return PQbackendPID(conn_); }
  PGconn* get() { return conn_; }

  Outcome exec(const std::string& sql) { return take(PQexec(conn_, sql.c_str())); }

  // The outcome of a statement sent with PQsendQuery: its last result.
  Outcome finish() {
    Outcome last;
    last.message = "no result";
    while (PGresult* result = PQgetResult(conn_)) {
      last = take(result);
    }
    return last;
  }

 private:
  Outcome take(PGresult* result) {
    Outcome out;
    const ExecStatusType status = PQresultStatus(result);
    out.ok = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
    if (const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE)) {
      out.sqlstate = state;
    }
    out.message = result != nullptr ? PQresultErrorMessage(result) : PQerrorMessage(conn_);
    if (out.message.empty()) {
      out.message = PQerrorMessage(conn_);
    }
    if (status == PGRES_TUPLES_OK && PQntuples(result) > 0) {
      out.value = PQgetvalue(result, 0, 0);
    }
    PQclear(result);
    return out;
  }

  PGconn* conn_;
};

// Direct children of `parent` (every PostgreSQL process is the postmaster's child).
std::vector<pid_t> childrenOf(pid_t parent) {
  std::vector<pid_t> children;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::ifstream in(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const size_t close = stat.rfind(')');
    char state = 0;
    int ppid = 0;
    if (close != std::string::npos && std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) == 2 &&
        ppid == parent) {
      children.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return children;
}

std::string commandLine(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The fence's background worker ("postgres: <cluster>: fulcrum fence").
std::optional<pid_t> fenceWorker(pid_t postmaster) {
  for (pid_t child : childrenOf(postmaster)) {
    if (commandLine(child).find("fulcrum fence") != std::string::npos) {
      return child;
    }
  }
  return std::nullopt;
}

std::string readFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

double millisSince(SteadyClock::time_point start) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
}

class FenceTest : public testing::PostgresFixture {
 protected:
  // A primary preloading the fence library, bootstrapped within an armed window and then armed
  // for a minute; `table` created in the application database.
  PostgresNode& fencedPrimary(const std::string& name,
                              std::vector<std::pair<std::string, std::string>> settings = {}) {
    const std::filesystem::path dir = base_ / name;
    std::filesystem::create_directories(dir);
    auto fence = FenceFile::open(dir / "fence");
    EXPECT_TRUE(fence.ok) << fence.error;
    fence_ = std::move(fence.value);
    PostgresOptions options = nodeOptions(name);
    options.fence_library = dir / "fulcrum_fence.so";
    options.fence_file = dir / "fence";
    options.settings.insert(options.settings.end(), settings.begin(), settings.end());
    PostgresNode& node = addNode(options);
    fence_->arm(SteadyClock::now() + node.bootstrapBound());
    Status initialized = node.initPrimary(app());
    EXPECT_TRUE(initialized.ok) << initialized.error;
    fence_->arm(SteadyClock::now() + seconds(60));
    auto made = node.query("CREATE TABLE t (v int)", "site");
    EXPECT_TRUE(made.ok) << made.error;
    return node;
  }

  // The local superuser on the application database (peer authentication, as the agent).
  std::string conninfo(PostgresNode& node) const {
    return "host=" + node.options().run_dir.string() +
           " port=" + std::to_string(node.options().listen.port()) + " user=" + node.superuser() +
           " dbname=site connect_timeout=5";
  }

  std::unique_ptr<FenceFile> fence_;
};

TEST_F(FenceTest, PastTheDeadlineNoWriteCommitsAndTheServerStops) {
  PostgresNode& node = fencedPrimary("db-01", {{"max_prepared_transactions", "2"}});
  Client open(conninfo(node));
  ASSERT_TRUE(open.connected()) << open.error();

  // Before the deadline: writes commit, the fence reads "off" in any session.
  EXPECT_TRUE(open.exec("INSERT INTO t VALUES (1)").ok);
  EXPECT_EQ(open.exec("SELECT current_setting('fulcrum.fenced', true)").value, "off");
  EXPECT_EQ(open.exec("SHOW fulcrum.fence_file").value, (base_ / "db-01" / "fence").string());
  EXPECT_TRUE(open.exec("BEGIN").ok);
  EXPECT_TRUE(open.exec("INSERT INTO t VALUES (2)").ok);
  Outcome prepared = open.exec("PREPARE TRANSACTION 'before'");
  EXPECT_TRUE(prepared.ok) << prepared.message;

  // Freeze the background worker, so the server stays up while the refusals are checked.
  std::optional<pid_t> worker;
  ASSERT_TRUE(waitFor([&] { return (worker = fenceWorker(node.pid())).has_value(); }, seconds(10)));
  ASSERT_EQ(::kill(*worker, SIGSTOP), 0);

  // A file that is not a fence file (here: another magic) fences: fail closed.
  {
    std::fstream file(base_ / "db-01" / "fence", std::ios::in | std::ios::out | std::ios::binary);
    file.write("NOTFENCE", 8);
  }
  EXPECT_EQ(open.exec("SELECT current_setting('fulcrum.fenced')").value, "on");
  {
    std::fstream file(base_ / "db-01" / "fence", std::ios::in | std::ios::out | std::ios::binary);
    file.write("FULCRFN1", 8);
  }
  EXPECT_EQ(open.exec("SELECT current_setting('fulcrum.fenced')").value, "off");

  fence_->arm(SteadyClock::now() - milliseconds(1));
  Outcome refused = open.exec("INSERT INTO t VALUES (3)");
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.sqlstate, "25006") << refused.message;
  EXPECT_NE(refused.message.find("leader lease has expired"), std::string::npos) << refused.message;
  EXPECT_EQ(open.exec("SELECT current_setting('fulcrum.fenced', true)").value, "on");
  Outcome read = open.exec("SELECT count(*) FROM t");  // reads are not refused
  EXPECT_TRUE(read.ok) << read.message;
  EXPECT_EQ(read.value, "1");
  Outcome commit_prepared = open.exec("COMMIT PREPARED 'before'");
  EXPECT_FALSE(commit_prepared.ok);
  EXPECT_EQ(commit_prepared.sqlstate, "25006") << commit_prepared.message;
  EXPECT_TRUE(open.exec("BEGIN").ok);
  EXPECT_TRUE(open.exec("INSERT INTO t VALUES (4)").ok);
  Outcome prepare = open.exec("PREPARE TRANSACTION 'after'");
  EXPECT_FALSE(prepare.ok);
  EXPECT_EQ(prepare.sqlstate, "25006") << prepare.message;
  Client fresh(conninfo(node));  // a session opened after the deadline
  ASSERT_TRUE(fresh.connected()) << fresh.error();
  Outcome fresh_insert = fresh.exec("INSERT INTO t VALUES (5)");
  EXPECT_EQ(fresh_insert.sqlstate, "25006") << fresh_insert.message;
  EXPECT_EQ(open.exec("SELECT count(*) FROM t").value, "1");

  // The worker, thawed, finds the deadline past and stops the server (immediate shutdown).
  const auto thawed = SteadyClock::now();
  ASSERT_EQ(::kill(*worker, SIGCONT), 0);
  ASSERT_TRUE(waitFor([&] { return !node.isRunning(); }, seconds(10)));
  std::printf("server gone %.0f ms after its fence worker was thawed past the deadline\n",
              millisSince(thawed));
  EXPECT_NE(readFile(node.logFile())
                .find("fulcrum fence: this node's leader lease has expired: immediate shutdown"),
            std::string::npos);

  // Untouched, the worker stops the server at the deadline itself.
  fence_->arm(SteadyClock::now() + seconds(60));
  Status restarted = node.start();  // crash recovery: the last stop was immediate
  ASSERT_TRUE(restarted.ok) << restarted.error;
  ASSERT_TRUE(waitFor([&] { return fenceWorker(node.pid()).has_value(); }, seconds(10)));
  // (1.5 s ahead: the worker rereads the file at least every second, so it has read this
  // deadline before it and wakes at it, as it would for an agent frozen after a renewal.)
  const auto deadline = SteadyClock::now() + milliseconds(1500);
  fence_->arm(deadline);
  ASSERT_TRUE(waitFor([&] { return !node.isRunning(); }, seconds(10)));
  const double late = std::chrono::duration<double, std::milli>(SteadyClock::now() - deadline).count();
  EXPECT_GE(late, 0.0);
  std::printf("server gone %.0f ms after the deadline (postmaster reaped, 20 ms polls)\n", late);
}

TEST_F(FenceTest, CommitFlushedAfterTheDeadlineIsNotAcknowledged) {
  // A commit waits for a synchronous standby that never comes: its record is flushed, then the
  // deadline passes, then the wait is cancelled and the commit completes. Without the fence the
  // client would get COMMIT (with a warning); with it, the connection is closed instead.
  PostgresNode& node = fencedPrimary("db-01");
  ASSERT_TRUE(node.setSynchronousStandbys("nobody").ok);
  Client control(conninfo(node));
  ASSERT_TRUE(control.connected()) << control.error();
  std::optional<pid_t> worker;
  ASSERT_TRUE(waitFor([&] { return (worker = fenceWorker(node.pid())).has_value(); }, seconds(10)));

  std::unique_ptr<Client> writer;
  bool waiting = false;
  int value = 0;
  // The reload reaches the backends and the checkpointer a moment apart: try until one waits.
  for (int attempt = 0; attempt < 20 && !waiting; ++attempt) {
    writer = std::make_unique<Client>(conninfo(node));
    ASSERT_TRUE(writer->connected()) << writer->error();
    value = 100 + attempt;
    ASSERT_EQ(PQsendQuery(writer->get(), ("INSERT INTO t VALUES (" + std::to_string(value) + ")").c_str()),
              1);
    const std::string pid = std::to_string(writer->backendPid());
    waiting = waitFor(
        [&] {
          return control.exec("SELECT wait_event FROM pg_stat_activity WHERE pid = " + pid).value ==
                 "SyncRep";
        },
        seconds(2));
    if (!waiting) {
      writer->finish();  // committed without waiting: the next attempt inserts another value
    }
  }
  ASSERT_TRUE(waiting) << "no commit waited for the synchronous standby";

  ASSERT_EQ(::kill(*worker, SIGSTOP), 0);  // keep the server up past the deadline
  fence_->arm(SteadyClock::now() - milliseconds(1));
  Outcome cancelled = control.exec("SELECT pg_cancel_backend(" + std::to_string(writer->backendPid()) + ")");
  EXPECT_EQ(cancelled.value, "t") << cancelled.message;
  Outcome commit = writer->finish();
  EXPECT_FALSE(commit.ok) << "the commit was acknowledged after the deadline";
  EXPECT_EQ(commit.sqlstate, "") << commit.message;  // a lost connection, not a statement error
  EXPECT_EQ(PQstatus(writer->get()), CONNECTION_BAD) << commit.message;
  // The row did commit (its record was flushed before the deadline passed): only unacknowledged.
  EXPECT_EQ(control.exec("SELECT count(*) FROM t WHERE v = " + std::to_string(value)).value, "1");
  // The backend writes its warning just after it closed the client's socket: the client may see
  // the closed connection first.
  EXPECT_TRUE(waitFor(
      [&] { return readFile(node.logFile()).find("its acknowledgement is withheld") != std::string::npos; },
      seconds(5)));
  ASSERT_EQ(::kill(*worker, SIGCONT), 0);
  EXPECT_TRUE(waitFor([&] { return !node.isRunning(); }, seconds(10)));
}

TEST_F(FenceTest, WholeServerFrozenAcrossTheDeadlineTakesNoWriteAfterTheThaw) {
  PostgresNode& node = fencedPrimary("db-01");
  Client before(conninfo(node));
  ASSERT_TRUE(before.connected()) << before.error();
  ASSERT_TRUE(before.exec("INSERT INTO t VALUES (1)").ok);
  ASSERT_TRUE(waitFor([&] { return fenceWorker(node.pid()).has_value(); }, seconds(10)));

  // The deadline a second ahead; then every process of the server stops (the postmaster first,
  // so it forks nothing meanwhile), as a paused VM or a SIGSTOP of the whole node would.
  const auto deadline = SteadyClock::now() + seconds(1);
  fence_->arm(deadline);
  const pid_t postmaster = node.pid();
  ASSERT_EQ(::kill(postmaster, SIGSTOP), 0);
  const std::vector<pid_t> children = childrenOf(postmaster);
  ASSERT_GE(children.size(), 5u);  // checkpointer, writers, launchers, the fence worker, our backend
  for (pid_t child : children) {
    ::kill(child, SIGSTOP);
  }
  // The server is frozen: nothing to poll. Wait out the deadline (and some), as the frozen node would.
  std::this_thread::sleep_until(deadline + milliseconds(500));
  for (pid_t child : children) {
    ::kill(child, SIGCONT);
  }
  ::kill(postmaster, SIGCONT);

  // Thawed: a write on the connection opened before the freeze fails, and so does one on a new
  // connection (or the connection itself, once the server is gone).
  Outcome old_session = before.exec("INSERT INTO t VALUES (2)");
  EXPECT_FALSE(old_session.ok) << "a write committed after the thaw";
  std::printf("after the thaw, the old session's write: %s", old_session.message.c_str());
  if (!old_session.sqlstate.empty()) {
    EXPECT_EQ(old_session.sqlstate, "25006") << old_session.message;
  }
  Client after(conninfo(node));
  if (after.connected()) {
    Outcome new_session = after.exec("INSERT INTO t VALUES (3)");
    EXPECT_FALSE(new_session.ok) << "a write committed after the thaw";
    std::printf("after the thaw, a new session's write: %s", new_session.message.c_str());
  } else {
    std::printf("after the thaw, a new session could not connect: %s", after.error().c_str());
  }
  const auto thawed = SteadyClock::now();
  ASSERT_TRUE(waitFor([&] { return !node.isRunning(); }, seconds(10)));
  std::printf("server gone %.0f ms after the checks that followed the thaw\n", millisSince(thawed));

  // Restarted (fenced far ahead again): only the row written before the freeze is there.
  fence_->arm(SteadyClock::now() + seconds(60));
  ASSERT_TRUE(node.start().ok);
  EXPECT_EQ(one(node, "SELECT string_agg(v::text, ',') FROM t"), "1");
}

}  // namespace
}  // namespace fulcrum::db
