#pragma once
// What the whole-connection fuzzers of the proxy share (proxy_fuzz.cpp: HTTP/1.1 clients,
// h2_fuzz.cpp: HTTP/2 clients): one process-wide loop on a manual clock with the real
// ProxyWorker and one raw server listener, and non-blocking socket helpers.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/event_loop.h"
#include "core/log.h"
#include "core/socket.h"
#include "lb/pool.h"
#include "lb/proxy.h"
#include "proxy_framing.h"

namespace fulcrum::lb::fuzz {

inline http::Limits proxyLimits() {
  // Small, so the fuzzer reaches every limit with short inputs.
  http::Limits limits;
  limits.max_header_bytes = 1024;
  limits.max_uri_bytes = 256;
  limits.max_headers = 16;
  limits.max_body_bytes = 2048;
  return limits;
}

inline http::Limits serverLimits() {
  // Heads grow by the forwarding fields on the way: the server's parser takes any size.
  http::Limits limits;
  limits.max_header_bytes = 1 << 20;
  limits.max_uri_bytes = 1 << 20;
  limits.max_headers = 1 << 16;
  limits.max_body_bytes = 0;
  return limits;
}

inline std::set<int> epollFds() {
  std::set<int> fds;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(entry.path(), ec).string() == "anon_inode:[eventpoll]") {
      fds.insert(std::stoi(entry.path().filename().string()));
    }
  }
  return fds;
}

// Closes with a reset, so the proxy sees an error at once whatever events it is waiting for.
inline void resetClose(core::Fd& fd) {
  if (!fd) {
    return;
  }
  linger lg{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  fd.reset();
}

// Reads all that is available; false at end of stream or on an error.
inline bool readAvailable(int fd, std::string& into) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      into.append(buf, static_cast<size_t>(n));
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EINTR);
  }
}

inline size_t sendSome(int fd, std::string_view data) {
  ssize_t n = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  return n > 0 ? static_cast<size_t>(n) : 0;
}

// Built once per process: the loop, the proxy's listener and worker, one server listener.
struct Proxy {
  core::ManualClock clock;
  std::unique_ptr<core::EventLoop> loop;
  int loop_epoll_fd = -1;
  core::Fd server_listener;
  core::SocketAddress address;
  std::unique_ptr<lb::WorkerPool> pool;
  std::unique_ptr<lb::ProxyStats> stats;
  std::unique_ptr<lb::ProxyWorker> worker;

  // `tune` adjusts the worker's options (limits are small so that short inputs reach them).
  explicit Proxy(const http::Limits& limits, const std::function<void(lb::ProxyOptions&)>& tune = {}) {
    std::signal(SIGPIPE, SIG_IGN);
    log::setLevel(log::Level::Error);
    std::set<int> before = epollFds();
    loop = std::make_unique<core::EventLoop>(clock);
    for (int fd : epollFds()) {
      if (!before.contains(fd)) {
        loop_epoll_fd = fd;
      }
    }
    std::string error;
    auto local = *core::SocketAddress::parse("127.0.0.1:0");
    server_listener = core::listenTcp(local, core::ListenOptions{false, 128}, error);
    core::Fd listener = core::listenTcp(local, core::ListenOptions{false, 128}, error);
    if (!server_listener || !listener || loop_epoll_fd < 0) {
      fail("cannot set up the proxy", error);
    }
    address = core::localAddress(listener.get());
    lb::Backend backend;
    backend.name = "server";
    backend.address = core::localAddress(server_listener.get());
    backend.address_text = backend.address.toString();
    pool = std::make_unique<lb::WorkerPool>(*loop, std::vector<lb::Backend>{backend}, "roundrobin",
                                            lb::PoolOptions{});
    stats = std::make_unique<lb::ProxyStats>(1);
    lb::ProxyOptions options;
    options.limits = limits;
    options.access_log = false;
    if (tune) {
      tune(options);
    }
    worker = std::make_unique<lb::ProxyWorker>(*loop, std::move(listener), *pool, options, *stats,
                                               [](uint32_t, const std::string&) {});
  }
};

struct ServerConn {
  core::Fd fd;
  std::string received;
};

// One input's peers: a client connected to the proxy and every connection the server accepted.
class Peers {
 public:
  explicit Peers(Proxy& proxy) : p_(proxy) {
    client_ = core::Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    setsockopt(client_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(client_.get(), p_.address.sockaddrPtr(), p_.address.sockaddrLen()) != 0 &&
        errno != EINPROGRESS) {
      fail("client connect failed");
    }
  }

  // Runs the loop until nothing moves and no event is pending. A loop that keeps waking with
  // nothing moving spins; one that keeps moving never settles: both abort.
  void settle() {
    int still = 0;
    for (int i = 0; i < kSettleIterations; ++i) {
      uint64_t before = progress();
      p_.loop->runOnce(core::Duration::zero());
      pumpServer();
      readAvailable(client_.get(), got_);
      still = progress() == before ? still + 1 : 0;
      if (still >= 2 && !loopHasEvents()) {
        return;
      }
    }
    fail(still >= 2 ? "the event loop spins: events keep coming and nothing moves"
                    : "the connection never settles");
  }

  // Both peers go away with a reset: every session and pooled connection must close.
  void teardown() {
    resetClose(client_);
    for (ServerConn& conn : servers_) {
      resetClose(conn.fd);
    }
    for (int i = 0; i < kTeardownIterations; ++i) {
      if (p_.stats->connections_active.get() == 0 && p_.pool->idleCount(0) == 0) {
        return;
      }
      // A retry may still connect: the server resets those too.
      p_.loop->runOnce(i < 20 ? core::Duration::zero() : core::Duration(std::chrono::milliseconds(1)));
      for (;;) {
        core::Fd fd(::accept4(p_.server_listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
          break;
        }
        resetClose(fd);
      }
    }
    fail("a proxy connection outlived both its peers");
  }

 protected:
  void pumpServer() {
    for (;;) {
      core::Fd fd(::accept4(p_.server_listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        break;
      }
      servers_.push_back(ServerConn{std::move(fd), {}});
    }
    for (size_t i = 0; i < servers_.size(); ++i) {
      ServerConn& conn = servers_[i];
      if (!conn.fd) {
        continue;
      }
      size_t had = conn.received.size();
      readAvailable(conn.fd.get(), conn.received);
      if (conn.received.size() != had) {
        current_ = static_cast<int>(i);
      }
    }
  }

  ServerConn* currentServer() {
    pumpServer();
    int i = current_ >= 0 ? current_ : static_cast<int>(servers_.size()) - 1;
    if (i < 0 || !servers_[static_cast<size_t>(i)].fd) {
      return nullptr;
    }
    return &servers_[static_cast<size_t>(i)];
  }

  bool loopHasEvents() const {
    pollfd pfd{p_.loop_epoll_fd, POLLIN, 0};
    return ::poll(&pfd, 1, 0) > 0;
  }

  uint64_t progress() const {
    uint64_t sum = got_.size() + servers_.size() + p_.stats->bytes_in.get() + p_.stats->bytes_out.get() +
                   p_.stats->connections_active.get() + p_.stats->connections_total.get() +
                   p_.stats->requests_total.get() + p_.stats->backends[0].requests.get() +
                   p_.pool->idleCount(0);
    for (const ServerConn& conn : servers_) {
      sum += conn.received.size() + (conn.fd ? 1 : 0);
    }
    return sum;
  }

  static constexpr int kSettleIterations = 256;
  static constexpr int kTeardownIterations = 200;

  Proxy& p_;
  core::Fd client_;
  std::string sent_;  // what the client sent, in order
  std::string got_;   // what the client received
  std::vector<ServerConn> servers_;
  int current_ = -1;
};

}  // namespace fulcrum::lb::fuzz
