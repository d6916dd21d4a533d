#include "tls/tls_transport.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/address.h"
#include "core/log.h"
#include "tls/openssl_error.h"

namespace fulcrum::tls {

bool LogThrottle::admit(uint64_t& suppressed) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  if (logged_ && now - last_ < std::chrono::seconds(1)) {
    ++suppressed_;
    return false;
  }
  logged_ = true;
  last_ = now;
  suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

TlsTransport::TlsTransport(SSL* ssl, int fd, TlsStats& stats, Side side) : ssl_(ssl), fd_(fd), stats_(stats) {
  SSL_set_fd(ssl_, fd);
  if (side == Side::Accept) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
    handshake_wants_write_ = true;  // the ClientHello goes first
  }
}

TlsTransport::~TlsTransport() {
  SSL_free(ssl_);
}

ssize_t TlsTransport::read(core::Buffer& buf, size_t max_total) {
  read_wants_write_ = false;
  if (handshaking_ && handshake() != 1) {
    return -1;
  }
  size_t total = 0;
  for (;;) {
    // One record at a time; the rest of a record already decrypted is taken even past
    // max_total (at most one record, 16 KiB), since epoll cannot report bytes held here.
    size_t room = max_total > buf.size() ? std::min(max_total - buf.size(), core::Buffer::kBlockSize) : 0;
    int pending = SSL_pending(ssl_);
    if (room == 0 && pending <= 0) {
      break;
    }
    room = std::max(room, static_cast<size_t>(std::max(pending, 0)));
    char* p = buf.prepare(room);
    size_t n = 0;
    ERR_clear_error();
    if (SSL_read_ex(ssl_, p, room, &n) == 1) {
      buf.commit(n);
      total += n;
      if (SSL_pending(ssl_) <= 0) {
        break;
      }
      continue;
    }
    if (total > 0) {
      ERR_clear_error();
      break;  // what came is passed on; the condition shows again on the next read
    }
    return fail(SSL_get_error(ssl_, 0), /*reading=*/true);
  }
  return static_cast<ssize_t>(total);
}

ssize_t TlsTransport::write(core::Buffer& buf) {
  write_wants_read_ = false;
  if (handshaking_ && handshake() != 1) {
    return -1;
  }
  if (buf.empty()) {
    return 0;
  }
  size_t n = 0;
  ERR_clear_error();
  if (SSL_write_ex(ssl_, buf.data(), buf.size(), &n) == 1) {
    buf.consume(n);
    return static_cast<ssize_t>(n);
  }
  return fail(SSL_get_error(ssl_, 0), /*reading=*/false);
}

void TlsTransport::shutdownWrite() {
  if (!handshaking_ && !failed_) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // close_notify, best effort: the socket is half-closed next anyway
    ERR_clear_error();
  }
  ::shutdown(fd_, SHUT_WR);
}

uint32_t TlsTransport::extraEvents() const {
  return (read_wants_write_ ? EPOLLOUT : 0u) | (write_wants_read_ ? EPOLLIN : 0u);
}

std::string_view TlsTransport::alpn() const {
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return p == nullptr ? std::string_view() : std::string_view(reinterpret_cast<const char*>(p), len);
}

std::string TlsTransport::verifiedPeerName() const {
  // A session resumed from a ticket carries the certificate verified when it was made.
  X509* cert = SSL_get0_peer_certificate(ssl_);
  if (handshaking_ || cert == nullptr || SSL_get_verify_result(ssl_) != X509_V_OK) {
    return {};
  }
  char cn[256];
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  return n > 0 ? std::string(cn, static_cast<size_t>(n)) : std::string("?");
}

bool TlsTransport::resumed() const {
  return SSL_session_reused(ssl_) == 1;
}

int TlsTransport::handshake() {
  if (failed_) {
    errno = EPROTO;
    return -1;
  }
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    handshaking_ = false;
    stats_.handshakes.fetch_add(1, std::memory_order_relaxed);
    if (SSL_session_reused(ssl_)) {
      stats_.resumed.fetch_add(1, std::memory_order_relaxed);
    }
    if (SSL_version(ssl_) == TLS1_3_VERSION) {
      stats_.tls13.fetch_add(1, std::memory_order_relaxed);
    }
    return 1;
  }
  int err = SSL_get_error(ssl_, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    handshake_wants_write_ = err == SSL_ERROR_WANT_WRITE;
    fail(err, /*reading=*/true);
    return 0;
  }
  stats_.handshake_failures.fetch_add(1, std::memory_order_relaxed);
  // The reason, read before fail() empties OpenSSL's queue.
  long verify = SSL_get_verify_result(ssl_);
  unsigned long code = ERR_peek_error();
  int reason = ERR_GET_REASON(code);
  if (verify != X509_V_OK) {
    verify_failed_ = true;
    failure_ = X509_verify_cert_error_string(verify);
  } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
             reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
    verify_failed_ = true;
    failure_ = "no client certificate";
  } else if (code != 0) {
    failure_ = lastSslError();
  } else if (err == SSL_ERROR_SYSCALL && errno != 0) {
    failure_ = std::strerror(errno);
  } else {
    failure_ = "connection closed during the handshake";
  }
  if (verify_failed_) {
    stats_.verify_failures.fetch_add(1, std::memory_order_relaxed);
  }
  int saved_errno = errno;
  uint64_t suppressed = 0;
  if (refusals_ != nullptr && refusals_->admit(suppressed)) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    std::string peer =
        getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0
            ? core::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len).toString()
            : std::string("?");
    if (suppressed > 0) {
      log::warn("TLS client {} refused: {} ({} more refused since the last report)", peer, failure_,
                suppressed);
    } else {
      log::warn("TLS client {} refused: {}", peer, failure_);
    }
  }
  errno = saved_errno;
  fail(err, /*reading=*/true);
  return -1;
}

// Maps an OpenSSL outcome to the socket-like result the session expects.
ssize_t TlsTransport::fail(int err, bool reading) {
  switch (err) {
    case SSL_ERROR_WANT_READ:
      write_wants_read_ = !reading;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_WANT_WRITE:
      read_wants_write_ = reading;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_ZERO_RETURN:  // close_notify (or, with IGNORE_UNEXPECTED_EOF, a bare EOF)
      ERR_clear_error();
      if (reading && !handshaking_) {
        return 0;
      }
      errno = ECONNRESET;
      return -1;
    default:
      failed_ = true;
      ERR_clear_error();
      errno = err == SSL_ERROR_SYSCALL && errno != 0 ? errno : EPROTO;
      return -1;
  }
}

}  // namespace fulcrum::tls
