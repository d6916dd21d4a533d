#pragma once
// A TLS connection as a core::Transport (non-blocking, OpenSSL 3): the lb's https listeners
// accept with it (server_context.h), the control plane's clients connect with it
// (client_context.h). The socket stays the owner's; the transport moves bytes on it.
#include <openssl/ssl.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "core/transport.h"

namespace fulcrum::tls {

struct TlsStats {
  std::atomic<uint64_t> handshakes{0};          // completed
  std::atomic<uint64_t> resumed{0};             // of which resumed from a ticket
  std::atomic<uint64_t> tls13{0};               // of which TLS 1.3
  std::atomic<uint64_t> handshake_failures{0};  // refused or broken ClientHellos, plaintext, alerts
};

class TlsTransport final : public core::Transport {
 public:
  enum class Side : uint8_t { Server, Client };
  // Takes `ssl` (freed with the transport). `stats` (may be null) counts the handshakes.
  TlsTransport(SSL* ssl, int fd, Side side, TlsStats* stats);
  ~TlsTransport() override;
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  ssize_t read(core::Buffer& buf, size_t max_total) override;
  ssize_t write(core::Buffer& buf) override;
  void shutdownWrite() override;
  uint32_t extraEvents() const override;
  bool handshaking() const override { return handshaking_; }
  std::string_view alpn() const override;
  std::string failure() const override { return failure_; }

 private:
  // Steps the handshake; `reading`: for a read (else a write), which decides what it waits for.
  bool handshake(bool reading);
  // Maps an OpenSSL outcome to the socket-like result the session expects.
  ssize_t fail(int err, bool reading);

  SSL* ssl_;
  int fd_;
  TlsStats* stats_;
  bool handshaking_ = true;
  bool failed_ = false;
  bool read_wants_write_ = false;
  bool write_wants_read_ = false;
  std::string failure_;
};

// Makes `ssl` verify its server as `host`, the name or address dialled: an IP address must be
// one of the certificate's IP SANs (and is not sent as SNI, which names hosts only); a DNS name
// is sent as SNI and must match a DNS SAN.
void expectServer(SSL* ssl, const std::string& host);

}  // namespace fulcrum::tls
