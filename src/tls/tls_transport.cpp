#include "tls/tls_transport.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace fulcrum::tls {

namespace {

// Why a handshake or a record failed, in words: the verification's own reason when the peer's
// certificate did not verify, else OpenSSL's reason ("tlsv13 alert certificate required": the
// server wanted our certificate), else the socket's.
std::string describeFailure(SSL* ssl, int err, int saved_errno) {
  long verify = SSL_get_verify_result(ssl);
  unsigned long code = ERR_peek_last_error();
  std::string out;
  if (verify != X509_V_OK && ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    out = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
  } else if (code != 0) {
    const char* reason = ERR_reason_error_string(code);
    out = reason != nullptr ? reason : "TLS error " + std::to_string(ERR_GET_REASON(code));
  } else if (err == SSL_ERROR_SYSCALL) {
    out = saved_errno != 0 ? std::strerror(saved_errno) : "connection closed during the TLS exchange";
  } else {
    out = "TLS error " + std::to_string(err);
  }
  ERR_clear_error();
  return out;
}

}  // namespace

TlsTransport::TlsTransport(SSL* ssl, int fd, Side side, TlsStats* stats) : ssl_(ssl), fd_(fd), stats_(stats) {
  SSL_set_fd(ssl_, fd);
  if (side == Side::Server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
  }
}

TlsTransport::~TlsTransport() {
  SSL_free(ssl_);
}

ssize_t TlsTransport::read(core::Buffer& buf, size_t max_total) {
  read_wants_write_ = false;
  if (handshaking_ && !handshake(/*reading=*/true)) {
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
  if (handshaking_ && !handshake(/*reading=*/false)) {
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

bool TlsTransport::handshake(bool reading) {
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    handshaking_ = false;
    if (stats_ != nullptr) {
      stats_->handshakes.fetch_add(1, std::memory_order_relaxed);
      if (SSL_session_reused(ssl_)) {
        stats_->resumed.fetch_add(1, std::memory_order_relaxed);
      }
      if (SSL_version(ssl_) == TLS1_3_VERSION) {
        stats_->tls13.fetch_add(1, std::memory_order_relaxed);
      }
    }
    return true;
  }
  int err = SSL_get_error(ssl_, r);
  if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE && stats_ != nullptr) {
    stats_->handshake_failures.fetch_add(1, std::memory_order_relaxed);
  }
  fail(err, reading);
  return false;
}

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
    default: {
      const int saved_errno = errno;
      failed_ = true;
      failure_ = describeFailure(ssl_, err, saved_errno);
      errno = err == SSL_ERROR_SYSCALL && saved_errno != 0 ? saved_errno : EPROTO;
      return -1;
    }
  }
}

void expectServer(SSL* ssl, const std::string& host) {
  in6_addr probe{};
  bool literal =
      ::inet_pton(AF_INET, host.c_str(), &probe) == 1 || ::inet_pton(AF_INET6, host.c_str(), &probe) == 1;
  if (literal) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl, host.c_str());
    SSL_set1_host(ssl, host.c_str());
  }
}

}  // namespace fulcrum::tls
