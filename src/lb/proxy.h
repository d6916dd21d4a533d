#pragma once
// The HTTP proxy of one worker thread: accepts clients, parses each request, picks a server,
// forwards the request on a pooled keep-alive server connection, streams the response back
// with backpressure, and retries on another server what a retry can hide.
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/acceptor.h"
#include "core/client_table.h"
#include "core/connection_set.h"
#include "core/counter.h"
#include "core/event_loop.h"
#include "core/fd.h"
#include "core/histogram.h"
#include "core/stable_vector.h"
#include "core/transport.h"
#include "http/parser.h"
#include "lb/exchange.h"
#include "lb/pool.h"
#include "tls/acme.h"
#include "tls/client_context.h"

namespace fulcrum::lb {

class OutlierSignals;
class RetryBudget;

struct ProxyOptions {
  http::Limits limits;
  core::Duration connect_timeout = std::chrono::seconds(2);
  core::Duration server_timeout = std::chrono::seconds(30);
  core::Duration client_timeout = std::chrono::seconds(30);
  core::Duration request_timeout = std::chrono::seconds(10);
  // A request body must average this many bytes a second, counted after a grace of
  // request_timeout and only while the lb waits on the client; 0 = off.
  uint32_t min_body_rate = 500;
  // [lb.limits] rate_per_ip and conn_per_ip: one table shared by every worker (not owned); null
  // when both are off.
  core::ClientTable* clients = nullptr;
  // Set on an https listener: each client gets a TLS transport from it (not owned).
  core::TransportFactory* tls = nullptr;
  // [security] internal_tls: connections to the servers speak TLS from it (not owned).
  tls::ClientContext* upstream_tls = nullptr;
  bool hsts = false;  // https: Strict-Transport-Security on every response
  // http, with [lb.tls] redirect_http: every request gets a 308 to https on this port (0: off).
  uint16_t redirect_https_port = 0;
  // http, with [lb.acme]: the HTTP-01 answers this node gives while an order is open (not owned).
  const tls::ChallengeStore* acme_challenges = nullptr;
  uint32_t retries = 2;
  // [lb] queue_timeout_ms: how long a request waits for a server slot (max_conn); 0: no queue.
  core::Duration queue_timeout = std::chrono::seconds(5);
  // [lb] sticky = "cookie": the cookie naming a client's server; empty: no sticky sessions.
  std::string sticky_cookie;
  // [lb] retry_budget_percent / retry_budget_min, checked against `retry_budget` (shared by every
  // worker, not owned; null: retries are limited by `retries` alone).
  uint32_t retry_budget_percent = 20;
  uint32_t retry_budget_min = 3;
  RetryBudget* retry_budget = nullptr;
  // [lb.outlier]: every response head and server failure is told (shared, not owned; null: off).
  OutlierSignals* outlier = nullptr;
  uint32_t max_connections = 20000;  // per worker
  // HTTP/2: prior knowledge on this (cleartext) listener ([lb] h2c); on https, ALPN decides.
  bool h2c = false;
  uint32_t h2_max_streams = 100;
  std::string proto = "http";
  bool access_log = true;
  // [lb] accept_proxy: each connection starts with a PROXY header naming the client, sent by a
  // peer `accept_proxy_from` admits (not owned; null: any).
  bool accept_proxy = false;
  core::IpFilter* accept_proxy_from = nullptr;
};

struct BackendStats {
  core::Counter requests;
  core::Counter failures;  // connect failures, resets and timeouts seen on real traffic
  core::Counter connects;  // new connections opened to the server (a reused one is not counted)
  core::Counter inflight;
  std::array<core::Counter, 6> responses_by_class;
  // Time from sending the request (connect start) to the response head.
  core::Histogram response_time;
};

struct ProxyStats {
  explicit ProxyStats(size_t backends) : backends(backends) {}
  core::Counter connections_total;
  core::Counter connections_active;
  core::Counter requests_total;
  std::array<core::Counter, 6> responses_by_class;  // what clients got, by status/100
  core::Counter retries;
  core::Counter retries_budget_exhausted;  // retries not made: the retry budget was spent
  // Requests waiting for a server's answer, every server (the retry budget's base).
  core::Counter inflight;
  core::Counter no_server;        // 503: nothing up, or every attempt failed to connect
  core::Counter bad_gateway;      // 502
  core::Counter gateway_timeout;  // 504
  // The queue for server slots (max_conn): requests that waited, were refused at once (queue
  // full or off), or gave up after queue_timeout; and how long those served waited.
  core::Counter queued;
  core::Counter queue_full;
  core::Counter queue_timeouts;
  core::Histogram queue_time;
  core::Counter bad_requests;     // refused by the parser
  // [lb] accept_proxy: connections closed for a malformed or late PROXY header, or a sender not
  // in accept_proxy_from.
  core::Counter proxy_protocol_errors;
  // Clients closed for being slow: a head not in within request_timeout (408), a body under
  // min_body_rate (408), or a response not taken within client_timeout (send).
  core::Counter slow_head;
  core::Counter slow_body;
  core::Counter slow_send;
  // At max_connections: an idle connection closed to make room, or (none idle) the new one refused.
  core::Counter evicted;
  core::Counter refused;
  core::Counter bytes_in;
  core::Counter bytes_out;
  // From the request's first byte to its last response byte queued to the client (or the
  // lb's own answer), per frontend: [0] http, [1] https.
  std::array<core::Histogram, 2> total_time;
  // HTTP/2: connections, streams, client resets, and connections the lb ended by reason (H2Abuse).
  core::Counter h2_connections;
  core::Counter h2_streams;
  core::Counter h2_resets_received;
  std::array<core::Counter, 5> h2_goaway;
  // By server id. Grown by the main thread when a reload adds servers, before any worker hears
  // of them; ids are never reused, so a removed server's counters stay where they were.
  core::StableVector<BackendStats> backends;
};

class ProxySession;

// One request on a client connection: what the HTTP/1.1 codec keeps of it (the head, the body's
// framing, how the response is framed back) and its exchange. An HTTP/2 stream takes one too,
// for its exchange and the head it builds for the server. A session takes one from its
// worker's free list when a request starts and gives it back when it ends, so an idle keep-alive
// client holds none of it, and the free list keeps capacities warm (no malloc per request).
struct Http1Request {
  explicit Http1Request(ProxyWorker& worker) : exchange(worker) {}
  void reset();

  ProxyExchange exchange;
  http::RequestHead req;
  http::HeadScanner req_scanner;  // how far the head in the session's cin_ has been checked
  http::BodyDecoder req_body;
  uint8_t version_minor = 1;
  bool client_keep_alive = true;
  bool dechunk = false;  // an HTTP/1.0 client gets a chunked response's payload, ended by the close
  bool logged = false;   // its access line is written (once per request)
  // The request body's pace (min_body_rate): counted from body_start, restarted whenever the
  // lb itself held the body back (a slow server).
  core::TimePoint body_start{};
  uint64_t body_bytes = 0;
};

inline void Http1Request::reset() {
  exchange.reset();
  req_scanner.reset();
  version_minor = 1;
  client_keep_alive = true;
  dechunk = false;
  logged = false;
  body_start = core::TimePoint{};
  body_bytes = 0;
}

// The client's address hashed for the balancer (source hashing).
uint64_t hashClientIp(const core::IpAddress& ip);
// A request's one access line (and, when `answered`, its time in the total_time histogram),
// whichever protocol carried it; `version` is "HTTP/1.1" or "HTTP/2".
void logAccess(ProxyWorker& worker, const ProxyExchange& x, const core::IpAddress& ip, uint16_t port, int status,
               bool answered, std::string_view version);

class ProxyWorker final {
 public:
  // `report_failure` is called on this worker's thread for every passive health failure; it
  // forwards to the health checker's thread.
  using FailureReporter = std::function<void(uint32_t server, const std::string& reason)>;

  ProxyWorker(core::EventLoop& loop, core::Fd listener, WorkerPool& pool, const ProxyOptions& options,
              ProxyStats& stats, FailureReporter report_failure);
  ~ProxyWorker();

  // Stops accepting; each connection closes once idle. `idle_linger` > 0 (a handover to a
  // successor): idle keep-alive connections are kept that long, so a request a client sends
  // meanwhile is answered (with `Connection: close`) rather than meeting a closed socket.
  void drain(std::function<void()> on_idle, core::Duration idle_linger = core::Duration::zero());
  bool lingeringIdle() const { return linger_idle_; }

  core::EventLoop& loop() { return loop_; }
  core::Acceptor& acceptor() { return sessions_.acceptor(); }
  WorkerPool& pool() { return pool_; }
  const ProxyOptions& options() const { return options_; }
  // A reload's limits, timeouts, retries, hsts and https redirect, on this worker's loop: requests read them as
  // they go, so the next wait or parse uses the new values. The rest of the options (listener,
  // TLS, connection cap, client table) is fixed for the worker's life.
  void retune(const ProxyOptions& from);
  ProxyStats& stats() { return stats_; }
  bool draining() const { return sessions_.draining(); }
  void reportFailure(uint32_t server, const std::string& reason);
  // A session closing (exactly once).
  void unlink(ProxySession* session);
  // Per-request state (the codec's and the exchange's) from a free list: idle connections hold
  // none, and no malloc per request.
  std::unique_ptr<Http1Request> acquireRequest();
  void releaseRequest(std::unique_ptr<Http1Request> request);

 private:
  ProxySession* accept(core::Fd fd, const core::SocketAddress& peer);

  core::EventLoop& loop_;
  WorkerPool& pool_;
  ProxyOptions options_;
  ProxyStats& stats_;
  FailureReporter report_failure_;
  std::vector<std::unique_ptr<Http1Request>> free_requests_;
  bool linger_idle_ = false;
  std::unique_ptr<core::Timer> linger_timer_;
  core::ConnectionSet<ProxySession> sessions_;
};

}  // namespace fulcrum::lb
