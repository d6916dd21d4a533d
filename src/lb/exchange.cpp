#include "lb/exchange.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "core/log.h"
#include "core/proxy_protocol.h"
#include "core/socket.h"
#include "http/util.h"
#include "lb/outlier.h"
#include "lb/proxy.h"
#include "lb/retry_budget.h"

namespace fulcrum::lb {

namespace {

// A Content-Length other than 0 ("0, 0" included): the parser has validated the value.
bool nonZeroLength(const http::ResponseHead& head) {
  std::optional<std::string_view> value = head.find("content-length");
  return value && value->find_first_not_of("0, \t") != std::string_view::npos;
}

}  // namespace

std::string_view terminationName(Termination t) {
  switch (t) {
    case Termination::Done:
      return "done";
    case Termination::Local:
      return "local";
    case Termination::Redirect:
      return "redirect";
    case Termination::BadRequest:
      return "bad_request";
    case Termination::RateLimited:
      return "rate_limited";
    case Termination::NoServer:
      return "no_server";
    case Termination::ServerError:
      return "server_error";
    case Termination::ServerTimeout:
      return "server_timeout";
    case Termination::ServerAbort:
      return "server_abort";
    case Termination::ClientTimeout:
      return "client_timeout";
    case Termination::ClientAbort:
      return "client_abort";
    case Termination::Tunnel:
      return "tunnel";
    case Termination::QueueFull:
      return "queue_full";
    case Termination::QueueTimeout:
      return "queue_timeout";
  }
  return "?";
}

ProxyExchange::ProxyExchange(ProxyWorker& worker)
    : worker_(worker), upstream_timer_(worker.loop(), [this] { onUpstreamTimeout(); }) {}

ProxyExchange::~ProxyExchange() {
  abandon();
}

void ProxyExchange::reset() {
  abandon();
  client = nullptr;
  method = http::Method::Get;
  method_text.clear();
  path.clear();
  query.clear();
  client_hash = 0;
  sticky = kNoServer;
  expect_continue = false;
  upgrade = false;
  replay.clear();
  term = Termination::Done;
  t_start = core::TimePoint{};
  state_ = State::Idle;
  uin_.release();
  uout_.release();
  resp_scanner_.reset();
  request_done_ = false;
  response_started_ = false;
  replayable_ = true;
  client_eof_ = false;
  upstream_shut_ = false;
  fresh_only_ = false;
  send_failed_ = false;
  handshaking_ = false;
  server_ = kNoServer;
  t_queued_ = core::TimePoint{};
  queue_time_ = core::Duration::zero();
  tried_.clear();
  attempts_ = 0;
  response_status_ = 0;
  response_bytes_ = 0;
  t_connect_start_ = t_connected_ = t_response_ = core::TimePoint{};
}

void ProxyExchange::abandon() {
  upstream_timer_.disarm();
  endSlot();
  endInflight();
  closeUpstream(false);
  if (state_ != State::Idle) {
    state_ = State::Done;
  }
}

void ProxyExchange::endInflight() {
  if (inflight_) {
    inflight_ = false;
    auto id = static_cast<uint32_t>(server_);
    worker_.pool().onRequestEnd(id);
    worker_.stats().backends[id].inflight.sub();
    worker_.stats().inflight.sub();
  }
  if (retry_slot_) {
    retry_slot_ = false;
    worker_.options().retry_budget->release();
  }
}

bool ProxyExchange::takeRetrySlot() {
  const ProxyOptions& o = worker_.options();
  if (o.retry_budget == nullptr) {
    return true;
  }
  retry_slot_ = o.retry_budget->acquire(o.retry_budget_percent, o.retry_budget_min);
  return retry_slot_;
}

// ---------------------------------------------------------------------------------------------
// The request

void ProxyExchange::start(bool request_done) {
  request_done_ = request_done;
  connectUpstream();
}

size_t ProxyExchange::bodyRoom() const {
  if (send_failed_) {
    return SIZE_MAX;  // the server stopped reading: the body is checked and dropped
  }
  if (state_ == State::Connecting || state_ == State::Queued) {
    // Until the connection is up, replay is the only copy: what does not fit waits with the client.
    return replay.size() < kMaxReplayBytes ? kMaxReplayBytes - replay.size() : 0;
  }
  return uout_.size() < kHighWater ? SIZE_MAX : 0;
}

void ProxyExchange::takeBody(std::string_view raw, bool done) {
  if (send_failed_) {
    // The server stopped reading; its answer is on the way. The body is checked and dropped.
  } else if (state_ == State::Connecting || state_ == State::Queued) {
    replay.append(raw);
  } else {
    uout_.append(raw);
    if (replayable_ && replay.size() + raw.size() <= kMaxReplayBytes) {
      replay.append(raw);
    } else if (replayable_) {
      replayable_ = false;  // too large to re-send: this request will not be retried
      replay.clear();
    }
  }
  request_done_ = done;
}

bool ProxyExchange::sendBody() {
  if (state_ != State::Exchanging || send_failed_) {
    return state_ != State::Done;
  }
  return writeUpstream();
}

void ProxyExchange::clientProgress() {
  if (state_ == State::Exchanging) {
    upstream_timer_.armAfter(worker_.options().server_timeout);  // the transfer is moving
  }
}

void ProxyExchange::clientRoom() {
  if (upstream_) {
    updateUpstreamInterest();
  }
}

void ProxyExchange::tunnelFromClient(std::string_view bytes) {
  uout_.append(bytes);
  flushUpstream();
}

void ProxyExchange::clientEnded() {
  // Passed on once the server has every byte before it; the server's side stays open until it
  // closes too, so its last answer still reaches the client.
  client_eof_ = true;
  flushUpstream();
}

void ProxyExchange::release() {
  upstream_timer_.disarm();
  endSlot();
  bool reusable = upstream_ && request_done_ && uin_.empty() && resp_.keep_alive &&
                  resp_.body_kind != http::BodyKind::UntilClose;
  closeUpstream(reusable);
  state_ = State::Done;
}

// ---------------------------------------------------------------------------------------------
// The server side

void ProxyExchange::endSlot() {
  if (ticket_ != 0) {
    worker_.pool().cancelWait(ticket_);
    ticket_ = 0;
  }
  if (slot_ != kNoServer) {
    worker_.pool().releaseSlot(static_cast<uint32_t>(slot_));
    slot_ = kNoServer;
  }
}

void ProxyExchange::connectUpstream() {
  WorkerPool& pool = worker_.pool();
  endSlot();  // a retry gives back the slot of the server that failed
  PickContext ctx{client_hash, path, tried_};
  int server = kNoServer;
  if (sticky != kNoServer && attempts_ == 0 && pool.usable(static_cast<uint32_t>(sticky))) {
    // The client's own server, while it takes requests (a slot free, if it has a limit); a
    // retry goes elsewhere, and the answer then moves the client.
    auto id = static_cast<uint32_t>(sticky);
    ServerSlots* slots = pool.limitsSlots() ? pool.slots() : nullptr;
    if (slots == nullptr || !slots->limited(id)) {
      useServer(id);
      return;
    }
    if (slots->tryAcquire(id)) {
      slot_ = sticky;
      useServer(id);
      return;
    }
  }
  if (pool.limitsSlots()) {
    bool full = false;
    bool slot = false;
    server = pool.pickWithSlot(ctx, full, slot);
    if (server == kNoServer && full) {
      queueForSlot();
      return;
    }
    if (slot) {
      slot_ = server;
    }
  } else {
    server = pool.pick(ctx);
  }
  if (server == kNoServer) {
    endInflight();  // a retry's budget slot
    worker_.stats().no_server.add();
    fail(503, tried_.empty() ? "no server is available" : "no server could be reached", Termination::NoServer);
    return;
  }
  useServer(static_cast<uint32_t>(server));
}

void ProxyExchange::queueForSlot() {
  ProxyStats& stats = worker_.stats();
  core::Duration timeout = worker_.options().queue_timeout;
  if (timeout > core::Duration::zero()) {
    ticket_ = worker_.pool().waitForSlot(this);
  }
  if (ticket_ == 0) {
    stats.queue_full.add();
    stats.no_server.add();
    fail(503, "every server is at its max_conn and the queue is full", Termination::QueueFull);
    return;
  }
  stats.queued.add();
  state_ = State::Queued;
  t_queued_ = worker_.loop().now();
  upstream_timer_.armAfter(timeout);
}

void ProxyExchange::onSlot(uint32_t server) {
  ticket_ = 0;
  slot_ = static_cast<int>(server);
  upstream_timer_.disarm();
  core::Duration waited = worker_.loop().now() - t_queued_;
  queue_time_ += waited;
  worker_.stats().queue_time.observe(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(waited).count()));
  state_ = State::Idle;
  useServer(server);
}

void ProxyExchange::useServer(uint32_t id) {
  WorkerPool& pool = worker_.pool();
  server_ = static_cast<int>(id);
  tried_.push_back(id);
  ++attempts_;
  pool.onRequestStart(id);
  inflight_ = true;
  BackendStats& bstats = worker_.stats().backends[id];
  bstats.inflight.add();
  worker_.stats().inflight.add();
  bstats.requests.add();
  t_connect_start_ = worker_.loop().now();

  uout_.clear();
  uin_.clear();
  send_failed_ = false;
  handshaking_ = false;
  resp_scanner_.reset();
  // A non-idempotent request never rides a reused connection: if the server closed it at that
  // moment we could not tell whether the request was processed, so it could not be retried.
  if (http::isIdempotent(method) && !fresh_only_) {
    upstream_ = pool.takeIdle(id);
  }
  if (upstream_) {
    upstream_->setOwner(this);
    onConnected();
    return;
  }
  std::string error;
  core::Fd fd = core::connectTcp(pool.backend(id).address, error);
  if (!fd) {
    upstreamFailed("connect", errno, true);
    return;
  }
  bstats.connects.add();
  std::unique_ptr<tls::TlsTransport> tls;
  if (worker_.options().upstream_tls != nullptr) {
    tls = worker_.options().upstream_tls->newTransport(fd.get(), pool.backend(id).address);
    if (!tls) {
      upstreamFailed("TLS: no session could be made", 0, true);
      return;
    }
  }
  upstream_ = std::make_unique<UpstreamConn>(worker_.loop(), id, std::move(fd), EPOLLOUT);
  upstream_->setTls(std::move(tls));
  upstream_->setOwner(this);
  state_ = State::Connecting;
  upstream_timer_.armAfter(worker_.options().connect_timeout);
}

void ProxyExchange::onConnected() {
  state_ = State::Exchanging;
  t_connected_ = worker_.loop().now();
  uout_.append(replay);  // a streamed body's remainder follows from the client as it arrives
  upstream_timer_.armAfter(worker_.options().server_timeout);
  if (!request_done_) {
    client->exchangeWantsBody();  // also sends
  } else {
    flushUpstream();
  }
}

void ProxyExchange::onUpstreamEvents(uint32_t events) {
  if (state_ == State::Done || state_ == State::Idle || !upstream_) {
    return;
  }
  if (state_ == State::Connecting) {
    if (!handshaking_) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(upstream_->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
        upstreamFailed("connect", err != 0 ? err : ECONNREFUSED, true);
        return;
      }
      if (!sendProxyHeader()) {
        return;
      }
    }
    if (upstream_->tls() != nullptr && !handshakeUpstream()) {
      return;
    }
    onConnected();
    return;
  }
  // A TLS read that waited to write goes on when the socket is writable.
  bool read_wants_write = (upstream_->extraEvents() & EPOLLOUT) != 0;
  if (events & EPOLLOUT) {
    const UpstreamConn* conn = upstream_.get();
    flushUpstream();
    // The events are this connection's: if the exchange ended or moved to another server
    // (a retry, an early answer), they are stale.
    if (state_ == State::Done || state_ == State::Idle || upstream_.get() != conn) {
      return;
    }
  }
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)) || read_wants_write) {
    readUpstream();
  }
}

bool ProxyExchange::sendProxyHeader() {
  uint8_t version = worker_.pool().backend(static_cast<uint32_t>(server_)).send_proxy;
  if (version == 0) {
    return true;
  }
  // The lb's own address on the client's connection (the listener's), as HAProxy sends it.
  core::SocketAddress local = core::localAddress(client_fd);
  std::string header = version == 1 ? core::proxy_protocol::encodeV1(client_address, local)
                                    : core::proxy_protocol::encodeV2(client_address, local);
  // A socket that has just connected has an empty send buffer: the header (28 to 108 bytes)
  // goes in one write.
  ssize_t n = ::send(upstream_->fd(), header.data(), header.size(), MSG_NOSIGNAL);
  if (n != static_cast<ssize_t>(header.size())) {
    upstreamFailed("PROXY header", n < 0 ? errno : EIO, true);
    return false;
  }
  return true;
}

bool ProxyExchange::handshakeUpstream() {
  tls::TlsTransport& tls = *upstream_->tls();
  handshaking_ = true;
  int r = tls.handshake();
  if (r == 0) {
    upstream_->setEvents(tls.wantedEvents());
    return false;
  }
  if (r < 0) {
    auto id = static_cast<uint32_t>(server_);
    worker_.options().upstream_tls->reportFailure(worker_.pool().backend(id).name,
                                                  worker_.pool().backend(id).address, tls);
    std::string reason = (tls.verifyFailed() ? "TLS: certificate refused: " : "TLS: ") + tls.failure();
    upstreamFailed(reason.c_str(), 0, true);
    return false;
  }
  handshaking_ = false;
  return true;
}

void ProxyExchange::flushUpstream() {
  if (!writeUpstream()) {
    return;
  }
  if (uout_.size() < kHighWater) {
    // Room again upstream: the client may pass on what it already sent.
    client->exchangeWantsBody();
  }
}

bool ProxyExchange::writeUpstream() {
  // Returns false when the exchange ended or changed under us (failure, retry, early answer):
  // the caller then touches nothing of it.
  if (!upstream_) {
    return false;
  }
  bool wrote = false;
  while (!uout_.empty()) {
    ssize_t n = upstream_->write(uout_);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        break;
      }
      if (state_ == State::Exchanging && !response_started_ && !send_failed_) {
        // A server may answer and close before taking the whole request (a 413 to a large
        // upload). Its answer, if any, is readable before the reset: relay it rather than a 502.
        send_failed_ = true;
        uout_.clear();
        log::debug("server {} stopped reading the request: {}", worker_.pool().backend(server_).name,
                   std::strerror(errno));
        updateUpstreamInterest();
        readUpstream();
        return false;
      }
      upstreamFailed("send", errno, false);
      return false;
    }
    wrote = true;
  }
  if (wrote && state_ == State::Exchanging) {
    upstream_timer_.armAfter(worker_.options().server_timeout);  // a long upload is moving
  }
  if (client_eof_ && uout_.empty() && !upstream_shut_) {
    upstream_shut_ = true;
    upstream_->shutdownWrite();
  }
  updateUpstreamInterest();
  return true;
}

void ProxyExchange::updateUpstreamInterest() {
  if (!upstream_ || state_ == State::Connecting) {
    return;
  }
  uint32_t events = 0;
  if (client->exchangeHasRoom()) {
    events |= EPOLLIN | EPOLLRDHUP;
  }
  if (!uout_.empty()) {
    events |= EPOLLOUT;
  }
  upstream_->setEvents(events | upstream_->extraEvents());
}

void ProxyExchange::readUpstream() {
  if (!client->exchangeHasRoom()) {
    updateUpstreamInterest();
    return;
  }
  ssize_t n = upstream_->read(uin_, kHighWater);
  if (n == 0) {
    if (state_ == State::Tunnel) {
      // The server ended the tunnel: what is queued goes to the client, then it closes.
      closeUpstream(false);
      state_ = State::Done;
      client->exchangeTunnelClosed();
      return;
    }
    if (response_started_ && resp_.body_kind == http::BodyKind::UntilClose) {
      // The end of a close-delimited body.
      closeUpstream(false);
      complete();
      return;
    }
    upstreamFailed("connection closed", 0, false);
    return;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) {
      if (upstream_->tls() != nullptr) {
        updateUpstreamInterest();  // a TLS read may wait to write
      }
      return;
    }
    upstreamFailed("recv", errno, false);
    return;
  }
  if (state_ != State::Tunnel) {
    upstream_timer_.armAfter(worker_.options().server_timeout);
  }
  processUpstream();
}

void ProxyExchange::processUpstream() {
  ExchangeClient* c = client;  // still there after the exchange ends: the flush below needs it
  while (upstream_ && !uin_.empty()) {
    if (state_ == State::Tunnel) {
      c->exchangeTunnelData(uin_.view());
      uin_.clear();
      break;
    }
    if (!response_started_) {
      http::ParseResult result =
          resp_scanner_.parseResponse(uin_.view(), worker_.options().limits, method, resp_);
      if (result.state == http::ParseState::Incomplete) {
        if (uin_.size() >= worker_.options().limits.max_header_bytes) {
          upstreamFailed("response head too large", 0, false);
        }
        return;
      }
      if (result.state == http::ParseState::Error) {
        log::warn("server {} sent a bad response: {}", worker_.pool().backend(server_).name, result.reason);
        upstreamFailed("bad response", 0, false);
        return;
      }
      if (resp_.status < 200 && resp_.status != 101) {
        // Interim response: pass 100 Continue to a client that asked for it, drop others.
        if (resp_.status == 100 && expect_continue) {
          c->exchangeContinue();
        }
        uin_.consume(result.consumed);
        continue;
      }
      // A server that puts framing on a 204 (RFC 9112 §6.1, RFC 9110 §8.6), or sends bytes after
      // a response that has no body, disagrees with us on where its response ends: relaying any
      // of it could hand the client, or the next request, a response that was not theirs.
      if (resp_.status == 204 && (resp_.find("transfer-encoding") || nonZeroLength(resp_))) {
        upstreamFailed("framing fields on a 204 response", 0, false);
        return;
      }
      if (resp_.body_kind == http::BodyKind::None && uin_.size() > result.consumed) {
        upstreamFailed("bytes after a response without a body", 0, false);
        return;
      }
      // Checked before any of the response is committed: the client gets a 502, not a close.
      if (resp_.body_kind == http::BodyKind::Tunnel && !upgrade && method != http::Method::Connect) {
        upstreamFailed("unexpected protocol switch", 0, false);
        return;
      }
      response_started_ = true;
      response_status_ = resp_.status;
      t_response_ = worker_.loop().now();
      auto id = static_cast<uint32_t>(server_);
      endInflight();
      BackendStats& bstats = worker_.stats().backends[id];
      int cls = resp_.status / 100;
      if (cls >= 1 && cls <= 5) {
        bstats.responses_by_class[static_cast<size_t>(cls)].add();
      }
      bstats.response_time.observe(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(t_response_ - t_connect_start_).count()));
      if (worker_.options().outlier != nullptr) {
        worker_.options().outlier->answered(id, resp_.status);
      }
      bool tunnel = resp_.body_kind == http::BodyKind::Tunnel;
      if (tunnel) {
        state_ = State::Tunnel;
        request_done_ = true;
        term = Termination::Tunnel;  // logged when the tunnel ends
        upstream_timer_.disarm();
      }
      c->exchangeResponseHead(resp_);
      uin_.consume(result.consumed);
      if (tunnel) {
        continue;
      }
      resp_body_.reset(resp_.body_kind, resp_.content_length, 0);
      if (resp_.body_kind == http::BodyKind::None) {
        complete();
        return;
      }
    }
    // Response body.
    http::BodyStep step = resp_body_.step(uin_.view());
    if (step.error_status != 0) {
      upstreamFailed("bad response body", 0, false);
      return;
    }
    if (step.consumed == 0 && !step.done) {
      break;
    }
    c->exchangeResponseBody(uin_.view().substr(0, step.consumed), step.payload);
    response_bytes_ += step.payload.size();
    uin_.consume(step.consumed);
    if (step.done) {
      complete();
      return;
    }
    if (!c->exchangeHasRoom()) {
      break;
    }
  }
  if (state_ == State::Tunnel && !uout_.empty()) {
    flushUpstream();
  }
  c->exchangeFlush();
}

void ProxyExchange::complete() {
  upstream_timer_.disarm();
  client->exchangeComplete();  // releases the exchange
}

void ProxyExchange::fail(int status, std::string_view detail, Termination why) {
  upstream_timer_.disarm();
  endSlot();
  closeUpstream(false);
  state_ = State::Done;
  term = why;
  if (response_started_) {
    client->exchangeAborted(why);
  } else {
    client->exchangeFailed(status, detail, why);
  }
}

void ProxyExchange::upstreamFailed(const char* what, int err, bool connect_phase) {
  std::string reason = err != 0 ? std::string(what) + ": " + std::strerror(err) : std::string(what);
  auto id = static_cast<uint32_t>(server_);
  const Backend& backend = worker_.pool().backend(id);
  bool reused = upstream_ && upstream_->reused;
  // Bytes from the server are an answer, however bad: only a reused connection that ended or
  // failed with nothing to read was stale (and its request may go again for free).
  bool answered = !uin_.empty();
  closeUpstream(false);
  upstream_timer_.disarm();

  if (response_started_) {
    // Part of the response is already with the client: nothing can hide this failure.
    worker_.stats().backends[id].failures.add();
    worker_.reportFailure(id, reason);
    log::warn("server {} failed mid-response to {} {}: {}", backend.name, method_text, path, reason);
    fail(0, reason, Termination::ServerAbort);
    return;
  }
  endInflight();
  // A reused keep-alive connection the server had just closed is not a server failure.
  bool stale_keepalive = reused && !connect_phase && !answered;
  if (!stale_keepalive) {
    worker_.stats().backends[id].failures.add();
    worker_.reportFailure(id, reason);
  }
  // Nothing was sent when the connect failed: any request may go elsewhere. After a send, only
  // an idempotent request whose bytes we still hold may be replayed.
  bool may_retry = replayable_ && (connect_phase || (request_done_ && http::isIdempotent(method)));
  // A stale connection costs no retry, once: later attempts take no parked connection (they
  // would all be stale when the server has just died), so a dead server fails them at connect.
  fresh_only_ = fresh_only_ || stale_keepalive;
  uint32_t allowed = worker_.options().retries + (fresh_only_ ? 1 : 0);
  // A stale connection's retry is free; any other takes a slot of the retry budget.
  if (may_retry && attempts_ <= allowed && !stale_keepalive && !takeRetrySlot()) {
    worker_.stats().retries_budget_exhausted.add();
    log::debug("not retrying {} {} after {} on {}: the retry budget is spent", method_text, path, reason,
               backend.name);
    may_retry = false;
  }
  if (may_retry && attempts_ <= allowed) {
    worker_.stats().retries.add();
    log::debug("retrying {} {} after {} on {}", method_text, path, reason, backend.name);
    if (stale_keepalive) {
      tried_.pop_back();  // the server itself may be fine: it may be chosen again
    }
    connectUpstream();
    return;
  }
  if (connect_phase) {
    worker_.stats().no_server.add();
    fail(503, "no server could be reached", Termination::NoServer);
  } else {
    worker_.stats().bad_gateway.add();
    fail(502, reason, Termination::ServerError);
  }
}

void ProxyExchange::closeUpstream(bool reusable) {
  if (!upstream_) {
    return;
  }
  // Never freed here: the client's event may have brought us here with the server's event
  // still waiting in the same batch.
  // A connection to a send_proxy server announced one client in its PROXY header: it must never
  // carry another client's request, so it is not pooled (HAProxy makes it private to the client's
  // session). Keeping it for that client's next request would need the pool to key idle
  // connections by client; a new connection per request is the simple, safe price.
  if (reusable && worker_.pool().backend(upstream_->server()).send_proxy == 0) {
    worker_.pool().putIdle(std::move(upstream_));
  } else {
    worker_.pool().retire(std::move(upstream_));
  }
  uin_.release();
  uout_.release();
}

void ProxyExchange::onUpstreamTimeout() {
  if (state_ == State::Queued) {
    queue_time_ += worker_.loop().now() - t_queued_;
    worker_.stats().queue_timeouts.add();
    worker_.stats().no_server.add();
    fail(503, "no server was free within queue_timeout_ms", Termination::QueueTimeout);
    return;
  }
  if (state_ == State::Connecting) {
    upstreamFailed("connect: timed out", 0, true);
    return;
  }
  if (state_ != State::Exchanging) {
    return;
  }
  auto id = static_cast<uint32_t>(server_);
  std::string reason = "no answer within server_ms";
  if (response_started_) {
    Termination why = Termination::ClientTimeout;  // the client is the slow side, not the server
    if (client->exchangeHasRoom()) {
      worker_.reportFailure(id, reason);
      why = Termination::ServerTimeout;
    }
    fail(0, reason, why);
    return;
  }
  endInflight();
  if (!request_done_ && uout_.empty() && !send_failed_) {
    // The server has every byte the client sent: the wait is on the client's body.
    closeUpstream(false);
    server_ = kNoServer;
    fail(408, "request body not received in time", Termination::ClientTimeout);
    return;
  }
  worker_.stats().backends[id].failures.add();
  worker_.reportFailure(id, reason);
  closeUpstream(false);
  worker_.stats().gateway_timeout.add();
  server_ = kNoServer;  // already accounted
  fail(504, "the server did not answer in time", Termination::ServerTimeout);
}

}  // namespace fulcrum::lb
