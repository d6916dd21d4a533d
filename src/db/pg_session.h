#pragma once
// One libpq connection for the database agent's control thread: a statement per call, each
// answered or failed within its deadline.
//
// Why not a blocking PQexec: the agent must keep its fence deadline even when the server is
// frozen (SIGSTOP, a hung disk), and libpq's blocking calls wait forever. Every step here uses
// libpq's asynchronous API (PQconnectStartParams/PQconnectPoll, PQsendQueryParams,
// PQconsumeInput/PQisBusy) and poll() on the connection's socket until a steady-clock deadline.
// On timeout the running statement is cancelled (best effort, see below) and the connection
// dropped: the call fails with "... timed out after N ms" and the next call reconnects.
//
// The deadline also holds on the server: the session's statement_timeout is 90% of the call's
// timeout (set at connect, or with one SET when a call's timeout differs from the last), so a
// long statement usually ends with the server's error and the connection kept, and one the
// client gave up on does not run on. Abandoned backends also notice the closed
// socket (client_connection_check_interval).
//
// Reuse: the connection stays open between calls (the agent's status query costs one round
// trip). A backend that ended while idle (server restart, pg_terminate_backend) has left its
// FATAL message and/or EOF on the socket: the next call reads them before sending, and
// reconnects instead of failing. A connection-level error during a call fails that call and drops the
// connection.
//
// One statement per call: the extended query protocol refuses several, so a statement never
// shares an implicit transaction with another (ALTER SYSTEM, CREATE DATABASE need their own).
//
// Not thread-safe: one owner thread.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "db/result.h"
#include "pg/connection_policy.h"

struct pg_conn;

namespace fulcrum::db {

// Rows of text fields; NULL reads as "".
using PgRows = std::vector<std::vector<std::string>>;

class PgSession {
 public:
  // libpq connection keywords and values: host (a socket directory or address), port, user,
  // dbname, application_name, ... The connection policy every session shares is added
  // (pg/connection_policy.h). Nothing connects until the first query().
  explicit PgSession(pg::ConnParams params);
  ~PgSession();
  PgSession(const PgSession&) = delete;
  PgSession& operator=(const PgSession&) = delete;

  // Runs one statement and returns its rows (none for a command). Errors: the server's primary
  // message ("relation \"x\" does not exist"), libpq's reason for a failed connection, or
  // "timed out after N ms" (connecting and running together took longer than `timeout`).
  Result<PgRows> query(std::string_view sql, std::chrono::milliseconds timeout);

  // Closes the connection (if any): the next query() connects afresh. The owner calls this
  // when the server stops, so nothing talks to a postmaster that is gone.
  void disconnect();
  bool connected() const { return conn_ != nullptr; }
  // The server process serving this connection, 0 when not connected (tests freeze it).
  int backendPid() const;

 private:
  using Deadline = std::chrono::steady_clock::time_point;
  Status connect(Deadline deadline, std::chrono::milliseconds timeout);
  // Waits until the socket is ready for `events` (POLLIN/POLLOUT) or the deadline passes.
  // Its failure says "<what> timed out after N ms".
  Status waitSocket(short events, Deadline deadline, std::chrono::milliseconds timeout,
                    std::string_view what);
  Result<PgRows> run(const std::string& sql, Deadline deadline, std::chrono::milliseconds timeout);
  // Reads what arrived while idle; false when the connection is no longer usable.
  bool stillUsable();
  // The statement did not finish in time: ask the server to cancel it, and drop the connection.
  void abandon();

  pg::ConnParams params_;
  pg_conn* conn_ = nullptr;
  std::chrono::milliseconds statement_timeout_{0};  // the connection's current setting
  bool server_quit_ = false;                        // the backend said FATAL while we were idle
  // Set while a cancel request is still in flight (see abandon()): shared with its thread.
  std::shared_ptr<std::atomic<bool>> cancelling_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace fulcrum::db
