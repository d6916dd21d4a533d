#include "lb/outlier.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/log.h"

namespace fulcrum::lb {

std::string_view outlierReasonName(OutlierReason reason) {
  switch (reason) {
    case OutlierReason::Consecutive5xx:
      return "consecutive_5xx";
    case OutlierReason::ConsecutiveFailures:
      return "consecutive_failures";
    case OutlierReason::Slow:
      return "slow";
  }
  return "?";
}

namespace {

// "30 s", "1500 ms": an ejection time in a log line.
std::string durationText(core::Duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return ms % 1000 == 0 ? fmt::format("{} s", ms / 1000) : fmt::format("{} ms", ms);
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

}  // namespace

// --- OutlierSignals ---------------------------------------------------------------------------

OutlierSignals::OutlierSignals(size_t servers, uint32_t consecutive_5xx, uint32_t consecutive_failures,
                               OnRun on_run)
    : runs_(servers),
      consecutive_5xx_(consecutive_5xx),
      consecutive_failures_(consecutive_failures),
      on_run_(std::move(on_run)) {}

void OutlierSignals::answered(uint32_t server, int status) {
  Runs& runs = runs_[server];
  if (status >= 500) {
    if (consecutive_5xx_ != 0 &&
        runs.errors.fetch_add(1, std::memory_order_relaxed) + 1 == consecutive_5xx_) {
      on_run_(server, OutlierReason::Consecutive5xx);
    }
    return;
  }
  // Loads first: a server answering well costs no write to the shared line.
  if (runs.errors.load(std::memory_order_relaxed) != 0) {
    runs.errors.store(0, std::memory_order_relaxed);
  }
  if (runs.failures.load(std::memory_order_relaxed) != 0) {
    runs.failures.store(0, std::memory_order_relaxed);
  }
}

void OutlierSignals::failed(uint32_t server) {
  Runs& runs = runs_[server];
  if (consecutive_failures_ != 0 &&
      runs.failures.fetch_add(1, std::memory_order_relaxed) + 1 == consecutive_failures_) {
    on_run_(server, OutlierReason::ConsecutiveFailures);
  }
}

void OutlierSignals::clear(uint32_t server) {
  runs_[server].errors.store(0, std::memory_order_relaxed);
  runs_[server].failures.store(0, std::memory_order_relaxed);
}

// --- OutlierEjector ---------------------------------------------------------------------------

void OutlierEjector::resize(size_t servers) {
  state_.resize(std::max(state_.size(), servers));
}

size_t OutlierEjector::ejectedCount() const {
  return static_cast<size_t>(
      std::count_if(state_.begin(), state_.end(), [](const State& s) { return s.ejected; }));
}

std::optional<core::Duration> OutlierEjector::eject(uint32_t server, OutlierReason reason,
                                                    core::TimePoint now, size_t pool, size_t usable_others,
                                                    std::string* refusal) {
  resize(server + 1);
  State& s = state_[server];
  auto refuse = [&](std::string why) -> std::optional<core::Duration> {
    if (refusal != nullptr) {
      *refusal = std::move(why);
    }
    return std::nullopt;
  };
  if (s.ejected) {
    return refuse("already ejected");
  }
  const size_t cap = std::max<size_t>(1, pool * options_.max_ejection_percent / 100);
  const size_t ejected = ejectedCount();
  if (ejected >= cap) {
    return refuse(fmt::format("{} of {} servers ejected already (max_ejection_percent {})", ejected, pool,
                              options_.max_ejection_percent));
  }
  if (usable_others == 0) {
    return refuse("it is the last usable server");
  }
  ++s.multiplier;
  const core::Duration time = std::min<core::Duration>(
      options_.base_ejection * s.multiplier, std::max(options_.max_ejection, options_.base_ejection));
  s.ejected = true;
  s.until = now + time;
  s.changed = now;
  s.reason = reason;
  ++s.totals[static_cast<size_t>(reason)];
  return time;
}

std::vector<uint32_t> OutlierEjector::expire(core::TimePoint now) {
  std::vector<uint32_t> back;
  for (uint32_t id = 0; id < state_.size(); ++id) {
    State& s = state_[id];
    if (s.ejected && s.until <= now) {
      s.ejected = false;
      s.changed = now;
      back.push_back(id);
    }
  }
  return back;
}

std::optional<core::TimePoint> OutlierEjector::nextExpiry() const {
  std::optional<core::TimePoint> next;
  for (const State& s : state_) {
    if (s.ejected && (!next || s.until < *next)) {
      next = s.until;
    }
  }
  return next;
}

void OutlierEjector::decay(core::TimePoint now) {
  for (State& s : state_) {
    if (!s.ejected && s.multiplier > 0 && now - s.changed >= options_.interval) {
      --s.multiplier;
      s.changed = now;
    }
  }
}

std::vector<uint32_t> OutlierEjector::slowServers(const std::vector<ServerWindow>& window) const {
  std::vector<uint32_t> slow;
  if (options_.slow_factor == 0) {
    return slow;
  }
  std::vector<uint32_t> judged;  // enough responses, and taking traffic
  for (uint32_t id = 0; id < window.size(); ++id) {
    if (window[id].responses >= options_.min_requests && !ejected(id)) {
      judged.push_back(id);
    }
  }
  auto mean = [&](uint32_t id) {
    return static_cast<double>(window[id].time_us) / static_cast<double>(window[id].responses);
  };
  for (uint32_t id : judged) {
    std::vector<double> peers;
    for (uint32_t other : judged) {
      if (other != id) {
        peers.push_back(mean(other));
      }
    }
    if (peers.empty()) {
      continue;
    }
    const double m = mean(id);
    if (m >= static_cast<double>(kSlowFloorUs) &&
        m > static_cast<double>(options_.slow_factor) * median(peers)) {
      slow.push_back(id);
    }
  }
  return slow;
}

// --- OutlierDetector --------------------------------------------------------------------------

OutlierDetector::OutlierDetector(core::EventLoop& loop, const OutlierOptions& options,
                                 const std::vector<Backend>& backends, Hooks hooks)
    : loop_(loop),
      backends_(backends),
      hooks_(std::move(hooks)),
      ejector_(options),
      signals_(backends.size(), options.consecutive_5xx, options.consecutive_failures,
               [this](uint32_t server, OutlierReason reason) {
                 loop_.post([this, server, reason] { onRun(server, reason); });
               }),
      interval_timer_(loop, [this] { onInterval(); }),
      expiry_timer_(loop, [this] { onExpiry(); }) {
  serversChanged();
}

void OutlierDetector::start() {
  for (const Backend& b : backends_) {
    last_totals_[b.id] = hooks_.totals(b.id);
  }
  interval_timer_.armAfter(ejector_.options().interval);
}

void OutlierDetector::serversChanged() {
  const size_t n = backends_.size();
  signals_.grow(n);
  ejector_.resize(n);
  in_rotation_.resize(n, true);
  last_refusal_.resize(n);
  last_totals_.resize(n);
}

void OutlierDetector::setInRotation(uint32_t server, bool in_rotation) {
  if (server < in_rotation_.size()) {
    in_rotation_[server] = in_rotation;
  }
}

size_t OutlierDetector::poolSize() const {
  return static_cast<size_t>(
      std::count_if(backends_.begin(), backends_.end(), [](const Backend& b) { return !b.removed; }));
}

size_t OutlierDetector::usableOthers(uint32_t server) const {
  size_t n = 0;
  for (const Backend& b : backends_) {
    if (b.id != server && !b.removed && in_rotation_[b.id] && !ejector_.ejected(b.id) &&
        hooks_.healthy(b.id)) {
      ++n;
    }
  }
  return n;
}

void OutlierDetector::onRun(uint32_t server, OutlierReason reason) {
  signals_.clear(server);  // a refused ejection is judged again after another whole run
  if (server >= backends_.size() || backends_[server].removed) {
    return;
  }
  const OutlierOptions& o = ejector_.options();
  tryEject(server, reason,
           reason == OutlierReason::Consecutive5xx
               ? fmt::format("{} consecutive 5xx", o.consecutive_5xx)
               : fmt::format("{} consecutive failures", o.consecutive_failures));
}

void OutlierDetector::tryEject(uint32_t server, OutlierReason reason, const std::string& detail) {
  if (ejector_.ejected(server)) {
    return;  // requests in flight at its ejection ended their run meanwhile
  }
  const std::string& name = backends_[server].name;
  std::string refusal;
  std::optional<core::Duration> time =
      ejector_.eject(server, reason, loop_.now(), poolSize(), usableOthers(server), &refusal);
  if (!time) {
    // Once per server and reason: a pool that fails all over would repeat it at every run.
    if (refusal != last_refusal_[server]) {
      log::info("outlier: {} stays in rotation despite {}: {}", name, detail, refusal);
      last_refusal_[server] = std::move(refusal);
    }
    return;
  }
  last_refusal_[server].clear();
  log::warn("outlier: ejecting {} for {}: {}", name, durationText(*time), detail);
  hooks_.apply(server, true);
  armExpiry();
}

void OutlierDetector::onInterval() {
  const core::TimePoint now = loop_.now();
  ejector_.decay(now);
  std::vector<ServerWindow> window(backends_.size());
  for (const Backend& b : backends_) {
    if (b.removed) {
      continue;
    }
    const ServerWindow total = hooks_.totals(b.id);
    window[b.id] = {total.responses - last_totals_[b.id].responses,
                    total.time_us - last_totals_[b.id].time_us};
    last_totals_[b.id] = total;
  }
  for (uint32_t id : ejector_.slowServers(window)) {
    tryEject(id, OutlierReason::Slow,
             fmt::format("mean response time {} ms over {} responses, more than {} times its peers' median",
                         window[id].time_us / window[id].responses / 1000, window[id].responses,
                         ejector_.options().slow_factor));
  }
  interval_timer_.armAfter(ejector_.options().interval);
}

void OutlierDetector::onExpiry() {
  const core::TimePoint now = loop_.now();
  for (uint32_t id : ejector_.expire(now)) {
    signals_.clear(id);  // answers of requests that were in flight at the ejection do not count
    log::info("outlier: {} returns to rotation", backends_[id].name);
    hooks_.apply(id, false);
  }
  armExpiry();
}

void OutlierDetector::armExpiry() {
  if (std::optional<core::TimePoint> next = ejector_.nextExpiry()) {
    expiry_timer_.armAt(*next);
  } else {
    expiry_timer_.disarm();
  }
}

}  // namespace fulcrum::lb
