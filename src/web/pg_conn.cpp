#include "web/pg_conn.h"

#include <sys/epoll.h>

#include <utility>

#include "core/log.h"
#include "pg/libpq_text.h"
#include "web/pg_cancel.h"

namespace fulcrum::web {

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(2);

// libpq's notice receiver: one structured line instead of the raw "WARNING: ..." libpq prints.
void logNotice(void* arg, const PGresult* result) {
  if (!log::enabled(log::Level::Debug)) {
    return;
  }
  const auto* node = static_cast<const std::string*>(arg);
  const char* severity = PQresultErrorField(result, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char* message = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
  const char* sqlstate = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  auto str = [](std::string_view key, const char* value) {
    return log::Field{key, value == nullptr ? std::string_view() : std::string_view(value), 0, false};
  };
  log::event(log::Level::Debug, "pg_notice",
             {log::Field{"node", *node, 0, false}, str("severity", severity), str("sqlstate", sqlstate),
              str("message", message)});
}

}  // namespace

PgConn::PgConn(core::EventLoop& loop, const std::string& conninfo, std::function<void(PgConn&)> on_change,
               std::string node)
    : loop_(loop), on_change_(std::move(on_change)), node_(std::move(node)), timer_(loop, [this] {
        // A deadline passed, or a failure found inside a call had to be reported from the loop.
        if (error_.empty() && state_ == State::Busy) {
          // Closing the socket alone leaves the statement running (a commit waiting for a
          // synchronous replica keeps waiting, holding its backend): ask the server to cancel
          // it. The connection is dropped either way: what it would answer next is unknown.
          if (watched_fd_ >= 0) {
            loop_.remove(watched_fd_);
            watched_fd_ = -1;
          }
          cancelThenFinish(std::exchange(conn_, nullptr));
          fail("query timeout");
          return;
        }
        fail(error_.empty() ? "connect timeout" : error_);
      }) {
  conn_ = PQconnectStart(conninfo.c_str());
  if (conn_ == nullptr || PQstatus(conn_) == CONNECTION_BAD) {
    error_ = conn_ == nullptr ? "out of memory" : pg::libpqMessage(PQerrorMessage(conn_));
    timer_.armAfter(core::Duration::zero());
    return;
  }
  PQsetnonblocking(conn_, 1);
  PQsetNoticeReceiver(conn_, logNotice, &node_);
  // libpq: after PQconnectStart, act as if PQconnectPoll had returned PGRES_POLLING_WRITING.
  watch(EPOLLOUT);
  timer_.armAfter(kConnectTimeout);
}

PgConn::~PgConn() {
  if (conn_ != nullptr) {
    if (watched_fd_ >= 0) {
      loop_.remove(watched_fd_);
    }
    PQfinish(conn_);
  }
}

void PgConn::watch(uint32_t events) {
  int fd = PQsocket(conn_);
  if (fd < 0) {
    return;
  }
  // The socket may be a new one (libpq reconnects inside PQconnectPoll, e.g. to try another
  // address); the old one is closed already, and epoll forgot it with its close.
  if (fd != watched_fd_ || events != watched_events_) {
    if (fd != watched_fd_ || !loop_.modify(fd, events, this)) {
      loop_.add(fd, events, this);
    }
    watched_fd_ = fd;
    watched_events_ = events;
  }
}

void PgConn::onIoEvents(uint32_t events) {
  switch (state_) {
    case State::Connecting:
      pollConnect();
      return;
    case State::Ready:
      // Idle: the server may have closed the connection (a shutdown, a failover).
      if (!PQconsumeInput(conn_) || PQstatus(conn_) == CONNECTION_BAD) {
        fail(pg::libpqMessage(PQerrorMessage(conn_)));
      }
      return;
    case State::Busy:
      if ((events & EPOLLOUT) && flushing_) {
        int flushed = PQflush(conn_);
        if (flushed < 0) {
          fail(pg::libpqMessage(PQerrorMessage(conn_)));
          return;
        }
        flushing_ = flushed == 1;
      }
      if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (!PQconsumeInput(conn_)) {
          fail(pg::libpqMessage(PQerrorMessage(conn_)));
          return;
        }
        readResults();
        if (state_ != State::Busy) {
          return;
        }
      }
      watch(EPOLLIN | (flushing_ ? EPOLLOUT : 0u));
      return;
    case State::Broken:
      return;
  }
}

void PgConn::pollConnect() {
  switch (PQconnectPoll(conn_)) {
    case PGRES_POLLING_READING:
      watch(EPOLLIN);
      return;
    case PGRES_POLLING_WRITING:
      watch(EPOLLOUT);
      return;
    case PGRES_POLLING_OK:
      state_ = State::Ready;
      timer_.disarm();
      watch(EPOLLIN);
      on_change_(*this);
      return;
    default:
      fail(pg::libpqMessage(PQerrorMessage(conn_)));
      return;
  }
}

void PgConn::query(std::string_view sql, const std::vector<std::string>& params, core::Duration timeout,
                   QueryDone done) {
  done_ = std::move(done);
  result_ = PgResult{};
  state_ = State::Busy;
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const std::string& p : params) {
    values.push_back(p.c_str());
  }
  const std::string text(sql);
  if (!PQsendQueryParams(conn_, text.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                         nullptr, 0)) {
    error_ = pg::libpqMessage(PQerrorMessage(conn_));
    timer_.armAfter(core::Duration::zero());  // reported from the loop, as promised
    return;
  }
  timer_.armAfter(timeout);
  int flushed = PQflush(conn_);
  if (flushed < 0) {
    error_ = pg::libpqMessage(PQerrorMessage(conn_));
    timer_.armAfter(core::Duration::zero());
    return;
  }
  flushing_ = flushed == 1;
  watch(EPOLLIN | (flushing_ ? EPOLLOUT : 0u));
}

void PgConn::readResults() {
  while (!PQisBusy(conn_)) {
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) {
      finishQuery();
      return;
    }
    ExecStatusType status = PQresultStatus(r);
    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
      if (result_.error.empty()) {
        result_.ok = true;
      }
      pg::appendRows(r, result_.rows);
    } else {
      result_.ok = false;
      result_.error = pg::libpqMessage(PQresultErrorMessage(r));
      const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      result_.sqlstate = state == nullptr ? "" : state;
    }
    PQclear(r);
  }
}

void PgConn::finishQuery() {
  timer_.disarm();
  state_ = State::Ready;
  watch(EPOLLIN);
  QueryDone done = std::move(done_);
  done_ = nullptr;
  PgResult result = std::move(result_);
  done(result);
}

void PgConn::fail(std::string message) {
  if (state_ == State::Broken) {
    return;
  }
  bool was_busy = state_ == State::Busy;
  state_ = State::Broken;
  error_ = std::move(message);
  timer_.disarm();
  if (conn_ != nullptr) {
    if (watched_fd_ >= 0) {
      loop_.remove(watched_fd_);
      watched_fd_ = -1;
    }
    PQfinish(conn_);
    conn_ = nullptr;
  }
  if (was_busy && done_) {
    QueryDone done = std::move(done_);
    done_ = nullptr;
    PgResult result;
    result.error = error_;
    done(result);
    return;
  }
  on_change_(*this);
}

}  // namespace fulcrum::web
