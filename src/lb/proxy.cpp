#include "lb/proxy.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/buffer.h"
#include "core/log.h"
#include "core/socket.h"
#include "http/util.h"
#include "lb/forwarding.h"

namespace fulcrum::lb {

namespace {

constexpr size_t kHighWater = 64 * 1024;       // stop reading a side while the other has this much queued
constexpr size_t kMaxReplayBytes = 64 * 1024;  // requests up to this size can be re-sent on a retry
constexpr int kAcceptBatch = 64;
constexpr auto kLingerTime = std::chrono::seconds(2);

double millisBetween(core::TimePoint a, core::TimePoint b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

uint64_t hashClient(const core::SocketAddress& peer) {
  core::IpAddress ip = peer.ip();
  return hashBytes(std::string_view(reinterpret_cast<const char*>(ip.bytes.data()), ip.length()));
}

}  // namespace

class ProxySession final : public core::IoHandler, public UpstreamOwner, public core::Deletable {
 public:
  ProxySession(ProxyWorker& worker, core::Fd fd, const core::SocketAddress& peer);
  ~ProxySession() override;

  void onIoEvents(uint32_t events) override;  // client socket
  void onUpstreamEvents(uint32_t events) override;
  void drain();

  ProxySession* prev = nullptr;
  ProxySession* next = nullptr;

 private:
  enum class Phase : uint8_t { ClientHead, Connecting, Exchanging, Tunnel, Lingering, Closed };

  // Client side.
  void readClient();
  void processClient();
  void startRequest(size_t head_len);
  void forwardRequestBody();
  void flushClient();
  void updateClientInterest();

  // Upstream side.
  void connectUpstream();
  void onConnected();
  void readUpstream();
  void processUpstream();
  void flushUpstream();
  void updateUpstreamInterest();
  void upstreamFailed(const char* what, int err, bool connect_phase);
  void closeUpstream(bool reusable);

  // Outcomes.
  void finishExchange();
  void respondError(int status, std::string_view detail, bool close_client);
  void onClientTimeout();
  void onUpstreamTimeout();
  void startLingeringClose();
  void close();
  void accessLog(int status);

  ProxyWorker& worker_;
  core::Fd client_;
  core::SocketAddress peer_;
  std::string client_ip_;
  uint64_t client_hash_;
  core::Timer client_timer_;
  core::Timer upstream_timer_;
  std::unique_ptr<UpstreamConn> upstream_;
  uint32_t client_events_ = 0;

  core::Buffer cin_;
  core::Buffer cout_;
  core::Buffer uin_;
  core::Buffer uout_;

  Phase phase_ = Phase::ClientHead;
  http::RequestHead req_;
  http::ResponseHead resp_;
  http::BodyDecoder req_body_;
  http::BodyDecoder resp_body_;

  // The request in flight.
  http::Method method_ = http::Method::Get;
  std::string method_text_;
  std::string path_;
  uint8_t version_minor_ = 1;
  bool client_keep_alive_ = true;
  bool expect_continue_ = false;
  bool upgrade_ = false;
  bool request_done_ = false;      // the whole request has been queued upstream
  bool response_started_ = false;  // a byte of the final response went to the client
  bool response_head_done_ = false;
  bool dechunk_ = false;
  bool close_client_ = false;
  bool replayable_ = true;
  bool request_started_ = false;
  bool client_eof_ = false;     // tunnel: the client ended its side
  bool upstream_shut_ = false;  // tunnel: and the server has been told
  std::string replay_;          // every byte sent upstream for this request, while it fits
  int server_ = kNoServer;
  std::vector<uint32_t> tried_;
  uint32_t attempts_ = 0;
  bool fresh_only_ = false;  // a reused connection went stale: retries open new ones (once)
  int response_status_ = 0;
  uint64_t response_bytes_ = 0;
  core::TimePoint t_start_{};
  core::TimePoint t_connect_start_{};
  core::TimePoint t_connected_{};
  core::TimePoint t_response_{};
};

// ---------------------------------------------------------------------------------------------
// Life cycle

ProxySession::ProxySession(ProxyWorker& worker, core::Fd fd, const core::SocketAddress& peer)
    : worker_(worker),
      client_(std::move(fd)),
      peer_(peer),
      client_ip_(peer.ip().toString()),
      client_hash_(hashClient(peer)),
      client_timer_(worker.loop(), [this] { onClientTimeout(); }),
      upstream_timer_(worker.loop(), [this] { onUpstreamTimeout(); }) {
  client_events_ = EPOLLIN | EPOLLRDHUP;
  worker_.loop().add(client_.get(), client_events_, this);
  client_timer_.armAfter(worker_.options().client_timeout);
}

ProxySession::~ProxySession() {
  if (client_) {
    worker_.loop().remove(client_.get());
  }
}

void ProxySession::close() {
  if (phase_ == Phase::Closed) {
    return;
  }
  if (server_ != kNoServer && !response_head_done_ && phase_ != Phase::ClientHead) {
    worker_.pool().onRequestEnd(static_cast<uint32_t>(server_));
    worker_.stats().backends[static_cast<size_t>(server_)].inflight.sub();
  }
  phase_ = Phase::Closed;
  client_timer_.disarm();
  upstream_timer_.disarm();
  closeUpstream(false);
  worker_.loop().remove(client_.get());
  client_.reset();
  cin_.release();
  cout_.release();
  worker_.unlink(this);
  worker_.loop().deferDelete(std::unique_ptr<core::Deletable>(this));
}

void ProxySession::drain() {
  if (phase_ == Phase::ClientHead && cin_.empty() && cout_.empty()) {
    close();
  }
  // Busy sessions finish their exchange; worker_.draining() makes the response close.
}

// ---------------------------------------------------------------------------------------------
// Client side

void ProxySession::onIoEvents(uint32_t events) {
  if (phase_ == Phase::Closed) {
    return;
  }
  if (events & EPOLLERR) {
    close();
    return;
  }
  if (events & EPOLLOUT) {
    flushClient();
    if (phase_ == Phase::Closed) {
      return;
    }
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) {
    readClient();
  }
}

void ProxySession::readClient() {
  if (phase_ == Phase::Lingering) {
    char sink[4096];
    ssize_t n = ::recv(client_.get(), sink, sizeof sink, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      close();
    }
    return;
  }
  const http::Limits& limits = worker_.options().limits;
  size_t max_in = phase_ == Phase::ClientHead ? limits.max_header_bytes + 1 : kHighWater;
  if (cin_.size() >= max_in) {
    updateClientInterest();
    return;
  }
  ssize_t n = cin_.readFrom(client_.get(), max_in);
  if (n == 0) {
    // The client closed (or half-closed) its side.
    if (phase_ == Phase::Tunnel) {
      // Passed on once the server has every byte before it; the server's side stays open
      // until it closes too, so its last answer still reaches the client.
      client_eof_ = true;
      updateClientInterest();
      flushUpstream();
      return;
    }
    if (phase_ == Phase::ClientHead || !request_done_) {
      close();
      return;
    }
    // A complete request is in flight: finish sending its response, then close.
    close_client_ = true;
    updateClientInterest();
    return;
  }
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) {
      close();
    }
    return;
  }
  worker_.stats().bytes_in.add(static_cast<uint64_t>(n));
  if (phase_ == Phase::Tunnel) {
    client_timer_.armAfter(worker_.options().client_timeout);
  }
  processClient();
}

void ProxySession::processClient() {
  switch (phase_) {
    case Phase::ClientHead: {
      if (cin_.empty()) {
        return;
      }
      if (!request_started_) {
        request_started_ = true;
        // Until this head parses, an error answer belongs to no method (a stale HEAD would drop
        // the error body) and the access log names no earlier request.
        method_ = http::Method::Other;
        method_text_.clear();
        path_.clear();
        t_start_ = worker_.loop().now();
        client_timer_.armAfter(worker_.options().request_timeout);
      }
      http::ParseResult result = http::parseRequestHead(cin_.view(), worker_.options().limits, req_);
      if (result.state == http::ParseState::Incomplete) {
        if (cin_.size() > worker_.options().limits.max_header_bytes) {
          respondError(431, "request head too large", true);
        }
        return;
      }
      if (result.state == http::ParseState::Error) {
        worker_.stats().bad_requests.add();
        respondError(result.status, result.reason, true);
        return;
      }
      startRequest(result.consumed);
      return;
    }
    case Phase::Connecting:
    case Phase::Exchanging:
      forwardRequestBody();
      return;
    case Phase::Tunnel:
      uout_.append(cin_.view());
      cin_.clear();
      flushUpstream();
      return;
    default:
      return;
  }
}

void ProxySession::startRequest(size_t head_len) {
  ProxyStats& stats = worker_.stats();
  stats.requests_total.add();
  method_ = req_.method;
  method_text_.assign(req_.method_text);
  path_.assign(req_.path);
  version_minor_ = req_.version_minor;
  client_keep_alive_ = req_.keep_alive && !worker_.draining();
  expect_continue_ = req_.expect_continue;
  upgrade_ = req_.upgrade;
  close_client_ = !client_keep_alive_;
  response_started_ = false;
  response_head_done_ = false;
  dechunk_ = false;
  replayable_ = true;
  response_status_ = 0;
  response_bytes_ = 0;
  tried_.clear();
  attempts_ = 0;
  fresh_only_ = false;
  server_ = kNoServer;

  replay_.clear();
  ForwardInfo info{client_ip_, worker_.options().proto, {}};
  std::string authority;
  if (req_.host.empty()) {
    // HTTP/1.0 may omit Host; the HTTP/1.1 request we send may not. The authority the client
    // reached is ours (RFC 9112 §3.3); the syscall is paid only on this rare path.
    authority = core::localAddress(client_.get()).toString();
    info.server_address = authority;
  }
  appendUpstreamRequestHead(replay_, req_, info);
  req_body_.reset(req_.body_kind, req_.content_length, worker_.options().limits.max_body_bytes);
  request_done_ = req_.body_kind == http::BodyKind::None;
  cin_.consume(head_len);
  // The head views into cin_ are not used past this point.
  client_timer_.disarm();
  connectUpstream();
}

void ProxySession::forwardRequestBody() {
  // Decodes (validates) the request body and queues its raw bytes upstream.
  while (!request_done_ && !cin_.empty() && uout_.size() < kHighWater) {
    if (phase_ == Phase::Connecting && replay_.size() >= kMaxReplayBytes) {
      break;
    }
    // While connecting, step over no more bytes than replay_ can still take.
    std::string_view input = cin_.view();
    if (phase_ == Phase::Connecting && input.size() > kMaxReplayBytes - replay_.size()) {
      input = input.substr(0, kMaxReplayBytes - replay_.size());
    }
    http::BodyStep step = req_body_.step(input);
    if (step.error_status != 0) {
      worker_.stats().bad_requests.add();
      if (!response_started_) {
        respondError(step.error_status, "bad request body", true);
      } else {
        close();
      }
      return;
    }
    if (step.consumed == 0 && !step.done) {
      break;
    }
    std::string_view raw = cin_.view().substr(0, step.consumed);
    bool fits = replay_.size() + raw.size() <= kMaxReplayBytes;
    if (phase_ == Phase::Connecting) {
      // Until the connection is up, replay_ is the only copy: what does not fit waits in cin_.
      if (!fits) {
        break;
      }
      replay_.append(raw);
    } else {
      uout_.append(raw);
      if (replayable_ && fits) {
        replay_.append(raw);
      } else if (replayable_) {
        replayable_ = false;  // too large to re-send: this request will not be retried
        replay_.clear();
      }
    }
    cin_.consume(step.consumed);
    request_done_ = step.done;
  }
  if (phase_ == Phase::Exchanging) {
    flushUpstream();
  }
  updateClientInterest();
}

void ProxySession::flushClient() {
  while (!cout_.empty()) {
    ssize_t n = cout_.writeTo(client_.get());
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        break;
      }
      close();
      return;
    }
    worker_.stats().bytes_out.add(static_cast<uint64_t>(n));
    if (phase_ == Phase::Exchanging) {
      upstream_timer_.armAfter(worker_.options().server_timeout);  // the transfer is moving
    }
  }
  if (cout_.empty()) {
    if (phase_ == Phase::Lingering && client_) {
      startLingeringClose();
      return;
    }
    cout_.release();
  }
  updateClientInterest();
  // Room again on the client side: resume reading the server.
  if (upstream_ && cout_.size() < kHighWater) {
    updateUpstreamInterest();
  }
}

void ProxySession::updateClientInterest() {
  if (phase_ == Phase::Closed || !client_) {
    return;
  }
  // Reading stays on through an exchange (no epoll_ctl per request): a pipelined request is
  // simply kept in cin_. It pauses only for backpressure or once the client has closed.
  uint32_t events = 0;
  bool reading_paused =
      phase_ != Phase::Lingering && (close_client_ || client_eof_ || uout_.size() >= kHighWater ||
                                     (phase_ != Phase::ClientHead && cin_.size() >= kHighWater));
  if (!reading_paused) {
    events |= EPOLLIN | EPOLLRDHUP;
  }
  if (!cout_.empty()) {
    events |= EPOLLOUT;
  }
  if (events != client_events_) {
    client_events_ = events;
    worker_.loop().modify(client_.get(), events, this);
  }
}

// ---------------------------------------------------------------------------------------------
// Upstream side

void ProxySession::connectUpstream() {
  WorkerPool& pool = worker_.pool();
  PickContext ctx{client_hash_, path_, tried_};
  int server = pool.pick(ctx);
  if (server == kNoServer) {
    worker_.stats().no_server.add();
    respondError(503, tried_.empty() ? "no server is available" : "no server could be reached",
                 !request_done_);
    return;
  }
  server_ = server;
  auto id = static_cast<uint32_t>(server);
  tried_.push_back(id);
  ++attempts_;
  pool.onRequestStart(id);
  BackendStats& bstats = worker_.stats().backends[id];
  bstats.inflight.add();
  bstats.requests.add();
  t_connect_start_ = worker_.loop().now();

  uout_.clear();
  uin_.clear();
  // A non-idempotent request never rides a reused connection: if the server closed it at that
  // moment we could not tell whether the request was processed, so it could not be retried.
  if (http::isIdempotent(method_) && !fresh_only_) {
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
  upstream_ = std::make_unique<UpstreamConn>(worker_.loop(), id, std::move(fd), EPOLLOUT);
  upstream_->setOwner(this);
  phase_ = Phase::Connecting;
  upstream_timer_.armAfter(worker_.options().connect_timeout);
}

void ProxySession::onConnected() {
  phase_ = Phase::Exchanging;
  t_connected_ = worker_.loop().now();
  uout_.append(replay_);
  if (!replayable_) {
    // The body is streamed; what is left of it in cin_ follows as it arrives.
  }
  upstream_timer_.armAfter(worker_.options().server_timeout);
  if (!request_done_) {
    forwardRequestBody();  // also flushes
  } else {
    flushUpstream();
  }
}

void ProxySession::onUpstreamEvents(uint32_t events) {
  if (phase_ == Phase::Closed || !upstream_) {
    return;
  }
  if (phase_ == Phase::Connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(upstream_->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
      upstreamFailed("connect", err != 0 ? err : ECONNREFUSED, true);
      return;
    }
    onConnected();
    return;
  }
  if (events & EPOLLOUT) {
    flushUpstream();
    if (phase_ == Phase::Closed || !upstream_) {
      return;
    }
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)) {
    readUpstream();
  }
}

void ProxySession::flushUpstream() {
  bool wrote = false;
  while (upstream_ && !uout_.empty()) {
    ssize_t n = uout_.writeTo(upstream_->fd());
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        break;
      }
      upstreamFailed("send", errno, false);
      return;
    }
    wrote = true;
  }
  if (!upstream_) {
    return;
  }
  if (wrote && phase_ == Phase::Exchanging) {
    upstream_timer_.armAfter(worker_.options().server_timeout);  // a long upload is moving
  }
  if (client_eof_ && uout_.empty() && !upstream_shut_) {
    upstream_shut_ = true;
    ::shutdown(upstream_->fd(), SHUT_WR);
  }
  updateUpstreamInterest();
  if (uout_.size() < kHighWater) {
    // Room again upstream: resume reading the client.
    updateClientInterest();
    if (phase_ == Phase::Exchanging && !request_done_ && !cin_.empty()) {
      forwardRequestBody();
    }
  }
}

void ProxySession::updateUpstreamInterest() {
  if (!upstream_ || phase_ == Phase::Connecting) {
    return;
  }
  uint32_t events = 0;
  if (cout_.size() < kHighWater) {
    events |= EPOLLIN | EPOLLRDHUP;
  }
  if (!uout_.empty()) {
    events |= EPOLLOUT;
  }
  upstream_->setEvents(events);
}

void ProxySession::readUpstream() {
  if (cout_.size() >= kHighWater) {
    updateUpstreamInterest();
    return;
  }
  ssize_t n = uin_.readFrom(upstream_->fd(), kHighWater);
  if (n == 0) {
    if (phase_ == Phase::Tunnel) {
      // The server ended the tunnel: pass on what is queued, then close.
      closeUpstream(false);
      phase_ = Phase::Lingering;
      flushClient();
      return;
    }
    if (response_head_done_ && resp_.body_kind == http::BodyKind::UntilClose) {
      // The end of a close-delimited body.
      closeUpstream(false);
      finishExchange();
      return;
    }
    upstreamFailed("connection closed", 0, false);
    return;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) {
      return;
    }
    upstreamFailed("recv", errno, false);
    return;
  }
  if (phase_ == Phase::Tunnel) {
    client_timer_.armAfter(worker_.options().client_timeout);
  } else {
    upstream_timer_.armAfter(worker_.options().server_timeout);
  }
  processUpstream();
}

void ProxySession::processUpstream() {
  while (upstream_ && !uin_.empty()) {
    if (phase_ == Phase::Tunnel) {
      cout_.append(uin_.view());
      uin_.clear();
      break;
    }
    if (!response_head_done_) {
      http::ParseResult result =
          http::parseResponseHead(uin_.view(), worker_.options().limits, method_, resp_);
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
        if (resp_.status == 100 && expect_continue_ && !response_started_) {
          cout_.append("HTTP/1.1 100 Continue\r\n\r\n");
        }
        uin_.consume(result.consumed);
        continue;
      }
      response_head_done_ = true;
      response_started_ = true;
      response_status_ = resp_.status;
      t_response_ = worker_.loop().now();
      auto id = static_cast<uint32_t>(server_);
      worker_.pool().onRequestEnd(id);
      BackendStats& bstats = worker_.stats().backends[id];
      bstats.inflight.sub();
      int cls = resp_.status / 100;
      if (cls >= 1 && cls <= 5) {
        bstats.responses_by_class[static_cast<size_t>(cls)].add();
      }
      if (resp_.body_kind == http::BodyKind::Tunnel && !upgrade_ && method_ != http::Method::Connect) {
        upstreamFailed("unexpected protocol switch", 0, false);
        return;
      }
      bool client_http10 = version_minor_ == 0;
      dechunk_ = client_http10 && resp_.body_kind == http::BodyKind::Chunked;
      if (resp_.body_kind == http::BodyKind::UntilClose || dechunk_ || worker_.draining() ||
          !resp_.keep_alive) {
        // Without a length the client learns the end of the body from the close.
        if (resp_.body_kind == http::BodyKind::UntilClose || dechunk_) {
          close_client_ = true;
        }
      }
      if (worker_.draining()) {
        close_client_ = true;
      }
      ClientFraming framing{close_client_, client_http10 && client_keep_alive_ && !close_client_, dechunk_};
      std::string head;
      head.reserve(256);
      appendClientResponseHead(head, resp_, framing);
      cout_.append(head);
      uin_.consume(result.consumed);
      if (resp_.body_kind == http::BodyKind::Tunnel) {
        phase_ = Phase::Tunnel;
        request_done_ = true;
        upstream_timer_.disarm();
        client_timer_.armAfter(worker_.options().client_timeout);
        // Bytes the client sent after its upgrade request belong to the tunnel.
        if (!cin_.empty()) {
          uout_.append(cin_.view());
          cin_.clear();
        }
        continue;
      }
      resp_body_.reset(resp_.body_kind, resp_.content_length, 0);
      if (resp_.body_kind == http::BodyKind::None) {
        finishExchange();
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
    if (dechunk_) {
      cout_.append(step.payload);
    } else {
      cout_.append(uin_.view().substr(0, step.consumed));
    }
    response_bytes_ += step.payload.size();
    uin_.consume(step.consumed);
    if (step.done) {
      finishExchange();
      return;
    }
    if (cout_.size() >= kHighWater) {
      break;
    }
  }
  if (phase_ == Phase::Tunnel && !uout_.empty()) {
    flushUpstream();
  }
  flushClient();
}

void ProxySession::upstreamFailed(const char* what, int err, bool connect_phase) {
  std::string reason = err != 0 ? std::string(what) + ": " + std::strerror(err) : std::string(what);
  auto id = static_cast<uint32_t>(server_);
  const Backend& backend = worker_.pool().backend(id);
  bool reused = upstream_ && upstream_->reused;
  closeUpstream(false);
  upstream_timer_.disarm();

  if (response_started_) {
    // Part of the response is already with the client: nothing can hide this failure.
    worker_.stats().backends[id].failures.add();
    worker_.reportFailure(id, reason);
    log::warn("server {} failed mid-response to {} {}: {}", backend.name, method_text_, path_, reason);
    close();
    return;
  }
  worker_.pool().onRequestEnd(id);
  worker_.stats().backends[id].inflight.sub();
  // A reused keep-alive connection the server had just closed is not a server failure.
  bool stale_keepalive = reused && !connect_phase;
  if (!stale_keepalive) {
    worker_.stats().backends[id].failures.add();
    worker_.reportFailure(id, reason);
  }
  // Nothing was sent when the connect failed: any request may go elsewhere. After a send, only
  // an idempotent request whose bytes we still hold may be replayed.
  bool may_retry = replayable_ && (connect_phase || (request_done_ && http::isIdempotent(method_)));
  // A stale connection costs no retry, once: later attempts take no parked connection (they
  // would all be stale when the server has just died), so a dead server fails them at connect.
  fresh_only_ = fresh_only_ || stale_keepalive;
  uint32_t allowed = worker_.options().retries + (fresh_only_ ? 1 : 0);
  if (may_retry && attempts_ <= allowed) {
    worker_.stats().retries.add();
    log::debug("retrying {} {} after {} on {}", method_text_, path_, reason, backend.name);
    if (stale_keepalive) {
      tried_.pop_back();  // the server itself may be fine: it may be chosen again
    }
    connectUpstream();
    return;
  }
  if (connect_phase) {
    worker_.stats().no_server.add();
    respondError(503, "no server could be reached", !request_done_);
  } else {
    worker_.stats().bad_gateway.add();
    respondError(502, reason, !request_done_);
  }
}

void ProxySession::closeUpstream(bool reusable) {
  if (!upstream_) {
    return;
  }
  // Never freed here: the client's event may have brought us here with the server's event
  // still waiting in the same batch.
  if (reusable) {
    worker_.pool().putIdle(std::move(upstream_));
  } else {
    worker_.pool().retire(std::move(upstream_));
  }
  uin_.release();
  uout_.release();
}

void ProxySession::onUpstreamTimeout() {
  if (phase_ == Phase::Connecting) {
    upstreamFailed("connect: timed out", 0, true);
    return;
  }
  if (phase_ != Phase::Exchanging) {
    return;
  }
  auto id = static_cast<uint32_t>(server_);
  std::string reason = "no answer within server_ms";
  if (response_started_) {
    if (cout_.size() < kHighWater) {
      worker_.reportFailure(id, reason);  // else the client is the slow side, not the server
    }
    close();
    return;
  }
  worker_.pool().onRequestEnd(id);
  worker_.stats().backends[id].inflight.sub();
  if (!request_done_ && uout_.empty()) {
    // The server has every byte the client sent: the wait is on the client's body.
    closeUpstream(false);
    server_ = kNoServer;
    respondError(408, "request body not received in time", true);
    return;
  }
  worker_.stats().backends[id].failures.add();
  worker_.reportFailure(id, reason);
  closeUpstream(false);
  worker_.stats().gateway_timeout.add();
  server_ = kNoServer;  // already accounted
  respondError(504, "the server did not answer in time", true);
}

// ---------------------------------------------------------------------------------------------
// Outcomes

void ProxySession::finishExchange() {
  upstream_timer_.disarm();
  bool reusable = upstream_ && request_done_ && uin_.empty() && resp_.keep_alive &&
                  resp_.body_kind != http::BodyKind::UntilClose;
  int cls = response_status_ / 100;
  if (cls >= 1 && cls <= 5) {
    worker_.stats().responses_by_class[static_cast<size_t>(cls)].add();
  }
  accessLog(response_status_);
  closeUpstream(reusable);
  server_ = kNoServer;
  request_started_ = false;
  if (!request_done_) {
    // The server answered before the whole request arrived: the connection cannot be resynced.
    close_client_ = true;
  }
  if (close_client_ || worker_.draining()) {
    phase_ = Phase::Lingering;
    flushClient();
    return;
  }
  phase_ = Phase::ClientHead;
  client_timer_.armAfter(worker_.options().client_timeout);
  flushClient();
  if (phase_ == Phase::ClientHead && !cin_.empty()) {
    processClient();  // a pipelined request is already here
  } else if (cin_.empty()) {
    cin_.release();
  }
}

void ProxySession::respondError(int status, std::string_view detail, bool close_client) {
  if (response_started_) {
    close();
    return;
  }
  response_status_ = status;
  int cls = status / 100;
  worker_.stats().responses_by_class[static_cast<size_t>(cls)].add();
  std::string body(http::reasonPhrase(status));
  body += ": ";
  body += detail;
  body += "\n";
  std::string head;
  http::appendStatusLine(head, status);
  head += "Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: ";
  head += std::to_string(body.size());
  head += "\r\nConnection: close\r\n\r\n";
  cout_.append(head);
  if (method_ != http::Method::Head) {
    cout_.append(body);
  }
  (void)close_client;
  if (request_started_ || phase_ != Phase::ClientHead) {
    accessLog(status);
  }
  server_ = kNoServer;
  closeUpstream(false);
  upstream_timer_.disarm();
  response_started_ = true;
  phase_ = Phase::Lingering;
  flushClient();
}

void ProxySession::onClientTimeout() {
  if (phase_ == Phase::Lingering) {
    close();
    return;
  }
  if (phase_ == Phase::ClientHead && request_started_ && !cin_.empty()) {
    respondError(408, "request head not received in time", true);
    return;
  }
  if (phase_ == Phase::Tunnel) {
    close();
    return;
  }
  if (phase_ == Phase::ClientHead) {
    close();  // idle keep-alive
    return;
  }
  // Exchanging with a client that stopped reading or sending: give up.
  close();
}

void ProxySession::startLingeringClose() {
  phase_ = Phase::Lingering;
  ::shutdown(client_.get(), SHUT_WR);
  cin_.release();
  client_events_ = EPOLLIN | EPOLLRDHUP;
  worker_.loop().modify(client_.get(), client_events_, this);
  client_timer_.armAfter(kLingerTime);
}

void ProxySession::accessLog(int status) {
  if (!worker_.options().access_log || !log::enabled(log::Level::Info)) {
    return;
  }
  core::TimePoint now = worker_.loop().now();
  std::string_view server =
      server_ == kNoServer ? std::string_view("-") : std::string_view(worker_.pool().backend(server_).name);
  double connect_ms = t_connected_ >= t_connect_start_ && server_ != kNoServer
                          ? millisBetween(t_connect_start_, t_connected_)
                          : 0.0;
  double response_ms = t_response_ >= t_start_ ? millisBetween(t_start_, t_response_) : 0.0;
  std::string client = peer_.toString();
  auto num = [](std::string_view key, double value) { return log::Field{key, {}, value, true}; };
  auto str = [](std::string_view key, std::string_view value) { return log::Field{key, value, 0, false}; };
  log::event(log::Level::Info, "access",
             {str("client", client), str("method", method_text_), str("path", path_), num("status", status),
              num("bytes", static_cast<double>(response_bytes_)), str("server", server),
              num("retries", attempts_ > 0 ? attempts_ - 1 : 0), num("connect_ms", connect_ms),
              num("response_ms", response_ms), num("total_ms", millisBetween(t_start_, now))});
}

// ---------------------------------------------------------------------------------------------
// Worker

ProxyWorker::ProxyWorker(core::EventLoop& loop, core::Fd listener, WorkerPool& pool,
                         const ProxyOptions& options, ProxyStats& stats, FailureReporter report_failure)
    : loop_(loop),
      listener_(std::move(listener)),
      pool_(pool),
      options_(options),
      stats_(stats),
      report_failure_(std::move(report_failure)) {
  loop_.add(listener_.get(), EPOLLIN, this);
}

ProxyWorker::~ProxyWorker() {
  if (listener_) {
    loop_.remove(listener_.get());
  }
  while (head_ != nullptr) {
    ProxySession* s = head_;
    unlink(s);
    delete s;
  }
}

void ProxyWorker::onIoEvents(uint32_t) {
  for (int i = 0; i < kAcceptBatch; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        log::warn("accept: {}", std::strerror(errno));
      }
      return;
    }
    if (count_ >= options_.max_connections) {
      ::close(fd);
      continue;
    }
    core::setNoDelay(fd);
    auto* session = new ProxySession(
        *this, core::Fd(fd), core::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len));
    link(session);
    stats_.connections_total.add();
  }
}

void ProxyWorker::link(ProxySession* s) {
  s->next = head_;
  s->prev = nullptr;
  if (head_ != nullptr) {
    head_->prev = s;
  }
  head_ = s;
  ++count_;
  stats_.connections_active.add();
}

void ProxyWorker::unlink(ProxySession* s) {
  if (s->prev != nullptr) {
    s->prev->next = s->next;
  } else {
    head_ = s->next;
  }
  if (s->next != nullptr) {
    s->next->prev = s->prev;
  }
  s->prev = s->next = nullptr;
  --count_;
  stats_.connections_active.sub();
  if (draining_ && count_ == 0 && on_idle_) {
    auto fn = std::move(on_idle_);
    on_idle_ = nullptr;
    loop_.post(fn);
  }
}

void ProxyWorker::drain(std::function<void()> on_idle) {
  draining_ = true;
  on_idle_ = std::move(on_idle);
  if (listener_) {
    loop_.remove(listener_.get());
    listener_.reset();
  }
  for (ProxySession* s = head_; s != nullptr;) {
    ProxySession* next = s->next;
    s->drain();
    s = next;
  }
  if (count_ == 0 && on_idle_) {
    auto fn = std::move(on_idle_);
    on_idle_ = nullptr;
    loop_.post(fn);
  }
}

}  // namespace fulcrum::lb
