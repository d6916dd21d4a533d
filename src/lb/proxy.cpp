#include "lb/proxy.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "core/buffer.h"
#include "core/log.h"
#include "core/socket.h"
#include "http/util.h"
#include "lb/forwarding.h"

namespace fulcrum::lb {

namespace {

constexpr size_t kHighWater = 64 * 1024;       // stop reading a side while the other has this much queued
constexpr size_t kMaxReplayBytes = 64 * 1024;  // requests up to this size can be re-sent on a retry

double millisBetween(core::TimePoint a, core::TimePoint b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

uint64_t hashClient(const core::SocketAddress& peer) {
  core::IpAddress ip = peer.ip();
  return hashBytes(std::string_view(reinterpret_cast<const char*>(ip.bytes.data()), ip.length()));
}

// A Content-Length other than 0 ("0, 0" included): the parser has validated the value.
bool nonZeroLength(const http::ResponseHead& head) {
  std::optional<std::string_view> value = head.find("content-length");
  return value && value->find_first_not_of("0, \t") != std::string_view::npos;
}

// How a request ended, in its access line (HAProxy's termination state, in words).
enum class Termination : uint8_t {
  Done,           // the whole response went out
  Local,          // the lb answered itself (ACME challenge)
  Redirect,       // redirect_http
  BadRequest,     // refused by the parser (4xx/5xx of RFC 9112)
  RateLimited,    // rate_per_ip: 429
  NoServer,       // 503: nothing up, or every attempt failed to connect
  ServerError,    // 502: the server failed before its answer was complete
  ServerTimeout,  // 504, or a server that stalled mid-response
  ServerAbort,    // the server failed after part of its answer was with the client
  ClientTimeout,  // a head, body or download too slow (408, or closed)
  ClientAbort,    // the client closed or failed before its answer was complete
  Tunnel,         // an upgraded connection (101, CONNECT) that has ended
};

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
  }
  return "?";
}

}  // namespace

// The state of one request/response exchange. A session takes one from its worker's free list
// when a request starts and gives it back when the exchange ends, so an idle keep-alive client
// holds none of it, and the free list keeps capacities warm (no malloc per request).
struct Exchange {
  explicit Exchange(core::EventLoop& loop);
  void reset();

  ProxySession* owner = nullptr;
  core::Timer upstream_timer;
  std::unique_ptr<UpstreamConn> upstream;
  core::Buffer uin;
  core::Buffer uout;
  http::RequestHead req;
  http::ResponseHead resp;
  http::HeadScanner req_scanner;   // how far the head in the session's cin_ has been checked
  http::HeadScanner resp_scanner;  // the same for the response head in uin
  http::BodyDecoder req_body;
  http::BodyDecoder resp_body;
  std::string client_ip;
  http::Method method = http::Method::Get;
  std::string method_text;
  std::string path;
  std::string query;  // for the access log only
  uint8_t version_minor = 1;
  bool client_keep_alive = true;
  bool expect_continue = false;
  bool upgrade = false;
  bool request_done = false;      // the whole request has been queued upstream
  bool response_started = false;  // a byte of the final response went to the client
  bool response_head_done = false;
  bool dechunk = false;
  bool replayable = true;
  bool client_eof = false;     // tunnel: the client ended its side
  bool upstream_shut = false;  // tunnel: and the server has been told
  bool fresh_only = false;     // a reused connection went stale: retries open new ones (once)
  bool send_failed = false;    // the server stopped taking the request: the rest of its body is dropped
  std::string replay;          // every byte sent upstream for this request, while it fits
  int server = kNoServer;
  std::vector<uint32_t> tried;
  uint32_t attempts = 0;
  int response_status = 0;
  uint64_t response_bytes = 0;
  // Why the exchange ended, for the access log; set by whoever ends it.
  Termination term = Termination::Done;
  bool logged = false;  // its access line is written (once per request)
  core::TimePoint t_start{};
  core::TimePoint t_connect_start{};
  core::TimePoint t_connected{};
  core::TimePoint t_response{};
  // The request body's pace (min_body_rate): counted from body_start, restarted whenever the
  // lb itself held the body back (a slow server).
  core::TimePoint body_start{};
  uint64_t body_bytes = 0;
};

class ProxySession final : public core::IoHandler, public UpstreamOwner, public core::Deletable {
 public:
  // `secure`: the TLS transport on an https listener (null: plain TCP).
  ProxySession(ProxyWorker& worker, core::Fd fd, const core::SocketAddress& peer,
               std::unique_ptr<core::Transport> secure);
  ~ProxySession() override;

  void onIoEvents(uint32_t events) override;  // client socket
  void onUpstreamEvents(uint32_t events) override;
  void drain();
  // Between requests with nothing queued either way: closing it loses no work.
  bool idle() const {
    return phase_ == Phase::ClientHead && !request_started_ && cin_.empty() && cout_.empty();
  }
  void evict() { close(); }
  core::IpAddress peerIp() const { return peer_ip_; }

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
  bool writeUpstream();
  void updateUpstreamInterest();
  void upstreamFailed(const char* what, int err, bool connect_phase);
  void closeUpstream(bool reusable);

  // Outcomes.
  void finishExchange();
  // `extra_fields`: whole header lines ("Retry-After: 1\r\n") added to the answer.
  void respondError(int status, std::string_view detail, std::string_view extra_fields = {});
  // An answer of the lb's own (an error, a redirect, an ACME challenge); the connection closes after it.
  void respondLocal(int status, std::string_view content_type, std::string_view body,
                    std::string_view extra_fields);
  void onClientTimeout();
  void armBodyDeadline();
  bool bodyHeldBack() const;
  void armSendDeadline();
  void redirectToHttps();
  void onUpstreamTimeout();
  void startLingeringClose();
  void close();
  // The request line, for the access log: from the parsed head, or on a parse error from the
  // bytes still in cin_ (as far as the request line could be read).
  void noteRequestLine(bool reparse);
  // The request's one access line (and its time in the histogram when it was answered).
  void accessLog(int status, bool answered);
  void takeExchange();
  void releaseExchange();
  friend struct Exchange;

  ProxyWorker& worker_;
  core::Fd client_;
  // The client's byte stream: plain_ on an http listener, a TLS one (owned by secure_) on https.
  core::PlainTransport plain_;
  std::unique_ptr<core::Transport> secure_;
  core::Transport* transport_;
  core::IpAddress peer_ip_;
  uint16_t peer_port_;
  uint64_t client_hash_;
  core::Timer client_timer_;
  uint32_t client_events_ = 0;

  core::Buffer cin_;
  core::Buffer cout_;

  Phase phase_ = Phase::ClientHead;
  std::unique_ptr<Exchange> x_;  // the exchange in progress, from the worker's free list

  // The request in flight.
  bool close_client_ = false;
  bool request_started_ = false;
};

// ---------------------------------------------------------------------------------------------
// Life cycle

Exchange::Exchange(core::EventLoop& loop)
    : upstream_timer(loop, [this] {
        if (owner != nullptr) {
          owner->onUpstreamTimeout();
        }
      }) {}

void Exchange::reset() {
  upstream_timer.disarm();
  upstream.reset();
  uin.release();
  uout.release();
  req_scanner.reset();
  resp_scanner.reset();
  client_ip.clear();
  method = http::Method::Get;
  method_text.clear();
  path.clear();
  query.clear();
  version_minor = 1;
  client_keep_alive = true;
  expect_continue = false;
  upgrade = false;
  request_done = false;
  response_started = false;
  response_head_done = false;
  dechunk = false;
  replayable = true;
  client_eof = false;
  upstream_shut = false;
  fresh_only = false;
  send_failed = false;
  replay.clear();
  server = kNoServer;
  tried.clear();
  attempts = 0;
  response_status = 0;
  response_bytes = 0;
  term = Termination::Done;
  logged = false;
  t_start = t_connect_start = t_connected = t_response = body_start = core::TimePoint{};
  body_bytes = 0;
}

ProxySession::ProxySession(ProxyWorker& worker, core::Fd fd, const core::SocketAddress& peer,
                           std::unique_ptr<core::Transport> secure)
    : worker_(worker),
      client_(std::move(fd)),
      plain_(client_.get()),
      secure_(std::move(secure)),
      transport_(secure_ ? secure_.get() : &plain_),
      peer_ip_(peer.ip()),
      peer_port_(peer.port()),
      client_hash_(hashClient(peer)),
      client_timer_(worker.loop(), [this] { onClientTimeout(); }) {
  client_events_ = EPOLLIN | EPOLLRDHUP;
  worker_.loop().add(client_.get(), client_events_, this);
  // A TLS handshake must end within http_request_ms, as a head must (a client that stalls in it
  // holds a connection like a slow head).
  client_timer_.armAfter(transport_->handshaking() ? worker_.options().request_timeout
                                                   : worker_.options().client_timeout);
}

ProxySession::~ProxySession() {
  if (client_) {
    worker_.loop().remove(client_.get());
  }
  releaseExchange();
}

void ProxySession::takeExchange() {
  if (x_ == nullptr) {
    x_ = worker_.acquireExchange();
    x_->owner = this;
    x_->client_ip = peer_ip_.toString();
  }
}

void ProxySession::releaseExchange() {
  if (x_ != nullptr) {
    if (x_->upstream) {
      closeUpstream(false);
    }
    x_->owner = nullptr;
    x_->reset();
    worker_.releaseExchange(std::move(x_));
  }
}

void ProxySession::close() {
  if (phase_ == Phase::Closed) {
    return;
  }
  if (x_ != nullptr && request_started_ && !x_->logged) {
    // The request ends without its whole answer: it still gets its line, with why. A client that
    // got nothing is logged as nginx does, 499.
    if (x_->term == Termination::Done) {
      x_->term = Termination::ClientAbort;
    }
    if (phase_ == Phase::ClientHead) {
      noteRequestLine(true);
    }
    accessLog(x_->response_started ? x_->response_status : 499, false);
  }
  if (x_ != nullptr && x_->server != kNoServer && !x_->response_head_done && phase_ != Phase::ClientHead) {
    worker_.pool().onRequestEnd(static_cast<uint32_t>(x_->server));
    worker_.stats().backends[static_cast<size_t>(x_->server)].inflight.sub();
  }
  phase_ = Phase::Closed;
  client_timer_.disarm();
  releaseExchange();
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
  // A TLS transport may need the other direction to progress: a read (a handshake) that must
  // first write, a write that must first read.
  uint32_t extra = transport_->extraEvents();
  if ((events & EPOLLOUT) || ((events & EPOLLIN) && (extra & EPOLLIN))) {
    flushClient();
    if (phase_ == Phase::Closed) {
      return;
    }
  }
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) || ((events & EPOLLOUT) && (extra & EPOLLOUT))) {
    readClient();
  }
}

void ProxySession::readClient() {
  if (phase_ == Phase::Lingering) {
    if (core::lingerRead(client_.get())) {
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
  ssize_t n = transport_->read(cin_, max_in);
  if (n == 0) {
    // The client closed (or half-closed) its side.
    if (phase_ == Phase::Tunnel) {
      // Passed on once the server has every byte before it; the server's side stays open
      // until it closes too, so its last answer still reaches the client.
      x_->client_eof = true;
      updateClientInterest();
      flushUpstream();
      return;
    }
    if (phase_ == Phase::ClientHead || !x_->request_done) {
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
      return;
    }
    updateClientInterest();  // a TLS handshake may now wait to write
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
        takeExchange();
        // Until this head parses, an error answer belongs to no method (a stale HEAD would drop
        // the error body) and the access log names no earlier request.
        x_->method = http::Method::Other;
        x_->method_text.clear();
        x_->path.clear();
        x_->t_start = worker_.loop().now();
        client_timer_.armAfter(worker_.options().request_timeout);
      }
      http::ParseResult result = x_->req_scanner.parseRequest(cin_.view(), worker_.options().limits, x_->req);
      if (result.state == http::ParseState::Incomplete) {
        if (cin_.size() > worker_.options().limits.max_header_bytes) {
          noteRequestLine(true);
          x_->term = Termination::BadRequest;
          respondError(431, "request head too large");
        }
        return;
      }
      if (result.state == http::ParseState::Error) {
        worker_.stats().bad_requests.add();
        noteRequestLine(true);
        x_->term = Termination::BadRequest;
        respondError(result.status, result.reason);
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
      x_->uout.append(cin_.view());
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
  if (core::ClientTable* clients = worker_.options().clients; clients != nullptr) {
    core::ClientTable::Admission admission = clients->admitRequest(peer_ip_, worker_.loop().now());
    if (!admission.allowed) {
      // Over rate_per_ip: refused before any server sees it. The connection closes after the
      // answer (its body, if any, is drained by the lingering close), which also stops a
      // pipelined burst.
      noteRequestLine(false);
      x_->term = Termination::RateLimited;
      std::string retry = fmt::format("Retry-After: {}\r\n", core::retryAfterSeconds(admission.retry_after));
      respondError(429, "too many requests from this address", retry);
      return;
    }
  }
  if (worker_.options().acme_challenges != nullptr && x_->req.path.starts_with(tls::kAcmeChallengePrefix)) {
    std::string_view token = x_->req.path.substr(tls::kAcmeChallengePrefix.size());
    if (std::optional<std::string> answer = worker_.options().acme_challenges->find(token)) {
      // The CA checking that this node answers for the name (RFC 8555 §8.3): before any redirect.
      noteRequestLine(false);
      x_->term = Termination::Local;
      respondLocal(200, "application/octet-stream", *answer, {});
      return;
    }
  }
  if (worker_.options().redirect_https_port != 0) {
    redirectToHttps();
    return;
  }
  noteRequestLine(false);
  x_->version_minor = x_->req.version_minor;
  x_->client_keep_alive = x_->req.keep_alive && !worker_.draining();
  x_->expect_continue = x_->req.expect_continue;
  x_->upgrade = x_->req.upgrade;
  close_client_ = !x_->client_keep_alive;
  x_->response_started = false;
  x_->response_head_done = false;
  x_->dechunk = false;
  x_->replayable = true;
  x_->response_status = 0;
  x_->response_bytes = 0;
  x_->tried.clear();
  x_->attempts = 0;
  x_->fresh_only = false;
  x_->send_failed = false;
  x_->server = kNoServer;

  x_->replay.clear();
  ForwardInfo info{x_->client_ip, worker_.options().proto, {}};
  std::string authority;
  if (x_->req.host.empty()) {
    // HTTP/1.0 may omit Host; the HTTP/1.1 request we send may not. The authority the client
    // reached is ours (RFC 9112 §3.3); the syscall is paid only on this rare path.
    authority = core::localAddress(client_.get()).toString();
    info.server_address = authority;
  }
  const http::Limits& limits = worker_.options().limits;
  size_t fields = appendUpstreamRequestHead(x_->replay, x_->req, info);
  if (x_->replay.size() > limits.max_header_bytes || fields > limits.max_headers) {
    // Our forwarding fields made it larger than a server with our limits takes: refuse it here,
    // as that server would, rather than accept a request no server can be given.
    worker_.stats().bad_requests.add();
    x_->replay.clear();
    x_->term = Termination::BadRequest;
    respondError(431, "request head too large once forwarded");
    return;
  }
  x_->req_body.reset(x_->req.body_kind, x_->req.content_length, limits.max_body_bytes);
  x_->request_done = x_->req.body_kind == http::BodyKind::None;
  cin_.consume(head_len);
  // The head views into cin_ are not used past this point.
  client_timer_.disarm();
  if (!x_->request_done) {
    x_->body_start = worker_.loop().now();
    x_->body_bytes = 0;
    armBodyDeadline();
  }
  connectUpstream();
}

void ProxySession::forwardRequestBody() {
  // Decodes (validates) the request body and queues its raw bytes upstream, writing as it goes.
  // Every pass either consumes client bytes or stops: a decoder that needs more input than cin_
  // holds (a chunk-size line split across reads) ends it until the client sends more.
  for (;;) {
    bool progressed = false;
    while (!x_->request_done && !cin_.empty() && x_->uout.size() < kHighWater) {
      if (phase_ == Phase::Connecting && x_->replay.size() >= kMaxReplayBytes) {
        break;
      }
      // While connecting, step over no more bytes than x_->replay can still take.
      std::string_view input = cin_.view();
      if (phase_ == Phase::Connecting && input.size() > kMaxReplayBytes - x_->replay.size()) {
        input = input.substr(0, kMaxReplayBytes - x_->replay.size());
      }
      http::BodyStep step = x_->req_body.step(input);
      if (step.error_status != 0) {
        worker_.stats().bad_requests.add();
        x_->term = Termination::BadRequest;
        if (!x_->response_started) {
          respondError(step.error_status, "bad request body");
        } else {
          close();
        }
        return;
      }
      if (step.consumed == 0 && !step.done) {
        break;
      }
      std::string_view raw = cin_.view().substr(0, step.consumed);
      bool fits = x_->replay.size() + raw.size() <= kMaxReplayBytes;
      if (x_->send_failed) {
        // The server stopped reading; its answer is on the way. The body is checked and dropped.
      } else if (phase_ == Phase::Connecting) {
        // Until the connection is up, x_->replay is the only copy: what does not fit waits in cin_.
        if (!fits) {
          break;
        }
        x_->replay.append(raw);
      } else {
        x_->uout.append(raw);
        if (x_->replayable && fits) {
          x_->replay.append(raw);
        } else if (x_->replayable) {
          x_->replayable = false;  // too large to re-send: this request will not be retried
          x_->replay.clear();
        }
      }
      cin_.consume(step.consumed);
      x_->request_done = step.done;
      x_->body_bytes += step.consumed;
      progressed = true;
    }
    if (progressed) {
      armBodyDeadline();
    }
    if (phase_ == Phase::Exchanging && !x_->send_failed && !writeUpstream()) {
      return;  // the exchange ended or moved on (retry, error answer): nothing here is current
    }
    // More may fit now that some was written; stop when nothing moved or nothing is left.
    if (!progressed || x_->request_done || cin_.empty() || x_->uout.size() >= kHighWater ||
        phase_ != Phase::Exchanging) {
      break;
    }
  }
  updateClientInterest();
}

void ProxySession::flushClient() {
  bool wrote = false;
  while (!cout_.empty()) {
    ssize_t n = transport_->write(cout_);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        break;
      }
      close();
      return;
    }
    worker_.stats().bytes_out.add(static_cast<uint64_t>(n));
    wrote = true;
    if (phase_ == Phase::Exchanging) {
      x_->upstream_timer.armAfter(worker_.options().server_timeout);  // the transfer is moving
    }
  }
  if (cout_.empty()) {
    if (phase_ == Phase::Lingering && client_) {
      startLingeringClose();
      return;
    }
    cout_.release();
    if (phase_ == Phase::Connecting || phase_ == Phase::Exchanging) {
      armBodyDeadline();  // the send deadline, if one ran, is over
    }
  } else if (wrote || !client_timer_.armed()) {
    armSendDeadline();
  }
  updateClientInterest();
  // Room again on the client side: resume reading the server.
  if (x_ && x_->upstream && cout_.size() < kHighWater) {
    updateUpstreamInterest();
  }
}

void ProxySession::updateClientInterest() {
  if (phase_ == Phase::Closed || !client_) {
    return;
  }
  // Reading stays on through an exchange (no epoll_ctl per request): a pipelined request is
  // simply kept in cin_. It pauses only for backpressure or once the client has closed.
  // A request that will close the connection still has its body read to the end.
  uint32_t events = 0;
  bool body_pending = x_ && phase_ != Phase::ClientHead && !x_->request_done;
  bool reading_paused =
      phase_ != Phase::Lingering &&
      ((close_client_ && !body_pending) || (x_ && (x_->client_eof || x_->uout.size() >= kHighWater)) ||
       (phase_ != Phase::ClientHead && cin_.size() >= kHighWater));
  if (!reading_paused) {
    events |= EPOLLIN | EPOLLRDHUP;
  }
  if (!cout_.empty()) {
    events |= EPOLLOUT;
  }
  events |= transport_->extraEvents();
  if (events != client_events_) {
    client_events_ = events;
    worker_.loop().modify(client_.get(), events, this);
  }
}

// ---------------------------------------------------------------------------------------------
// Upstream side

void ProxySession::connectUpstream() {
  WorkerPool& pool = worker_.pool();
  PickContext ctx{client_hash_, x_->path, x_->tried};
  int server = pool.pick(ctx);
  if (server == kNoServer) {
    worker_.stats().no_server.add();
    x_->term = Termination::NoServer;
    respondError(503, x_->tried.empty() ? "no server is available" : "no server could be reached");
    return;
  }
  x_->server = server;
  auto id = static_cast<uint32_t>(server);
  x_->tried.push_back(id);
  ++x_->attempts;
  pool.onRequestStart(id);
  BackendStats& bstats = worker_.stats().backends[id];
  bstats.inflight.add();
  bstats.requests.add();
  x_->t_connect_start = worker_.loop().now();

  x_->uout.clear();
  x_->uin.clear();
  x_->send_failed = false;
  x_->resp_scanner.reset();
  // A non-idempotent request never rides a reused connection: if the server closed it at that
  // moment we could not tell whether the request was processed, so it could not be retried.
  if (http::isIdempotent(x_->method) && !x_->fresh_only) {
    x_->upstream = pool.takeIdle(id);
  }
  if (x_->upstream) {
    x_->upstream->setOwner(this);
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
  x_->upstream = std::make_unique<UpstreamConn>(worker_.loop(), id, std::move(fd), EPOLLOUT);
  x_->upstream->setOwner(this);
  phase_ = Phase::Connecting;
  x_->upstream_timer.armAfter(worker_.options().connect_timeout);
}

void ProxySession::onConnected() {
  phase_ = Phase::Exchanging;
  x_->t_connected = worker_.loop().now();
  x_->uout.append(x_->replay);  // a streamed body's remainder follows from cin_ as it arrives
  x_->upstream_timer.armAfter(worker_.options().server_timeout);
  if (!x_->request_done) {
    forwardRequestBody();  // also flushes
  } else {
    flushUpstream();
  }
}

void ProxySession::onUpstreamEvents(uint32_t events) {
  if (phase_ == Phase::Closed || !x_ || !x_->upstream) {
    return;
  }
  if (phase_ == Phase::Connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(x_->upstream->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
      upstreamFailed("connect", err != 0 ? err : ECONNREFUSED, true);
      return;
    }
    onConnected();
    return;
  }
  if (events & EPOLLOUT) {
    const UpstreamConn* conn = x_->upstream.get();
    flushUpstream();
    // The events are this connection's: if the exchange ended or moved to another server
    // (a retry, an early answer), they are stale.
    if (phase_ == Phase::Closed || !x_ || x_->upstream.get() != conn) {
      return;
    }
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)) {
    readUpstream();
  }
}

void ProxySession::flushUpstream() {
  if (!writeUpstream()) {
    return;
  }
  if (x_->uout.size() < kHighWater) {
    // Room again upstream: resume reading the client, and pass on what it already sent.
    updateClientInterest();
    if (phase_ == Phase::Exchanging && !x_->request_done && !cin_.empty()) {
      forwardRequestBody();
    }
  }
}

bool ProxySession::writeUpstream() {
  // Returns false when the exchange ended or changed under us (failure, retry, early answer):
  // the caller then touches nothing of it.
  if (!x_->upstream) {
    return false;
  }
  bool wrote = false;
  while (!x_->uout.empty()) {
    ssize_t n = x_->uout.writeTo(x_->upstream->fd());
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        break;
      }
      if (phase_ == Phase::Exchanging && !x_->response_head_done && !x_->send_failed) {
        // A server may answer and close before taking the whole request (a 413 to a large
        // upload). Its answer, if any, is readable before the reset: relay it rather than a 502.
        x_->send_failed = true;
        x_->uout.clear();
        log::debug("server {} stopped reading the request: {}", worker_.pool().backend(x_->server).name,
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
  if (wrote && phase_ == Phase::Exchanging) {
    x_->upstream_timer.armAfter(worker_.options().server_timeout);  // a long upload is moving
  }
  if (x_->client_eof && x_->uout.empty() && !x_->upstream_shut) {
    x_->upstream_shut = true;
    ::shutdown(x_->upstream->fd(), SHUT_WR);
  }
  updateUpstreamInterest();
  return true;
}

void ProxySession::updateUpstreamInterest() {
  if (!x_->upstream || phase_ == Phase::Connecting) {
    return;
  }
  uint32_t events = 0;
  if (cout_.size() < kHighWater) {
    events |= EPOLLIN | EPOLLRDHUP;
  }
  if (!x_->uout.empty()) {
    events |= EPOLLOUT;
  }
  x_->upstream->setEvents(events);
}

void ProxySession::readUpstream() {
  if (cout_.size() >= kHighWater) {
    updateUpstreamInterest();
    return;
  }
  ssize_t n = x_->uin.readFrom(x_->upstream->fd(), kHighWater);
  if (n == 0) {
    if (phase_ == Phase::Tunnel) {
      // The server ended the tunnel: pass on what is queued, then close.
      closeUpstream(false);
      phase_ = Phase::Lingering;
      flushClient();
      return;
    }
    if (x_->response_head_done && x_->resp.body_kind == http::BodyKind::UntilClose) {
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
    x_->upstream_timer.armAfter(worker_.options().server_timeout);
  }
  processUpstream();
}

void ProxySession::processUpstream() {
  while (x_->upstream && !x_->uin.empty()) {
    if (phase_ == Phase::Tunnel) {
      cout_.append(x_->uin.view());
      x_->uin.clear();
      break;
    }
    if (!x_->response_head_done) {
      http::ParseResult result =
          x_->resp_scanner.parseResponse(x_->uin.view(), worker_.options().limits, x_->method, x_->resp);
      if (result.state == http::ParseState::Incomplete) {
        if (x_->uin.size() >= worker_.options().limits.max_header_bytes) {
          upstreamFailed("response head too large", 0, false);
        }
        return;
      }
      if (result.state == http::ParseState::Error) {
        log::warn("server {} sent a bad response: {}", worker_.pool().backend(x_->server).name,
                  result.reason);
        upstreamFailed("bad response", 0, false);
        return;
      }
      if (x_->resp.status < 200 && x_->resp.status != 101) {
        // Interim response: pass 100 Continue to a client that asked for it, drop others.
        if (x_->resp.status == 100 && x_->expect_continue && !x_->response_started) {
          cout_.append("HTTP/1.1 100 Continue\r\n\r\n");
        }
        x_->uin.consume(result.consumed);
        continue;
      }
      // A server that puts framing on a 204 (RFC 9112 §6.1, RFC 9110 §8.6), or sends bytes after
      // a response that has no body, disagrees with us on where its response ends: relaying any
      // of it could hand the client, or the next request, a response that was not theirs.
      if (x_->resp.status == 204 && (x_->resp.find("transfer-encoding") || nonZeroLength(x_->resp))) {
        upstreamFailed("framing fields on a 204 response", 0, false);
        return;
      }
      if (x_->resp.body_kind == http::BodyKind::None && x_->uin.size() > result.consumed) {
        upstreamFailed("bytes after a response without a body", 0, false);
        return;
      }
      // Checked before any of the response is committed: the client gets a 502, not a close.
      if (x_->resp.body_kind == http::BodyKind::Tunnel && !x_->upgrade &&
          x_->method != http::Method::Connect) {
        upstreamFailed("unexpected protocol switch", 0, false);
        return;
      }
      x_->response_head_done = true;
      x_->response_started = true;
      x_->response_status = x_->resp.status;
      x_->t_response = worker_.loop().now();
      auto id = static_cast<uint32_t>(x_->server);
      worker_.pool().onRequestEnd(id);
      BackendStats& bstats = worker_.stats().backends[id];
      bstats.inflight.sub();
      int cls = x_->resp.status / 100;
      if (cls >= 1 && cls <= 5) {
        bstats.responses_by_class[static_cast<size_t>(cls)].add();
      }
      bstats.response_time.observe(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(x_->t_response - x_->t_connect_start)
              .count()));
      bool client_http10 = x_->version_minor == 0;
      x_->dechunk = client_http10 && x_->resp.body_kind == http::BodyKind::Chunked;
      if (x_->resp.body_kind == http::BodyKind::UntilClose || x_->dechunk || worker_.draining() ||
          !x_->resp.keep_alive) {
        // Without a length the client learns the end of the body from the close.
        if (x_->resp.body_kind == http::BodyKind::UntilClose || x_->dechunk) {
          close_client_ = true;
        }
      }
      if (worker_.draining() || !x_->request_done) {
        // Draining, or the server answered before the whole request arrived (a 413 to a large
        // upload): the connection cannot carry another request, so the answer says it closes.
        close_client_ = true;
      }
      ClientFraming framing{close_client_, client_http10 && x_->client_keep_alive && !close_client_,
                            x_->dechunk, worker_.options().hsts};
      // Built in a per-thread scratch string: its capacity is reused, no allocation per response.
      thread_local std::string head;
      head.clear();
      appendClientResponseHead(head, x_->resp, framing);
      cout_.append(head);
      x_->uin.consume(result.consumed);
      if (x_->resp.body_kind == http::BodyKind::Tunnel) {
        phase_ = Phase::Tunnel;
        x_->term = Termination::Tunnel;  // logged when the tunnel ends
        x_->request_done = true;
        x_->upstream_timer.disarm();
        client_timer_.armAfter(worker_.options().client_timeout);
        // Bytes the client sent after its upgrade request belong to the tunnel.
        if (!cin_.empty()) {
          x_->uout.append(cin_.view());
          cin_.clear();
        }
        continue;
      }
      x_->resp_body.reset(x_->resp.body_kind, x_->resp.content_length, 0);
      if (x_->resp.body_kind == http::BodyKind::None) {
        finishExchange();
        return;
      }
    }
    // Response body.
    http::BodyStep step = x_->resp_body.step(x_->uin.view());
    if (step.error_status != 0) {
      upstreamFailed("bad response body", 0, false);
      return;
    }
    if (step.consumed == 0 && !step.done) {
      break;
    }
    if (x_->dechunk) {
      cout_.append(step.payload);
    } else {
      cout_.append(x_->uin.view().substr(0, step.consumed));
    }
    x_->response_bytes += step.payload.size();
    x_->uin.consume(step.consumed);
    if (step.done) {
      finishExchange();
      return;
    }
    if (cout_.size() >= kHighWater) {
      break;
    }
  }
  if (phase_ == Phase::Tunnel && !x_->uout.empty()) {
    flushUpstream();
  }
  flushClient();
}

void ProxySession::upstreamFailed(const char* what, int err, bool connect_phase) {
  std::string reason = err != 0 ? std::string(what) + ": " + std::strerror(err) : std::string(what);
  auto id = static_cast<uint32_t>(x_->server);
  const Backend& backend = worker_.pool().backend(id);
  bool reused = x_->upstream && x_->upstream->reused;
  // Bytes from the server are an answer, however bad: only a reused connection that ended or
  // failed with nothing to read was stale (and its request may go again for free).
  bool answered = !x_->uin.empty();
  closeUpstream(false);
  x_->upstream_timer.disarm();

  if (x_->response_started) {
    // Part of the response is already with the client: nothing can hide this failure.
    worker_.stats().backends[id].failures.add();
    worker_.reportFailure(id, reason);
    log::warn("server {} failed mid-response to {} {}: {}", backend.name, x_->method_text, x_->path, reason);
    x_->term = Termination::ServerAbort;
    close();
    return;
  }
  worker_.pool().onRequestEnd(id);
  worker_.stats().backends[id].inflight.sub();
  // A reused keep-alive connection the server had just closed is not a server failure.
  bool stale_keepalive = reused && !connect_phase && !answered;
  if (!stale_keepalive) {
    worker_.stats().backends[id].failures.add();
    worker_.reportFailure(id, reason);
  }
  // Nothing was sent when the connect failed: any request may go elsewhere. After a send, only
  // an idempotent request whose bytes we still hold may be replayed.
  bool may_retry = x_->replayable && (connect_phase || (x_->request_done && http::isIdempotent(x_->method)));
  // A stale connection costs no retry, once: later attempts take no parked connection (they
  // would all be stale when the server has just died), so a dead server fails them at connect.
  x_->fresh_only = x_->fresh_only || stale_keepalive;
  uint32_t allowed = worker_.options().retries + (x_->fresh_only ? 1 : 0);
  if (may_retry && x_->attempts <= allowed) {
    worker_.stats().retries.add();
    log::debug("retrying {} {} after {} on {}", x_->method_text, x_->path, reason, backend.name);
    if (stale_keepalive) {
      x_->tried.pop_back();  // the server itself may be fine: it may be chosen again
    }
    connectUpstream();
    return;
  }
  if (connect_phase) {
    worker_.stats().no_server.add();
    x_->term = Termination::NoServer;
    respondError(503, "no server could be reached");
  } else {
    worker_.stats().bad_gateway.add();
    x_->term = Termination::ServerError;
    respondError(502, reason);
  }
}

void ProxySession::closeUpstream(bool reusable) {
  if (x_ == nullptr || !x_->upstream) {
    return;
  }
  // Never freed here: the client's event may have brought us here with the server's event
  // still waiting in the same batch.
  if (reusable) {
    worker_.pool().putIdle(std::move(x_->upstream));
  } else {
    worker_.pool().retire(std::move(x_->upstream));
  }
  x_->uin.release();
  x_->uout.release();
}

void ProxySession::onUpstreamTimeout() {
  if (phase_ == Phase::Connecting) {
    upstreamFailed("connect: timed out", 0, true);
    return;
  }
  if (phase_ != Phase::Exchanging) {
    return;
  }
  auto id = static_cast<uint32_t>(x_->server);
  std::string reason = "no answer within server_ms";
  if (x_->response_started) {
    if (cout_.size() < kHighWater) {
      worker_.reportFailure(id, reason);  // else the client is the slow side, not the server
      x_->term = Termination::ServerTimeout;
    } else {
      x_->term = Termination::ClientTimeout;
    }
    close();
    return;
  }
  worker_.pool().onRequestEnd(id);
  worker_.stats().backends[id].inflight.sub();
  if (!x_->request_done && x_->uout.empty() && !x_->send_failed) {
    // The server has every byte the client sent: the wait is on the client's body.
    closeUpstream(false);
    x_->server = kNoServer;
    x_->term = Termination::ClientTimeout;
    respondError(408, "request body not received in time");
    return;
  }
  worker_.stats().backends[id].failures.add();
  worker_.reportFailure(id, reason);
  closeUpstream(false);
  worker_.stats().gateway_timeout.add();
  x_->server = kNoServer;  // already accounted
  x_->term = Termination::ServerTimeout;
  respondError(504, "the server did not answer in time");
}

// ---------------------------------------------------------------------------------------------
// Outcomes

void ProxySession::finishExchange() {
  x_->upstream_timer.disarm();
  bool reusable = x_->upstream && x_->request_done && x_->uin.empty() && x_->resp.keep_alive &&
                  x_->resp.body_kind != http::BodyKind::UntilClose;
  int cls = x_->response_status / 100;
  if (cls >= 1 && cls <= 5) {
    worker_.stats().responses_by_class[static_cast<size_t>(cls)].add();
  }
  accessLog(x_->response_status, true);
  closeUpstream(reusable);
  x_->server = kNoServer;
  request_started_ = false;
  if (!x_->request_done) {
    // The server answered before the whole request arrived: the connection cannot be resynced.
    close_client_ = true;
  }
  releaseExchange();
  if (close_client_ || worker_.draining()) {
    phase_ = Phase::Lingering;
    client_timer_.disarm();  // the flush arms the send deadline if the client is slow to take the rest
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

void ProxySession::respondError(int status, std::string_view detail, std::string_view extra_fields) {
  std::string body(http::reasonPhrase(status));
  body += ": ";
  body += detail;
  body += "\n";
  respondLocal(status, "text/plain; charset=utf-8", body, extra_fields);
}

void ProxySession::respondLocal(int status, std::string_view content_type, std::string_view body,
                                std::string_view extra_fields) {
  if (x_->response_started) {
    close();
    return;
  }
  x_->response_status = status;
  int cls = status / 100;
  worker_.stats().responses_by_class[static_cast<size_t>(cls)].add();
  std::string head;
  http::appendStatusLine(head, status);
  head += "Content-Type: ";
  head += content_type;
  head += "\r\nCache-Control: no-store\r\nContent-Length: ";
  head += std::to_string(body.size());
  head += "\r\n";
  head += extra_fields;
  if (worker_.options().hsts) {
    head += kHstsField;
  }
  head += "Connection: close\r\n\r\n";
  cout_.append(head);
  if (x_->method != http::Method::Head) {
    cout_.append(body);
  }
  if (request_started_ || phase_ != Phase::ClientHead) {
    accessLog(status, true);
  }
  x_->server = kNoServer;
  closeUpstream(false);
  x_->upstream_timer.disarm();
  x_->response_started = true;
  phase_ = Phase::Lingering;
  releaseExchange();       // the answer is in cout_; nothing else of the exchange is needed
  client_timer_.disarm();  // the flush arms the send deadline if the client is slow to take it
  flushClient();
}

void ProxySession::onClientTimeout() {
  ProxyStats& stats = worker_.stats();
  switch (phase_) {
    case Phase::ClientHead:
      if (request_started_ && !cin_.empty()) {
        stats.slow_head.add();
        noteRequestLine(true);
        x_->term = Termination::ClientTimeout;
        respondError(408, "request head not received in time");
        return;
      }
      if (!cout_.empty()) {
        stats.slow_send.add();
      }
      close();  // idle keep-alive, or a client that stopped taking its responses
      return;
    case Phase::Connecting:
    case Phase::Exchanging:
      if (!x_->request_done && worker_.options().min_body_rate != 0) {
        if (bodyHeldBack()) {
          // The lb is the one holding the body back (a slow server, a connect): that time is
          // not the client's; its pace is measured afresh.
          x_->body_start = worker_.loop().now();
          x_->body_bytes = 0;
          armBodyDeadline();
          return;
        }
        stats.slow_body.add();
        x_->term = Termination::ClientTimeout;
        if (!x_->response_started) {
          respondError(408, "request body too slow");
        } else {
          close();
        }
        return;
      }
      if (!cout_.empty()) {
        stats.slow_send.add();
        x_->term = Termination::ClientTimeout;
        close();
      }
      return;
    case Phase::Lingering:
      if (!cout_.empty()) {
        stats.slow_send.add();
      }
      close();
      return;
    case Phase::Tunnel:
    case Phase::Closed:
      close();
      return;
  }
}

void ProxySession::redirectToHttps() {
  // [lb.tls] redirect_http: the same host and target on the https listener, 308 so that the
  // method and body are kept (RFC 9110 §15.4.9).
  noteRequestLine(false);
  x_->term = Termination::Redirect;
  // An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
  std::string_view authority = absoluteFormAuthority(x_->req);
  std::string_view host = authority.empty() ? x_->req.host : authority;
  std::string fallback;
  if (host.empty()) {
    fallback = core::localAddress(client_.get()).ip().toString();
    host = fallback;
  } else if (host.front() == '[') {
    host = host.substr(0, host.find(']') + 1);  // [v6]:port
  } else if (size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  // The path and query, as sent (origin-form), or taken from an absolute-form target.
  std::string tail = !authority.empty()                ? originForm(x_->req.target, authority)
                     : x_->req.target.starts_with('/') ? std::string(x_->req.target)
                                                       : std::string("/");
  uint16_t port = worker_.options().redirect_https_port;
  std::string location = fmt::format("Location: https://{}{}{}\r\n", host,
                                     port == 443 ? std::string() : fmt::format(":{}", port), tail);
  respondError(308, "this site is served over https", location);
}

void ProxySession::armBodyDeadline() {
  // While a body is coming and min_body_rate is set, it must average that pace after a grace of
  // request_timeout; a trickle that would hold the connection (and a server's) for ever gets a
  // 408. With the whole request in, only a send deadline (armed by flushClient) remains.
  uint32_t rate = worker_.options().min_body_rate;
  if (x_->request_done || rate == 0) {
    if (cout_.empty()) {
      client_timer_.disarm();
    }
    return;
  }
  // Each byte in buys 1/rate of a second; the credit is capped at a day.
  uint64_t credit_ms = std::min<uint64_t>(x_->body_bytes * 1000 / rate, 86'400'000);
  client_timer_.armAt(x_->body_start + worker_.options().request_timeout + core::millis(credit_ms));
}

bool ProxySession::bodyHeldBack() const {
  // Bytes the client sent that the lb has not passed on yet: the wait is on our side.
  return !cin_.empty() || x_->uout.size() >= kHighWater;
}

void ProxySession::armSendDeadline() {
  // Bytes wait for a client that takes them slowly or not at all: it gets client_timeout from
  // its last progress. A running head or body deadline is left alone (it ends sooner, or
  // already judges this client).
  switch (phase_) {
    case Phase::ClientHead:
      if (request_started_) {
        return;
      }
      break;
    case Phase::Connecting:
    case Phase::Exchanging:
      if (!x_->request_done && worker_.options().min_body_rate != 0) {
        return;
      }
      break;
    case Phase::Lingering:
      break;
    case Phase::Tunnel:
    case Phase::Closed:
      return;
  }
  client_timer_.armAfter(worker_.options().client_timeout);
}

void ProxySession::startLingeringClose() {
  phase_ = Phase::Lingering;
  cin_.release();
  transport_->shutdownWrite();
  client_events_ = EPOLLIN | EPOLLRDHUP;
  worker_.loop().modify(client_.get(), client_events_, this);
  client_timer_.armAfter(core::kLingerTime);
}

void ProxySession::noteRequestLine(bool reparse) {
  if (reparse) {
    // The scanner's views may point where cin_ held the head before it grew: the request line is
    // read again from cin_ itself (error paths only). The method stays Other: the error answer
    // keeps its body.
    (void)http::parseRequestHead(cin_.view(), worker_.options().limits, x_->req);
  } else {
    x_->method = x_->req.method;
  }
  std::string_view path = x_->req.path;
  std::string_view query = x_->req.query;
  if (path.empty()) {
    // A request line refused after its target (a 505 version): the target as sent.
    size_t mark = x_->req.target.find('?');
    path = x_->req.target.substr(0, mark);
    query = mark == std::string_view::npos ? std::string_view() : x_->req.target.substr(mark + 1);
  }
  x_->method_text.assign(x_->req.method_text);
  x_->path.assign(path);
  x_->query.assign(query);
}

void ProxySession::accessLog(int status, bool answered) {
  x_->logged = true;
  core::TimePoint now = worker_.loop().now();
  if (answered) {
    // An answered request is timed here, once: the access line and the histogram agree.
    worker_.stats().total_time[worker_.options().tls != nullptr ? 1 : 0].observe(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now - x_->t_start).count()));
  }
  if (!worker_.options().access_log || !log::enabled(log::Level::Info)) {
    return;
  }
  std::string_view server = x_->server == kNoServer
                                ? std::string_view("-")
                                : std::string_view(worker_.pool().backend(x_->server).name);
  bool connected = x_->server != kNoServer && x_->t_connected >= x_->t_connect_start &&
                   x_->t_connect_start != core::TimePoint{};
  double connect_ms = connected ? millisBetween(x_->t_connect_start, x_->t_connected) : 0.0;
  // The server's own time: from its connection being ready (the request going out) to its head.
  double server_ms =
      connected && x_->t_response >= x_->t_connected ? millisBetween(x_->t_connected, x_->t_response) : 0.0;
  double response_ms = x_->t_response >= x_->t_start ? millisBetween(x_->t_start, x_->t_response) : 0.0;
  std::string client = core::SocketAddress(peer_ip_, peer_port_).toString();
  std::string target;
  std::string_view path = x_->path;
  if (!x_->query.empty()) {
    target.reserve(x_->path.size() + 1 + x_->query.size());
    target.append(x_->path).append(1, '?').append(x_->query);
    path = target;
  }
  auto num = [](std::string_view key, double value) { return log::Field{key, {}, value, true}; };
  auto str = [](std::string_view key, std::string_view value) { return log::Field{key, value, 0, false}; };
  log::event(log::Level::Info, "access",
             {str("client", client), str("method", x_->method_text), str("path", path), num("status", status),
              num("bytes", static_cast<double>(x_->response_bytes)), str("server", server),
              num("retries", x_->attempts > 0 ? x_->attempts - 1 : 0), num("connect_ms", connect_ms),
              num("server_ms", server_ms), num("response_ms", response_ms),
              num("total_ms", millisBetween(x_->t_start, now)), str("term", terminationName(x_->term))});
}

// ---------------------------------------------------------------------------------------------
// Worker

ProxyWorker::ProxyWorker(core::EventLoop& loop, core::Fd listener, WorkerPool& pool,
                         const ProxyOptions& options, ProxyStats& stats, FailureReporter report_failure)
    : loop_(loop),
      pool_(pool),
      options_(options),
      stats_(stats),
      report_failure_(std::move(report_failure)),
      // conn_per_ip is judged at accept, before a byte is read; at max_connections the oldest
      // idle keep-alive connection makes room.
      sessions_(
          loop, std::move(listener), "lb http",
          core::ConnectionLimits{options.max_connections, options.clients, true, &stats.refused,
                                 &stats.evicted},
          [this](core::Fd fd, const core::SocketAddress& peer) { return accept(std::move(fd), peer); }) {}

std::unique_ptr<Exchange> ProxyWorker::acquireExchange() {
  if (free_exchanges_.empty()) {
    return std::make_unique<Exchange>(loop_);
  }
  std::unique_ptr<Exchange> x = std::move(free_exchanges_.back());
  free_exchanges_.pop_back();
  return x;
}

void ProxyWorker::releaseExchange(std::unique_ptr<Exchange> exchange) {
  // Keep enough for a busy moment; beyond that, give the memory back.
  if (free_exchanges_.size() < 1024) {
    free_exchanges_.push_back(std::move(exchange));
  }
}

ProxyWorker::~ProxyWorker() {
  sessions_.closeAll();  // while the free list the sessions give their exchanges back to lives
}

ProxySession* ProxyWorker::accept(core::Fd fd, const core::SocketAddress& peer) {
  std::unique_ptr<core::Transport> secure;
  if (options_.tls != nullptr) {
    secure = options_.tls->newTransport(fd.get());
    if (!secure) {
      return nullptr;  // never plaintext on an https listener
    }
  }
  stats_.connections_total.add();
  stats_.connections_active.add();
  return new ProxySession(*this, std::move(fd), peer, std::move(secure));
}

void ProxyWorker::unlink(ProxySession* s) {
  stats_.connections_active.sub();
  sessions_.remove(s);
}

void ProxyWorker::drain(std::function<void()> on_idle) {
  sessions_.drain(std::move(on_idle));
}

}  // namespace fulcrum::lb
