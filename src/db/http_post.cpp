#include "db/http_post.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/fd.h"
#include "core/socket.h"
#include "http/parser.h"

namespace fulcrum::db {

namespace {

using SteadyClock = std::chrono::steady_clock;

std::string errnoText(std::string_view what, const core::SocketAddress& to, int err) {
  return std::string(what) + " " + to.toString() + ": " + std::strerror(err);
}

// Waits until `fd` is ready for `events` or `deadline` passes. False on timeout (err = 0) or
// poll failure (err set).
bool waitReady(int fd, short events, SteadyClock::time_point deadline, int& err) {
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

std::string timeoutText(std::string_view phase, const core::SocketAddress& to) {
  return "timeout " + std::string(phase) + " " + to.toString();
}

// One request (POST with a JSON body, or GET without one) and its whole response.
PostOutcome exchange(http::Method method, const core::SocketAddress& to, std::string_view path,
                     std::string_view body, const PostLimits& limits) {
  PostOutcome out;
  auto fail = [&](std::string message) {
    out.reply = Result<HttpReply>::failure(std::move(message));
    return out;
  };

  std::string error;
  core::Fd fd = core::connectTcp(to, error);
  if (!fd) {
    return fail(error);
  }
  auto connect_deadline = std::min(limits.deadline, SteadyClock::now() + limits.connect_timeout);
  int err = 0;
  if (!waitReady(fd.get(), POLLOUT, connect_deadline, err)) {
    return fail(err != 0 ? errnoText("poll", to, err) : timeoutText("connecting to", to));
  }
  socklen_t len = sizeof err;
  if (getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err != 0) {
    return fail(errnoText("connect", to, err));
  }

  std::string request;
  request.reserve(160 + path.size() + body.size());
  const bool post = method == http::Method::Post;
  request.append(post ? "POST " : "GET ").append(path).append(" HTTP/1.1\r\nHost: ").append(to.toString());
  request.append("\r\nAccept: application/json\r\n");
  if (post) {
    request.append("Content-Type: application/json\r\nContent-Length: ").append(std::to_string(body.size()));
    request.append("\r\n");
  }
  request.append(limits.extra_headers);
  request.append("Connection: close\r\n\r\n").append(body);
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      out.request_sent = true;
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!waitReady(fd.get(), POLLOUT, limits.deadline, err)) {
        return fail(err != 0 ? errnoText("poll", to, err) : timeoutText("sending to", to));
      }
      continue;
    }
    return fail(errnoText("send to", to, errno));
  }

  std::string in;  // unparsed input
  http::ResponseHead head;
  bool have_head = false;
  http::BodyDecoder decoder;
  HttpReply reply;
  char chunk[16384];
  for (;;) {
    // Parse what we have: the head (skipping interim 1xx answers), then body pieces.
    while (!have_head) {
      head.clear();
      http::ParseResult parsed = http::parseResponseHead(in, http::Limits{}, method, head);
      if (parsed.state == http::ParseState::Incomplete) {
        break;
      }
      if (parsed.state == http::ParseState::Error) {
        return fail("bad response from " + to.toString() + ": " + std::string(parsed.reason));
      }
      if (head.status >= 100 && head.status < 200) {
        in.erase(0, parsed.consumed);
        continue;
      }
      reply.status = head.status;
      decoder.reset(head.body_kind, head.content_length, limits.max_body_bytes);
      in.erase(0, parsed.consumed);
      have_head = true;
    }
    if (have_head) {
      size_t used = 0;
      while (!decoder.done()) {
        http::BodyStep step = decoder.step(std::string_view(in).substr(used));
        if (step.error_status != 0) {
          return fail("bad response body from " + to.toString() +
                      (step.error_status == 413 ? ": too large" : ": bad framing"));
        }
        reply.body.append(step.payload);
        used += step.consumed;
        if (step.consumed == 0 && !step.done) {
          break;  // needs more input
        }
      }
      in.erase(0, used);
      if (decoder.done()) {
        out.reply = Result<HttpReply>::success(std::move(reply));
        return out;
      }
    }

    if (!waitReady(fd.get(), POLLIN, limits.deadline, err)) {
      return fail(err != 0 ? errnoText("poll", to, err) : timeoutText("waiting for a response from", to));
    }
    ssize_t n = ::recv(fd.get(), chunk, sizeof chunk, 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
        continue;
      }
      return fail(errnoText("recv from", to, errno));
    }
    if (n == 0) {
      if (have_head && head.body_kind == http::BodyKind::UntilClose) {
        out.reply = Result<HttpReply>::success(std::move(reply));
        return out;
      }
      return fail("connection closed by " + to.toString() +
                  (have_head ? " before the end of the response" : " before a response"));
    }
    in.append(chunk, static_cast<size_t>(n));
  }
}

}  // namespace

PostOutcome postJson(const core::SocketAddress& to, std::string_view path, std::string_view body,
                     const PostLimits& limits) {
  return exchange(http::Method::Post, to, path, body, limits);
}

Result<HttpReply> httpGet(const core::SocketAddress& to, std::string_view path, const PostLimits& limits) {
  return exchange(http::Method::Get, to, path, {}, limits).reply;
}

}  // namespace fulcrum::db
