// Fuzzes a whole proxied connection in-process: the real ProxyWorker on a real event loop (on a
// manual clock), a client socket and a raw server socket, both driven by the input. The input is
// a script; each operation is one byte (taken modulo the number of operations), some followed by
// a length byte and that many bytes of data (length 0: the rest of the input):
//
//   0 L data  the client sends data            5      the server half-closes its connection
//   1         one loop iteration, no wait      6      the server closes its connection
//   2         the server accepts and reads     7      the client reads
//   3 L data  the server sends data            8 T    time passes (T % 4: 1 s, 3 s, 11 s, 31 s)
//   4         the client half-closes
//
// The server's connection is the last one that received bytes (else the newest). After the
// script the loop runs until nothing moves; then the framing invariants of proxy_framing.h are
// checked, both peers reset their connections and every session must close. Any violation aborts.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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

using namespace fulcrum;
using lb::fuzz::fail;

namespace {

enum Op : uint8_t {
  kClientSend,
  kRunLoop,
  kServerRead,
  kServerSend,
  kClientShutdown,
  kServerShutdown,
  kServerClose,
  kClientRead,
  kTimePasses,
  kOpCount,
};

constexpr int kSettleIterations = 256;
constexpr int kTeardownIterations = 200;

http::Limits proxyLimits() {
  // Small, so the fuzzer reaches every limit with short inputs.
  http::Limits limits;
  limits.max_header_bytes = 1024;
  limits.max_uri_bytes = 256;
  limits.max_headers = 16;
  limits.max_body_bytes = 2048;
  return limits;
}

http::Limits serverLimits() {
  // Heads grow by the forwarding fields on the way: the server's parser takes any size.
  http::Limits limits;
  limits.max_header_bytes = 1 << 20;
  limits.max_uri_bytes = 1 << 20;
  limits.max_headers = 1 << 16;
  limits.max_body_bytes = 0;
  return limits;
}

std::set<int> epollFds() {
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
void resetClose(core::Fd& fd) {
  if (!fd) {
    return;
  }
  linger lg{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  fd.reset();
}

// Reads all that is available; false at end of stream or on an error.
bool readAvailable(int fd, std::string& into) {
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

size_t sendSome(int fd, std::string_view data) {
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

  Proxy() {
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
    options.limits = proxyLimits();
    options.access_log = false;
    worker = std::make_unique<lb::ProxyWorker>(*loop, std::move(listener), *pool, options, *stats,
                                               [](uint32_t, const std::string&) {});
  }
};

struct ServerConn {
  core::Fd fd;
  std::string received;
};

// One input's connection: the client's side and every connection the server accepted.
class Run {
 public:
  explicit Run(Proxy& proxy) : p_(proxy) {
    client_ = core::Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    setsockopt(client_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(client_.get(), p_.address.sockaddrPtr(), p_.address.sockaddrLen()) != 0 &&
        errno != EINPROGRESS) {
      fail("client connect failed");
    }
  }

  void execute(std::string_view script) {
    while (!script.empty()) {
      auto op = static_cast<Op>(static_cast<uint8_t>(script[0]) % kOpCount);
      script.remove_prefix(1);
      switch (op) {
        case kClientSend:
          if (std::string_view data = takeData(script); !client_shut_) {
            sent_.append(data.substr(0, sendSome(client_.get(), data)));
          }
          break;
        case kRunLoop:
          p_.loop->runOnce(core::Duration::zero());
          break;
        case kServerRead:
          pumpServer();
          break;
        case kServerSend: {
          std::string_view data = takeData(script);
          if (ServerConn* conn = currentServer()) {
            sendSome(conn->fd.get(), data);
          }
          break;
        }
        case kClientShutdown:
          ::shutdown(client_.get(), SHUT_WR);
          client_shut_ = true;
          break;
        case kServerShutdown:
          if (ServerConn* conn = currentServer()) {
            ::shutdown(conn->fd.get(), SHUT_WR);
          }
          break;
        case kServerClose:
          if (ServerConn* conn = currentServer()) {
            conn->fd.reset();
          }
          break;
        case kClientRead:
          readAvailable(client_.get(), got_);
          break;
        case kTimePasses: {
          static constexpr int kSeconds[] = {1, 3, 11, 31};
          int pick = script.empty() ? 0 : static_cast<uint8_t>(script[0]) % 4;
          script.remove_prefix(script.empty() ? 0 : 1);
          p_.clock.advance(std::chrono::seconds(kSeconds[pick]));
          p_.loop->runOnce(core::Duration::zero());
          break;
        }
        default:
          break;
      }
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

  // FULCRUM_PROXY_FUZZ_TRACE=1 prints the byte streams, to read what an input did.
  void trace() const {
    static const bool enabled = std::getenv("FULCRUM_PROXY_FUZZ_TRACE") != nullptr;
    if (!enabled) {
      return;
    }
    std::fprintf(stderr, "--- client sent\n%s\n--- client received\n%s\n", sent_.c_str(), got_.c_str());
    for (const ServerConn& conn : servers_) {
      std::fprintf(stderr, "--- server connection received\n%s\n", conn.received.c_str());
    }
  }

  void checkFraming() const {
    lb::fuzz::RequestStream sent = lb::fuzz::parseRequests(sent_, proxyLimits(), false);
    std::vector<http::Method> methods;
    for (const auto& req : sent.requests) {
      methods.push_back(req.method);
    }
    lb::fuzz::ResponseStream answers = lb::fuzz::parseResponses(got_, methods);
    if (answers.error != nullptr) {
      fail(answers.error, got_);
    }
    size_t complete = sent.requests.size() -
                      (sent.more && !sent.requests.empty() && !sent.requests.back().complete ? 1 : 0);
    if (!answers.tunnel && answers.finals > complete + (sent.more ? 1 : 0)) {
      fail("the client received more responses than it sent requests", got_);
    }
    for (const ServerConn& conn : servers_) {
      lb::fuzz::RequestStream got = lb::fuzz::parseRequests(conn.received, serverLimits(), true);
      if (got.head_error != 0) {
        fail("a server received bytes that are not a request", conn.received);
      }
      size_t next = 0;  // requests on one connection follow the client's order
      for (const auto& req : got.requests) {
        while (next < sent.requests.size() && !lb::fuzz::sameRequest(req, sent.requests[next])) {
          ++next;
        }
        if (next == sent.requests.size()) {
          fail("a server received a request the client did not send as one request", conn.received);
        }
        if (answers.closed_after >= 0 && next > static_cast<size_t>(answers.closed_after)) {
          fail("a request after the response that closed the client's connection was forwarded",
               conn.received);
        }
        ++next;
      }
    }
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

 private:
  std::string_view takeData(std::string_view& script) {
    if (script.empty()) {
      return {};
    }
    size_t len = static_cast<uint8_t>(script[0]);
    script.remove_prefix(1);
    if (len == 0 || len > script.size()) {
      len = script.size();
    }
    std::string_view data = script.substr(0, len);
    script.remove_prefix(len);
    return data;
  }

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

  Proxy& p_;
  core::Fd client_;
  bool client_shut_ = false;
  std::string sent_;  // what the client sent, in order
  std::string got_;   // what the client received
  std::vector<ServerConn> servers_;
  int current_ = -1;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Proxy* proxy = new Proxy();  // never freed: it lives as long as the process
  Run run(*proxy);
  run.execute(std::string_view(reinterpret_cast<const char*>(data), size));
  run.settle();
  run.trace();
  run.checkFraming();
  run.teardown();
  return 0;
}
