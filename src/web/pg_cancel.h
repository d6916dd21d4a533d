#pragma once
// Cancel requests for statements a web worker gave up on, sent off the event loop thread.
//
// libpq 15's PQcancel opens a new connection to the postmaster, sends the request and waits for
// the postmaster to close it: it blocks, for as long as a frozen or unreachable server makes it.
// A worker thread must never wait like that, so each request runs on a detached thread of its
// own (the agent's PgSession does the same), and only a few run at once: past the limit a request
// is dropped, and the server ends the statement by itself (statement_timeout, and
// client_connection_check_interval once the connection is closed). libpq 15 has no non-blocking
// cancel, and it does not expose the backend's cancel key one would need to send it ourselves.
#include <cstddef>
#include <functional>
#include <memory>

struct pg_conn;

namespace fulcrum::web {

// Runs tasks on detached threads, at most `limit` at once.
class BoundedThreads {
 public:
  explicit BoundedThreads(size_t limit);
  // False, with `task` destroyed unrun, when `limit` tasks are still running.
  bool run(std::function<void()> task);
  size_t running() const;
  // Blocks until fewer than `n` tasks run (tests).
  void waitBelow(size_t n) const;

 private:
  struct State;
  const size_t limit_;
  std::shared_ptr<State> state_;  // shared with the threads: they may outlive this object
};

// Asks the server to cancel what `conn` runs, then closes `conn`, in the background (the
// process's BoundedThreads: 8 at once; each blocks at most until the postmaster answers or the TCP
// connect gives up, so a few suffice, and more would only pile threads onto a server that is
// gone). Takes ownership of `conn`: the caller must have stopped watching its socket. The close
// comes after the request, so the server ends the statement as cancelled rather than finding
// the client gone first (client_connection_check_interval). False when nothing was sent (no
// connection, or too many in flight): `conn` is closed at once then.
bool cancelThenFinish(pg_conn* conn);

}  // namespace fulcrum::web
