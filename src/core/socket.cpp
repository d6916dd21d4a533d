#include "core/socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace fulcrum::core {

namespace {

void setFreeBind(int fd, int family) {
  int one = 1;
  if (family == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
  } else {
    setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  }
}

}  // namespace

Fd listenTcp(const SocketAddress& address, const ListenOptions& options, std::string& error) {
  Fd fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    error = std::string("socket: ") + std::strerror(errno);
    return Fd();
  }
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (options.reuse_port) {
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  }
  if (address.family() == AF_INET6) {
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (options.free_bind) {
    setFreeBind(fd.get(), address.family());
  }
  if (::bind(fd.get(), address.sockaddrPtr(), address.sockaddrLen()) != 0) {
    error = "bind " + address.toString() + ": " + std::strerror(errno);
    return Fd();
  }
  if (::listen(fd.get(), options.backlog) != 0) {
    error = "listen " + address.toString() + ": " + std::strerror(errno);
    return Fd();
  }
  return fd;
}

std::vector<Fd> listenTcpGroup(const SocketAddress& address, unsigned count, std::string& error, bool free_bind) {
  SocketAddress bound = address;
  if (address.port() != 0) {
    // A bind without SO_REUSEPORT fails while anyone listens on the address (SO_REUSEADDR
    // only lets it past connections in TIME_WAIT).
    Fd probe(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) {
      error = std::string("socket: ") + std::strerror(errno);
      return {};
    }
    int one = 1;
    setsockopt(probe.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (address.family() == AF_INET6) {
      setsockopt(probe.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (free_bind) {
      setFreeBind(probe.get(), address.family());
    }
    if (::bind(probe.get(), address.sockaddrPtr(), address.sockaddrLen()) != 0) {
      error = "bind " + address.toString() + ": " + std::strerror(errno);
      return {};
    }
  }
  std::vector<Fd> listeners;
  for (unsigned i = 0; i < std::max(count, 1u); ++i) {
    ListenOptions options;
    options.free_bind = free_bind;
    Fd fd = listenTcp(bound, options, error);
    if (!fd) {
      return {};
    }
    if (i == 0) {
      bound = localAddress(fd.get());  // the port picked for port 0
    }
    listeners.push_back(std::move(fd));
  }
  return listeners;
}

SocketAddress localAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Fd connectTcp(const SocketAddress& address, std::string& error) {
  Fd fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    error = std::string("socket: ") + std::strerror(errno);
    return Fd();
  }
  setNoDelay(fd.get());
  if (::connect(fd.get(), address.sockaddrPtr(), address.sockaddrLen()) != 0 && errno != EINPROGRESS) {
    error = "connect " + address.toString() + ": " + std::strerror(errno);
    return Fd();
  }
  return fd;
}

void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

uint32_t startLinger(int fd) {
  ::shutdown(fd, SHUT_WR);
  return EPOLLIN | EPOLLRDHUP;
}

bool lingerRead(int fd) {
  char sink[16384];
  ssize_t n = ::recv(fd, sink, sizeof sink, 0);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

}  // namespace fulcrum::core
