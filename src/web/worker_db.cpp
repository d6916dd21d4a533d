#include "web/worker_db.h"

#include <fmt/ranges.h>

#include "core/log.h"

namespace fulcrum::web {

namespace {

using namespace std::chrono_literals;

// How often a worker looks whether its next router has heard from every node.
constexpr core::Duration kNextPoll = 10ms;
// How long a replaced router lives on: longer than any request waits on the database
// (write_deadline 2 s, wait_for_connection 1 s, query_timeout 1.5 s in DbSettings).
constexpr core::Duration kRetiredLife = 10s;

}  // namespace

WorkerDb::WorkerDb(core::EventLoop& loop, DbSettings settings, std::shared_ptr<DbGeneration> generation,
                   unsigned worker)
    : loop_(loop),
      worker_(worker),
      poll_timer_(loop, [this] { poll(); }),
      reap_timer_(loop, [this] { reap(); }) {
  current_ = make(std::move(settings), std::move(generation));
}

WorkerDb::Held WorkerDb::make(DbSettings settings, std::shared_ptr<DbGeneration> generation) {
  Held held;
  held.generation = std::move(generation);
  settings.log_roles = worker_ == 0;
  held.router = std::make_unique<DbRouter>(loop_, std::move(settings), *held.generation->stats[worker_],
                                           held.generation->shared);
  return held;
}

void WorkerDb::attach(GuestbookApp& guestbook, WebApp& app) {
  guestbook_ = &guestbook;
  app_ = &app;
  app_->setDb(current_.generation);
}

void WorkerDb::replace(DbSettings settings, std::shared_ptr<DbGeneration> generation) {
  next_ = make(std::move(settings), std::move(generation));  // one still warming up is dropped
  poll_timer_.armAfter(kNextPoll);
}

void WorkerDb::setMaxLagBytes(uint64_t max_lag_bytes) {
  current_.router->setMaxLagBytes(max_lag_bytes);
  if (next_.router) {
    next_.router->setMaxLagBytes(max_lag_bytes);
  }
}

void WorkerDb::poll() {
  if (!next_.router) {
    return;
  }
  if (!next_.router->ready()) {
    poll_timer_.armAfter(kNextPoll);
    return;
  }
  retired_.emplace_back(loop_.now() + kRetiredLife, std::move(current_));
  current_ = std::move(next_);
  next_ = Held{};
  guestbook_->setRouter(*current_.router);
  app_->setDb(current_.generation);
  if (worker_ == 0) {
    log::info("reload: guestbook requests now go to db nodes {}",
              fmt::join(current_.generation->names, ", "));
  }
  reap_timer_.armAt(retired_.front().first);
}

void WorkerDb::reap() {
  const core::TimePoint now = loop_.now();
  while (!retired_.empty() && retired_.front().first <= now) {
    retired_.erase(retired_.begin());
  }
  if (!retired_.empty()) {
    reap_timer_.armAt(retired_.front().first);
  }
}

}  // namespace fulcrum::web
