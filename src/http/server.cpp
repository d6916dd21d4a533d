#include "http/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>

#include "core/log.h"
#include "core/socket.h"
#include "http/util.h"

namespace fulcrum::http {

namespace {

constexpr size_t kMaxPipelinedOutput = 256 * 1024;  // stop parsing ahead past this much queued output
constexpr size_t kInlineFileBytes = 16 * 1024;      // files up to this size are copied next to the head
// Input buffered beyond a head (and the body its route accepts): one read, pipelined bytes, a
// partial chunk-size line (4 KiB at most) or trailer section (16 KiB at most).
constexpr size_t kReadAhead = 32 * 1024;

size_t saturatingSum(uint64_t a, uint64_t b) {
  uint64_t sum = a + b;
  return sum < a || sum > SIZE_MAX ? SIZE_MAX : static_cast<size_t>(sum);
}

// "Date: <IMF-fixdate>\r\n", rebuilt at most once a second per thread.
std::string_view dateHeaderLine() {
  thread_local std::time_t cached_second = 0;
  thread_local std::string line;
  std::time_t now = std::time(nullptr);
  if (now != cached_second) {
    cached_second = now;
    line = "Date: " + formatHttpDate(now) + "\r\n";
  }
  return line;
}

void appendDecimal(std::string& out, uint64_t value) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n > 0) {
    out += digits[--n];
  }
}

}  // namespace

void Response::addHeader(std::string_view name, std::string_view value) {
  appendHeader(headers, name, value);
}

void Response::setBody(int status_code, std::string_view content_type, std::string text) {
  status = status_code;
  if (!content_type.empty()) {
    addHeader("Content-Type", content_type);
  }
  body = std::move(text);
}

class ServerConnection final : public core::IoHandler, public core::Deletable {
 public:
  ServerConnection(HttpServer& server, core::Fd fd, const core::SocketAddress& peer)
      : server_(server), fd_(std::move(fd)), peer_(peer), timer_(server.loop(), [this] { onTimeout(); }) {
    const ServerOptions& options = server_.options();
    if (options.tls != nullptr) {
      transport_ = options.tls->newTransport(fd_.get());  // null: closed at the first event
    }
    server_.loop().add(fd_.get(), EPOLLIN | EPOLLRDHUP, this);
    timer_.armAfter(options.first_byte_timeout.count() > 0 ? options.first_byte_timeout : options.idle_timeout);
  }

  ~ServerConnection() override {
    detachDeferred();  // freed at shutdown with an answer still owed: later completions do nothing
    if (fd_) {
      server_.loop().remove(fd_.get());
    }
  }

  void onIoEvents(uint32_t events) override;
  // A handler answers later (see DeferredResponse).
  DeferredResponse beginDeferred();
  void finishDeferred(Response response);
  // Graceful stop: idle connections close now; busy ones after their current response.
  void drain();
  // Closes the connection now (HttpServer makes room for a new one).
  void evict() { close(); }
  const core::SocketAddress& peer() const { return peer_; }
  core::IpAddress peerIp() const { return peer_.ip(); }
  // Between requests with nothing to send: an idle keep-alive connection, or a new one that has
  // sent nothing yet. Closing it loses no work.
  bool idle() const {
    return phase_ == Phase::Head && !request_started_ && !outputPending() && in_.empty();
  }

  ServerConnection* prev = nullptr;
  ServerConnection* next = nullptr;

 private:
  // Waiting: a handler answers later; no further request is read meanwhile.
  enum class Phase : uint8_t { Head, Body, Waiting, Lingering, Closed };
  enum class BodyProgress : uint8_t { More, Done, Refused };

  void onReadable();
  void processInput();
  size_t inputLimit() const;
  bool startBody();
  BodyProgress decodeBody();
  bool dispatch(size_t head_len, size_t raw_body_len, std::string_view body);
  bool answer(Response& response);
  void detachDeferred();
  void queueResponse(const RequestHead& head, Response& response);
  void queueError(int status, std::string_view reason);
  void flush();
  bool sendFile();
  bool sendFileThroughTransport();
  void updateInterest();
  void onTimeout();
  void startLingeringClose();
  void close();
  bool outputPending() const { return !out_.empty() || file_remaining_ > 0; }
  // The TLS client's verified certificate name (Request::peer_certificate), read once.
  std::string_view peerCertificate();

  HttpServer& server_;
  core::Fd fd_;
  std::unique_ptr<core::Transport> transport_;  // TLS; null on plain TCP
  std::optional<std::string> peer_certificate_;
  core::SocketAddress peer_;
  core::Timer timer_;
  core::Buffer in_;
  core::Buffer out_;
  RequestHead head_;
  HeadScanner head_scanner_;  // how far the head in in_ has been checked
  BodyDecoder body_decoder_;
  size_t head_len_ = 0;      // parsed head length while the body is still arriving
  size_t body_len_ = 0;      // decoded body bytes, kept in in_ right after the head
  uint64_t body_limit_ = 0;  // the body the current request's route accepts
  core::Fd file_;
  uint64_t file_offset_ = 0;
  uint64_t file_remaining_ = 0;
  Phase phase_ = Phase::Head;
  std::shared_ptr<DeferredResponse::State> deferred_;  // set while a handler owes a response
  Response* sync_slot_ = nullptr;                       // the response being filled by handle()
  uint32_t interest_ = EPOLLIN | EPOLLRDHUP;
  bool close_after_write_ = false;
  bool request_started_ = false;    // bytes of a new request have arrived: the request timer runs
  bool paused_for_output_ = false;  // input processing stopped to let queued output drain
  size_t route_ = 0;                // the handler's route of the request being answered
  core::TimePoint dispatched_at_{};
  // The access line's method and path, copied at dispatch: head_'s views point into the input
  // buffer, which the next bytes overwrite before a deferred response (a database write) ends.
  std::string access_method_;
  std::string access_path_;
};

void ServerConnection::onIoEvents(uint32_t events) {
  if (phase_ == Phase::Closed) {
    return;
  }
  if (events & (EPOLLERR)) {
    close();
    return;
  }
  if (phase_ == Phase::Waiting && (events & EPOLLHUP)) {
    close();  // the client is gone; the pending answer will find no connection
    return;
  }
  if (transport_ == nullptr && server_.options().tls != nullptr) {
    close();  // no TLS state could be made for it
    return;
  }
  if (events & EPOLLOUT) {
    flush();
    if (phase_ == Phase::Closed) {
      return;
    }
  }
  // A TLS read (a handshake) that waited to write goes on when the socket is writable.
  bool transport_read = transport_ != nullptr && (events & EPOLLOUT) != 0 && !outputPending();
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) || transport_read) {
    onReadable();
  }
}

void ServerConnection::onReadable() {
  if (phase_ == Phase::Waiting) {
    return;  // pipelined requests stay unread until the pending response is given
  }
  if (phase_ == Phase::Lingering) {
    // Discard whatever the client still sends until it closes or the linger timer fires.
    if (core::lingerRead(fd_.get())) {
      close();
    }
    return;
  }
  if (outputPending()) {
    if (transport_ != nullptr && (transport_->extraEvents() & EPOLLIN) != 0) {
      flush();  // a TLS write was waiting for the peer's bytes
      return;
    }
    // Backpressure: reading is off while output is queued (see updateInterest()).
    updateInterest();
    return;
  }
  size_t max_in = inputLimit();
  if (in_.size() >= max_in) {
    // Not reached: the parser and the body decoder refuse first. Kept so no input is unbounded.
    queueError(phase_ == Phase::Body ? 413 : 431, "request too large");
    flush();
    return;
  }
  ssize_t n = transport_ != nullptr ? transport_->read(in_, max_in) : in_.readFrom(fd_.get(), max_in);
  if (n == 0) {
    // Client closed its side. Finish writing what is queued, then close.
    if (outputPending()) {
      close_after_write_ = true;
      updateInterest();
    } else {
      close();
    }
    return;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) {
      if (transport_ != nullptr) {
        updateInterest();  // a TLS read may wait to write (a handshake)
      }
      return;
    }
    close();
    return;
  }
  server_.stats().bytes_in.add(static_cast<uint64_t>(n));
  processInput();
}

void ServerConnection::processInput() {
  const Limits& limits = server_.options().limits;
  while (phase_ == Phase::Head || phase_ == Phase::Body) {
    if (out_.size() > kMaxPipelinedOutput || file_remaining_ > 0) {
      paused_for_output_ = true;  // answer more pipelined requests once the output drains
      break;
    }
    if (phase_ == Phase::Head) {
      if (in_.empty()) {
        break;
      }
      if (!request_started_) {
        request_started_ = true;
        timer_.armAfter(server_.options().request_timeout);
      }
      ParseResult result = head_scanner_.parseRequest(in_.view(), limits, head_);
      if (result.state == ParseState::Incomplete) {
        break;
      }
      if (result.state == ParseState::Error) {
        server_.stats().parse_errors.add();
        queueError(result.status, result.reason);
        break;
      }
      head_len_ = result.consumed;
      body_len_ = 0;
      if (head_.body_kind == BodyKind::None) {
        dispatch(head_len_, 0, {});
        continue;
      }
      if (head_.upgrade || head_.method == Method::Connect) {
        // No tunnels in a plain web server.
        queueError(501, "upgrade not supported");
        break;
      }
      if (!startBody()) {
        break;  // refused from the head alone
      }
    }
    BodyProgress progress = decodeBody();
    if (progress == BodyProgress::Refused) {
      break;
    }
    if (progress == BodyProgress::More) {
      break;  // wait for more body bytes
    }
    // The buffer may have moved while the body arrived: parse the head again so its views
    // point into the current storage (cheap, and only for requests with a body).
    ParseResult again = parseRequestHead(in_.view(), limits, head_);
    (void)again;
    dispatch(head_len_, body_len_, in_.view().substr(head_len_, body_len_));
  }
  flush();
}

// What one connection may buffer: a head, or a head and the body its route accepts, plus
// kReadAhead.
size_t ServerConnection::inputLimit() const {
  if (phase_ != Phase::Body) {
    return server_.options().limits.max_header_bytes + kReadAhead;
  }
  uint64_t body = head_.body_kind == BodyKind::ContentLength ? head_.content_length : body_limit_;
  return saturatingSum(head_len_ + kReadAhead, body);
}

std::string_view ServerConnection::peerCertificate() {
  if (!peer_certificate_) {
    peer_certificate_ = transport_ != nullptr ? transport_->verifiedPeerName() : std::string();
  }
  return *peer_certificate_;
}

// Asks the route how much body it takes, and refuses a longer declared length before
// reading any of it (and instead of 100 Continue). False when refused.
bool ServerConnection::startBody() {
  if (head_.body_kind != BodyKind::None) {
    Response early;
    if (server_.handler().refuseBeforeBody(head_, peerCertificate(), early)) {
      early.close = true;
      queueResponse(head_, early);
      close_after_write_ = true;
      phase_ = Phase::Lingering;
      return false;
    }
  }
  uint64_t ceiling = server_.options().limits.max_body_bytes;
  body_limit_ = server_.handler().maxBodyBytes(head_);
  if (ceiling != 0) {
    body_limit_ = std::min(body_limit_, ceiling);
  }
  if (head_.body_kind == BodyKind::ContentLength && head_.content_length > body_limit_) {
    server_.stats().parse_errors.add();
    queueError(413, "request body larger than this resource accepts");
    return false;
  }
  // BodyDecoder reads a limit of 0 as "none": a route that takes no body gives it 1, and
  // decodeBody() refuses the first byte of payload.
  body_decoder_.reset(head_.body_kind, head_.content_length, std::max<uint64_t>(body_limit_, 1));
  phase_ = Phase::Body;
  if (head_.expect_continue && !body_decoder_.done() && in_.size() == head_len_) {
    out_.append("HTTP/1.1 100 Continue\r\n\r\n");
  }
  return true;
}

// Decodes the body bytes that have arrived in place: payload moves down to follow the head and
// chunk framing is dropped, so in_ holds the head, the body so far (within body_limit_) and
// at most a partial line — no second copy of the body.
ServerConnection::BodyProgress ServerConnection::decodeBody() {
  const size_t raw_start = head_len_ + body_len_;
  std::string_view raw = in_.view().substr(raw_start);
  size_t used = 0;
  int error = 0;
  bool done = body_decoder_.done();
  while (!done && used < raw.size()) {
    BodyStep step = body_decoder_.step(raw.substr(used));
    if (step.error_status != 0) {
      error = step.error_status;
      break;
    }
    if (step.payload.size() > body_limit_ - body_len_) {
      error = 413;
      break;
    }
    if (!step.payload.empty()) {
      // Only bytes already decoded lie between the destination and the payload.
      char* dst = in_.mutableData() + head_len_ + body_len_;
      if (dst != step.payload.data()) {
        std::memmove(dst, step.payload.data(), step.payload.size());
      }
      body_len_ += step.payload.size();
    }
    used += step.consumed;
    done = step.done;
    if (step.consumed == 0 && !done) {
      break;
    }
  }
  if (error != 0) {
    server_.stats().parse_errors.add();
    queueError(error, error == 413 ? "request body larger than this resource accepts" : "bad request body");
    return BodyProgress::Refused;
  }
  in_.erase(head_len_ + body_len_, raw_start + used - (head_len_ + body_len_));
  return done ? BodyProgress::Done : BodyProgress::More;
}

bool ServerConnection::dispatch(size_t head_len, size_t raw_body_len, std::string_view body) {
  ServerStats& stats = server_.stats();
  stats.requests_total.add();
  route_ = std::min(server_.handler().routeOf(head_), kMaxRoutes - 1);
  dispatched_at_ = server_.loop().clock().now();  // the clock: a file served within one batch would show 0
  if (server_.options().access_log) {
    access_method_.assign(head_.method_text);
    access_path_.assign(head_.path);
    if (!head_.query.empty()) {
      access_path_.append(1, '?').append(head_.query);
    }
  }
  Response response;
  Request request{head_, body, peer_, this, peerCertificate()};
  sync_slot_ = &response;
  server_.handler().handle(request, response);
  sync_slot_ = nullptr;
  // The head's scalar fields (method, version, keep_alive) stay valid; its views do not.
  in_.consume(head_len + raw_body_len);
  request_started_ = false;
  if (deferred_) {
    phase_ = Phase::Waiting;
    timer_.armAfter(server_.options().idle_timeout);
    updateInterest();
    return false;
  }
  return answer(response);
}

// Queues the response to the request in head_; false when the connection closes after it.
bool ServerConnection::answer(Response& response) {
  if (!head_.keep_alive || server_.draining()) {
    response.close = true;
  }
  queueResponse(head_, response);
  RouteStats& route = server_.stats().routes[route_];
  int cls = response.status / 100;
  if (cls >= 1 && cls <= 5) {
    route.responses_by_class[static_cast<size_t>(cls)].add();
  }
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(server_.loop().clock().now() - dispatched_at_);
  route.duration.observe(static_cast<uint64_t>(took.count()));
  if (server_.options().access_log && log::accessEnabled()) {
    // As the lb's access line: the query kept with the path, counts as integers.
    uint64_t bytes = response.file ? response.file_length : response.body.size();
    auto num = [](std::string_view key, double value) { return log::Field{key, {}, value, true}; };
    auto str = [](std::string_view key, std::string_view value) { return log::Field{key, value, 0, false}; };
    log::access({str("client", peer_.toString()), str("method", access_method_), str("path", access_path_),
                 num("status", response.status), num("bytes", static_cast<double>(bytes)),
                 num("total_ms", static_cast<double>(took.count()) / 1000.0)});
  }
  phase_ = Phase::Head;
  timer_.armAfter(server_.options().idle_timeout);
  if (response.close) {
    close_after_write_ = true;
    phase_ = Phase::Lingering;  // read no further requests
    return false;
  }
  return true;
}

DeferredResponse ServerConnection::beginDeferred() {
  if (!deferred_) {
    deferred_ = std::make_shared<DeferredResponse::State>();
    deferred_->conn = this;
  }
  return DeferredResponse(deferred_);
}

void ServerConnection::detachDeferred() {
  if (deferred_) {
    deferred_->conn = nullptr;
    deferred_.reset();
  }
}

void ServerConnection::finishDeferred(Response response) {
  detachDeferred();
  if (sync_slot_ != nullptr) {
    *sync_slot_ = std::move(response);  // answered from inside handle(): dispatch sends it
    return;
  }
  if (phase_ != Phase::Waiting) {
    return;
  }
  if (answer(response)) {
    processInput();  // pipelined requests that waited; ends with flush()
  } else {
    flush();
  }
}

bool DeferredResponse::wanted() const { return state_ && state_->conn != nullptr; }

void DeferredResponse::complete(Response response) {
  if (wanted()) {
    state_->conn->finishDeferred(std::move(response));
  }
}

DeferredResponse Request::defer() const { return connection->beginDeferred(); }

void ServerConnection::queueResponse(const RequestHead& head, Response& response) {
  std::string& h = response.headers;
  // A per-thread scratch string: its capacity is reused, no allocation per response.
  thread_local std::string line;
  line.clear();
  appendStatusLine(line, response.status);
  line += dateHeaderLine();
  if (!server_.options().served_by.empty()) {
    line += "X-Served-By: ";
    line += server_.options().served_by;
    line += "\r\n";
  }
  bool bodiless_status = response.status < 200 || response.status == 204 || response.status == 304;
  uint64_t length = response.file ? response.file_length : response.body.size();
  if (!bodiless_status) {
    line += "Content-Length: ";
    appendDecimal(line, length);
    line += "\r\n";
  }
  if (response.close) {
    line += "Connection: close\r\n";
  } else if (head.version_minor == 0) {
    line += "Connection: keep-alive\r\n";
  }
  line += h;
  line += "\r\n";
  out_.append(line);
  uint64_t body_bytes = 0;
  bool send_body = head.method != Method::Head && !bodiless_status;
  if (send_body) {
    if (response.file) {
      if (response.file_length <= kInlineFileBytes) {
        // Small file: copy it next to the head so head and body leave in one send.
        char* dst = out_.prepare(response.file_length);
        ssize_t n =
            ::pread(response.file.get(), dst, response.file_length, static_cast<off_t>(response.file_offset));
        if (n != static_cast<ssize_t>(response.file_length)) {
          // The file shrank under us: the promised length cannot be kept; close.
          log::warn("short read of a served file: {}", n < 0 ? std::strerror(errno) : "truncated");
          close_after_write_ = true;
          phase_ = Phase::Lingering;
          n = n < 0 ? 0 : n;
        }
        out_.commit(static_cast<size_t>(n));
      } else {
        file_ = std::move(response.file);
        file_offset_ = response.file_offset;
        file_remaining_ = response.file_length;
      }
    } else {
      out_.append(response.body);
    }
    body_bytes = length;
  }
  (void)body_bytes;
  int cls = response.status / 100;
  if (cls >= 1 && cls <= 5) {
    server_.stats().responses_by_class[static_cast<size_t>(cls)].add();
  }
}

void ServerConnection::queueError(int status, std::string_view reason) {
  Response response;
  response.status = status;
  response.addHeader("Content-Type", "text/plain; charset=utf-8");
  response.body = std::string(reasonPhrase(status));
  response.body += ": ";
  response.body += reason;
  response.body += "\n";
  response.close = true;
  RequestHead head;  // the request could not be read: answer as HTTP/1.1, with a body
  head.method = Method::Get;
  queueResponse(head, response);
  close_after_write_ = true;
  phase_ = Phase::Lingering;
}

void ServerConnection::flush() {
  size_t pending_before = out_.size() + static_cast<size_t>(file_remaining_);
  while (!out_.empty()) {
    ssize_t n = transport_ != nullptr ? transport_->write(out_) : out_.writeTo(fd_.get());
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        break;
      }
      close();
      return;
    }
    server_.stats().bytes_out.add(static_cast<uint64_t>(n));
  }
  if (out_.empty() && file_remaining_ > 0) {
    if (!sendFile()) {
      return;
    }
  }
  if (!outputPending()) {
    out_.release();
    file_.reset();
    if (close_after_write_) {
      startLingeringClose();
      return;
    }
    if (in_.empty()) {
      in_.release();  // idle keep-alive connections hold no buffers
    }
    if (paused_for_output_) {
      // Pipelined requests were waiting for the output to drain.
      paused_for_output_ = false;
      processInput();
      return;
    }
  } else if (!request_started_ && out_.size() + static_cast<size_t>(file_remaining_) < pending_before) {
    // A response is moving: the client has idle_timeout from its last progress (a long download
    // to a slow client is fine, one that stops reading is closed).
    timer_.armAfter(server_.options().idle_timeout);
  }
  updateInterest();
}

bool ServerConnection::sendFile() {
  if (transport_ != nullptr) {
    return sendFileThroughTransport();
  }
  while (file_remaining_ > 0) {
    off_t offset = static_cast<off_t>(file_offset_);
    size_t chunk = file_remaining_ > (1u << 30) ? (1u << 30) : static_cast<size_t>(file_remaining_);
    ssize_t n = ::sendfile(fd_.get(), file_.get(), &offset, chunk);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        return true;
      }
      close();
      return false;
    }
    if (n == 0) {
      log::warn("served file shrank while sending; closing the connection");
      close();
      return false;
    }
    file_offset_ += static_cast<uint64_t>(n);
    file_remaining_ -= static_cast<uint64_t>(n);
    server_.stats().bytes_out.add(static_cast<uint64_t>(n));
  }
  return true;
}

// TLS encrypts in user space: no sendfile, the file goes through out_ a block at a time.
bool ServerConnection::sendFileThroughTransport() {
  constexpr size_t kChunk = 64 * 1024;
  while (file_remaining_ > 0 || !out_.empty()) {
    if (out_.empty()) {
      size_t chunk = file_remaining_ > kChunk ? kChunk : static_cast<size_t>(file_remaining_);
      char* p = out_.prepare(chunk);
      ssize_t got = ::pread(file_.get(), p, chunk, static_cast<off_t>(file_offset_));
      if (got < 0 && errno == EINTR) {
        continue;
      }
      if (got <= 0) {
        log::warn("served file shrank while sending; closing the connection");
        close();
        return false;
      }
      out_.commit(static_cast<size_t>(got));
      file_offset_ += static_cast<uint64_t>(got);
      file_remaining_ -= static_cast<uint64_t>(got);
    }
    ssize_t n = transport_->write(out_);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        return true;
      }
      close();
      return false;
    }
    server_.stats().bytes_out.add(static_cast<uint64_t>(n));
  }
  return true;
}

void ServerConnection::updateInterest() {
  if (phase_ == Phase::Closed) {
    return;
  }
  bool want_write = outputPending();
  // While output is pending, reading pauses (backpressure). A client that goes away makes
  // the next write fail; EPOLLRDHUP is left out here since, level-triggered, it would spin.
  // While a response is owed, nothing is read (EPOLLHUP still reports a vanished client).
  uint32_t events = want_write ? EPOLLOUT : phase_ == Phase::Waiting ? 0 : (EPOLLIN | EPOLLRDHUP);
  if (transport_ != nullptr) {
    events |= transport_->extraEvents();
  }
  if (events != interest_) {
    interest_ = events;
    server_.loop().modify(fd_.get(), events, this);
    if (want_write) {
      timer_.armAfter(server_.options().idle_timeout);
    }
  }
}

void ServerConnection::onTimeout() {
  if (phase_ == Phase::Lingering) {
    close();
    return;
  }
  server_.stats().timeouts.add();
  if (phase_ == Phase::Waiting) {
    // The handler never answered: say so rather than hold the client forever.
    detachDeferred();
    if (!outputPending()) {
      queueError(504, "no response in time");
      flush();
    } else {
      close();
    }
    return;
  }
  if (request_started_ && !outputPending() && phase_ == Phase::Head && !in_.empty()) {
    queueError(408, "request head not received in time");
    flush();
    return;
  }
  if (phase_ == Phase::Body && !outputPending()) {
    queueError(408, "request body not received in time");
    flush();
    return;
  }
  close();
}

void ServerConnection::startLingeringClose() {
  phase_ = Phase::Lingering;
  in_.release();
  if (transport_ != nullptr) {
    transport_->shutdownWrite();  // close_notify before the half-close
  }
  interest_ = core::startLinger(fd_.get());
  server_.loop().modify(fd_.get(), interest_, this);
  timer_.armAfter(core::kLingerTime);
}

void ServerConnection::drain() {
  if (phase_ == Phase::Closed || phase_ == Phase::Lingering) {
    return;
  }
  if (!outputPending() && in_.empty() && phase_ == Phase::Head) {
    close();
    return;
  }
  // Busy: the response in progress goes out with Connection: close (HttpServer::draining()).
}

void ServerConnection::close() {
  if (phase_ == Phase::Closed) {
    return;
  }
  phase_ = Phase::Closed;
  detachDeferred();
  timer_.disarm();
  server_.loop().remove(fd_.get());
  transport_.reset();
  fd_.reset();
  file_.reset();
  in_.release();
  out_.release();
  server_.unlink(this);
  server_.loop().deferDelete(std::unique_ptr<core::Deletable>(this));
}

HttpServer::HttpServer(core::EventLoop& loop, core::Fd listener, Handler& handler,
                       const ServerOptions& options, ServerStats& stats)
    : loop_(loop),
      handler_(handler),
      options_(options),
      stats_(stats),
      per_ip_(options.max_connections_per_ip == 0
                  ? nullptr
                  // Every open connection pins its address: room for max_connections addresses
                  // and as many more, in fixed memory.
                  : std::make_unique<core::ClientTable>(size_t{options.max_connections} * 2,
                                                        core::ClientLimits{0, 0, options.max_connections_per_ip},
                                                        1)),
      // At the cap the oldest idle connection makes room (nginx reuses idle keep-alive
      // connections the same way), so connections that only hold a slot cannot lock out a
      // health check that sends its request at once.
      connections_(loop, std::move(listener), "http server",
                   core::ConnectionLimits{options.max_connections, per_ip_.get(), true, &stats.refused,
                                          &stats.evicted},
                   [this](core::Fd fd, const core::SocketAddress& peer) { return accept(std::move(fd), peer); }) {}

HttpServer::~HttpServer() {
  // Connections still open at destruction (loop already stopped) are freed here.
  connections_.closeAll();
}

ServerConnection* HttpServer::accept(core::Fd fd, const core::SocketAddress& peer) {
  stats_.connections_total.add();
  stats_.connections_active.add();
  return new ServerConnection(*this, std::move(fd), peer);
}

void HttpServer::unlink(ServerConnection* conn) {
  stats_.connections_active.sub();
  connections_.remove(conn);
}

void HttpServer::drain(std::function<void()> on_idle) {
  connections_.drain(std::move(on_idle));
}

}  // namespace fulcrum::http
