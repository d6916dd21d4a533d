#pragma once
// The server side of HTTP/1.1 connections: accept, parse, dispatch to a Handler, write the
// response (from memory or a file with sendfile), keep-alive and pipelining, timeouts and
// graceful drain. One HttpServer per worker thread; nothing here is shared between threads
// except the ServerStats counters, which other threads only read.
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/acceptor.h"
#include "core/address.h"
#include "core/buffer.h"
#include "core/client_table.h"
#include "core/connection_set.h"
#include "core/counter.h"
#include "core/event_loop.h"
#include "core/fd.h"
#include "core/histogram.h"
#include "core/transport.h"
#include "http/message.h"
#include "http/parser.h"

namespace fulcrum::http {

struct ServerOptions {
  Limits limits;
  core::Duration request_timeout = std::chrono::seconds(10);  // whole head must arrive (slowloris)
  core::Duration idle_timeout = std::chrono::seconds(30);     // keep-alive idle, and a stalled client
  // A new connection must send its first byte within this (0: idle_timeout): a control plane
  // closes connections that only hold a slot sooner than keep-alive ones.
  core::Duration first_byte_timeout{0};
  uint32_t max_connections = 20000;                           // per worker
  // Per client address, per worker (0: no cap): one address cannot take every slot of a
  // control plane (1,000 idle connections to an agent used to stop every health check).
  uint32_t max_connections_per_ip = 0;
  std::string served_by;                                      // X-Served-By on every response; "" = none
  // One info-level "access" line per answered request (a web node; not control planes, whose
  // health checks would fill the log).
  bool access_log = false;
  // Set: every connection speaks TLS through a transport from it (a web node under
  // [security] internal_tls); not owned. Null: plain TCP, the socket used directly.
  core::TransportFactory* tls = nullptr;
};

// Routes a handler names (Handler::routeOf): a small fixed set, so per-route series stay few.
inline constexpr size_t kMaxRoutes = 8;

struct RouteStats {
  std::array<core::Counter, 6> responses_by_class;  // index status/100
  core::Histogram duration;                         // from the request dispatched to its response queued
};

struct ServerStats {
  core::Counter connections_total;
  core::Counter connections_active;
  core::Counter requests_total;
  std::array<core::Counter, 6> responses_by_class;  // index status/100 (1xx..5xx); 0 unused
  core::Counter bytes_in;
  core::Counter bytes_out;
  core::Counter parse_errors;
  core::Counter timeouts;
  core::Counter refused;  // closed at accept: max_connections or max_connections_per_ip reached
  core::Counter evicted;  // idle connections closed to make room for a new one at max_connections
  std::array<RouteStats, kMaxRoutes> routes;  // requests that reached the handler, by its route
};

class ServerConnection;
struct Response;

// A response a handler gives later (after a database query, say). Copyable; every copy names
// the same pending response. complete() must run on the worker thread that owns the
// connection; once the client is gone (or the response was given) it does nothing. The
// connection reads no further request until the response is given: pipelined bytes wait in
// its buffer.
class DeferredResponse {
 public:
  DeferredResponse() = default;
  // False once the client went away or the response was given: no point in working further.
  bool wanted() const;
  void complete(Response response);

 private:
  friend class ServerConnection;
  struct State {
    ServerConnection* conn = nullptr;  // cleared when the connection closes or is answered
  };
  explicit DeferredResponse(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

struct Request {
  const RequestHead& head;
  std::string_view body;  // like head, valid only during Handler::handle(): copy what a later answer needs
  const core::SocketAddress& peer;
  ServerConnection* connection = nullptr;
  // The common name of the client certificate the TLS handshake verified; empty when the client
  // presented none, or on plain TCP.
  std::string_view peer_certificate;

  // Answers later: the handler leaves `response` untouched and completes the returned handle.
  DeferredResponse defer() const;
};

// What a handler fills in. The connection adds the status line, Date, Content-Length,
// Connection and X-Served-By itself.
struct Response {
  int status = 200;
  std::string headers;  // extra header lines, each "Name: value\r\n"
  std::string body;
  core::Fd file;  // when valid, the body is file_length bytes of it from file_offset
  uint64_t file_offset = 0;
  uint64_t file_length = 0;
  bool close = false;  // close the connection after this response

  void addHeader(std::string_view name, std::string_view value);
  void setBody(int status_code, std::string_view content_type, std::string text);
};

class Handler {
 public:
  // maxBodyBytes() answer for "whatever the server allows" (ServerOptions::limits).
  static constexpr uint64_t kServerBodyLimit = UINT64_MAX;

  virtual ~Handler() = default;
  // The largest request body the route for `head` consumes, asked as soon as the head has
  // arrived: a longer Content-Length gets 413 before a byte of the body is read (and instead
  // of 100 Continue), a chunked body gets 413 once its decoded size passes it, so a connection
  // never buffers more than this. 0: the route takes no body. limits.max_body_bytes caps it.
  virtual uint64_t maxBodyBytes(const RequestHead& head) const {
    (void)head;
    return kServerBodyLimit;
  }
  // Asked, for a request with a body, as soon as its head has arrived: true when the request is
  // refused on its head alone (a missing or wrong token, no client certificate), with the answer
  // in `response`. The body is then never read and the connection closes after the answer.
  // `peer_certificate` as in Request.
  virtual bool refuseBeforeBody(const RequestHead& head, std::string_view peer_certificate,
                                Response& response) const {
    (void)head;
    (void)peer_certificate;
    (void)response;
    return false;
  }
  virtual void handle(const Request& request, Response& response) = 0;
  // The route `head` takes, below kMaxRoutes, for ServerStats::routes (asked before handle()).
  virtual size_t routeOf(const RequestHead& head) const {
    (void)head;
    return 0;
  }
};

class HttpServer final {
 public:
  HttpServer(core::EventLoop& loop, core::Fd listener, Handler& handler, const ServerOptions& options,
             ServerStats& stats);
  ~HttpServer();

  // Stops accepting, closes idle connections, lets busy ones finish their response; `on_idle`
  // runs once no connection is left.
  void drain(std::function<void()> on_idle);
  size_t connectionCount() const { return connections_.size(); }
  core::Acceptor& acceptor() { return connections_.acceptor(); }

  // Used by connections.
  core::EventLoop& loop() { return loop_; }
  Handler& handler() { return handler_; }
  const ServerOptions& options() const { return options_; }
  ServerStats& stats() { return stats_; }
  bool draining() const { return connections_.draining(); }
  // A connection closing (exactly once).
  void unlink(ServerConnection* conn);

 private:
  ServerConnection* accept(core::Fd fd, const core::SocketAddress& peer);

  core::EventLoop& loop_;
  Handler& handler_;
  const ServerOptions options_;
  ServerStats& stats_;
  std::unique_ptr<core::ClientTable> per_ip_;  // open connections by address, when capped
  core::ConnectionSet<ServerConnection> connections_;
};

}  // namespace fulcrum::http
