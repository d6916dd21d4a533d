#pragma once
// Non-blocking TCP sockets.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "core/address.h"
#include "core/fd.h"

namespace fulcrum::core {

struct ListenOptions {
  bool reuse_port = true;  // one listener per worker thread, the kernel spreads connections
  int backlog = 4096;
  // IP_FREEBIND: bind an address the host does not hold yet (a VRRP standby listens on the
  // virtual IP before it takes it over).
  bool free_bind = false;
};

// Creates a non-blocking listening socket; on failure returns an invalid Fd and sets `error`.
Fd listenTcp(const SocketAddress& address, const ListenOptions& options, std::string& error);
// `count` listening sockets on one address, one per worker thread, joined by SO_REUSEPORT so
// the kernel spreads connections across them. The address must be free first: SO_REUSEPORT
// alone would let this process share a port with any other process of the same user (a
// second lb started by mistake) and each would silently get a part of the connections. Port
// 0 picks one ephemeral port for the whole group. Empty on failure, with `error` set.
std::vector<Fd> listenTcpGroup(const SocketAddress& address, unsigned count, std::string& error,
                               bool free_bind = false);
// The address a socket is bound to (to learn an ephemeral port).
SocketAddress localAddress(int fd);
// Starts a non-blocking connect; the Fd is valid when the connect is under way or done.
Fd connectTcp(const SocketAddress& address, std::string& error);
void setNoDelay(int fd);

// Lingering close (RFC 9112 §9.6), the end of every HTTP connection that closes after an answer:
// closing a socket with unread input sends a RST, which can destroy the answer before the client
// has read it. So the server half-closes, then reads and drops what the client still sends until
// it closes or kLingerTime passes.
inline constexpr std::chrono::seconds kLingerTime{2};
// Half-closes `fd`; returns the epoll interest to wait with (input only).
uint32_t startLinger(int fd);
// Reads and drops what the peer still sends; true once it has closed or failed: time to close.
bool lingerRead(int fd);

}  // namespace fulcrum::core
