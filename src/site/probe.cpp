#include "site/probe.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "core/socket.h"
#include "http/client.h"

namespace fulcrum::site {

namespace {

using Clock = std::chrono::steady_clock;

ProbeResult connectOnly(const core::SocketAddress& address, std::chrono::milliseconds timeout) {
  ProbeResult out;
  core::Fd fd = core::connectTcp(address, out.error);
  if (!fd) {
    return out;
  }
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      out.error = "timeout connecting to " + address.toString();
      return out;
    }
    pollfd p{fd.get(), POLLOUT, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      out.error = std::string("poll: ") + std::strerror(errno);
      return out;
    }
    if (n > 0) {
      break;
    }
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err != 0) {
    out.error = "connect " + address.toString() + ": " + std::strerror(err);
    return out;
  }
  out.ok = true;
  return out;
}

}  // namespace

ProbeResult fetch(const core::SocketAddress& address, const std::string& path,
                  std::chrono::milliseconds timeout, std::string_view post_body,
                  std::shared_ptr<core::ClientTransportFactory> tls, std::string_view headers) {
  ProbeResult out;
  http::ClientOptions options;
  options.tls = std::move(tls);
  options.connect_timeout = timeout;
  options.max_body_bytes = 4 << 20;
  http::ClientRequest request;
  request.path = path;
  request.headers = headers;
  if (!post_body.empty()) {
    request.method = http::Method::Post;
    request.body = post_body;
  }
  http::ClientOutcome got = http::fetchOnce(address, request, Clock::now() + timeout, options);
  if (!got.response.ok) {
    out.error = got.response.error;
    return out;
  }
  out.status = got.response.value.status;
  out.body = std::move(got.response.value.body);
  out.ok = out.status >= 200 && out.status < 300;
  if (!out.ok) {
    out.error = "HTTP " + std::to_string(out.status);
  }
  return out;
}

ProbeResult runProbe(const Probe& probe, std::chrono::milliseconds timeout,
                     const std::shared_ptr<core::ClientTransportFactory>& tls) {
  if (probe.path.empty()) {
    return connectOnly(probe.address, timeout);
  }
  if (probe.tls && !tls) {
    return ProbeResult{false, 0, {}, probe.url() + ": no client certificate to probe it with"};
  }
  return fetch(probe.address, probe.path, timeout, {}, probe.tls ? tls : nullptr);
}

}  // namespace fulcrum::site
