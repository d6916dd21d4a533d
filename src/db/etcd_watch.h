#pragma once
// A watch on a key range of etcd 3.4, through its v3 JSON gateway (HTTP/1.1, no gRPC), run by an
// EventLoop: the agent's loop wakes the moment the leader key changes or its lease expires,
// instead of noticing on its next control tick.
//
// One long-lived POST /v3/watch per connection; etcd answers with a chunked stream of
// newline-separated JSON messages. Any failure (refused, timeout, EOF, an error or cancel in the
// stream) closes the connection and retries with backoff, rotating through the endpoints, from
// the revision after the last one seen. Events may still be missed (a compacted revision, a
// member that lost data), so every (re)created stream calls on_resync: the owner then reads the
// state afresh. The watch only makes the owner faster; its periodic reads stay the safety net
// (a frozen member keeps the stream open and silent).
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/address.h"
#include "core/buffer.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "core/fd.h"
#include "core/transport.h"
#include "http/response_reader.h"

namespace fulcrum::db {

struct WatchEvent {
  enum class Type { Put, Delete };
  Type type = Type::Put;
  std::string key;
  std::string value;  // empty for Delete
  int64_t mod_revision = 0;
};

struct EtcdWatchOptions {
  std::vector<core::SocketAddress> endpoints;
  std::string prefix;  // watches every key starting with it; empty: the whole keyspace
  core::Duration connect_timeout = std::chrono::milliseconds(500);
  // From the TCP handshake to etcd's "created": a member that accepts but never answers.
  core::Duration create_timeout = std::chrono::milliseconds(2000);
  core::Duration min_backoff = std::chrono::milliseconds(100);
  core::Duration max_backoff = std::chrono::seconds(2);
  // [security] internal_tls: https with this node's certificate (tls/client_context.h). Null: http.
  std::shared_ptr<core::ClientTransportFactory> tls;
};

// Callbacks run on the loop's thread. They may call stop() but must not destroy the watch.
class EtcdWatch final : public core::IoHandler {
 public:
  using EventCallback = std::function<void(const WatchEvent&)>;
  using ResyncCallback = std::function<void()>;

  // Starts connecting at once (the first endpoint first).
  EtcdWatch(core::EventLoop& loop, EtcdWatchOptions options, EventCallback on_event,
            ResyncCallback on_resync);
  ~EtcdWatch() override;
  EtcdWatch(const EtcdWatch&) = delete;
  EtcdWatch& operator=(const EtcdWatch&) = delete;

  // Closes the stream and stops retrying; no callback runs afterwards.
  void stop();
  // Moves the watch off `endpoint` when it is on it (streaming, connecting or about to retry),
  // to the next endpoint: the owner's calls found that member dead, frozen or without a leader.
  // A frozen member would keep the stream open and silent for as long as it is stopped.
  void leave(const core::SocketAddress& endpoint, const std::string& why);
  // True while a stream etcd confirmed ("created") is open.
  bool connected() const { return phase_ == Phase::Streaming; }
  // The newest revision the watch has covered (0 before the first stream).
  int64_t revision() const { return revision_; }
  // Why the last stream ended, for logs and status ("" if none ended yet).
  const std::string& lastError() const { return last_error_; }

  void onIoEvents(uint32_t events) override;

 private:
  enum class Phase { Idle, Connecting, AwaitingHead, AwaitingCreated, Streaming, Stopped };

  void connect();
  void onConnected();
  void flush();  // sends what is left of the request
  void onReadable();
  // Asks the loop for what comes next: always reading, writing while the request (or a TLS
  // read) needs it.
  void rearm();
  // Why the transport's last read or write failed.
  std::string ioError(std::string_view what, int err) const;
  // Feeds received bytes through the response reader into complete lines.
  bool consumeInput();
  // Handles one JSON message of the stream; false when the stream must be dropped.
  bool handleMessage(std::string_view line);
  // Closes the connection and retries with backoff on the next endpoint.
  void fail(const std::string& why);
  void closeStream();
  void retryAfter(core::Duration delay);

  core::EventLoop& loop_;
  EtcdWatchOptions options_;
  EventCallback on_event_;
  ResyncCallback on_resync_;
  core::Timer retry_timer_;
  core::Timer deadline_timer_;  // connect and create timeouts

  Phase phase_ = Phase::Idle;
  core::Fd fd_;
  std::unique_ptr<core::Transport> transport_;  // on fd_: plain, or TLS
  uint32_t armed_ = 0;                          // the events the loop watches fd_ for
  size_t endpoint_ = 0;
  core::Duration backoff_;
  int64_t revision_ = 0;
  uint64_t generation_ = 0;  // bumped when a stream closes: callbacks may close it under us
  std::string last_error_;

  core::Buffer out_;    // the request, what is left of it to send
  core::Buffer in_;     // received, not yet decoded
  std::string lines_;   // decoded body, not yet a complete line
  size_t scanned_ = 0;  // bytes of lines_ already searched for a newline
  http::ResponseReader response_;
};

}  // namespace fulcrum::db
