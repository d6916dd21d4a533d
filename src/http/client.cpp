#include "http/client.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/socket.h"

namespace fulcrum::http {

namespace {

using SteadyClock = std::chrono::steady_clock;

std::string errnoText(std::string_view what, const core::SocketAddress& to, int err) {
  return std::string(what) + " " + to.toString() + ": " + std::strerror(err);
}

std::string timeoutText(std::string_view phase, const core::SocketAddress& to) {
  return "timeout " + std::string(phase) + " " + to.toString();
}

// Waits until `fd` is ready for `events` or `deadline` passes. False on timeout (err = 0) or
// poll failure (err set).
bool waitReady(int fd, short events, core::TimePoint deadline, int& err) {
  for (;;) {
    auto left = deadline - SteadyClock::now();
    if (left <= SteadyClock::duration::zero()) {
      err = 0;
      return false;
    }
    // Round up so a wait shorter than a millisecond does not become a busy loop of poll(0).
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
    if (n > 0) {
      return true;  // readable/writable, or an error the next syscall reports
    }
    if (n < 0 && errno != EINTR) {
      err = errno;
      return false;
    }
  }
}

// The peer is gone: what a connection the server closed while it was idle shows.
bool peerGone(int err) {
  return err == EPIPE || err == ECONNRESET;
}

// What to wait for before trying the transport again: `base` (POLLIN to read, POLLOUT to write),
// unless TLS must first do the other (a read that must write, a write that must read).
short eventsFor(const core::Transport& transport, short base) {
  uint32_t extra = transport.extraEvents();
  if (extra == 0) {
    return base;
  }
  return static_cast<short>(((extra & EPOLLIN) != 0 ? POLLIN : 0) | ((extra & EPOLLOUT) != 0 ? POLLOUT : 0));
}

std::string serialize(const ClientRequest& request, const core::SocketAddress& to, bool keep_alive) {
  std::string wire;
  wire.reserve(128 + request.path.size() + request.headers.size() + request.body.size());
  wire.append(methodName(request.method)).append(" ").append(request.path);
  wire.append(" HTTP/1.1\r\nHost: ").append(to.toString()).append("\r\n");
  if (request.method != Method::Get && request.method != Method::Head) {
    wire.append("Content-Type: ").append(request.content_type).append("\r\n");
    wire.append("Content-Length: ").append(std::to_string(request.body.size())).append("\r\n");
  }
  wire.append(request.headers);
  if (!keep_alive) {
    wire.append("Connection: close\r\n");
  }
  wire.append("\r\n").append(request.body);
  return wire;
}

}  // namespace

// What one try on one connection came to.
struct BlockingClient::Attempt {
  bool answered = false;     // a whole response is in `response`
  bool sent = false;         // some of the request was written
  bool peer_closed = false;  // EOF or a reset before any byte of the response
  std::string error;
  ClientResponse response;
};

BlockingClient::BlockingClient(core::SocketAddress server, ClientOptions options)
    : server_(std::move(server)), options_(options) {}

void BlockingClient::close() {
  transport_.reset();
  fd_.reset();
  in_.clear();
}

std::string BlockingClient::ioError(std::string_view what, int err) const {
  std::string reason = transport_ ? transport_->failureReason() : std::string();
  if (!reason.empty()) {
    return "TLS with " + server_.toString() + ": " + reason;
  }
  return errnoText(what, server_, err);
}

bool BlockingClient::idleConnectionUsable() const {
  pollfd p{fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

core::Status BlockingClient::connect(core::TimePoint deadline) {
  std::string error;
  fd_ = core::connectTcp(server_, error);
  if (!fd_) {
    return core::Status::failure(error);
  }
  ++connections_opened_;
  const auto connect_deadline = std::min(deadline, SteadyClock::now() + options_.connect_timeout);
  int err = 0;
  if (!waitReady(fd_.get(), POLLOUT, connect_deadline, err)) {
    close();
    return core::Status::failure(err != 0 ? errnoText("poll", server_, err)
                                          : timeoutText("connecting to", server_));
  }
  socklen_t len = sizeof err;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err != 0) {
    close();
    return core::Status::failure(errnoText("connect", server_, err));
  }
  core::setNoDelay(fd_.get());  // a request goes out whole; its answer is waited for
  if (options_.tls) {
    transport_ = options_.tls->newClientTransport(fd_.get(), server_);  // handshakes with the first write
  } else {
    transport_ = std::make_unique<core::PlainTransport>(fd_.get());
  }
  if (!transport_) {
    close();
    return core::Status::failure("TLS with " + server_.toString() + ": out of memory");
  }
  return core::Status::success();
}

void BlockingClient::sendAndRead(const std::string& wire, Method method, core::TimePoint deadline,
                                 Attempt& attempt) {
  int err = 0;
  core::Buffer out;
  out.append(wire);
  while (!out.empty()) {
    ssize_t n = transport_->write(out);
    if (n > 0) {
      attempt.sent = true;
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!waitReady(fd_.get(), eventsFor(*transport_, POLLOUT), deadline, err)) {
        attempt.error = err != 0 ? errnoText("poll", server_, err) : timeoutText("sending to", server_);
        return;
      }
      continue;
    }
    attempt.peer_closed = n < 0 && peerGone(errno);
    attempt.error = ioError("send to", n < 0 ? errno : EPIPE);
    return;
  }

  reader_.reset(method, options_.max_body_bytes);
  in_.clear();
  bool response_started = false;
  for (;;) {
    ssize_t n = transport_->read(in_, in_.size() + core::Buffer::kBlockSize);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!waitReady(fd_.get(), eventsFor(*transport_, POLLIN), deadline, err)) {
          attempt.error = err != 0 ? errnoText("poll", server_, err)
                                   : timeoutText("waiting for a response from", server_);
          return;
        }
        continue;
      }
      attempt.peer_closed = !response_started && peerGone(errno);
      attempt.error = ioError("recv from", errno);
      return;
    }
    if (n == 0) {
      reader_.closed();
      if (reader_.state() == ResponseReader::State::Done) {
        break;  // a body delimited by the close
      }
      attempt.peer_closed = !response_started;
      attempt.error = server_.toString() + ": " + reader_.error();
      return;
    }
    response_started = true;
    in_.consume(reader_.read(in_.view(), attempt.response.body));
    if (reader_.state() == ResponseReader::State::Failed) {
      attempt.error = server_.toString() + ": " + reader_.error();
      return;
    }
    if (reader_.state() == ResponseReader::State::Done) {
      break;
    }
  }
  attempt.answered = true;
  attempt.response.status = reader_.status();
}

ClientOutcome BlockingClient::exchange(const ClientRequest& request, core::TimePoint deadline) {
  ClientOutcome out;
  if (SteadyClock::now() >= deadline) {
    out.response = core::Result<ClientResponse>::failure(timeoutText("before sending to", server_));
    return out;
  }
  const std::string wire = serialize(request, server_, options_.keep_alive);
  bool reused = fd_.valid();
  if (reused && !idleConnectionUsable()) {
    close();  // the server closed it while idle: nothing was sent on it
    reused = false;
  }
  for (;;) {
    if (!fd_) {
      if (core::Status connected = connect(deadline); !connected.ok) {
        out.response = core::Result<ClientResponse>::failure(connected.error);
        return out;
      }
    }
    Attempt attempt;
    sendAndRead(wire, request.method, deadline, attempt);
    if (attempt.answered) {
      // Bytes after the response were never asked for: the connection is out of step.
      if (!options_.keep_alive || !reader_.reusable() || !in_.empty()) {
        close();
      }
      out.request_sent = true;
      out.response = core::Result<ClientResponse>::success(std::move(attempt.response));
      return out;
    }
    close();
    // Once, and only on a connection that had served an earlier exchange: a fresh connection
    // closed at once is the server's answer, not a race with its idle timeout.
    const bool replay = reused && attempt.peer_closed && (request.replay == Replay::Safe || !attempt.sent);
    if (!replay) {
      out.request_sent = attempt.sent;
      out.response = core::Result<ClientResponse>::failure(std::move(attempt.error));
      return out;
    }
    reused = false;
  }
}

ClientOutcome fetchOnce(const core::SocketAddress& server, const ClientRequest& request,
                        core::TimePoint deadline, ClientOptions options) {
  options.keep_alive = false;
  BlockingClient client(server, options);
  return client.exchange(request, deadline);
}

}  // namespace fulcrum::http
