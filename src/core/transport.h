#pragma once
// The byte stream under a client connection: plain TCP, or TLS (tls/tls_transport.h). A session
// reads and writes through its transport and never touches the socket's bytes itself, so HTTPS
// is a new transport, not a new proxy. The socket stays the session's (it registers it with its
// loop); the transport only moves bytes on it.
#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/address.h"
#include "core/buffer.h"

namespace fulcrum::core {

class Transport {
 public:
  virtual ~Transport() = default;

  // Reads once into `buf`, at most `max_total` bytes buffered (a TLS transport may pass it by
  // part of one record, so that no decrypted byte waits where epoll cannot see it). Returns >0
  // bytes, 0 at the peer's orderly end, or -1 with errno (EAGAIN: nothing now).
  virtual ssize_t read(Buffer& buf, size_t max_total) = 0;
  // Writes from `buf` once, consuming what was sent; bytes written or -1 with errno (EAGAIN).
  virtual ssize_t write(Buffer& buf) = 0;
  // The first step of a lingering close: say the end of our side (TLS: close_notify first).
  virtual void shutdownWrite() = 0;
  // epoll events the transport needs for its own progress beyond what the session asks (TLS: a
  // handshake or a read that must first write, a write that must first read).
  virtual uint32_t extraEvents() const { return 0; }
  // True until the transport is ready for application bytes (a TLS handshake under way).
  virtual bool handshaking() const { return false; }
  // The protocol chosen by ALPN once the handshake is done ("h2", "http/1.1"); empty when none.
  virtual std::string_view alpn() const { return {}; }
  // Why the last -1 that was not EAGAIN happened, when errno cannot say it (TLS: a refused
  // handshake, a certificate that did not verify); empty when errno says it all.
  virtual std::string failureReason() const { return {}; }
  // Once the handshake is done: the common name of the certificate the peer presented and the
  // handshake verified; empty when it presented none (or on plain TCP).
  virtual std::string verifiedPeerName() const { return {}; }
};

class PlainTransport final : public Transport {
 public:
  explicit PlainTransport(int fd) : fd_(fd) {}
  ssize_t read(Buffer& buf, size_t max_total) override { return buf.readFrom(fd_, max_total); }
  ssize_t write(Buffer& buf) override { return buf.writeTo(fd_); }
  void shutdownWrite() override { ::shutdown(fd_, SHUT_WR); }

 private:
  int fd_;
};

// Makes the transport of each accepted connection of a listener (shared by a node's workers:
// thread-safe).
class TransportFactory {
 public:
  virtual ~TransportFactory() = default;
  virtual std::unique_ptr<Transport> newTransport(int fd) = 0;
};

// Makes the transport of a connection this process opened to `server` (thread-safe). TLS verifies
// the server's certificate for that address, the one dialled.
class ClientTransportFactory {
 public:
  virtual ~ClientTransportFactory() = default;
  virtual std::unique_ptr<Transport> newClientTransport(int fd, const SocketAddress& server) = 0;
};

}  // namespace fulcrum::core
