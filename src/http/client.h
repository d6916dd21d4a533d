#pragma once
// The blocking HTTP/1.1 client of the control plane: the database agent's etcd calls and
// forwarded admin calls, the probes of `fulcrum up` and `fulcrum status`. One request at a time
// on one connection to one server, each exchange bounded by a deadline (poll(), no threads).
// Nothing on a request path uses it: the load balancer and the web workers never block (their
// health checks and the etcd watch read responses on their loop with the same ResponseReader).
//
// Keep-alive: the connection stays open after a complete response the server did not end with
// `Connection: close`, and the next exchange reuses it. Before reusing an idle connection the
// client looks whether the server closed it meanwhile (EOF or a reset waiting on the socket):
// then it connects afresh and nothing was sent on the dead one. If the server closes it just as
// the request goes out (the request was sent but not a byte of the response came back), the
// request is sent once more on a new connection only when it is safe to replay (Replay::Safe):
// a request that may have taken effect is never sent twice. Any other failure (a timeout, a bad
// response, a close on a fresh connection) closes the connection and fails the exchange.
//
// With ClientOptions::tls every connection is TLS (the handshake within the exchange's deadline):
// a server whose certificate does not verify, or that refuses ours, fails the exchange with the
// reason ("TLS with 10.0.0.5:2379: certificate verify failed: IP address mismatch").
//
// Not thread-safe: one owner thread per client.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/address.h"
#include "core/clock.h"
#include "core/fd.h"
#include "core/result.h"
#include "core/transport.h"
#include "http/message.h"
#include "http/response_reader.h"

namespace fulcrum::http {

// Whether a request may reach the server twice: a read, or a write whose repetition changes
// nothing, is Safe; a write that may have been applied already (a create-if-absent, a lease
// grant, a switchover) is sent again only when none of it left (OnlyIfUnsent).
enum class Replay : uint8_t { Safe, OnlyIfUnsent };

struct ClientRequest {
  Method method = Method::Get;  // GET without a body, or POST with one
  std::string_view path;        // origin-form target: "/v3/kv/range", "/health?x=1"
  std::string_view body;
  std::string_view content_type = "application/json";  // sent with a body (POST)
  std::string_view headers;  // more header lines, each "Name: value\r\n" (no CR/LF inside values)
  Replay replay = Replay::OnlyIfUnsent;
};

struct ClientResponse {
  int status = 0;
  std::string body;  // decoded (de-chunked)
};

struct ClientOutcome {
  core::Result<ClientResponse> response;
  // True once any byte of the request was written on the connection that failed: the server
  // may then have acted on it, and only a Safe request may be sent again (elsewhere too).
  bool request_sent = false;
};

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{500};  // the TCP handshake, within the deadline
  uint64_t max_body_bytes = 64 << 20;              // a larger response body fails the exchange
  bool keep_alive = true;  // false: `Connection: close`, a new connection for every exchange
  // TLS on every connection (tls/client_context.h); null: plain TCP.
  std::shared_ptr<core::ClientTransportFactory> tls;
};

class BlockingClient {
 public:
  explicit BlockingClient(core::SocketAddress server, ClientOptions options = {});
  BlockingClient(BlockingClient&&) = default;
  BlockingClient& operator=(BlockingClient&&) = default;

  // Sends `request` and reads its whole response, all before `deadline` (steady clock).
  ClientOutcome exchange(const ClientRequest& request, core::TimePoint deadline);

  // Closes the idle connection, if any: the next exchange connects afresh.
  void close();
  bool connected() const { return fd_.valid(); }
  // TCP connections this client opened so far (each connect attempt counts).
  uint64_t connectionsOpened() const { return connections_opened_; }
  const core::SocketAddress& server() const { return server_; }

 private:
  struct Attempt;
  core::Status connect(core::TimePoint deadline);
  // What a failed read or write of the transport came to, for the exchange's error.
  std::string ioError(std::string_view what, int err) const;
  // True when the idle connection shows nothing to read: no EOF, no reset, no stray bytes.
  bool idleConnectionUsable() const;
  void sendAndRead(const std::string& wire, Method method, core::TimePoint deadline, Attempt& attempt);

  core::SocketAddress server_;
  ClientOptions options_;
  core::Fd fd_;
  std::unique_ptr<core::Transport> transport_;  // on fd_: plain, or TLS
  core::Buffer in_;                             // received, not yet read by reader_
  ResponseReader reader_;
  uint64_t connections_opened_ = 0;
};

// One exchange on a connection of its own, closed afterwards (probes, forwarded calls).
ClientOutcome fetchOnce(const core::SocketAddress& server, const ClientRequest& request,
                        core::TimePoint deadline, ClientOptions options = {});

}  // namespace fulcrum::http
