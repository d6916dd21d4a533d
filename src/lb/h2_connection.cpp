#include "lb/h2_connection.h"

#include <openssl/evp.h>
#include <sys/random.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <tuple>

#include "core/log.h"
#include "core/socket.h"
#include "http/util.h"
#include "lb/exchange.h"
#include "lb/forwarding.h"
#include "lb/proxy.h"
#include "tls/acme.h"

namespace fulcrum::lb {

namespace {

constexpr size_t kHighWater = ProxyExchange::kHighWater;
// The connection's receive window: what a client may send ahead on all its streams together
// (each stream keeps the default 64 KiB). Bytes count against it until passed upstream.
constexpr int32_t kConnectionWindow = 1 << 20;
// Budgets per connection (token buckets: a burst, then a rate a second). A browser resets a few
// streams when the user navigates away and sends a handful of SETTINGS/PING/PRIORITY frames;
// an attack sends thousands.
constexpr double kResetBurst = 200;
constexpr double kResetRate = 50;
constexpr double kControlBurst = 500;
constexpr double kControlRate = 100;
// A header block (HEADERS + CONTINUATION) may span this many frames: nghttp2's own default cap,
// enforced here first so that the GOAWAY is counted for what it is.
constexpr uint32_t kMaxBlockFrames = 8;

std::string_view view(const uint8_t* p, size_t n) {
  return {reinterpret_cast<const char*>(p), n};
}

nghttp2_nv nv(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                    NGHTTP2_NV_FLAG_NONE};
}

static_assert(static_cast<size_t>(H2Abuse::kCount) == std::tuple_size_v<decltype(ProxyStats::h2_goaway)>);

}  // namespace

std::string_view h2AbuseName(H2Abuse reason) {
  switch (reason) {
    case H2Abuse::ProtocolError:
      return "protocol_error";
    case H2Abuse::RapidReset:
      return "rapid_reset";
    case H2Abuse::ContinuationFlood:
      return "continuation_flood";
    case H2Abuse::ControlFlood:
      return "control_flood";
    case H2Abuse::Stalled:
      return "stalled";
    case H2Abuse::kCount:
      break;
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// A stream: one request and its exchange.

struct H2Stream final : public ExchangeClient {
  H2Stream(H2Connection& conn, int32_t id) : conn(conn), id(id) {}
  ~H2Stream() override { releaseRequest(); }

  // The request as it arrives: field names and values in one string (offsets, since it grows).
  struct FieldAt {
    uint32_t name_at, name_len, value_at, value_len;
  };
  std::string_view at(uint32_t pos, uint32_t len) const { return std::string_view(fields).substr(pos, len); }
  void addField(std::string_view name, std::string_view value);

  void start();
  void pumpBody();
  void pumpTunnel();
  void respondLocal(int status, std::string_view detail, const std::vector<nghttp2_nv>& extra = {});
  void submitResponse(std::vector<nghttp2_nv>& nva, bool with_body);
  void resumeData();
  void finishExchange(int status, bool answered);
  void releaseRequest();
  void closed(uint32_t error_code);

  // ExchangeClient
  void exchangeContinue() override;
  void exchangeResponseHead(const http::ResponseHead& head) override;
  void exchangeResponseBody(std::string_view raw, std::string_view payload) override;
  void exchangeComplete() override;
  void exchangeFailed(int status, std::string_view detail, Termination why) override;
  void exchangeAborted(Termination why) override;
  void exchangeTunnelData(std::string_view bytes) override;
  void exchangeTunnelClosed() override;
  bool exchangeHasRoom() const override { return resp.size() < kHighWater; }
  void exchangeFlush() override { conn.wantPump(); }
  void exchangeWantsBody() override { pumpBody(); }

  H2Connection& conn;
  int32_t id;
  H2Stream* prev = nullptr;
  H2Stream* next = nullptr;
  core::TimePoint begun{};

  std::string fields;
  std::vector<FieldAt> regular;
  std::string_view method, scheme, authority, path, protocol;  // views into `pseudo`
  std::string pseudo;  // the pseudo-header values, kept apart
  uint32_t pseudo_at[5] = {0, 0, 0, 0, 0};
  uint32_t pseudo_len[5] = {0, 0, 0, 0, 0};
  bool has_pseudo[5] = {false, false, false, false, false};
  size_t header_bytes = 0;
  bool header_overflow = false;
  bool headers_done = false;
  bool started = false;  // the exchange (or a local answer) has begun
  bool end_stream = false;  // the client sent its last byte
  bool chunked = false;     // the body goes upstream chunked (no content-length from the client)
  bool touched = false;
  bool websocket = false;     // extended CONNECT (RFC 8441): a WebSocket tunnel on this stream
  bool tunnel_ended = false;  // the client's end of the tunnel went upstream
  core::TimePoint tunnel_active{};  // the tunnel's last byte either way (idle for client_ms: closed)
  uint64_t content_length = 0;
  uint64_t body_in = 0;      // request payload bytes received
  core::Buffer req_body;     // request payload not yet passed upstream (within our window)

  std::unique_ptr<Http1Request> r;  // from the worker's free list while the exchange runs
  ProxyExchange* x = nullptr;
  core::Buffer resp;  // response payload not yet framed
  bool resp_started = false;
  bool resp_done = false;  // the whole payload is in resp (or was framed)
  bool deferred = false;   // nghttp2 waits for resume_data
  bool logged = false;
};

void H2Stream::addField(std::string_view name, std::string_view value) {
  int slot = -1;
  if (!name.empty() && name[0] == ':') {
    slot = name == ":method"      ? 0
           : name == ":scheme"    ? 1
           : name == ":authority" ? 2
           : name == ":path"      ? 3
           : name == ":protocol"  ? 4
                                  : -1;
    if (slot < 0) {
      return;  // nghttp2 refuses any other
    }
    has_pseudo[slot] = true;
    pseudo_at[slot] = static_cast<uint32_t>(pseudo.size());
    pseudo_len[slot] = static_cast<uint32_t>(value.size());
    pseudo.append(value);
    return;
  }
  FieldAt f;
  f.name_at = static_cast<uint32_t>(fields.size());
  f.name_len = static_cast<uint32_t>(name.size());
  fields.append(name);
  f.value_at = static_cast<uint32_t>(fields.size());
  f.value_len = static_cast<uint32_t>(value.size());
  fields.append(value);
  regular.push_back(f);
}

void H2Stream::releaseRequest() {
  if (r != nullptr) {
    r->reset();
    x = nullptr;
    conn.worker().releaseRequest(std::move(r));
  }
}

void H2Stream::start() {
  started = true;
  ProxyWorker& worker = conn.worker();
  const ProxyOptions& options = worker.options();
  ProxyStats& stats = worker.stats();
  stats.requests_total.add();
  r = worker.acquireRequest();
  x = &r->exchange;
  x->client = this;
  x->t_start = begun;
  x->client_hash = hashClientIp(conn.peerIp());
  x->client_address = core::SocketAddress(conn.peerIp(), conn.peerPort());
  x->client_fd = conn.fd();
  std::string_view* slots[5] = {&method, &scheme, &authority, &path, &protocol};
  for (int i = 0; i < 5; ++i) {
    *slots[i] = has_pseudo[i] ? std::string_view(pseudo).substr(pseudo_at[i], pseudo_len[i]) : std::string_view();
  }
  x->method_text.assign(method);
  x->method = http::methodFromName(method);
  size_t q = path.find('?');
  x->path.assign(path.substr(0, q));
  x->query.assign(q == std::string_view::npos ? std::string_view() : path.substr(q + 1));

  // nghttp2 has checked the HTTP/2 rules (pseudo-headers present once and first, no
  // connection-specific field, TE only "trailers", lower-case names, no CR/LF/NUL in a value,
  // content-length against DATA). What HTTP/1.1 adds is checked here, so that the request the
  // server gets is one our own parser would take.
  if (header_overflow) {
    stats.bad_requests.add();
    x->term = Termination::BadRequest;
    respondLocal(431, "request header fields too large");
    return;
  }
  if (!http::isValidMethodName(method)) {
    stats.bad_requests.add();
    x->term = Termination::BadRequest;
    respondLocal(400, "bad method");
    return;
  }
  if (x->method == http::Method::Connect) {
    if (!has_pseudo[4] || !http::equalsIgnoreCase(protocol, "websocket")) {
      // A plain CONNECT would make the lb a forward proxy (RFC 9113 §8.5): not offered; nor is
      // any extended CONNECT protocol but WebSocket.
      x->term = Termination::BadRequest;
      respondLocal(501, has_pseudo[4] ? "only the websocket protocol is supported by CONNECT"
                                      : "CONNECT is not supported over HTTP/2");
      return;
    }
    // A WebSocket over this stream (RFC 8441): the server gets the HTTP/1.1 upgrade it knows.
    websocket = true;
    x->method = http::Method::Get;
    x->method_text.assign("GET");
  }
  bool asterisk = x->method == http::Method::Options && path == "*";
  if (!asterisk && !http::isValidOriginTarget(path)) {
    stats.bad_requests.add();
    x->term = Termination::BadRequest;
    respondLocal(400, "bad :path");
    return;
  }
  http::RequestHead& head = r->req;
  head.clear();
  head.method = x->method;
  head.method_text = websocket ? std::string_view("GET") : method;
  head.target = path;
  head.path = std::string_view(path).substr(0, q);
  head.query = q == std::string_view::npos ? std::string_view() : path.substr(q + 1);
  head.version_minor = 1;
  std::optional<std::string_view> host;
  size_t hosts = 0;
  bool expect_continue = false;
  bool has_length = false;
  head.headers.reserve(regular.size() + 1);
  for (const FieldAt& f : regular) {
    std::string_view name = at(f.name_at, f.name_len);
    std::string_view value = at(f.value_at, f.value_len);
    if (name == "host") {
      host = value;
      ++hosts;
    } else if (name == "content-length") {
      has_length = true;
      continue;  // nghttp2 parsed it into content_length; ours is written from that
    } else if (websocket && name == "sec-websocket-key") {
      continue;  // the handshake's nonce is the lb's (below): never two
    } else if (name == "expect") {
      if (!http::equalsIgnoreCase(value, "100-continue")) {
        stats.bad_requests.add();
        x->term = Termination::BadRequest;
        respondLocal(417, "unsupported expectation");
        return;
      }
      expect_continue = true;
    }
    head.headers.push_back({name, value});
  }
  // :authority and Host must name the same origin (RFC 9113 §8.3.1): a mismatch is how a
  // request reaches another virtual host than the one its connection was checked for.
  if (hosts > 1 || (host && has_pseudo[2] && *host != authority)) {
    stats.bad_requests.add();
    x->term = Termination::BadRequest;
    respondLocal(400, "host does not match :authority");
    return;
  }
  std::string_view origin = has_pseudo[2] ? authority : host.value_or(std::string_view());
  if (!origin.empty() && !http::isValidAuthority(origin)) {
    stats.bad_requests.add();
    x->term = Termination::BadRequest;
    respondLocal(400, "bad :authority");
    return;
  }
  head.host = origin;
  if (!host && !origin.empty()) {
    head.headers.push_back({"host", origin});
  }
  char key[32];
  if (websocket) {
    // HTTP/2 has no Sec-WebSocket-Key (RFC 8441 §5): the lb makes the nonce of the HTTP/1.1
    // handshake; the server's Accept answers it and is not passed on.
    unsigned char nonce[16];
    if (getrandom(nonce, sizeof nonce, 0) != static_cast<ssize_t>(sizeof nonce)) {
      respondLocal(500, "no random bytes for the WebSocket handshake");
      return;
    }
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(key), nonce, sizeof nonce);
    head.headers.push_back({"upgrade", "websocket"});
    head.headers.push_back({"sec-websocket-key", std::string_view(key, static_cast<size_t>(n))});
    head.upgrade = true;
  }
  const http::Limits& limits = options.limits;
  if (websocket) {
    head.body_kind = http::BodyKind::None;  // the stream's DATA is the tunnel's, after the 101
  } else if (has_length) {
    head.body_kind = http::BodyKind::ContentLength;
    head.content_length = content_length;
  } else if (!end_stream) {
    head.body_kind = http::BodyKind::Chunked;  // the length is known only at the end
    chunked = true;
  } else if (body_in > 0) {
    // The whole body came with the head (one read): its length is known.
    head.body_kind = http::BodyKind::ContentLength;
    head.content_length = content_length = body_in;
  } else {
    head.body_kind = http::BodyKind::None;
  }
  if ((has_length && !websocket && content_length > limits.max_body_bytes) ||
      (!websocket && body_in > limits.max_body_bytes)) {
    x->term = Termination::BadRequest;
    respondLocal(413, "request body too large");
    return;
  }
  if (head.headers.size() > limits.max_headers) {
    stats.bad_requests.add();
    x->term = Termination::BadRequest;
    respondLocal(431, "too many header fields");
    return;
  }
  if (core::ClientTable* clients = options.clients; clients != nullptr) {
    core::ClientTable::Admission admission = clients->admitRequest(conn.peerIp(), worker.loop().now());
    if (!admission.allowed) {
      x->term = Termination::RateLimited;
      std::string retry = std::to_string(core::retryAfterSeconds(admission.retry_after));
      respondLocal(429, "too many requests from this address", {nv("retry-after", retry)});
      return;
    }
  }
  if (options.acme_challenges != nullptr && head.path.starts_with(tls::kAcmeChallengePrefix)) {
    std::string_view token = head.path.substr(tls::kAcmeChallengePrefix.size());
    if (std::optional<std::string> answer = options.acme_challenges->find(token)) {
      x->term = Termination::Local;
      stats.responses_by_class[2].add();
      resp.append(*answer);
      std::string length = std::to_string(answer->size());
      std::vector<nghttp2_nv> nva = {nv(":status", "200"), nv("content-type", "application/octet-stream"),
                                     nv("content-length", length)};
      resp_done = true;
      submitResponse(nva, x->method != http::Method::Head);
      finishExchange(200, true);
      return;
    }
  }
  if (options.redirect_https_port != 0) {
    std::string_view name = origin;
    std::string fallback;
    if (name.empty()) {
      fallback = core::localAddress(conn.fd()).ip().toString();
      name = fallback;
    } else if (name.front() == '[') {
      name = name.substr(0, name.find(']') + 1);
    } else if (size_t colon = name.rfind(':'); colon != std::string_view::npos) {
      name = name.substr(0, colon);
    }
    uint16_t port = options.redirect_https_port;
    std::string location = "https://" + std::string(name) + (port == 443 ? "" : ":" + std::to_string(port)) +
                           std::string(asterisk ? std::string_view("/") : path);
    x->term = Termination::Redirect;
    respondLocal(308, "this site is served over https", {nv("location", location)});
    return;
  }

  std::string local;
  ForwardInfo info{conn.peerText(), conn.secure() ? "https" : "http", {}};
  if (origin.empty()) {
    local = core::localAddress(conn.fd()).toString();
    info.server_address = local;
  }
  if (const std::string& cookie = options.sticky_cookie; !cookie.empty()) {
    std::string_view server = findCookie(head, cookie);
    x->sticky = server.empty() ? kNoServer : worker.pool().findByName(server);
  }
  x->replay.clear();
  size_t count = appendUpstreamRequestHead(x->replay, head, info);
  if (x->replay.size() > limits.max_header_bytes || count > limits.max_headers) {
    stats.bad_requests.add();
    x->replay.clear();
    x->term = Termination::BadRequest;
    respondLocal(431, "request head too large once forwarded");
    return;
  }
  x->expect_continue = expect_continue;
  x->upgrade = websocket;
  bool request_done = head.body_kind == http::BodyKind::None ||
                      (head.body_kind == http::BodyKind::ContentLength && head.content_length == 0 && end_stream);
  head.headers.clear();  // views into `fields`: not needed past this point
  x->start(request_done);
  // The exchange may have ended already (no server: a 503); otherwise pass on what body came.
  if (x != nullptr && !x->requestDone()) {
    pumpBody();
  }
}

void H2Stream::pumpBody() {
  // Passes received DATA to the exchange as it takes it, and only then gives the client window
  // back: a slow server holds the client at its window, never the lb's memory.
  if (x == nullptr) {
    return;
  }
  if (x->tunnel()) {
    pumpTunnel();
    return;
  }
  if (websocket) {
    return;  // DATA before the server's 101 waits (within the stream's window)
  }
  if (body_in > conn.worker().options().limits.max_body_bytes) {
    x->term = Termination::BadRequest;
    respondLocal(413, "request body too large");
    return;
  }
  // A pass that found the exchange full goes on once its send made room: the exchange asks for
  // more (exchangeWantsBody) only from a later EPOLLOUT, and there is none when the whole send
  // went out at once (the replay buffer, full after a slow connect or TLS handshake).
  for (;;) {
    size_t passed = 0;
    bool progressed = false;
    bool full = false;
    while (!x->requestDone()) {
      size_t room = x->bodyRoom();
      if (room == 0) {
        full = true;
        break;
      }
      if (req_body.empty()) {
        if (!end_stream) {
          break;
        }
        x->takeBody(chunked ? std::string_view("0\r\n\r\n") : std::string_view(), true);
        progressed = true;
        break;
      }
      size_t n = std::min(room, req_body.size());
      bool last = end_stream && n == req_body.size();
      std::string_view payload = req_body.view().substr(0, n);
      if (chunked) {
        thread_local std::string framed;
        framed.clear();
        char size[20];
        int len = std::snprintf(size, sizeof size, "%zx\r\n", n);
        framed.append(size, static_cast<size_t>(len));
        framed.append(payload);
        framed.append(last ? "\r\n0\r\n\r\n" : "\r\n");
        x->takeBody(framed, last);
      } else {
        x->takeBody(payload, last);
      }
      req_body.consume(n);
      passed += n;
      progressed = true;
    }
    if (passed > 0) {
      nghttp2_session_consume(conn.session(), id, passed);
      conn.wantPump();  // WINDOW_UPDATE
    }
    if (req_body.empty()) {
      req_body.release();
    }
    if (!progressed) {
      return;
    }
    if (!x->sendBody()) {
      return;  // the exchange ended or moved on (a retry, an error answer): nothing here is current
    }
    if (!full || x->requestDone() || x->holdsBody() || x->connecting()) {
      return;
    }
  }
}

void H2Stream::pumpTunnel() {
  // WebSocket bytes from the client go upstream while the server takes them; the window goes
  // back as they do.
  if (!req_body.empty() && !x->holdsBody()) {
    // Taken out of req_body first: sending may call back here (exchangeWantsBody).
    thread_local std::string chunk;
    chunk.assign(req_body.view());
    req_body.clear();
    nghttp2_session_consume(conn.session(), id, chunk.size());
    conn.wantPump();
    x->tunnelFromClient(chunk);
    if (x == nullptr) {
      return;  // the server end failed: the stream was reset
    }
  }
  if (end_stream && req_body.empty() && !tunnel_ended) {
    tunnel_ended = true;
    x->clientEnded();
  }
}

void H2Stream::submitResponse(std::vector<nghttp2_nv>& nva, bool with_body) {
  resp_started = true;
  nghttp2_data_provider provider;
  provider.source.ptr = this;
  provider.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                              nghttp2_data_source* source, void*) -> ssize_t {
    auto* s = static_cast<H2Stream*>(source->ptr);
    size_t n = std::min(length, s->resp.size());
    if (n > 0) {
      std::memcpy(buf, s->resp.data(), n);
      s->resp.consume(n);
      s->conn.noteDataSent();
      if (s->x != nullptr) {
        s->x->clientProgress();
        if (s->resp.size() < kHighWater) {
          s->x->clientRoom();
        }
      }
    }
    if (s->resp.empty()) {
      s->resp.release();
      if (s->resp_done) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return static_cast<ssize_t>(n);
      }
      if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
      }
    }
    return static_cast<ssize_t>(n);
  };
  if (conn.worker().options().hsts && conn.secure()) {
    nva.push_back(nv("strict-transport-security", "max-age=63072000; includeSubDomains"));
  }
  int rv = nghttp2_submit_response(conn.session(), id, nva.data(), nva.size(), with_body ? &provider : nullptr);
  if (rv != 0) {
    log::debug("h2: stream {}: response not submitted: {}", id, nghttp2_strerror(rv));
  }
  conn.wantPump();
}

void H2Stream::resumeData() {
  if (deferred) {
    deferred = false;
    nghttp2_session_resume_data(conn.session(), id);
  }
  conn.wantPump();
}

void H2Stream::respondLocal(int status, std::string_view detail, const std::vector<nghttp2_nv>& extra) {
  if (resp_started) {
    nghttp2_submit_rst_stream(conn.session(), NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    finishExchange(x != nullptr && x->responseStarted() ? x->responseStatus() : status, false);
    conn.wantPump();
    return;
  }
  ProxyStats& stats = conn.worker().stats();
  int cls = status / 100;
  if (cls >= 1 && cls <= 5) {
    stats.responses_by_class[static_cast<size_t>(cls)].add();
  }
  std::string body(http::reasonPhrase(status));
  body += ": ";
  body += detail;
  body += "\n";
  char code[4];
  std::snprintf(code, sizeof code, "%03d", status);
  std::string length = std::to_string(body.size());
  std::vector<nghttp2_nv> nva = {nv(":status", std::string_view(code, 3)),
                                 nv("content-type", "text/plain; charset=utf-8"), nv("cache-control", "no-store"),
                                 nv("content-length", length)};
  nva.insert(nva.end(), extra.begin(), extra.end());
  bool head_only = x != nullptr && x->method == http::Method::Head;
  resp.clear();
  if (!head_only) {
    resp.append(body);
  }
  resp_done = true;
  submitResponse(nva, !head_only);
  finishExchange(status, true);
}

void H2Stream::finishExchange(int status, bool answered) {
  if (x != nullptr && !logged) {
    logged = true;
    logAccess(conn.worker(), *x, conn.peerIp(), conn.peerPort(), status, answered, "HTTP/2");
  }
  releaseRequest();
  // Body bytes nobody will take: their window goes back (the rest is consumed as it comes).
  if (!req_body.empty() && conn.session() != nullptr) {
    nghttp2_session_consume(conn.session(), id, req_body.size());
    req_body.clear();
  }
}

void H2Stream::closed(uint32_t error_code) {
  // The stream is over (both sides ended, or reset by either): an exchange still running is
  // abandoned, and its line says why.
  if (x != nullptr && !logged) {
    if (x->term == Termination::Done) {
      // The lb ended the connection for what the client did (an abuse, a protocol error, a
      // stall), or the client ended the stream or its connection.
      std::optional<H2Abuse> abuse = conn.abuse();
      x->term = !abuse                      ? Termination::ClientAbort
                : *abuse == H2Abuse::Stalled ? Termination::ClientTimeout
                                             : Termination::BadRequest;
    }
    finishExchange(x->responseStarted() ? x->responseStatus() : 499, false);
  }
  releaseRequest();
  (void)error_code;
}

void H2Stream::exchangeContinue() {
  nghttp2_nv status = nv(":status", "100");
  nghttp2_submit_headers(conn.session(), NGHTTP2_FLAG_NONE, id, nullptr, &status, 1, nullptr);
  conn.wantPump();
}

void H2Stream::exchangeResponseHead(const http::ResponseHead& head) {
  // The server's fields, minus HTTP/1.1's connection-specific ones (RFC 9113 §8.2.2), names in
  // lower case (§8.2): HPACK would refuse capitals, and a client would reject the stream.
  thread_local std::string names;
  thread_local std::vector<size_t> name_at;
  names.clear();
  name_at.clear();
  std::string connection;
  for (const http::Header& h : head.headers) {
    if (http::equalsIgnoreCase(h.name, "connection")) {
      if (!connection.empty()) {
        connection += ", ";
      }
      connection.append(h.value);
    }
  }
  bool hsts = conn.worker().options().hsts && conn.secure();
  thread_local std::vector<nghttp2_nv> nva;  // nghttp2 copies it: its capacity is reused
  nva.clear();
  auto skip = [&](std::string_view name) {
    return isHopByHop(name, connection, false) || http::equalsIgnoreCase(name, "transfer-encoding") ||
           (hsts && http::equalsIgnoreCase(name, "strict-transport-security")) ||
           http::equalsIgnoreCase(name, "sec-websocket-accept");
  };
  for (const http::Header& h : head.headers) {
    if (skip(h.name)) {
      continue;
    }
    name_at.push_back(names.size());
    for (char c : h.name) {
      names.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c);
    }
  }
  bool tunnel = head.body_kind == http::BodyKind::Tunnel;
  char code[4];
  // A WebSocket accepted by the server (its 101) is a 2xx to the extended CONNECT (RFC 8441 §5).
  std::snprintf(code, sizeof code, "%03d", tunnel ? 200 : head.status);
  nva.push_back(nv(":status", std::string_view(code, 3)));
  size_t i = 0;
  for (const http::Header& h : head.headers) {
    if (skip(h.name)) {
      continue;
    }
    nva.push_back(nv(std::string_view(names).substr(name_at[i], h.name.size()), h.value));
    ++i;
  }
  thread_local std::string sticky;
  const ProxyOptions& options = conn.worker().options();
  if (!options.sticky_cookie.empty() && x->stickyMoved()) {
    sticky.clear();
    appendStickyCookie(sticky, options.sticky_cookie,
                       conn.worker().pool().backend(static_cast<uint32_t>(x->server())).name);
    nva.push_back(nv("set-cookie", sticky));
  }
  bool body = head.body_kind != http::BodyKind::None;
  submitResponse(nva, body);
  if (!body) {
    resp_done = true;
  }
  if (tunnel) {
    tunnel_active = conn.worker().loop().now();
  }
  if (tunnel && !req_body.empty()) {
    // What the client sent ahead goes first, once the exchange returns from this call.
    x->queueTunnel(req_body.view());
    nghttp2_session_consume(conn.session(), id, req_body.size());
    req_body.clear();
  }
}

void H2Stream::exchangeTunnelData(std::string_view bytes) {
  tunnel_active = conn.worker().loop().now();
  resp.append(bytes);
  resumeData();
}

void H2Stream::exchangeTunnelClosed() {
  // The server ended the WebSocket: END_STREAM once its last bytes are out.
  resp_done = true;
  finishExchange(200, true);
  resumeData();
}

void H2Stream::exchangeResponseBody(std::string_view, std::string_view payload) {
  resp.append(payload);
  resumeData();
}

void H2Stream::exchangeComplete() {
  ProxyStats& stats = conn.worker().stats();
  int status = x->responseStatus();
  int cls = status / 100;
  if (cls >= 1 && cls <= 5) {
    stats.responses_by_class[static_cast<size_t>(cls)].add();
  }
  x->release();
  resp_done = true;
  finishExchange(status, true);
  resumeData();
}

void H2Stream::exchangeFailed(int status, std::string_view detail, Termination why) {
  x->term = why;
  respondLocal(status, detail);
}

void H2Stream::exchangeAborted(Termination why) {
  x->term = why;
  // Part of the answer is with the client: the stream is reset, the connection goes on.
  nghttp2_submit_rst_stream(conn.session(), NGHTTP2_FLAG_NONE, id,
                            why == Termination::ClientTimeout ? NGHTTP2_CANCEL : NGHTTP2_INTERNAL_ERROR);
  if (why == Termination::ClientTimeout) {
    conn.worker().stats().slow_send.add();
  }
  finishExchange(x->responseStarted() ? x->responseStatus() : 502, false);
  conn.wantPump();
}

// ---------------------------------------------------------------------------------------------
// nghttp2's callbacks

struct H2Callbacks {
  static H2Connection& self(void* user) { return *static_cast<H2Connection*>(user); }
  static H2Stream* stream(H2Connection& c, int32_t id) {
    return static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(c.session_, id));
  }

  static int onBeginFrame(nghttp2_session*, const nghttp2_frame_hd* hd, void* user) {
    H2Connection& c = self(user);
    if (c.fatal_) {
      return 0;
    }
    if (hd->type == NGHTTP2_HEADERS) {
      c.block_stream_ = hd->stream_id;
      c.block_frames_ = 1;
      c.block_bytes_ = hd->length;
    } else if (hd->type == NGHTTP2_CONTINUATION) {
      ++c.block_frames_;
      c.block_bytes_ += hd->length;
      // The block may be at most a little over what max_header_bytes lets through (HPACK can
      // make a block larger than its fields only by its framing); a flood is cut here.
      size_t cap = c.worker_.options().limits.max_header_bytes * 2 + 16384;
      if (c.block_frames_ > kMaxBlockFrames || c.block_bytes_ > cap) {
        c.terminate(H2Abuse::ContinuationFlood, NGHTTP2_ENHANCE_YOUR_CALM);
      }
    }
    return 0;
  }

  static int onBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    H2Connection& c = self(user);
    if (c.fatal_ || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;
    }
    auto* s = new H2Stream(c, frame->hd.stream_id);
    s->begun = c.worker_.loop().now();
    s->next = c.streams_;
    if (c.streams_ != nullptr) {
      c.streams_->prev = s;
    }
    c.streams_ = s;
    ++c.streams_open_;
    c.last_active_ = c.worker_.loop().now();
    c.worker_.stats().h2_streams.add();
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
    // A stream opened counts as work asked for: the control budget grows a little with it.
    c.control_tokens_ = std::min(c.control_tokens_ + 1, kControlBurst);
    return 0;
  }

  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    H2Connection& c = self(user);
    if (c.fatal_) {
      return 0;
    }
    H2Stream* s = stream(c, frame->hd.stream_id);
    if (s == nullptr || s->headers_done) {
      return 0;  // trailers: not passed on (a proxy may drop them)
    }
    // The decoded list counts as HTTP/1.1 would count the head: name, ": ", value, CRLF.
    s->header_bytes += namelen + valuelen + 4;
    if (s->header_bytes > c.worker_.options().limits.max_header_bytes) {
      s->header_overflow = true;
      return 0;
    }
    std::string_view n = view(name, namelen);
    if (n == "content-length") {
      // nghttp2 has checked it is one decimal number.
      uint64_t v = 0;
      for (uint8_t d : std::string_view(view(value, valuelen))) {
        v = v * 10 + static_cast<uint64_t>(d - '0');
      }
      s->content_length = v;
    }
    s->addField(n, view(value, valuelen));
    return 0;
  }

  static int onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    H2Connection& c = self(user);
    if (c.fatal_) {
      return 0;
    }
    bool unproductive = false;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        H2Stream* s = stream(c, frame->hd.stream_id);
        if (s == nullptr) {
          break;
        }
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
          s->headers_done = true;
        }
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
          s->end_stream = true;
        }
        c.touch(s);
        break;
      }
      case NGHTTP2_DATA: {
        H2Stream* s = stream(c, frame->hd.stream_id);
        if (frame->hd.length == 0 && !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
          unproductive = true;  // an empty DATA frame asks nothing of us
        }
        if (s != nullptr && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
          s->end_stream = true;
          c.touch(s);
        }
        break;
      }
      case NGHTTP2_RST_STREAM: {
        H2Stream* s = stream(c, frame->hd.stream_id);
        c.worker_.stats().h2_resets_received.add();
        // A reset of a stream whose answer is not done cancels work already asked of a server:
        // that is what Rapid Reset abuses.
        if (s != nullptr && !s->resp_done &&
            !c.takeToken(c.reset_tokens_, c.reset_last_, kResetRate, kResetBurst)) {
          c.terminate(H2Abuse::RapidReset, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        break;
      }
      case NGHTTP2_SETTINGS:
      case NGHTTP2_PING:
        unproductive = !(frame->hd.flags & NGHTTP2_FLAG_ACK) || frame->hd.type == NGHTTP2_PING;
        break;
      case NGHTTP2_PRIORITY:
        unproductive = true;
        break;
      case NGHTTP2_GOAWAY:
        break;
      default:
        break;
    }
    if (unproductive && !c.takeToken(c.control_tokens_, c.control_last_, kControlRate, kControlBurst)) {
      c.terminate(H2Abuse::ControlFlood, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    return 0;
  }

  static int onDataChunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data, size_t len,
                         void* user) {
    H2Connection& c = self(user);
    H2Stream* s = c.fatal_ ? nullptr : stream(c, id);
    if (s == nullptr || (s->started && s->x == nullptr)) {
      // Nobody takes it (the stream is answered or gone): its window goes back at once.
      nghttp2_session_consume(session, id, len);
      return 0;
    }
    s->body_in += len;
    s->tunnel_active = c.worker_.loop().now();
    s->req_body.append(view(data, len));
    c.touch(s);
    return 0;
  }

  static int onStreamClose(nghttp2_session* session, int32_t id, uint32_t error_code, void* user) {
    H2Connection& c = self(user);
    H2Stream* s = stream(c, id);
    if (s == nullptr) {
      return 0;
    }
    nghttp2_session_set_stream_user_data(session, id, nullptr);
    if (!s->req_body.empty()) {
      nghttp2_session_consume_connection(session, s->req_body.size());
    }
    s->closed(error_code);
    c.destroyStream(s);
    return 0;
  }

  static int onFrameNotSend(nghttp2_session*, const nghttp2_frame*, int, void*) { return 0; }

  static int onInvalidFrame(nghttp2_session*, const nghttp2_frame*, int, void* user) {
    self(user).worker_.stats().bad_requests.add();
    return 0;
  }

  static int onFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    H2Connection& c = self(user);
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      // The whole answer is out while the client is still sending (a 413 to an upload): the
      // stream ends here (RFC 9113 §8.1), so it stops counting against the client's streams.
      H2Stream* s = stream(c, frame->hd.stream_id);
      if (s != nullptr && !s->end_stream) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
      }
    }
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR && !c.fatal_) {
      // nghttp2's own verdict (a frame the protocol forbids, its own flood limits), whose reason
      // it puts in the GOAWAY's debug data. One that RFC 9113 would make a stream error: more
      // streams than an acknowledged SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2 1.52 ends the
      // connection; before the ACK the extra streams are refused one by one).
      c.fatal_ = true;
      c.abuse_ = H2Abuse::ProtocolError;
      c.worker_.stats().h2_goaway[static_cast<size_t>(H2Abuse::ProtocolError)].add();
      log::info("h2: closing the connection of {}: protocol_error ({})",
                core::SocketAddress(c.peer_ip_, c.peer_port_).toString(),
                view(frame->goaway.opaque_data, frame->goaway.opaque_data_len));
    }
    return 0;
  }
};

// ---------------------------------------------------------------------------------------------
// The connection

H2Connection::H2Connection(ProxyWorker& worker, H2Carrier& carrier, core::Buffer& out,
                           const core::SocketAddress& peer, int fd, bool secure)
    : worker_(worker),
      carrier_(carrier),
      out_(out),
      peer_ip_(peer.ip()),
      peer_text_(peer_ip_.toString()),
      peer_port_(peer.port()),
      fd_(fd),
      secure_(secure),
      reset_tokens_(kResetBurst),
      control_tokens_(kControlBurst) {}

H2Connection::~H2Connection() {
  if (pump_queued_) {
    worker_.loop().cancelBatchEnd(this);
  }
  if (session_ != nullptr) {
    nghttp2_session_del(session_);  // calls no callback: the streams are ended below
    session_ = nullptr;
  }
  while (streams_ != nullptr) {
    H2Stream* s = streams_;
    s->closed(NGHTTP2_CANCEL);
    destroyStream(s);
  }
}

bool H2Connection::start() {
  nghttp2_session_callbacks* cbs = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    return false;
  }
  nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, &H2Callbacks::onBeginFrame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &H2Callbacks::onBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &H2Callbacks::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &H2Callbacks::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &H2Callbacks::onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &H2Callbacks::onStreamClose);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, &H2Callbacks::onInvalidFrame);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &H2Callbacks::onFrameSend);
  nghttp2_option* opt = nullptr;
  if (nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cbs);
    return false;
  }
  const ProxyOptions& options = worker_.options();
  // Window updates are ours: a stream's window reopens as its bytes go upstream.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
  // Backstops behind our own budgets (which fire first and are counted by reason).
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_stream_reset_rate_limit(opt, static_cast<uint64_t>(kResetBurst) * 2,
                                             static_cast<uint64_t>(kResetRate) * 2);
  nghttp2_option_set_max_continuations(opt, kMaxBlockFrames * 2);
  int rv = nghttp2_session_server_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    session_ = nullptr;
    return false;
  }
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options.h2_max_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(options.limits.max_header_bytes)},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65535},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},  // WebSockets over HTTP/2 (RFC 8441)
  };
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings)) != 0) {
    return false;
  }
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  worker_.stats().h2_connections.add();
  last_active_ = worker_.loop().now();
  return true;
}

bool H2Connection::takeToken(double& tokens, core::TimePoint& last, double rate, double burst) {
  core::TimePoint now = worker_.loop().now();
  if (last != core::TimePoint{}) {
    double seconds = std::chrono::duration<double>(now - last).count();
    tokens = std::min(burst, tokens + seconds * rate);
  }
  last = now;
  if (tokens < 1) {
    return false;
  }
  tokens -= 1;
  return true;
}

void H2Connection::terminate(H2Abuse reason, uint32_t error_code) {
  if (fatal_) {
    return;
  }
  fatal_ = true;
  abuse_ = reason;
  worker_.stats().h2_goaway[static_cast<size_t>(reason)].add();
  log::info("h2: closing the connection of {}: {}", core::SocketAddress(peer_ip_, peer_port_).toString(),
            h2AbuseName(reason));
  nghttp2_session_terminate_session(session_, error_code);
}

void H2Connection::touch(H2Stream* s) {
  if (!s->touched) {
    s->touched = true;
    touched_.push_back(s->id);
  }
}

bool H2Connection::receive(core::Buffer& in) {
  if (fatal_) {
    in.clear();
    return false;
  }
  ssize_t n = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(in.data()), in.size());
  in.clear();
  if (n < 0) {
    log::debug("h2: {}: {}", core::SocketAddress(peer_ip_, peer_port_).toString(),
               nghttp2_strerror(static_cast<int>(n)));
    // A bad preface, or nghttp2's flood limits (its outbound queue of SETTINGS/PING ACKs).
    if (n == NGHTTP2_ERR_FLOODED) {
      terminate(H2Abuse::ControlFlood, NGHTTP2_ENHANCE_YOUR_CALM);
    } else {
      terminate(H2Abuse::ProtocolError, NGHTTP2_PROTOCOL_ERROR);
    }
    return false;
  }
  processTouched();
  return !fatal_;
}

void H2Connection::processTouched() {
  // Streams that got news in this read: start those whose head is in, pass on body bytes. Done
  // after nghttp2 returned, so an exchange never runs inside one of its callbacks.
  for (size_t i = 0; i < touched_.size(); ++i) {
    H2Stream* s = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(session_, touched_[i]));
    if (s == nullptr) {
      continue;
    }
    s->touched = false;
    if (fatal_) {
      continue;
    }
    if (!s->started) {
      if (s->headers_done) {
        s->start();
      }
    } else if (s->x != nullptr) {
      s->pumpBody();
    } else if (!s->req_body.empty()) {
      nghttp2_session_consume(session_, s->id, s->req_body.size());
      s->req_body.clear();
    }
  }
  touched_.clear();
}

void H2Connection::produce() {
  while (out_.size() < kHighWater && session_ != nullptr) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      log::debug("h2: send: {}", nghttp2_strerror(static_cast<int>(n)));
      fatal_ = true;
      send_failed_ = true;  // nothing more can be framed: the connection ends (finished())
      return;
    }
    if (n == 0) {
      return;
    }
    out_.append(std::string_view(reinterpret_cast<const char*>(data), static_cast<size_t>(n)));
  }
}

bool H2Connection::finished() const {
  if (session_ == nullptr || send_failed_) {
    return true;
  }
  return nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0;
}

void H2Connection::shutdown() {
  if (shutdown_sent_ || fatal_ || session_ == nullptr) {
    return;
  }
  shutdown_sent_ = true;
  // The last stream we took: later ones were never seen, and the client may send them again on
  // a new connection (RFC 9113 §6.8).
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
  wantPump();
}

bool H2Connection::stalled(core::TimePoint now) {
  const ProxyOptions& options = worker_.options();
  bool waiting_on_client = false;
  for (H2Stream* s = streams_; s != nullptr; s = s->next) {
    if (s->x != nullptr && s->x->tunnel() && now - s->tunnel_active >= options.client_timeout) {
      // A WebSocket quiet both ways for client_ms ends, as an HTTP/1.1 tunnel does.
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
      s->finishExchange(200, true);
      continue;
    }
    if (!s->headers_done && now - s->begun >= options.request_timeout) {
      worker_.stats().slow_head.add();
      terminate(H2Abuse::Stalled, NGHTTP2_PROTOCOL_ERROR);
      return true;
    }
    if (!s->resp.empty()) {
      waiting_on_client = true;  // response bytes the client's window does not take
    }
  }
  if (waiting_on_client && !data_sent_) {
    worker_.stats().slow_send.add();
    // Holding the lb's buffers with a shut window is an abuse like the others: ENHANCE_YOUR_CALM.
    terminate(H2Abuse::Stalled, NGHTTP2_ENHANCE_YOUR_CALM);
    return true;
  }
  data_sent_ = false;
  return false;
}

void H2Connection::wantPump() {
  if (!pump_queued_) {
    pump_queued_ = true;
    worker_.loop().atBatchEnd(this);
  }
}

void H2Connection::onBatchEnd() {
  pump_queued_ = false;
  carrier_.h2Pump();
}

void H2Connection::destroyStream(H2Stream* s) {
  last_active_ = worker_.loop().now();
  if (s->prev != nullptr) {
    s->prev->next = s->next;
  } else {
    streams_ = s->next;
  }
  if (s->next != nullptr) {
    s->next->prev = s->prev;
  }
  --streams_open_;
  delete s;
}

}  // namespace fulcrum::lb
