#include "lb/health/health_checker.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/buffer.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/proxy_protocol.h"
#include "core/socket.h"
#include "http/response_reader.h"

namespace fulcrum::lb {

namespace {

const size_t kMaxHeadBytes = http::Limits{}.max_header_bytes;  // what a check buffers at most

std::string errnoText(const char* what, int err) {
  return fmt::format("{}: {}", what, std::strerror(err));
}

// connectTcp says "connect <address>: <error>"; the log line names the server already, and the
// reason should read the same whether the refusal came at once or later from the loop.
std::string connectFailure(const std::string& error) {
  size_t colon = error.find(": ");
  if (error.starts_with("connect ") && colon != std::string::npos) {
    return "connect: " + error.substr(colon + 2);
  }
  return error;
}

std::string timeoutReason(core::Duration timeout) {
  return fmt::format("timeout after {} ms",
                     std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count());
}

std::string checkRequest(const std::string& path, const core::SocketAddress& address) {
  if (path.empty()) {
    return {};
  }
  return fmt::format(
      "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fulcrum-health\r\nConnection: close\r\n"
      "Accept: */*\r\n\r\n",
      path, address.toString());
}

}  // namespace

// One server's checks. Stable for the checker's lifetime (timers and the loop hold `this`); at
// most one check is in flight, and its socket is the only fd registered with `this`.
struct HealthChecker::Probe final : core::IoHandler, core::Deletable {
  enum class Phase : uint8_t { Idle, Connecting, Handshaking, Sending, Reading };

  Probe(HealthChecker& checker, size_t probe_index, HealthTarget server, const HealthOptions& options)
      : owner(&checker),
        index(probe_index),
        target(std::move(server)),
        state(options.start_down ? RiseFall::downUntilFirstSuccess(options.rise, options.fall)
                                 : RiseFall(options.rise, options.fall, /*initially_up=*/true)),
        request(checkRequest(target.path.value_or(options.path), target.address)),
        expect_status(options.expect_status),
        max_body_bytes(options.max_body_bytes),
        next_check(checker.loop_,
                   [this] {
                     if (owner != nullptr) {
                       owner->runProbe(index);
                     }
                   }),
        deadline(checker.loop_,
                 [this] {
                   if (owner != nullptr) {
                     owner->finishProbe(index, false, timeoutReason(owner->options_.timeout),
                                        timeoutResult());
                   }
                 }),
        times(checker.loop_.now(), state.up()) {}

  void onIoEvents(uint32_t events) override {
    if (owner == nullptr || !fd) {
      return;  // an event fetched in the same batch the check (or the checker) ended
    }
    bool ok = false;
    std::string reason;
    if (advance(events, ok, reason)) {
      owner->finishProbe(index, ok, std::move(reason));  // may destroy the checker: nothing after
    }
  }

  // Moves the check on; true when it is over, with its result in `ok` and `reason`.
  bool advance(uint32_t events, bool& ok, std::string& reason) {
    if (phase == Phase::Connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
      }
      if (err != 0) {
        reason = errnoText("connect", err);
        return true;
      }
      if ((events & EPOLLOUT) == 0) {
        if ((events & (EPOLLERR | EPOLLHUP)) != 0) {
          reason = "connect: connection closed";
          return true;
        }
        return false;  // not connected yet
      }
      if (target.send_proxy != 0) {
        // The server expects a PROXY header first; a check is the lb's own connection (LOCAL,
        // UNKNOWN). Fresh send buffer: it goes in one write, before any TLS.
        std::string header = target.send_proxy == 1 ? core::proxy_protocol::encodeV1Unknown()
                                                    : core::proxy_protocol::encodeV2Local();
        if (::send(fd.get(), header.data(), header.size(), MSG_NOSIGNAL) !=
            static_cast<ssize_t>(header.size())) {
          reason = errnoText("PROXY header", errno);
          return true;
        }
      }
      phase = tls ? Phase::Handshaking : Phase::Sending;
    }
    if (phase == Phase::Handshaking) {
      int r = tls->handshake();
      if (r == 0) {
        return !watch(tls->wantedEvents(), reason);
      }
      if (r < 0) {
        owner->options_.tls->reportFailure(target.name, target.address, *tls);
        reason = (tls->verifyFailed() ? "TLS: certificate refused: " : "TLS: ") + tls->failure();
        return true;
      }
      phase = Phase::Sending;
    }
    if (phase == Phase::Sending && sent == 0) {
      if (request.empty()) {
        ok = true;
        reason = "connected";
        return true;
      }
    }
    if (phase == Phase::Sending && tls) {
      if (out.empty() && sent == 0) {
        out.append(request);
        sent = request.size();
      }
      while (!out.empty()) {
        if (tls->write(out) < 0) {
          if (errno == EAGAIN || errno == EINTR) {
            return !watch(EPOLLOUT | tls->extraEvents(), reason);
          }
          reason = errnoText("send", errno);
          return true;
        }
      }
    }
    if (phase == Phase::Sending) {
      while (sent < request.size()) {
        ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EINTR) {
            continue;
          }
          if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return false;  // still registered for EPOLLOUT
          }
          reason = errnoText("send", errno);
          return true;
        }
        sent += static_cast<size_t>(n);
      }
      phase = Phase::Reading;
      // Without max_body_bytes the check ends at the head, so no body byte is ever kept.
      reader.reset(http::Method::Get, max_body_bytes);
      return !watch(EPOLLIN, reason);
    }
    ssize_t n = tls ? tls->read(in, kMaxHeadBytes) : in.readFrom(fd.get(), kMaxHeadBytes);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return tls && !watch(EPOLLIN | tls->extraEvents(), reason);
      }
      if (reader.headDone()) {
        return judge(ok, reason);  // the body was cut: the status still decides
      }
      reason = errnoText("read", errno);
      return true;
    }
    if (n == 0) {
      reader.closed();
      if (reader.state() == http::ResponseReader::State::Done || reader.headDone()) {
        return judge(ok, reason);  // a body delimited by the close, or one cut short
      }
      reason = reader.error();
      return true;
    }
    return parse(ok, reason);
  }

  // The final head decides (interim 1xx answers are skipped); the body is read only when the
  // caller wants it (max_body_bytes), and then the check ends with the whole response. A body
  // that fails (too large, bad framing, cut short) does not fail the check: the status decides,
  // as without max_body_bytes, and the caller gets no body.
  bool parse(bool& ok, std::string& reason) {
    in.consume(reader.read(in.view(), body));
    if (reader.state() == http::ResponseReader::State::Failed) {
      if (reader.headDone()) {
        return judge(ok, reason);
      }
      reason = reader.error();
      return true;
    }
    if (reader.headDone() && (max_body_bytes == 0 || reader.state() == http::ResponseReader::State::Done)) {
      return judge(ok, reason);
    }
    return false;
  }

  bool judge(bool& ok, std::string& reason) {
    if (reader.state() != http::ResponseReader::State::Done) {
      body.clear();
    }
    const int status = reader.status();
    ok = expect_status != 0 ? status == expect_status : status >= 200 && status <= 399;
    reason = fmt::format("HTTP {}", status);
    return true;
  }

  // HAProxy's result code of a check that ended in this phase (LastChk).
  std::string_view result(bool ok) const {
    switch (phase) {
      case Phase::Idle:
      case Phase::Connecting:
        return "L4CON";
      case Phase::Handshaking:
        return "L6RSP";
      case Phase::Sending:
        if (ok) {
          return tls ? "L6OK" : "L4OK";  // a TCP check: connected (and TLS done) is all it asks
        }
        return "L7RSP";
      case Phase::Reading:
        break;
    }
    return reader.headDone() ? (ok ? "L7OK" : "L7STS") : "L7RSP";
  }

  std::string_view timeoutResult() const {
    switch (phase) {
      case Phase::Idle:
      case Phase::Connecting:
        return "L4TOUT";
      case Phase::Handshaking:
        return "L6TOUT";
      case Phase::Sending:
      case Phase::Reading:
        break;
    }
    return "L7TOUT";
  }

  // Registers for `events`; false (with the reason) when epoll refuses.
  bool watch(uint32_t events, std::string& reason) {
    if (!owner->loop_.modify(fd.get(), events, this)) {
      reason = errnoText("epoll", errno);
      return false;
    }
    return true;
  }

  // Ends the connection of the check in flight, if any.
  void closeConnection(core::EventLoop& loop) {
    tls.reset();
    if (fd) {
      loop.remove(fd.get());
      fd.reset();
    }
    in.release();
    out.release();
    body.clear();
    sent = 0;
    phase = Phase::Idle;
  }

  HealthChecker* owner;  // null once the checker is destroyed
  size_t index;
  HealthTarget target;
  RiseFall state;
  std::string request;  // empty for a TCP check
  int expect_status;
  uint64_t max_body_bytes;
  bool checked = false;  // a result has been recorded (the first flip up may need only one)
  CheckStats counts;
  core::Timer next_check;
  core::Timer deadline;  // the whole check: connect, request and response head
  StateTimes times;
  core::TimePoint started{};
  core::Fd fd;
  std::unique_ptr<tls::TlsTransport> tls;  // [security] internal_tls; freed before fd
  core::Buffer out;                        // the request, under TLS
  core::Buffer in;
  http::ResponseReader reader;
  std::string body;  // read only under max_body_bytes
  size_t sent = 0;
  Phase phase = Phase::Idle;
};

HealthChecker::HealthChecker(core::EventLoop& loop, std::vector<HealthTarget> targets, HealthOptions options,
                             OnChange on_change)
    : loop_(loop), options_(std::move(options)), on_change_(std::move(on_change)) {
  // A zero interval would check back to back and spin the loop.
  options_.interval = std::max<core::Duration>(options_.interval, std::chrono::milliseconds(1));
  probes_.reserve(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    probes_.push_back(std::make_unique<Probe>(*this, i, std::move(targets[i]), options_));
  }
}

HealthChecker::~HealthChecker() {
  for (auto& probe : probes_) {
    probe->owner = nullptr;
    probe->next_check.disarm();
    probe->deadline.disarm();
    probe->closeConnection(loop_);
    // The checker may be destroyed from a callback while an event for this probe waits in the
    // loop's current batch: the loop frees the probe after the batch.
    loop_.deferDelete(std::move(probe));
  }
}

void HealthChecker::start() {
  if (started_) {
    return;
  }
  started_ = true;
  // Spread deterministically so N servers are not all checked in the same millisecond.
  const auto n = static_cast<int64_t>(probes_.size());
  for (int64_t i = 0; i < n; ++i) {
    schedule(static_cast<size_t>(i), options_.interval * i / n);
  }
}

void HealthChecker::setOptions(const HealthOptions& options) {
  const core::Duration interval = std::max<core::Duration>(options.interval, std::chrono::milliseconds(1));
  const bool sooner = interval < options_.interval;
  options_.path = options.path;
  options_.interval = interval;
  options_.timeout = options.timeout;
  options_.rise = options.rise;
  options_.fall = options.fall;
  for (size_t i = 0; i < probes_.size(); ++i) {
    Probe& probe = *probes_[i];
    if (probe.owner == nullptr) {
      continue;
    }
    probe.state.setThresholds(options_.rise, options_.fall);
    probe.request = checkRequest(probe.target.path.value_or(options_.path), probe.target.address);
    if (sooner && started_ && probe.phase == Probe::Phase::Idle) {
      schedule(i, options_.interval * static_cast<int64_t>(i) / static_cast<int64_t>(probes_.size()));
    }
  }
}

void HealthChecker::add(HealthTarget target) {
  const size_t index = probes_.size();
  HealthOptions options = options_;
  options.start_down = true;
  probes_.push_back(std::make_unique<Probe>(*this, index, std::move(target), options));
  if (started_) {
    schedule(index, core::Duration::zero());
  }
}

void HealthChecker::remove(uint32_t id) {
  Probe* probe = find(id);
  if (probe == nullptr) {
    return;
  }
  // The probe stays in place (indexes are stable) but inert: no owner, no timer, no socket.
  probe->owner = nullptr;
  probe->next_check.disarm();
  probe->deadline.disarm();
  probe->closeConnection(loop_);
}

void HealthChecker::reportFailure(uint32_t id, std::string_view reason) {
  Probe* probe = find(id);
  if (probe == nullptr) {
    log::warn("health: failure reported for unknown server id {}: {}", id, reason);
    return;
  }
  ++probe->counts.passive_failures;
  record(probe->index, false, reason);
}

bool HealthChecker::isUp(uint32_t id) const {
  const Probe* probe = find(id);
  return probe != nullptr && probe->state.up();
}

size_t HealthChecker::size() const {
  return probes_.size();
}

CheckStats HealthChecker::stats(uint32_t id) const {
  const Probe* probe = find(id);
  if (probe == nullptr) {
    return {};
  }
  CheckStats out = probe->counts;
  const core::TimePoint now = loop_.now();
  out.since_change_s = std::chrono::duration<double>(probe->times.sinceChange(now)).count();
  out.downtime_s = std::chrono::duration<double>(probe->times.downtime(now)).count();
  return out;
}

HealthChecker::Probe* HealthChecker::find(uint32_t id) const {
  // Removed servers' probes have no owner: never found again.
  if (id < probes_.size() && probes_[id]->target.id == id) {
    return probes_[id]->owner != nullptr ? probes_[id].get() : nullptr;  // ids are usually pool indexes
  }
  for (const auto& probe : probes_) {
    if (probe->target.id == id && probe->owner != nullptr) {
      return probe.get();
    }
  }
  return nullptr;
}

void HealthChecker::schedule(size_t index, core::Duration delay) {
  probes_[index]->next_check.armAfter(delay);
}

void HealthChecker::runProbe(size_t index) {
  Probe& probe = *probes_[index];
  assert(probe.phase == Probe::Phase::Idle);
  probe.started = loop_.now();
  std::string error;
  probe.fd = core::connectTcp(probe.target.address, error);
  if (!probe.fd) {
    finishProbe(index, false, connectFailure(error));  // refused at once (common on loopback)
    return;
  }
  if (options_.tls != nullptr && !probe.target.plain) {
    probe.tls = options_.tls->newTransport(probe.fd.get(), probe.target.address);
    if (!probe.tls) {
      probe.fd.reset();
      finishProbe(index, false, "TLS: no session could be made", "SOCKERR");
      return;
    }
  }
  if (!loop_.add(probe.fd.get(), EPOLLOUT, &probe)) {
    std::string reason = errnoText("epoll", errno);
    probe.fd.reset();
    finishProbe(index, false, std::move(reason), "SOCKERR");
    return;
  }
  probe.phase = Probe::Phase::Connecting;
  probe.deadline.armAfter(options_.timeout);
}

void HealthChecker::finishProbe(size_t index, bool ok, std::string reason, std::string_view result) {
  Probe& probe = *probes_[index];
  probe.deadline.disarm();
  const bool answered = probe.phase == Probe::Phase::Reading && probe.reader.headDone();
  const int status = answered ? probe.reader.status() : 0;
  CheckStats& counts = probe.counts;
  counts.last_result = result.empty() ? probe.result(ok) : result;
  counts.last_status = status;
  counts.last_reason = reason;
  if (on_result_) {
    on_result_(probe.target.id, ok, reason, status, probe.body);
  }
  probe.closeConnection(loop_);
  // Checks start every interval; one that overran it is followed by the next at once.
  core::Duration elapsed = loop_.now() - probe.started;
  schedule(index, std::max(core::Duration::zero(), options_.interval - elapsed));
  counts.checked = true;
  counts.last_ok = ok;
  counts.last_duration_s = std::chrono::duration<double>(elapsed).count();
  ++(ok ? counts.passed : counts.failed);
  record(index, ok, reason);
}

void HealthChecker::record(size_t index, bool ok, std::string_view reason) {
  Probe& probe = *probes_[index];
  const bool first = !std::exchange(probe.checked, true);
  if (!probe.state.record(ok)) {
    if (!ok) {
      log::debug("server {} failed a check: {} ({} consecutive)", probe.target.name, reason,
                 probe.state.consecutiveFailures());
    }
    return;
  }
  const bool up = probe.state.up();
  ++(up ? probe.counts.went_up : probe.counts.went_down);
  probe.times.change(loop_.now(), up);
  if (up) {
    // A flip up happens exactly at rise, or at the first check of a server that started down.
    uint32_t successes = first ? 1 : std::max<uint32_t>(options_.rise, 1);
    log::info("server {} is UP: {} ({} consecutive success{})", probe.target.name, reason, successes,
              successes == 1 ? "" : "es");
  } else {
    uint32_t failures = probe.state.consecutiveFailures();
    log::warn("server {} is DOWN: {} ({} consecutive failure{})", probe.target.name, reason, failures,
              failures == 1 ? "" : "s");
  }
  if (on_change_) {
    // A copy: the callback may destroy the checker, and with it on_change_.
    OnChange callback = on_change_;
    callback(probe.target.id, up, reason);
  }
}

}  // namespace fulcrum::lb
