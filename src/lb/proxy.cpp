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
#include "lb/exchange.h"
#include "lb/forwarding.h"
#include "lb/h2_connection.h"
#include "lb/outlier.h"

namespace fulcrum::lb {

namespace {

constexpr size_t kHighWater = ProxyExchange::kHighWater;  // stop reading a side while the other has this much queued

double millisBetween(core::TimePoint a, core::TimePoint b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// The client preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace

uint64_t hashClientIp(const core::IpAddress& ip) {
  return hashBytes(std::string_view(reinterpret_cast<const char*>(ip.bytes.data()), ip.length()));
}

// The HTTP/1.1 client codec on one connection: reads requests from the transport (plain TCP or
// TLS), checks their heads and bodies, hands each to an exchange, and frames the exchange's
// response back; pipelined requests wait in cin_ and are served in order.
class ProxySession final : public core::IoHandler, public ExchangeClient, public H2Carrier, public core::Deletable {
 public:
  // `secure`: the TLS transport on an https listener (null: plain TCP).
  ProxySession(ProxyWorker& worker, core::Fd fd, const core::SocketAddress& peer,
               std::unique_ptr<core::Transport> secure);
  ~ProxySession() override;

  void onIoEvents(uint32_t events) override;  // client socket
  void drain();
  // Between requests with nothing queued either way: closing it loses no work.
  bool idle() const {
    if (phase_ == Phase::H2) {
      return h2_->idle() && cout_.empty();
    }
    return phase_ == Phase::ClientHead && !request_started_ && cin_.empty() && cout_.empty();
  }
  void evict() { close(); }
  core::IpAddress peerIp() const { return peer_ip_; }

  ProxySession* prev = nullptr;
  ProxySession* next = nullptr;

  // ExchangeClient
  void exchangeContinue() override;
  void exchangeResponseHead(const http::ResponseHead& head) override;
  void exchangeResponseBody(std::string_view raw, std::string_view payload) override;
  void exchangeComplete() override;
  void exchangeFailed(int status, std::string_view detail, Termination why) override;
  void exchangeAborted(Termination why) override;
  void exchangeTunnelData(std::string_view bytes) override;
  void exchangeTunnelClosed() override;
  bool exchangeHasRoom() const override { return cout_.size() < kHighWater; }
  void exchangeFlush() override { flushClient(); }
  void exchangeWantsBody() override;

  // H2Carrier
  void h2Pump() override;

 private:
  // The connection: a head being read, a request's exchange running, an upgraded tunnel, an
  // HTTP/2 connection (h2_ does the rest), the last answer going out before the close.
  enum class Phase : uint8_t { ClientHead, Exchange, Tunnel, H2, Lingering, Closed };

  // The first bytes of a connection: HTTP/2 when ALPN chose h2, or (h2c) when they are the
  // preface. True when the session switched (or waits for the rest of a preface).
  bool maybeStartH2();
  void readH2();

  void readClient();
  void processClient();
  void startRequest(size_t head_len);
  void forwardRequestBody();
  void flushClient();
  void updateClientInterest();

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
  void startLingeringClose();
  void close();
  // The request line, for the access log: from the parsed head, or on a parse error from the
  // bytes still in cin_ (as far as the request line could be read).
  void noteRequestLine(bool reparse);
  // The request's one access line (and its time in the histogram when it was answered).
  void accessLog(int status, bool answered);
  void takeRequest();
  void releaseRequest();

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
  std::unique_ptr<Http1Request> r_;  // the request in progress, from the worker's free list
  ProxyExchange* x_ = nullptr;       // its exchange (&r_->exchange)

  bool close_client_ = false;
  bool request_started_ = false;
  bool fresh_ = true;  // no request yet: HTTP/2 may still start
  std::unique_ptr<H2Connection> h2_;
  core::TimePoint h2_progress_{};  // HTTP/2: the socket last took bytes (or had none to take)
};

// ---------------------------------------------------------------------------------------------
// Life cycle

ProxySession::ProxySession(ProxyWorker& worker, core::Fd fd, const core::SocketAddress& peer,
                           std::unique_ptr<core::Transport> secure)
    : worker_(worker),
      client_(std::move(fd)),
      plain_(client_.get()),
      secure_(std::move(secure)),
      transport_(secure_ ? secure_.get() : &plain_),
      peer_ip_(peer.ip()),
      peer_port_(peer.port()),
      client_hash_(hashClientIp(peer.ip())),
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
  releaseRequest();
}

void ProxySession::takeRequest() {
  if (r_ == nullptr) {
    r_ = worker_.acquireRequest();
    x_ = &r_->exchange;
    x_->client = this;
    x_->client_hash = client_hash_;
    x_->client_address = core::SocketAddress(peer_ip_, peer_port_);
    x_->client_fd = client_.get();
  }
}

void ProxySession::releaseRequest() {
  if (r_ != nullptr) {
    r_->reset();
    x_ = nullptr;
    worker_.releaseRequest(std::move(r_));
  }
}

void ProxySession::close() {
  if (phase_ == Phase::Closed) {
    return;
  }
  if (r_ != nullptr && request_started_ && !r_->logged) {
    // The request ends without its whole answer: it still gets its line, with why. A client that
    // got nothing is logged as nginx does, 499.
    if (x_->term == Termination::Done) {
      x_->term = Termination::ClientAbort;
    }
    if (phase_ == Phase::ClientHead) {
      noteRequestLine(true);
    }
    accessLog(x_->responseStarted() ? x_->responseStatus() : 499, false);
  }
  phase_ = Phase::Closed;
  client_timer_.disarm();
  releaseRequest();  // the exchange's in-flight count and server connection end with it
  h2_.reset();       // its streams' exchanges end with it (each logs its line)
  worker_.loop().remove(client_.get());
  client_.reset();
  cin_.release();
  cout_.release();
  worker_.unlink(this);
  worker_.loop().deferDelete(std::unique_ptr<core::Deletable>(this));
}

void ProxySession::drain() {
  if (phase_ == Phase::H2) {
    h2_->shutdown();  // GOAWAY: open streams finish, then the connection ends
    return;
  }
  if (phase_ == Phase::ClientHead && cin_.empty() && cout_.empty() && !worker_.lingeringIdle()) {
    close();
  }
  // Busy sessions finish their exchange; worker_.draining() makes the response close.
}

// ---------------------------------------------------------------------------------------------
// Reading requests

void ProxySession::onIoEvents(uint32_t events) {
  if (phase_ == Phase::Closed) {
    return;
  }
  if (events & EPOLLERR) {
    close();
    return;
  }
  if (phase_ == Phase::H2) {
    if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) {
      readH2();
      if (phase_ != Phase::H2) {
        return;
      }
    }
    h2Pump();
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
      x_->clientEnded();
      updateClientInterest();
      return;
    }
    // A request still waiting for a server slot leaves the queue (HAProxy's abortonclose): no
    // server has seen it, and a client gone under load must not cost a slot. Only a client that
    // half-closed yet still reads loses its answer.
    if (phase_ == Phase::ClientHead || !x_->requestDone() || x_->queued()) {
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
  if (fresh_ && phase_ == Phase::ClientHead && maybeStartH2()) {
    return;
  }
  processClient();
}

bool ProxySession::maybeStartH2() {
  bool h2 = transport_->alpn() == "h2";
  if (!h2 && worker_.options().h2c && secure_ == nullptr) {
    std::string_view in = cin_.view();
    size_t n = std::min(in.size(), kH2Preface.size());
    if (in.substr(0, n) != kH2Preface.substr(0, n)) {
      return false;
    }
    if (n < kH2Preface.size()) {
      if (!request_started_) {
        client_timer_.armAfter(worker_.options().request_timeout);  // the rest of the preface
      }
      return true;
    }
    h2 = true;
  }
  if (!h2) {
    return false;
  }
  fresh_ = false;
  phase_ = Phase::H2;
  client_timer_.armAfter(worker_.options().client_timeout);  // from now on the H2 checks (onClientTimeout)
  core::SocketAddress peer(peer_ip_, peer_port_);
  h2_ = std::make_unique<H2Connection>(worker_, *this, cout_, peer, client_.get(), secure_ != nullptr);
  if (!h2_->start()) {
    close();
    return true;
  }
  if (!h2_->receive(cin_)) {
    h2Pump();  // the GOAWAY, then the close
    return true;
  }
  cin_.release();
  h2Pump();
  return true;
}

void ProxySession::readH2() {
  ssize_t n = transport_->read(cin_, kHighWater);
  if (n == 0) {
    close();  // the client is gone: its open streams end with the connection
    return;
  }
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) {
      close();
    }
    return;
  }
  worker_.stats().bytes_in.add(static_cast<uint64_t>(n));
  h2_->receive(cin_);  // takes every byte
  if (h2_->idle()) {
    cin_.release();  // an idle connection holds no read buffer (thousands may be open)
  }
}

void ProxySession::h2Pump() {
  if (phase_ != Phase::H2 || !client_) {
    return;
  }
  // Frames out while the socket takes them; each round frames at most a high-water mark.
  bool wrote = false;
  for (int round = 0; round < 64; ++round) {
    h2_->produce();
    if (cout_.empty()) {
      break;
    }
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
    }
    if (!cout_.empty()) {
      break;  // the socket is full: EPOLLOUT resumes
    }
  }
  if (cout_.empty()) {
    cout_.release();
    if (h2_->finished()) {
      phase_ = Phase::Lingering;
      h2_.reset();
      client_timer_.disarm();
      startLingeringClose();
      return;
    }
  }
  // One timer, never pushed back by activity (a client that keeps a connection busy with PINGs
  // must not keep its stalled streams alive): each expiry judges the socket's progress, the
  // connection's quiet and its streams' (onClientTimeout).
  if (wrote || cout_.empty()) {
    h2_progress_ = worker_.loop().now();
  }
  if (!client_timer_.armed()) {
    client_timer_.armAfter(worker_.options().client_timeout);
  }
  uint32_t events = EPOLLIN | EPOLLRDHUP | transport_->extraEvents();
  if (!cout_.empty()) {
    events |= EPOLLOUT;
  }
  if (events != client_events_) {
    client_events_ = events;
    worker_.loop().modify(client_.get(), events, this);
  }
}

void ProxySession::processClient() {
  switch (phase_) {
    case Phase::ClientHead: {
      if (cin_.empty()) {
        return;
      }
      if (!request_started_) {
        request_started_ = true;
        fresh_ = false;
        takeRequest();
        // Until this head parses, an error answer belongs to no method (a stale HEAD would drop
        // the error body) and the access log names no earlier request.
        x_->method = http::Method::Other;
        x_->method_text.clear();
        x_->path.clear();
        x_->t_start = worker_.loop().now();
        client_timer_.armAfter(worker_.options().request_timeout);
      }
      http::ParseResult result = r_->req_scanner.parseRequest(cin_.view(), worker_.options().limits, r_->req);
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
    case Phase::Exchange:
      forwardRequestBody();
      return;
    case Phase::Tunnel:
      x_->tunnelFromClient(cin_.view());  // copied before anything is sent
      cin_.clear();
      return;
    default:
      return;
  }
}

void ProxySession::startRequest(size_t head_len) {
  ProxyStats& stats = worker_.stats();
  stats.requests_total.add();
  const http::RequestHead& req = r_->req;
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
  if (worker_.options().acme_challenges != nullptr && req.path.starts_with(tls::kAcmeChallengePrefix)) {
    std::string_view token = req.path.substr(tls::kAcmeChallengePrefix.size());
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
  r_->version_minor = req.version_minor;
  r_->client_keep_alive = req.keep_alive && !worker_.draining();
  r_->dechunk = false;
  x_->expect_continue = req.expect_continue;
  x_->upgrade = req.upgrade;
  close_client_ = !r_->client_keep_alive;

  std::string client_ip = peer_ip_.toString();  // ForwardInfo holds views
  ForwardInfo info{client_ip, worker_.options().proto, {}};
  std::string authority;
  if (req.host.empty()) {
    // HTTP/1.0 may omit Host; the HTTP/1.1 request we send may not. The authority the client
    // reached is ours (RFC 9112 §3.3); the syscall is paid only on this rare path.
    authority = core::localAddress(client_.get()).toString();
    info.server_address = authority;
  }
  const http::Limits& limits = worker_.options().limits;
  if (const std::string& cookie = worker_.options().sticky_cookie; !cookie.empty()) {
    std::string_view server = findCookie(req, cookie);
    x_->sticky = server.empty() ? kNoServer : worker_.pool().findByName(server);
  }
  x_->replay.clear();
  size_t fields = appendUpstreamRequestHead(x_->replay, req, info);
  if (x_->replay.size() > limits.max_header_bytes || fields > limits.max_headers) {
    // Our forwarding fields made it larger than a server with our limits takes: refuse it here,
    // as that server would, rather than accept a request no server can be given.
    worker_.stats().bad_requests.add();
    x_->replay.clear();
    x_->term = Termination::BadRequest;
    respondError(431, "request head too large once forwarded");
    return;
  }
  r_->req_body.reset(req.body_kind, req.content_length, limits.max_body_bytes);
  bool request_done = req.body_kind == http::BodyKind::None;
  cin_.consume(head_len);
  // The head views into cin_ are not used past this point.
  client_timer_.disarm();
  phase_ = Phase::Exchange;
  if (!request_done) {
    r_->body_start = worker_.loop().now();
    r_->body_bytes = 0;
  }
  x_->start(request_done);
  if (phase_ == Phase::Exchange && r_ != nullptr && !x_->requestDone()) {
    armBodyDeadline();
  }
}

void ProxySession::forwardRequestBody() {
  // Decodes (validates) the request body and gives its raw bytes to the exchange, which sends
  // them as it goes. Every pass either consumes client bytes or stops: a decoder that needs more
  // input than cin_ holds (a chunk-size line split across reads) ends it until the client sends
  // more.
  for (;;) {
    bool progressed = false;
    bool full = false;  // the exchange had no room for what cin_ holds
    while (!x_->requestDone() && !cin_.empty()) {
      size_t room = x_->bodyRoom();
      if (room == 0) {
        full = true;
        break;
      }
      std::string_view input = cin_.view();
      if (input.size() > room) {
        input = input.substr(0, room);
      }
      http::BodyStep step = r_->req_body.step(input);
      if (step.error_status != 0) {
        worker_.stats().bad_requests.add();
        x_->term = Termination::BadRequest;
        if (!x_->responseStarted()) {
          respondError(step.error_status, "bad request body");
        } else {
          close();
        }
        return;
      }
      if (step.consumed == 0 && !step.done) {
        break;
      }
      x_->takeBody(cin_.view().substr(0, step.consumed), step.done);
      cin_.consume(step.consumed);
      r_->body_bytes += step.consumed;
      progressed = true;
    }
    if (progressed) {
      armBodyDeadline();
    }
    if (!x_->sendBody()) {
      return;  // the exchange ended or moved on (retry, error answer): nothing here is current
    }
    // More may fit now that some was written; stop when nothing moved or nothing is left. A
    // pass that found the exchange full goes on if the send made room: the exchange says so
    // only from a later EPOLLOUT, and there is none when the whole send went out at once (the
    // replay buffer, full after a long connect or TLS handshake, sent in one go).
    if ((!progressed && !full) || x_->requestDone() || cin_.empty() || x_->holdsBody() || x_->connecting()) {
      break;
    }
  }
  updateClientInterest();
}

void ProxySession::exchangeWantsBody() {
  // Room again upstream: resume reading the client, and pass on what it already sent.
  updateClientInterest();
  if (phase_ == Phase::Exchange && !x_->requestDone()) {
    forwardRequestBody();
  }
}

// ---------------------------------------------------------------------------------------------
// Writing responses

void ProxySession::exchangeContinue() {
  cout_.append("HTTP/1.1 100 Continue\r\n\r\n");
}

void ProxySession::exchangeResponseHead(const http::ResponseHead& resp) {
  bool client_http10 = r_->version_minor == 0;
  r_->dechunk = client_http10 && resp.body_kind == http::BodyKind::Chunked;
  // Without a length the client learns the end of the body from the close.
  if (resp.body_kind == http::BodyKind::UntilClose || r_->dechunk) {
    close_client_ = true;
  }
  if (worker_.draining() || !x_->requestDone()) {
    // Draining, or the server answered before the whole request arrived (a 413 to a large
    // upload): the connection cannot carry another request, so the answer says it closes.
    close_client_ = true;
  }
  ClientFraming framing{close_client_, client_http10 && r_->client_keep_alive && !close_client_, r_->dechunk,
                        worker_.options().hsts};
  if (!worker_.options().sticky_cookie.empty() && x_->stickyMoved()) {
    framing.sticky_cookie = worker_.options().sticky_cookie;
    framing.sticky_server = worker_.pool().backend(static_cast<uint32_t>(x_->server())).name;
  }
  // Built in a per-thread scratch string: its capacity is reused, no allocation per response.
  thread_local std::string head;
  head.clear();
  appendClientResponseHead(head, resp, framing);
  cout_.append(head);
  if (resp.body_kind == http::BodyKind::Tunnel) {
    phase_ = Phase::Tunnel;
    client_timer_.armAfter(worker_.options().client_timeout);
    // Bytes the client sent after its upgrade request belong to the tunnel.
    if (!cin_.empty()) {
      x_->queueTunnel(cin_.view());
      cin_.clear();
    }
  }
}

void ProxySession::exchangeResponseBody(std::string_view raw, std::string_view payload) {
  cout_.append(r_->dechunk ? payload : raw);
}

void ProxySession::exchangeTunnelData(std::string_view bytes) {
  cout_.append(bytes);
  client_timer_.armAfter(worker_.options().client_timeout);
}

void ProxySession::exchangeTunnelClosed() {
  // The server ended the tunnel: what is queued goes out, then the connection closes.
  phase_ = Phase::Lingering;
  flushClient();
}

void ProxySession::exchangeComplete() {
  int status = x_->responseStatus();
  int cls = status / 100;
  if (cls >= 1 && cls <= 5) {
    worker_.stats().responses_by_class[static_cast<size_t>(cls)].add();
  }
  accessLog(status, true);
  x_->release();
  request_started_ = false;
  if (!x_->requestDone()) {
    // The server answered before the whole request arrived: the connection cannot be resynced.
    close_client_ = true;
  }
  releaseRequest();
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

void ProxySession::exchangeFailed(int status, std::string_view detail, Termination why) {
  x_->term = why;
  respondError(status, detail);
}

void ProxySession::exchangeAborted(Termination why) {
  x_->term = why;
  close();
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
  if (x_->responseStarted()) {
    close();
    return;
  }
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
  phase_ = Phase::Lingering;
  releaseRequest();        // the answer is in cout_; nothing else of the request is needed
  client_timer_.disarm();  // the flush arms the send deadline if the client is slow to take it
  flushClient();
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
    if (phase_ == Phase::Exchange) {
      x_->clientProgress();
    }
  }
  if (cout_.empty()) {
    if (phase_ == Phase::Lingering && client_) {
      startLingeringClose();
      return;
    }
    cout_.release();
    if (phase_ == Phase::Exchange) {
      armBodyDeadline();  // the send deadline, if one ran, is over
    }
  } else if (wrote || !client_timer_.armed()) {
    armSendDeadline();
  }
  updateClientInterest();
  // Room again on the client side: resume reading the server.
  if (x_ != nullptr && cout_.size() < kHighWater) {
    x_->clientRoom();
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
  bool body_pending = x_ != nullptr && phase_ == Phase::Exchange && !x_->requestDone();
  bool reading_paused = phase_ != Phase::Lingering &&
                        ((close_client_ && !body_pending) || (x_ != nullptr && (x_->clientEof() || x_->holdsBody())) ||
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
// Deadlines

void ProxySession::onClientTimeout() {
  ProxyStats& stats = worker_.stats();
  switch (phase_) {
    case Phase::H2: {
      core::TimePoint now = worker_.loop().now();
      core::Duration limit = worker_.options().client_timeout;
      if (!cout_.empty() && now - h2_progress_ >= limit) {
        stats.slow_send.add();  // the client stopped reading its socket
        close();
        return;
      }
      if (h2_->idle()) {
        if (now - h2_->lastActive() < limit) {
          client_timer_.armAt(h2_->lastActive() + limit);
          return;
        }
        if (h2_->shutdownSent()) {
          close();  // the client keeps it open past our GOAWAY: ours ends now
          return;
        }
        h2_->shutdown();  // client_ms without a stream: GOAWAY, then the close
        h2Pump();
        if (phase_ == Phase::H2) {
          client_timer_.armAfter(core::kLingerTime);
        }
        return;
      }
      h2_->stalled(now);
      client_timer_.armAfter(limit);
      h2Pump();
      return;
    }
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
    case Phase::Exchange:
      if (!x_->requestDone() && worker_.options().min_body_rate != 0) {
        if (bodyHeldBack()) {
          // The lb is the one holding the body back (a slow server, a connect): that time is
          // not the client's; its pace is measured afresh.
          r_->body_start = worker_.loop().now();
          r_->body_bytes = 0;
          armBodyDeadline();
          return;
        }
        stats.slow_body.add();
        x_->term = Termination::ClientTimeout;
        if (!x_->responseStarted()) {
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
  const http::RequestHead& req = r_->req;
  noteRequestLine(false);
  x_->term = Termination::Redirect;
  // An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
  std::string_view authority = absoluteFormAuthority(req);
  std::string_view host = authority.empty() ? req.host : authority;
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
  std::string tail = !authority.empty()             ? originForm(req.target, authority)
                     : req.target.starts_with('/') ? std::string(req.target)
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
  if (x_->requestDone() || rate == 0) {
    if (cout_.empty()) {
      client_timer_.disarm();
    }
    return;
  }
  // Each byte in buys 1/rate of a second; the credit is capped at a day.
  uint64_t credit_ms = std::min<uint64_t>(r_->body_bytes * 1000 / rate, 86'400'000);
  client_timer_.armAt(r_->body_start + worker_.options().request_timeout + core::millis(credit_ms));
}

bool ProxySession::bodyHeldBack() const {
  // Bytes the client sent that the lb has not passed on yet: the wait is on our side.
  return !cin_.empty() || x_->holdsBody();
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
    case Phase::Exchange:
      if (!x_->requestDone() && worker_.options().min_body_rate != 0) {
        return;
      }
      break;
    case Phase::Lingering:
      break;
    case Phase::Tunnel:
    case Phase::H2:
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

// ---------------------------------------------------------------------------------------------
// The access log

void ProxySession::noteRequestLine(bool reparse) {
  http::RequestHead& req = r_->req;
  if (reparse) {
    // The scanner's views may point where cin_ held the head before it grew: the request line is
    // read again from cin_ itself (error paths only). The method stays Other: the error answer
    // keeps its body.
    (void)http::parseRequestHead(cin_.view(), worker_.options().limits, req);
  } else {
    x_->method = req.method;
  }
  std::string_view path = req.path;
  std::string_view query = req.query;
  if (path.empty()) {
    // A request line refused after its target (a 505 version): the target as sent.
    size_t mark = req.target.find('?');
    path = req.target.substr(0, mark);
    query = mark == std::string_view::npos ? std::string_view() : req.target.substr(mark + 1);
  }
  x_->method_text.assign(req.method_text);
  x_->path.assign(path);
  x_->query.assign(query);
}

void ProxySession::accessLog(int status, bool answered) {
  r_->logged = true;
  logAccess(worker_, *x_, peer_ip_, peer_port_, status, answered, r_->version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1");
}

void logAccess(ProxyWorker& worker, const ProxyExchange& x, const core::IpAddress& ip, uint16_t port, int status,
               bool answered, std::string_view version) {
  core::TimePoint now = worker.loop().now();
  if (answered) {
    // An answered request is timed here, once: the access line and the histogram agree.
    worker.stats().total_time[worker.options().tls != nullptr ? 1 : 0].observe(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now - x.t_start).count()));
  }
  if (!worker.options().access_log || !log::accessEnabled()) {
    return;
  }
  int server_id = x.server();
  std::string_view server =
      server_id == kNoServer ? std::string_view("-") : std::string_view(worker.pool().backend(server_id).name);
  core::TimePoint connect_start = x.connectStart();
  core::TimePoint connected_at = x.connected();
  core::TimePoint response_at = x.responseAt();
  bool connected = server_id != kNoServer && connected_at >= connect_start && connect_start != core::TimePoint{};
  double connect_ms = connected ? millisBetween(connect_start, connected_at) : 0.0;
  // The server's own time: from its connection being ready (the request going out) to its head.
  double server_ms = connected && response_at >= connected_at ? millisBetween(connected_at, response_at) : 0.0;
  double response_ms = response_at >= x.t_start ? millisBetween(x.t_start, response_at) : 0.0;
  std::string client = core::SocketAddress(ip, port).toString();
  std::string target;
  std::string_view path = x.path;
  if (!x.query.empty()) {
    target.reserve(x.path.size() + 1 + x.query.size());
    target.append(x.path).append(1, '?').append(x.query);
    path = target;
  }
  uint32_t attempts = x.attempts();
  auto num = [](std::string_view key, double value) { return log::Field{key, {}, value, true}; };
  auto str = [](std::string_view key, std::string_view value) { return log::Field{key, value, 0, false}; };
  log::access({str("client", client), str("method", x.method_text), str("path", path), num("status", status),
               num("bytes", static_cast<double>(x.responseBytes())), str("server", server),
               num("retries", attempts > 0 ? attempts - 1 : 0), num("connect_ms", connect_ms),
               num("server_ms", server_ms), num("response_ms", response_ms),
               num("total_ms", millisBetween(x.t_start, now)), str("term", terminationName(x.term)),
               str("version", version),
               num("queue_ms", std::chrono::duration<double, std::milli>(x.queueTime()).count())});
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
      sessions_(loop, std::move(listener), "lb http",
                core::ConnectionLimits{options.max_connections, options.clients, true, &stats.refused,
                                       &stats.evicted},
                [this](core::Fd fd, const core::SocketAddress& peer) { return accept(std::move(fd), peer); }) {
  if (options.accept_proxy) {
    // The header is read before the session exists, so every later use of the client's address
    // (firewall, conn_per_ip, rate_per_ip, source hashing, X-Forwarded-For, the access log) is the
    // address the header names.
    sessions_.acceptor().expectProxyHeader(
        core::ProxyHeaderPolicy{options.accept_proxy_from, options.request_timeout, options.max_connections,
                                &stats.proxy_protocol_errors});
  }
}

std::unique_ptr<Http1Request> ProxyWorker::acquireRequest() {
  if (free_requests_.empty()) {
    return std::make_unique<Http1Request>(*this);
  }
  std::unique_ptr<Http1Request> r = std::move(free_requests_.back());
  free_requests_.pop_back();
  return r;
}

void ProxyWorker::releaseRequest(std::unique_ptr<Http1Request> request) {
  // Keep enough for a busy moment; beyond that, give the memory back.
  if (free_requests_.size() < 1024) {
    free_requests_.push_back(std::move(request));
  }
}

void ProxyWorker::reportFailure(uint32_t server, const std::string& reason) {
  report_failure_(server, reason);
  if (options_.outlier != nullptr) {
    options_.outlier->failed(server);
  }
}

void ProxyWorker::retune(const ProxyOptions& from) {
  options_.limits = from.limits;
  options_.connect_timeout = from.connect_timeout;
  options_.server_timeout = from.server_timeout;
  options_.client_timeout = from.client_timeout;
  options_.request_timeout = from.request_timeout;
  sessions_.acceptor().setProxyHeaderTimeout(from.request_timeout);
  options_.min_body_rate = from.min_body_rate;
  options_.retries = from.retries;
  options_.queue_timeout = from.queue_timeout;
  options_.sticky_cookie = from.sticky_cookie;
  options_.retry_budget_percent = from.retry_budget_percent;
  options_.retry_budget_min = from.retry_budget_min;
  options_.hsts = from.hsts;
  options_.redirect_https_port = from.redirect_https_port;
  options_.h2_max_streams = from.h2_max_streams;  // new HTTP/2 connections
}

ProxyWorker::~ProxyWorker() {
  sessions_.closeAll();  // while the free list the sessions give their requests back to lives
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

void ProxyWorker::drain(std::function<void()> on_idle, core::Duration idle_linger) {
  linger_idle_ = idle_linger > core::Duration::zero();
  sessions_.drain(std::move(on_idle));
  if (linger_idle_) {
    linger_timer_ = std::make_unique<core::Timer>(loop_, [this] {
      linger_idle_ = false;
      sessions_.forEach([](ProxySession* s) { s->drain(); });
    });
    linger_timer_->armAfter(idle_linger);
  }
}

}  // namespace fulcrum::lb
