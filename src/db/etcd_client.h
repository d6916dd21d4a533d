#pragma once
// A small blocking client of etcd 3.4's v3 JSON gateway (HTTP/1.1, no gRPC): the key-value,
// transaction and lease calls the database agent needs. Each call has one deadline covering
// every endpoint it tries. Endpoints are tried in order, starting from the one that answered
// last; each attempt gets at most an equal share of the time left, and a failed endpoint is
// tried last by the next call, so a dead or frozen member cannot eat every call's budget. Every
// call requires a leader: a member cut off from its cluster's quorum refuses it at once ("no
// leader", nothing proposed), and the call goes on to the next endpoint, a write too.
//
// Calls go over one persistent HTTP/1.1 connection (http/client.h): the one to the endpoint
// that answered last. Connections to the others are closed once an endpoint answers, so an
// agent holds one etcd connection besides its watch, not one per call.
//
// Not thread-safe: one client per thread (the agent's control loop owns one).
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/address.h"
#include "core/transport.h"
#include "db/etcd_codec.h"
#include "db/result.h"
#include "http/client.h"

namespace fulcrum::db {

using etcd::KeyValue;
using etcd::LeaseId;

struct EtcdClientOptions {
  std::vector<core::SocketAddress> endpoints;
  std::chrono::milliseconds connect_timeout{500};   // per endpoint tried
  std::chrono::milliseconds request_timeout{2000};  // per call, all endpoints together
  // [security] internal_tls: https with this node's certificate, members verified against the
  // site CA (tls/client_context.h). Null: plain http.
  std::shared_ptr<core::ClientTransportFactory> tls;
};

class EtcdClient {
 public:
  explicit EtcdClient(EtcdClientOptions options);

  // A new lease. etcd counts TTLs in whole seconds: `ttl` is rounded up, and etcd may raise it
  // further to its minimum; the TTL actually granted is returned.
  Result<etcd::Lease> grantLease(std::chrono::milliseconds ttl);
  // Renews a lease; returns its TTL from now on, or 0 when the lease has expired or never
  // existed (a state, not an error).
  Result<std::chrono::milliseconds> keepAlive(LeaseId lease);
  // Ends a lease and deletes every key bound to it. A lease already gone is success.
  Status revoke(LeaseId lease);

  // The key, or nullopt when absent.
  Result<std::optional<KeyValue>> get(std::string_view key);
  Status put(std::string_view key, std::string_view value, LeaseId lease = 0);
  // Puts only if the key does not exist (txn: create_revision == 0). True when written.
  Result<bool> createIfAbsent(std::string_view key, std::string_view value, LeaseId lease = 0);
  // Puts only if the key exists with value `expected`. True when written.
  Result<bool> compareAndPut(std::string_view key, std::string_view expected, std::string_view value,
                             LeaseId lease = 0);
  // Puts `key` only while `guard` holds `expected` (a leader writing only while it leads). True
  // when written.
  Result<bool> putIfValue(std::string_view guard, std::string_view expected, std::string_view key,
                          std::string_view value, LeaseId lease = 0);
  // Deletes only if the key exists with value `expected`. True when deleted.
  Result<bool> compareAndDelete(std::string_view key, std::string_view expected);
  // Deletes only if the key was last written at `mod_revision` (nothing changed it since it was
  // read). True when deleted.
  Result<bool> deleteIfUnchanged(std::string_view key, int64_t mod_revision);
  // Puts only if the key was last written at `mod_revision`. True when written.
  Result<bool> putIfUnchanged(std::string_view key, int64_t mod_revision, std::string_view value,
                              LeaseId lease = 0);
  // Several exact keys in one round trip and one revision (a txn of reads): one entry per key,
  // nullopt when absent. Only the keys asked for cross the network, whatever else lives under
  // their prefix.
  Result<std::vector<std::optional<KeyValue>>> getMany(const std::vector<std::string>& keys);
  // Deletes every key starting with `prefix` (not empty: that would be every key); returns how many.
  Result<int64_t> deletePrefix(std::string_view prefix);
  // Every key starting with `prefix`, in key order.
  Result<std::vector<KeyValue>> list(std::string_view prefix);

  // Caps the deadline of every call until cleared (nullopt), on top of request_timeout: the
  // elector keeps its calls from running past the instant it must fence itself.
  void capDeadline(std::optional<std::chrono::steady_clock::time_point> cap) { cap_ = cap; }

  // Called (on the caller's thread, inside the call) each time an endpoint fails to answer a call
  // (dead, silent past its share of the deadline, or without a leader): the agent moves its watch
  // off that member.
  using EndpointFailed = std::function<void(const core::SocketAddress& endpoint, const std::string& why)>;
  void onEndpointFailed(EndpointFailed callback) { on_endpoint_failed_ = std::move(callback); }

  const EtcdClientOptions& options() const { return options_; }
  // TCP connections opened to etcd so far, every endpoint together.
  uint64_t connectionsOpened() const;

 private:
  // Whether a call may be sent again, on a new connection or to another endpoint, after the
  // request left: reads and lease keepalive/revoke may; a put or txn may not (it may have been
  // applied: a replayed create-if-absent would answer "exists" about our own write).
  using Replay = http::Replay;

  // POSTs `body` to `path`, failing over across endpoints within one deadline. Returns the body
  // of a 200 answer; any other answer is an error naming etcd's message. `not_found_ok` turns
  // etcd's NotFound into an empty 200 body (revoke of a lease already gone).
  Result<std::string> call(std::string_view path, const std::string& body, Replay replay,
                           bool not_found_ok = false);
  Result<bool> txn(const std::string& body);
  // The endpoint at `index` answered: later calls start there, and it keeps the only connection.
  void answeredBy(size_t index);

  EtcdClientOptions options_;
  std::vector<http::BlockingClient> endpoints_;  // one per options_.endpoints entry
  size_t preferred_ = 0;                         // index of the endpoint that answered last
  std::optional<std::chrono::steady_clock::time_point> cap_;
  EndpointFailed on_endpoint_failed_;
};

}  // namespace fulcrum::db
