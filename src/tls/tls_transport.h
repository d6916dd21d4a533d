#pragma once
// A non-blocking TLS connection over a socket, as a core::Transport: the server side of the lb's
// https listeners and of a web node under internal_tls (ServerContext), and the client side of
// the lb's connections to web nodes (ClientContext).
#include <openssl/ssl.h>
#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "core/transport.h"

namespace fulcrum::tls {

struct TlsStats {
  std::atomic<uint64_t> handshakes{0};          // completed
  std::atomic<uint64_t> resumed{0};             // of which resumed from a ticket
  std::atomic<uint64_t> tls13{0};               // of which TLS 1.3
  std::atomic<uint64_t> handshake_failures{0};  // refused or broken handshakes, plaintext, alerts
  // Of the failures, those where the peer's certificate did not verify (or none came when one
  // was required).
  std::atomic<uint64_t> verify_failures{0};
};

// One warning a second at most for a condition a peer can repeat at will (handshakes refused),
// with the count of those not logged. Shared by threads.
class LogThrottle {
 public:
  // True when this occurrence should be logged; `suppressed` is then how many were not since.
  bool admit(uint64_t& suppressed);

 private:
  std::mutex mutex_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_ = false;
  uint64_t suppressed_ = 0;
};

class TlsTransport final : public core::Transport {
 public:
  enum class Side : uint8_t { Accept, Connect };
  // Takes `ssl` (freed with the transport).
  TlsTransport(SSL* ssl, int fd, TlsStats& stats, Side side);
  ~TlsTransport() override;
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  ssize_t read(core::Buffer& buf, size_t max_total) override;
  ssize_t write(core::Buffer& buf) override;
  void shutdownWrite() override;
  uint32_t extraEvents() const override;
  bool handshaking() const override { return handshaking_; }
  std::string_view alpn() const override;

  // Moves the handshake on: 1 done, 0 under way (wait for wantedEvents()), -1 failed (see
  // failure()).
  int handshake();
  // epoll events the handshake waits for.
  uint32_t wantedEvents() const { return handshake_wants_write_ ? EPOLLOUT : EPOLLIN; }
  // Why the handshake failed, for a log line: the certificate's verification error
  // (X509_verify_cert_error_string) when that was the cause, else OpenSSL's reason.
  const std::string& failure() const { return failure_; }
  std::string failureReason() const override { return failure_; }
  bool verifyFailed() const { return verify_failed_; }
  std::string verifiedPeerName() const override;
  bool resumed() const;
  // Accept side: each refused handshake is logged through `throttle` (a mutual-TLS server,
  // where a refusal means a client that is not one of the site's nodes). Not owned.
  void logRefusals(LogThrottle* throttle) { refusals_ = throttle; }

 private:
  ssize_t fail(int err, bool reading);

  SSL* ssl_;
  int fd_;
  TlsStats& stats_;
  bool handshaking_ = true;
  bool failed_ = false;
  bool read_wants_write_ = false;
  bool write_wants_read_ = false;
  bool handshake_wants_write_ = false;
  bool verify_failed_ = false;
  std::string failure_;
  LogThrottle* refusals_ = nullptr;
};

}  // namespace fulcrum::tls
