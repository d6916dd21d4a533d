#pragma once
// One worker's database side for the guestbook, owned and used on that worker's thread only:
// the router its handler uses and, while a reload changes the [[db.node]] list, the next router
// warming up (its first round of probes) before the handler switches to it, so no request meets a
// router that knows no primary yet; routers replaced live on until the requests they had are
// answered (every database wait is bounded, DbSettings).
#include <memory>
#include <utility>
#include <vector>

#include "core/event_loop.h"
#include "web/db_router.h"
#include "web/guestbook_app.h"
#include "web/web_app.h"

namespace fulcrum::web {

class WorkerDb {
 public:
  // Builds the worker's first router; `guestbook` and `app` (the worker's handlers) are told of
  // each later switch.
  WorkerDb(core::EventLoop& loop, DbSettings settings, std::shared_ptr<DbGeneration> generation,
           unsigned worker);
  DbRouter& router() { return *current_.router; }
  void attach(GuestbookApp& guestbook, WebApp& app);
  // A new [[db.node]] list (this worker's index into `generation`): a router is built now and
  // takes over once ready. A newer call replaces a router still warming up.
  void replace(DbSettings settings, std::shared_ptr<DbGeneration> generation);
  // Every router of the worker (the next one too) takes the new bound.
  void setMaxLagBytes(uint64_t max_lag_bytes);

 private:
  // The generation is declared first so that it outlives the router counting into it.
  struct Held {
    std::shared_ptr<DbGeneration> generation;
    std::unique_ptr<DbRouter> router;
  };
  Held make(DbSettings settings, std::shared_ptr<DbGeneration> generation);
  void poll();
  void reap();

  core::EventLoop& loop_;
  const unsigned worker_;
  Held current_;
  Held next_;
  std::vector<std::pair<core::TimePoint, Held>> retired_;  // with the time each may go
  GuestbookApp* guestbook_ = nullptr;
  WebApp* app_ = nullptr;
  core::Timer poll_timer_;
  core::Timer reap_timer_;
};

}  // namespace fulcrum::web
