#include "lb/vrrp/router.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace fulcrum::lb::vrrp {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr core::Duration kCentisecond = milliseconds(10);

uint16_t toCentiseconds(core::Duration d) {
  auto cs = d / kCentisecond;
  return static_cast<uint16_t>(std::clamp<int64_t>(cs, 1, 0x0fff));
}

int64_t ms(core::Duration d) {
  return duration_cast<milliseconds>(d).count();
}

}  // namespace

std::string_view stateName(State state) {
  switch (state) {
    case State::Initialize:
      return "initialize";
    case State::Backup:
      return "backup";
    case State::Master:
      return "master";
  }
  return "unknown";
}

Router::Router(RouterConfig config)
    : config_(config), priority_(config.priority), master_advert_interval_(config.advert_interval) {}

core::Duration Router::skewTime() const {
  return (256 - priority_) * master_advert_interval_ / 256;
}

core::Duration Router::masterDownInterval() const {
  return 3 * master_advert_interval_ + skewTime();
}

void Router::start(core::TimePoint now) {
  if (state_ != State::Initialize) {
    return;
  }
  last_run_ = now;
  if (priority_ == 255) {
    becomeMaster(now, "address owner (priority 255)");
  } else {
    becomeBackup(now, "started");
  }
}

void Router::shutdown(core::TimePoint now) {
  last_run_ = now;
  if (state_ == State::Master) {
    sendAdvert(0);
    actions_.push_back({Action::ReleaseVip});
  }
  advert_due_.reset();
  master_down_due_.reset();
  preempt_since_.reset();
  if (state_ != State::Initialize) {
    transition(State::Initialize, "shutting down");
  }
}

void Router::checkFrozen(core::TimePoint now) {
  if (!last_run_) {
    last_run_ = now;
    return;
  }
  core::Duration gap = now - *last_run_;
  last_run_ = now;
  if (state_ == State::Master && gap > 3 * config_.advert_interval) {
    // Our adverts stopped for 3 intervals: a backup may hold the address by now. Release it and
    // listen for one Master_Down_Interval, as a backup, before deciding again.
    ++freezes_;
    actions_.push_back({Action::ReleaseVip});
    master_advert_interval_ = config_.advert_interval;
    becomeBackup(
        now, fmt::format("frozen for {} ms (no advertisement sent): a backup may hold the address", ms(gap)));
  } else if (state_ == State::Backup && gap > masterDownInterval()) {
    // The Master_Down_Timer ran out while we could not read: the master's adverts may be waiting
    // in the socket. Give them a Master_Down_Interval before taking over.
    ++freezes_;
    master_down_due_ = now + masterDownInterval();
  }
}

void Router::receive(core::TimePoint now, uint32_t source, const Advert& advert) {
  if (state_ == State::Initialize || source == config_.primary_ip || advert.vrid != config_.vrid) {
    return;
  }
  checkFrozen(now);
  if (state_ == State::Backup) {
    if (advert.priority == 0) {
      // The master is leaving: take over after Skew_Time (RFC 5798 §6.4.2).
      master_down_due_ = now + skewTime();
      return;
    }
    bool lower = advert.priority < priority_;
    if (config_.preempt && lower) {
      if (!preempt_since_) {
        preempt_since_ = now;
      }
      if (now - *preempt_since_ >= config_.preempt_delay) {
        return;  // discarded: the Master_Down_Timer runs out and this node preempts
      }
    } else {
      preempt_since_.reset();
    }
    master_ip_ = source;
    learnInterval(advert.max_advert_cs);
    master_down_due_ = now + masterDownInterval();
    return;
  }
  // Master.
  if (advert.priority == 0) {
    sendAdvert(priority_);  // another master left: assert this one at once
    advert_due_ = now + config_.advert_interval;
    return;
  }
  bool wins = advert.priority > priority_ || (advert.priority == priority_ && source > config_.primary_ip);
  if (wins) {
    master_ip_ = source;
    learnInterval(advert.max_advert_cs);
    actions_.push_back({Action::ReleaseVip});
    becomeBackup(now, fmt::format("advertisement from {}.{}.{}.{} with priority {} (ours {})", source >> 24,
                                  (source >> 16) & 0xff, (source >> 8) & 0xff, source & 0xff, advert.priority,
                                  priority_));
    return;
  }
  // A lower master: the RFC discards it; advertising now (as keepalived does) sends it back to
  // Backup without waiting for our next interval. Both held the address (a healed partition):
  // gratuitous ARP again, or neighbours that learned the other's MAC keep sending to it.
  sendAdvert(priority_);
  actions_.push_back({Action::Announce});
  advert_due_ = now + config_.advert_interval;
}

void Router::tick(core::TimePoint now) {
  if (state_ == State::Initialize) {
    return;
  }
  checkFrozen(now);
  if (state_ == State::Master && advert_due_ && *advert_due_ <= now) {
    sendAdvert(priority_);
    advert_due_ = now + config_.advert_interval;
  } else if (state_ == State::Backup && master_down_due_ && *master_down_due_ <= now) {
    becomeMaster(now, fmt::format("no advertisement from a higher priority for {} ms (Master_Down_Interval)",
                                  ms(masterDownInterval())));
  }
}

void Router::setPriority(core::TimePoint now, uint8_t priority) {
  if (priority == priority_) {
    return;
  }
  priority_ = priority;
  preempt_since_.reset();
  if (state_ == State::Master) {
    checkFrozen(now);
    if (state_ == State::Master) {
      sendAdvert(priority_);  // a higher backup can preempt without waiting an interval
      advert_due_ = now + config_.advert_interval;
    }
  }
}

std::optional<core::TimePoint> Router::nextDeadline() const {
  switch (state_) {
    case State::Master:
      return advert_due_;
    case State::Backup:
      return master_down_due_;
    case State::Initialize:
      return std::nullopt;
  }
  return std::nullopt;
}

std::vector<Action> Router::takeActions() {
  return std::exchange(actions_, {});
}

std::vector<Transition> Router::takeTransitions() {
  return std::exchange(transitions_, {});
}

void Router::becomeMaster(core::TimePoint now, std::string reason) {
  sendAdvert(priority_);
  actions_.push_back({Action::TakeVip});
  advert_due_ = now + config_.advert_interval;
  master_down_due_.reset();
  preempt_since_.reset();
  master_ip_ = config_.primary_ip;
  transition(State::Master, std::move(reason));
}

void Router::becomeBackup(core::TimePoint now, std::string reason) {
  advert_due_.reset();
  preempt_since_.reset();
  master_down_due_ = now + masterDownInterval();
  transition(State::Backup, std::move(reason));
}

void Router::sendAdvert(uint8_t priority) {
  actions_.push_back({Action::SendAdvert, priority, toCentiseconds(config_.advert_interval)});
}

void Router::transition(State to, std::string reason) {
  transitions_.push_back({state_, to, std::move(reason)});
  state_ = to;
}

void Router::learnInterval(uint16_t interval_cs) {
  master_advert_interval_ = interval_cs * kCentisecond;
}

}  // namespace fulcrum::lb::vrrp

namespace fulcrum::lb::vrrp {

uint8_t trackedPriority(uint8_t configured, const NodeHealth& health) {
  if (health.servers_up && health.workers_alive) {
    return configured;
  }
  return std::min(configured, kDegradedPriority);
}

}  // namespace fulcrum::lb::vrrp
