#include "core/socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace fulcrum::core {

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

}  // namespace fulcrum::core
