#pragma once
// One request's way through the load balancer, whatever protocol the client speaks: picking a
// server, a pooled or new connection to it, sending the request (its bytes kept while they fit,
// so that a retry can send them again), reading and checking the response, retries on another
// server, and the tunnel of an upgraded connection. The client side (an HTTP/1.1 connection
// today, an HTTP/2 stream later) gives it the request and takes the response through
// ExchangeClient; it never sees a server.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/address.h"
#include "core/buffer.h"
#include "core/event_loop.h"
#include "http/parser.h"
#include "lb/pool.h"

namespace fulcrum::lb {

class ProxyWorker;

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
  QueueFull,      // 503: every server at its max_conn and the queue full (or off)
  QueueTimeout,   // 503: no server slot within queue_timeout_ms
};
std::string_view terminationName(Termination t);

// The client side of an exchange. Every call is made on the worker's thread from inside an
// exchange method; one that ends the exchange (complete, failed, aborted, tunnel closed) may
// release it, and the exchange then returns at once without touching itself.
class ExchangeClient {
 public:
  virtual ~ExchangeClient() = default;
  // The server's 100 Continue, for a request that asked for one.
  virtual void exchangeContinue() = 0;
  // The final response head, checked; the client frames it for its protocol. For a 101 or a
  // CONNECT 2xx the exchange becomes a tunnel after this.
  virtual void exchangeResponseHead(const http::ResponseHead& head) = 0;
  // Response body bytes: `raw` as the server framed them, `payload` decoded.
  virtual void exchangeResponseBody(std::string_view raw, std::string_view payload) = 0;
  // The whole response is in (ends the exchange).
  virtual void exchangeComplete() = 0;
  // The exchange failed before any response byte reached the client: the client answers
  // `status` itself (ends the exchange).
  virtual void exchangeFailed(int status, std::string_view detail, Termination why) = 0;
  // The exchange failed with part of the response already sent: the client must end the
  // connection (ends the exchange).
  virtual void exchangeAborted(Termination why) = 0;
  // Tunnel bytes from the server, and the server's end of the tunnel (ends the exchange).
  virtual void exchangeTunnelData(std::string_view bytes) = 0;
  virtual void exchangeTunnelClosed() = 0;
  // Backpressure: response bytes are read from the server only while this is true.
  virtual bool exchangeHasRoom() const = 0;
  // Response bytes were handed over: send them.
  virtual void exchangeFlush() = 0;
  // The server side has room for more request body.
  virtual void exchangeWantsBody() = 0;
};

class ProxyExchange final : public UpstreamOwner, public SlotWaiter {
 public:
  static constexpr size_t kHighWater = 64 * 1024;       // a side stops reading while this much waits
  static constexpr size_t kMaxReplayBytes = 64 * 1024;  // requests up to this size can be re-sent

  explicit ProxyExchange(ProxyWorker& worker);
  ~ProxyExchange() override;
  ProxyExchange(const ProxyExchange&) = delete;
  ProxyExchange& operator=(const ProxyExchange&) = delete;

  // --- set by the client before start() ------------------------------------------------------
  ExchangeClient* client = nullptr;
  http::Method method = http::Method::Get;
  std::string method_text;
  std::string path;   // for the balancer (uri) and the logs
  std::string query;  // for the access log only
  uint64_t client_hash = 0;
  // Sticky sessions: the server the client's cookie names, when it takes requests (its first
  // attempt goes there); kNoServer: none.
  int sticky = kNoServer;
  // The client's address and the socket it reached us on: a server with send_proxy is told them
  // in the PROXY header that opens each connection to it.
  core::SocketAddress client_address;
  int client_fd = -1;
  bool expect_continue = false;
  bool upgrade = false;
  // The request as it goes upstream: the head, then body bytes while they fit (a retry re-sends
  // it). The client writes the head here before start().
  std::string replay;
  Termination term = Termination::Done;  // why it ended, once it has (set by whoever ends it)
  core::TimePoint t_start{};             // the request's first byte

  // Picks a server and sends the request; `request_done`: the head is the whole request.
  void start(bool request_done);
  // How many body bytes the exchange takes now (0: wait for exchangeWantsBody).
  size_t bodyRoom() const;
  // Request body bytes as they go upstream (the client's framing kept); `done` with the last.
  void takeBody(std::string_view raw, bool done);
  // Writes what is queued upstream. False when the exchange ended or moved on (a retry, an
  // early answer): the caller touches nothing of it then.
  bool sendBody();
  // The client took response bytes: the transfer is moving (the server's deadline restarts).
  void clientProgress();
  // The client has room again for response bytes.
  void clientRoom();
  // Tunnel bytes from the client (sent now), bytes the client sent after its upgrade request
  // (queued from inside exchangeResponseHead, sent when it returns), and the client's end of
  // its side.
  void tunnelFromClient(std::string_view bytes);
  void queueTunnel(std::string_view bytes) { uout_.append(bytes); }
  void clientEnded();
  // The client is gone (or the connection ends) before the exchange did.
  void abandon();
  // Called by the client in exchangeComplete: the server connection is parked for reuse when it
  // can carry another request.
  void release();
  void reset();

  // Waiting for its server (in the queue, or connecting): the body waits with the client.
  bool connecting() const { return state_ == State::Connecting || state_ == State::Queued; }
  bool tunnel() const { return state_ == State::Tunnel; }
  bool queued() const { return state_ == State::Queued; }
  bool requestDone() const { return request_done_; }
  bool responseStarted() const { return response_started_; }
  bool holdsBody() const { return uout_.size() >= kHighWater; }  // the lb, not the client, holds the body
  bool clientEof() const { return client_eof_; }
  bool replayable() const { return replayable_; }
  int server() const { return server_; }
  uint32_t attempts() const { return attempts_; }
  int responseStatus() const { return response_status_; }
  uint64_t responseBytes() const { return response_bytes_; }
  core::TimePoint connectStart() const { return t_connect_start_; }
  core::TimePoint connected() const { return t_connected_; }
  core::TimePoint responseAt() const { return t_response_; }
  // Sticky sessions: the answering server is not the one the client's cookie named, so the
  // response sets the cookie to it.
  bool stickyMoved() const { return server_ != kNoServer && server_ != sticky; }
  // Time spent waiting in the queue for a server slot (max_conn), over every attempt.
  core::Duration queueTime() const { return queue_time_; }

  void onUpstreamEvents(uint32_t events) override;
  void onSlot(uint32_t server) override;

 private:
  enum class State : uint8_t { Idle, Queued, Connecting, Exchanging, Tunnel, Done };

  void connectUpstream();
  // Sends the request to server `id` (its slot, if it has a limit, already held).
  void useServer(uint32_t id);
  // Every server that could take the request is at its max_conn: wait in the queue, or 503.
  void queueForSlot();
  // Gives back the server slot (max_conn) this request holds, or its place in the queue.
  void endSlot();
  void onConnected();
  // [[web.node]] send_proxy: writes the PROXY header on the connection just made (before TLS);
  // false when the attempt failed.
  bool sendProxyHeader();
  // Moves the TLS handshake on; true once it is done (false: wait, or the attempt failed).
  bool handshakeUpstream();
  void readUpstream();
  void processUpstream();
  bool writeUpstream();
  void flushUpstream();
  void updateUpstreamInterest();
  void upstreamFailed(const char* what, int err, bool connect_phase);
  void onUpstreamTimeout();
  void closeUpstream(bool reusable);
  // Ends the exchange with `status` answered by the lb (no response byte sent yet) or, once the
  // response started, by ending the client connection.
  void fail(int status, std::string_view detail, Termination why);
  void complete();
  // The server's in-flight count ends (once): on its response head, a failure, or abandon().
  void endInflight();
  // A slot of the retry budget for the next attempt (true when there is no budget).
  bool takeRetrySlot();

  ProxyWorker& worker_;
  State state_ = State::Idle;
  core::Timer upstream_timer_;
  std::unique_ptr<UpstreamConn> upstream_;
  core::Buffer uin_;
  core::Buffer uout_;
  http::ResponseHead resp_;
  http::HeadScanner resp_scanner_;
  http::BodyDecoder resp_body_;
  bool request_done_ = false;      // the whole request has been queued upstream
  bool response_started_ = false;  // the final response head went to the client
  bool replayable_ = true;
  bool client_eof_ = false;     // tunnel: the client ended its side
  bool upstream_shut_ = false;  // tunnel: and the server has been told
  bool fresh_only_ = false;     // a reused connection went stale: retries open new ones (once)
  bool send_failed_ = false;    // the server stopped taking the request: the rest of its body is dropped
  bool handshaking_ = false;    // connected, TLS handshake under way (still State::Connecting)
  bool inflight_ = false;       // counted in the server's in-flight requests
  bool retry_slot_ = false;     // this attempt is a retry holding a slot of the retry budget
  int server_ = kNoServer;
  int slot_ = kNoServer;  // the server whose slot (max_conn) this request holds
  uint64_t ticket_ = 0;   // its place in the queue while State::Queued
  core::TimePoint t_queued_{};
  core::Duration queue_time_{};
  std::vector<uint32_t> tried_;
  uint32_t attempts_ = 0;
  int response_status_ = 0;
  uint64_t response_bytes_ = 0;
  core::TimePoint t_connect_start_{};
  core::TimePoint t_connected_{};
  core::TimePoint t_response_{};
};

}  // namespace fulcrum::lb
