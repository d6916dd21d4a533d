#pragma once
// One PostgreSQL client connection driven by a worker's event loop through libpq's
// asynchronous API (PQconnectStart/PQconnectPoll, PQsendQueryParams, PQconsumeInput,
// PQisBusy, PQgetResult): its socket sits in the loop's epoll set; no call blocks and no
// thread waits on it. One query at a time. Touched only by the loop's thread.
#include <libpq-fe.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/event_loop.h"

namespace fulcrum::web {

// A query's outcome, as text (the guestbook's values are small).
struct PgResult {
  bool ok = false;
  std::string error;     // when !ok: libpq's or the server's message
  std::string sqlstate;  // when the server refused the statement ("25006": read-only)
  std::vector<std::vector<std::string>> rows;
};

class PgConn final : public core::IoHandler, public core::Deletable {
 public:
  enum class State : uint8_t { Connecting, Ready, Busy, Broken };
  using QueryDone = std::function<void(PgResult&)>;

  // Starts connecting at once; `on_change` runs (from the loop) when the connection becomes
  // ready or breaks while no query is running. The server's NOTICE and WARNING messages are
  // logged at debug as `pg_notice` events naming `node` (libpq would print them on stderr).
  PgConn(core::EventLoop& loop, const std::string& conninfo, std::function<void(PgConn&)> on_change,
         std::string node = {});
  ~PgConn() override;
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  State state() const { return state_; }
  const std::string& error() const { return error_; }

  // Needs state() == Ready. `done` runs exactly once, from the loop (never from inside this
  // call); a connection that fails or outlives `timeout` is Broken afterwards. A statement that
  // outlives `timeout` is also cancelled on the server (pg_cancel.h), not just abandoned.
  void query(std::string_view sql, const std::vector<std::string>& params, core::Duration timeout,
             QueryDone done);

  void onIoEvents(uint32_t events) override;

 private:
  void pollConnect();
  void readResults();
  void watch(uint32_t events);
  void fail(std::string message);
  void finishQuery();

  core::EventLoop& loop_;
  PGconn* conn_ = nullptr;
  std::function<void(PgConn&)> on_change_;
  std::string node_;  // the db node's name, in pg_notice lines
  core::Timer timer_;
  State state_ = State::Connecting;
  int watched_fd_ = -1;
  uint32_t watched_events_ = 0;
  bool flushing_ = false;
  std::string error_;
  QueryDone done_;
  PgResult result_;
};

}  // namespace fulcrum::web
