#include "db/pg_session.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <thread>

#include "pg/connection_policy.h"
#include "pg/libpq_text.h"

namespace fulcrum::db {

using pg::appendRows;
using pg::libpqMessage;

namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string timedOut(std::string_view what, milliseconds timeout) {
  return std::string(what) + " timed out after " + std::to_string(timeout.count()) + " ms";
}

// The server ends a statement a little before the client would give up: the caller then gets the
// server's "canceling statement due to statement timeout" and the connection stays usable.
milliseconds serverTimeout(milliseconds timeout) {
  return milliseconds(std::max<int64_t>(1, timeout.count() * 9 / 10));
}

struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

}  // namespace

PgSession::PgSession(pg::ConnParams params) : params_(std::move(params)) {}

PgSession::~PgSession() {
  disconnect();
}

void PgSession::disconnect() {
  if (conn_ != nullptr) {
    PQfinish(conn_);  // non-blocking mode: the Terminate message is sent only if it fits
    conn_ = nullptr;
  }
  statement_timeout_ = milliseconds(0);
}

int PgSession::backendPid() const {
  return conn_ != nullptr ? PQbackendPID(conn_) : 0;
}

Status PgSession::waitSocket(short events, Deadline deadline, milliseconds timeout, std::string_view what) {
  int fd = PQsocket(conn_);
  if (fd < 0) {
    return Status::failure("connection has no socket: " + libpqMessage(PQerrorMessage(conn_)));
  }
  for (;;) {
    auto left = std::chrono::ceil<milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) {
      return Status::failure(timedOut(what, timeout));
    }
    pollfd ready{fd, events, 0};
    int n = ::poll(&ready, 1, static_cast<int>(left.count()));
    if (n > 0) {
      return Status::success();  // readable, writable, or an error/hangup for libpq to report
    }
    if (n < 0 && errno != EINTR) {
      return Status::failure(std::string("poll: ") + std::strerror(errno));
    }
  }
}

Status PgSession::connect(Deadline deadline, milliseconds timeout) {
  // The server applies (nearly) the same deadline to each statement; an abandoned backend checks
  // every second whether we are still there (the sessions' common policy, pg/connection_policy.h).
  pg::ConnParams params = params_;
  // The agent's sessions use the local socket only: no TLS there.
  pg::addSessionPolicy(params, serverTimeout(timeout), std::nullopt);
  std::vector<const char*> keywords;
  std::vector<const char*> values;
  for (const auto& [keyword, value] : params) {
    keywords.push_back(keyword.c_str());
    values.push_back(value.c_str());
  }
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectStartParams(keywords.data(), values.data(), 0);
  if (conn_ == nullptr) {
    return Status::failure("libpq: out of memory");
  }
  // Warnings and notices are not for stderr: errors that matter reach the caller through
  // results. But libpq also passes here the FATAL a backend sends before it quits while we are
  // idle (terminated, server shutting down): note it, the connection is finished.
  server_quit_ = false;
  PQsetNoticeReceiver(
      conn_,
      [](void* self, const PGresult* notice) {
        const char* severity = PQresultErrorField(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
        if (severity != nullptr &&
            (std::strcmp(severity, "FATAL") == 0 || std::strcmp(severity, "PANIC") == 0)) {
          static_cast<PgSession*>(self)->server_quit_ = true;
        }
      },
      this);
  // libpq: after PQconnectStart, act as if PQconnectPoll had returned PGRES_POLLING_WRITING.
  PostgresPollingStatusType state = PGRES_POLLING_WRITING;
  while (PQstatus(conn_) != CONNECTION_BAD && state != PGRES_POLLING_OK && state != PGRES_POLLING_FAILED) {
    Status ready =
        waitSocket(state == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline, timeout, "connecting");
    if (!ready.ok) {
      disconnect();
      return ready;
    }
    state = PQconnectPoll(conn_);
  }
  if (state != PGRES_POLLING_OK) {
    std::string error = libpqMessage(PQerrorMessage(conn_));
    disconnect();
    return Status::failure(error);
  }
  if (PQsetnonblocking(conn_, 1) != 0) {
    std::string error = libpqMessage(PQerrorMessage(conn_));
    disconnect();
    return Status::failure(error);
  }
  statement_timeout_ = timeout;
  return Status::success();
}

bool PgSession::stillUsable() {
  // A backend that quit while we were idle left its FATAL message, then EOF: read until the
  // socket has nothing more (a few rounds at most; each read takes what is buffered).
  for (int round = 0; round < 4 && PQstatus(conn_) == CONNECTION_OK; ++round) {
    pollfd ready{PQsocket(conn_), POLLIN, 0};
    if (ready.fd < 0 || ::poll(&ready, 1, 0) <= 0) {
      break;
    }
    if (!PQconsumeInput(conn_)) {
      return false;
    }
    PQisBusy(conn_);  // parses what was read: an error while idle goes to the notice receiver
  }
  return !server_quit_ && PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) == PQTRANS_IDLE;
}

void PgSession::abandon() {
  // libpq 15's PQcancel connects to the postmaster and blocks until it answers, which a frozen
  // postmaster never does: send it from a detached thread, so this thread keeps its deadline.
  // At most one per session is in flight: a postmaster that has not answered the last one would
  // not answer the next. The thread ends when the postmaster answers or goes away.
  PGcancel* cancel = PQgetCancel(conn_);
  if (cancel != nullptr) {
    if (cancelling_->exchange(true)) {
      PQfreeCancel(cancel);
    } else {
      std::thread([cancel, flag = cancelling_] {
        char error[256];
        PQcancel(cancel, error, sizeof error);
        PQfreeCancel(cancel);
        flag->store(false);
      }).detach();
    }
  }
  disconnect();
}

Result<PgRows> PgSession::run(const std::string& sql, Deadline deadline, milliseconds timeout) {
  using R = Result<PgRows>;
  auto connection_failed = [&] {
    std::string error = libpqMessage(PQerrorMessage(conn_));
    disconnect();
    return R::failure(error);
  };
  if (!PQsendQueryParams(conn_, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0)) {
    return connection_failed();
  }
  // Non-blocking mode: the statement may not fit the socket buffer at once.
  for (;;) {
    int flushed = PQflush(conn_);
    if (flushed == 0) {
      break;
    }
    if (flushed < 0) {
      return connection_failed();
    }
    if (Status ready = waitSocket(POLLIN | POLLOUT, deadline, timeout, "query"); !ready.ok) {
      abandon();
      return R::failure(ready.error);
    }
    if (!PQconsumeInput(conn_)) {
      return connection_failed();
    }
  }
  PgRows rows;
  std::string error;
  for (;;) {
    while (PQisBusy(conn_)) {
      if (Status ready = waitSocket(POLLIN, deadline, timeout, "query"); !ready.ok) {
        abandon();
        return R::failure(ready.error);
      }
      if (!PQconsumeInput(conn_)) {
        return connection_failed();
      }
    }
    ResultPtr result(PQgetResult(conn_));
    if (!result) {
      break;
    }
    switch (PQresultStatus(result.get())) {
      case PGRES_TUPLES_OK:
        appendRows(result.get(), rows);
        break;
      case PGRES_COMMAND_OK:
      case PGRES_EMPTY_QUERY:
        break;
      default:
        if (error.empty()) {
          const char* primary = PQresultErrorField(result.get(), PG_DIAG_MESSAGE_PRIMARY);
          error = primary != nullptr ? primary : libpqMessage(PQresultErrorMessage(result.get()));
        }
        break;
    }
  }
  if (PQstatus(conn_) != CONNECTION_OK) {
    disconnect();
  }
  return error.empty() ? R::success(std::move(rows)) : R::failure(error);
}

Result<PgRows> PgSession::query(std::string_view sql, milliseconds timeout) {
  using R = Result<PgRows>;
  const Deadline deadline = SteadyClock::now() + timeout;
  if (conn_ != nullptr && !stillUsable()) {
    disconnect();
  }
  if (conn_ == nullptr) {
    if (Status connected = connect(deadline, timeout); !connected.ok) {
      return R::failure(connected.error);
    }
  }
  if (statement_timeout_ != timeout) {
    auto set =
        run("SET statement_timeout = " + std::to_string(serverTimeout(timeout).count()), deadline, timeout);
    if (!set.ok) {
      return set;
    }
    statement_timeout_ = timeout;
  }
  auto result = run(std::string(sql), deadline, timeout);
  if (conn_ != nullptr && PQtransactionStatus(conn_) != PQTRANS_IDLE) {
    disconnect();  // a statement left a transaction open: the next call starts clean
  }
  return result;
}

}  // namespace fulcrum::db
