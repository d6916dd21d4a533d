#pragma once
// HTTP/2 (RFC 9113) from clients: the second codec of the proxy. libnghttp2 does the framing,
// HPACK and the protocol's own checks; this file turns each stream into a ProxyExchange like an
// HTTP/1.1 request (the same balancing, retries, health, timeouts, access line and metrics), ties
// HTTP/2 flow control to the exchange's backpressure, and bounds the work a connection can cause
// (Rapid Reset, CONTINUATION and control-frame floods, stalled windows).
//
// The connection lives inside the ProxySession that accepted the socket (h2 chosen by ALPN on an
// https listener, or the client preface on an http listener with [lb] h2c): the session keeps the
// socket, the transport and the byte buffers; this class reads from `in` and frames into `out`.
// Nothing here writes to the socket: frames are produced when the session pumps, which it does
// after each read and once at the end of each event batch in which a stream got bytes (so many
// streams' responses leave in one write).
#include <nghttp2/nghttp2.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/address.h"
#include "core/buffer.h"
#include "core/event_loop.h"

namespace fulcrum::lb {

class ProxyWorker;
struct H2Stream;

// Why the lb ended an HTTP/2 connection with an error, for /metrics.
enum class H2Abuse : uint8_t {
  ProtocolError,      // a frame the protocol forbids (nghttp2's verdict), or a bad preface
  RapidReset,         // streams opened and reset faster than the reset budget (CVE-2023-44487)
  ContinuationFlood,  // a header block of too many CONTINUATION frames or bytes (2024)
  ControlFlood,       // SETTINGS / PING / PRIORITY / empty DATA frames beyond the budget
  Stalled,            // a client that stopped taking responses (zero window) or sent half a head
  kCount,
};
std::string_view h2AbuseName(H2Abuse reason);

// What the connection needs of the session that carries it.
class H2Carrier {
 public:
  virtual ~H2Carrier() = default;
  // Frames are waiting: write them (called at the end of the batch, never from inside nghttp2).
  virtual void h2Pump() = 0;
};

class H2Connection final : public core::BatchHook {
 public:
  H2Connection(ProxyWorker& worker, H2Carrier& carrier, core::Buffer& out, const core::SocketAddress& peer,
               int fd, bool secure);
  ~H2Connection() override;
  H2Connection(const H2Connection&) = delete;
  H2Connection& operator=(const H2Connection&) = delete;

  // Queues the server's SETTINGS. False when nghttp2 could not be set up.
  bool start();
  // Takes every byte of `in` (the preface and frames). False when the connection is over: what is
  // queued (a GOAWAY) goes out, then the session closes.
  bool receive(core::Buffer& in);
  // Frames what is ready into `out`, while it holds less than the high-water mark.
  void produce();
  // Nothing left to do: the client or we ended the connection (GOAWAY) and no stream is open.
  bool finished() const;
  // No stream open: closing it loses no work.
  bool idle() const { return streams_open_ == 0; }
  // Graceful end (drain, reload, idle timeout): GOAWAY with the last stream taken; open streams finish.
  void shutdown();
  bool shutdownSent() const { return shutdown_sent_; }
  // When a stream last opened or ended (the connection's quiet is counted from it).
  core::TimePoint lastActive() const { return last_active_; }
  // The session's timer fired while streams are open: true when the connection should be closed
  // for being stalled (a response the client takes no byte of for client_ms, a header block
  // not finished within http_request_ms).
  bool stalled(core::TimePoint now);

  // Called by streams (ExchangeClient callbacks): frames are ready; pump at the end of the batch.
  void wantPump();
  void onBatchEnd() override;

  // --- for H2Stream ------------------------------------------------------------------------
  nghttp2_session* session() { return session_; }
  ProxyWorker& worker() { return worker_; }
  const core::IpAddress& peerIp() const { return peer_ip_; }
  const std::string& peerText() const { return peer_text_; }  // the address, for forwarding fields
  uint16_t peerPort() const { return peer_port_; }
  bool secure() const { return secure_; }
  int fd() const { return fd_; }
  void noteDataSent() { data_sent_ = true; }
  // Why the lb ended the connection, once it has.
  std::optional<H2Abuse> abuse() const { return abuse_; }

 private:
  friend struct H2Callbacks;
  void terminate(H2Abuse reason, uint32_t error_code);
  void processTouched();
  void touch(H2Stream* s);
  bool takeToken(double& tokens, core::TimePoint& last, double rate, double burst);
  void destroyStream(H2Stream* s);

  ProxyWorker& worker_;
  H2Carrier& carrier_;
  core::Buffer& out_;
  nghttp2_session* session_ = nullptr;
  core::IpAddress peer_ip_;
  std::string peer_text_;
  uint16_t peer_port_;
  int fd_;
  bool secure_;
  bool fatal_ = false;         // a protocol error or an abuse: nothing more is read
  std::optional<H2Abuse> abuse_;
  bool pump_queued_ = false;   // queued on the loop's batch end
  bool shutdown_sent_ = false;
  bool send_failed_ = false;   // nghttp2 could not frame (out of memory): the connection is over
  bool data_sent_ = true;      // a DATA frame went out since the last stall check
  uint32_t streams_open_ = 0;
  core::TimePoint last_active_{};
  H2Stream* streams_ = nullptr;  // open streams (a list, for the stall check and teardown)
  std::vector<int32_t> touched_;  // streams with news after a read (started, body bytes, end)
  // Budgets: resets of streams still in progress, and frames that carry no request.
  double reset_tokens_;
  core::TimePoint reset_last_{};
  double control_tokens_;
  core::TimePoint control_last_{};
  // The header block being received: its frames and bytes so far.
  int32_t block_stream_ = 0;
  uint32_t block_frames_ = 0;
  size_t block_bytes_ = 0;
};

}  // namespace fulcrum::lb
