#include "lb/tcp_proxy.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/buffer.h"
#include "core/log.h"
#include "core/socket.h"

namespace fulcrum::lb {

namespace {

constexpr size_t kHighWater = 64 * 1024;  // stop reading a side while this much waits for the other
constexpr int kPipeSize = 256 * 1024;     // asked of F_SETPIPE_SZ; the default 64 KiB if refused

std::string errnoText(const char* what, int err) {
  return fmt::format("{}: {}", what, std::strerror(err));
}

}  // namespace

// One client connection and, once connected, its server connection. Bytes move in two Flows
// (client to server, server to client), each through a Buffer or, once it has carried
// `splice_after` bytes, through a pipe with splice(2).
class TcpSession final : public core::Deletable {
 public:
  TcpSession(TcpProxyWorker& worker, core::Fd client, const core::SocketAddress& peer);
  ~TcpSession() override;

  // Once in the worker's set: picks a server and connects (the session may end inside).
  void start() { connectNext(); }
  // Picks a server and connects (the session may end inside, with no server to go to).
  void connectNext();
  // For core::ConnectionSet: a database session is never evicted, and ends when its client ends
  // it (a drain waits for that, bounded by the grace period).
  bool idle() const { return false; }
  void evict() { cut(); }
  void drain() {}
  core::IpAddress peerIp() const { return peer_ip_; }
  // Closes both sides now: the server was marked down.
  void cut();
  int server() const { return server_; }

  TcpSession* prev = nullptr;
  TcpSession* next = nullptr;

 private:
  // One socket of the session; its epoll registration points here.
  struct Side final : core::IoHandler {
    void onIoEvents(uint32_t events) override { session->onEvents(*this, events); }
    TcpSession* session = nullptr;
    core::Fd fd;
    uint32_t events = 0;
    bool registered = false;
    bool hup = false;  // EPOLLHUP seen: reported whatever the interest set, so leave epoll when idle
  };

  // Bytes from one side to the other.
  struct Flow {
    size_t pending() const { return buf.size() + in_pipe; }
    bool spliced() const { return pipe_r.valid(); }
    Side* from = nullptr;
    Side* to = nullptr;
    core::Buffer buf;
    core::Fd pipe_r;
    core::Fd pipe_w;
    size_t in_pipe = 0;
    bool pipe_full = false;  // splice refused more: read again once the pipe has drained some
    uint64_t total = 0;
    bool eof = false;   // `from` sent its FIN
    bool shut = false;  // and `to` has been told (shutdown SHUT_WR), after every byte
  };

  enum class Phase : uint8_t { Connecting, Streaming, Closed };

  void onEvents(Side& side, uint32_t events);
  void onConnectEvents(uint32_t events);
  void connectFailed(std::string reason);
  void startStreaming();
  // Reads once from `flow.from`; false on a socket error.
  bool fill(Flow& flow);
  // Writes what `flow` holds to `flow.to`, and passes on its end; false on a socket error.
  bool flush(Flow& flow);
  void maybeSplice(Flow& flow);
  bool wantsRead(const Flow& flow) const {
    return !flow.eof && !flow.pipe_full && flow.pending() < kHighWater;
  }
  void updateInterest(Side& side, const Flow& in, const Flow& out);
  void updateInterest();
  void setEvents(Side& side, uint32_t events);
  void close();

  TcpProxyWorker& worker_;
  core::IpAddress peer_ip_;
  Side client_;
  Side server_side_;
  Flow up_;            // client -> server
  Flow down_;          // server -> client
  core::Timer timer_;  // connect timeout, then idle timeout
  Phase phase_ = Phase::Connecting;
  int server_ = kNoServer;
  std::vector<uint32_t> tried_;
};

TcpSession::TcpSession(TcpProxyWorker& worker, core::Fd client, const core::SocketAddress& peer)
    : worker_(worker), peer_ip_(peer.ip()), timer_(worker.loop(), [this] {
        if (phase_ == Phase::Connecting) {
          connectFailed(fmt::format(
              "connect: timeout after {} ms",
              std::chrono::duration_cast<std::chrono::milliseconds>(worker_.options().connect_timeout)
                  .count()));
        } else {
          close();  // idle
        }
      }) {
  client_.session = this;
  client_.fd = std::move(client);
  server_side_.session = this;
  up_.from = &client_;
  up_.to = &server_side_;
  down_.from = &server_side_;
  down_.to = &client_;
  // Nothing is read from the client before a server is connected: its bytes wait in the kernel.
  // An error or hang-up is still reported (and ends the session).
  client_.registered = worker_.loop().add(client_.fd.get(), 0, &client_);
}

TcpSession::~TcpSession() {
  for (Side* side : {&client_, &server_side_}) {
    if (side->registered) {
      worker_.loop().remove(side->fd.get());
    }
  }
}

void TcpSession::connectNext() {
  WorkerPool& pool = worker_.pool();
  while (phase_ == Phase::Connecting) {
    if (tried_.size() > worker_.options().retries) {
      break;
    }
    PickContext context;
    context.exclude = tried_;
    int id = pool.pick(context);
    if (id == kNoServer) {
      break;
    }
    if (!tried_.empty()) {
      worker_.stats().retries.add();
    }
    tried_.push_back(static_cast<uint32_t>(id));
    server_ = id;
    pool.onRequestStart(static_cast<uint32_t>(id));
    std::string error;
    server_side_.fd = core::connectTcp(pool.backend(static_cast<uint32_t>(id)).address, error);
    if (!server_side_.fd) {
      connectFailed(error);  // refused at once: tries the next server
      return;
    }
    server_side_.events = EPOLLOUT;
    server_side_.registered = worker_.loop().add(server_side_.fd.get(), EPOLLOUT, &server_side_);
    timer_.armAfter(worker_.options().connect_timeout);
    return;
  }
  worker_.stats().no_server.add();
  close();
}

void TcpSession::connectFailed(std::string reason) {
  auto id = static_cast<uint32_t>(server_);
  worker_.pool().onRequestEnd(id);
  worker_.stats().servers[id].connect_failures.add();
  log::warn("{}: server {} ({}): {}", worker_.options().name, worker_.pool().backend(id).name,
            worker_.pool().backend(id).address_text, reason);
  worker_.reportFailure(id, reason);
  if (server_side_.registered) {
    worker_.loop().remove(server_side_.fd.get());
    server_side_.registered = false;
  }
  server_side_.fd.reset();
  server_side_.events = 0;
  server_ = kNoServer;
  timer_.disarm();
  connectNext();
}

void TcpSession::onConnectEvents(uint32_t events) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(server_side_.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err != 0) {
    connectFailed(errnoText("connect", err));
    return;
  }
  if ((events & EPOLLOUT) == 0) {
    if ((events & (EPOLLERR | EPOLLHUP)) != 0) {
      connectFailed("connect: connection closed");
    }
    return;
  }
  startStreaming();
}

void TcpSession::startStreaming() {
  phase_ = Phase::Streaming;
  auto id = static_cast<uint32_t>(server_);
  TcpServerStats& stats = worker_.stats().servers[id];
  stats.sessions.add();
  stats.active.add();
  timer_.armAfter(worker_.options().idle_timeout);
  updateInterest();
}

void TcpSession::onEvents(Side& side, uint32_t events) {
  if (phase_ == Phase::Closed) {
    return;
  }
  if (phase_ == Phase::Connecting) {
    if (&side == &server_side_) {
      onConnectEvents(events);
    } else if ((events & (EPOLLERR | EPOLLHUP)) != 0) {
      close();  // the client went away while we were connecting
    }
    return;
  }
  if ((events & EPOLLERR) != 0) {
    close();  // a reset: nothing more can go either way on this side
    return;
  }
  Flow& in = &side == &client_ ? up_ : down_;   // read from this side
  Flow& out = &side == &client_ ? down_ : up_;  // written to this side
  if ((events & EPOLLHUP) != 0) {
    side.hup = true;
  }
  if ((events & EPOLLOUT) != 0 && !flush(out)) {
    close();
    return;
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) != 0 && wantsRead(in)) {
    if (!fill(in) || !flush(in)) {
      close();
      return;
    }
  }
  if (up_.shut && down_.shut) {
    close();  // both directions ended cleanly
    return;
  }
  updateInterest();
}

bool TcpSession::fill(Flow& flow) {
  ssize_t n;
  if (flow.spliced()) {
    n = ::splice(flow.from->fd.get(), nullptr, flow.pipe_w.get(), nullptr, kPipeSize - flow.in_pipe,
                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0 && errno == EAGAIN && flow.in_pipe > 0) {
      // Either the socket is drained or the pipe's slots are full (it may hold far less than
      // its size in small segments). Read again once a flush has made room.
      flow.pipe_full = true;
      return true;
    }
    if (n > 0) {
      flow.in_pipe += static_cast<size_t>(n);
    }
  } else {
    n = flow.buf.readFrom(flow.from->fd.get(), kHighWater);
  }
  if (n == 0) {
    flow.eof = true;
    return true;
  }
  if (n < 0) {
    return errno == EAGAIN || errno == EINTR;
  }
  flow.total += static_cast<uint64_t>(n);
  TcpProxyStats& stats = worker_.stats();
  (&flow == &up_ ? stats.bytes_in : stats.bytes_out).add(static_cast<uint64_t>(n));
  timer_.armAfter(worker_.options().idle_timeout);
  return true;
}

bool TcpSession::flush(Flow& flow) {
  while (flow.pending() > 0) {
    ssize_t n;
    if (flow.spliced()) {
      n = ::splice(flow.pipe_r.get(), nullptr, flow.to->fd.get(), nullptr, flow.in_pipe,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        flow.in_pipe -= static_cast<size_t>(n);
        flow.pipe_full = false;
      }
    } else {
      n = flow.buf.writeTo(flow.to->fd.get());
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        return true;  // the peer is slow: EPOLLOUT brings us back (backpressure)
      }
      return false;
    }
    if (n == 0) {
      return true;
    }
  }
  flow.buf.releaseIfEmpty();
  maybeSplice(flow);
  if (flow.eof && !flow.shut) {
    // Every byte before the FIN has gone: pass the half-close on. The other direction keeps
    // flowing until its own end (a server still answering a client that has finished).
    flow.shut = true;
    ::shutdown(flow.to->fd.get(), SHUT_WR);
  }
  return true;
}

void TcpSession::maybeSplice(Flow& flow) {
  uint64_t after = worker_.options().splice_after;
  if (after == 0 || flow.total < after || flow.spliced() || flow.eof) {
    return;
  }
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    return;  // out of descriptors: recv/send still works
  }
  flow.pipe_r.reset(fds[0]);
  flow.pipe_w.reset(fds[1]);
  ::fcntl(fds[1], F_SETPIPE_SZ, kPipeSize);
  worker_.stats().spliced.add();
}

void TcpSession::updateInterest() {
  updateInterest(client_, up_, down_);
  updateInterest(server_side_, down_, up_);
}

void TcpSession::updateInterest(Side& side, const Flow& in, const Flow& out) {
  uint32_t events = 0;
  if (wantsRead(in)) {
    events |= EPOLLIN | EPOLLRDHUP;
  }
  if (out.pending() > 0) {
    events |= EPOLLOUT;
  }
  if (side.hup && (events & EPOLLIN) == 0) {
    // A hung-up socket reports EPOLLHUP on every wait whatever we ask: leave epoll until
    // there is something to read from it again (the other side drained our buffer).
    if (side.registered) {
      worker_.loop().remove(side.fd.get());
      side.registered = false;
    }
    return;
  }
  setEvents(side, events);
}

void TcpSession::setEvents(Side& side, uint32_t events) {
  if (!side.registered) {
    side.events = events;
    side.registered = worker_.loop().add(side.fd.get(), events, &side);
  } else if (side.events != events) {
    side.events = events;
    worker_.loop().modify(side.fd.get(), events, &side);
  }
}

void TcpSession::cut() {
  worker_.stats().servers[static_cast<uint32_t>(server_)].cut.add();
  close();
}

void TcpSession::close() {
  if (phase_ == Phase::Closed) {
    return;
  }
  if (server_ != kNoServer) {
    auto id = static_cast<uint32_t>(server_);
    worker_.pool().onRequestEnd(id);
    if (phase_ == Phase::Streaming) {
      worker_.stats().servers[id].active.sub();
    }
  }
  phase_ = Phase::Closed;
  timer_.disarm();
  for (Side* side : {&client_, &server_side_}) {
    if (side->registered) {
      worker_.loop().remove(side->fd.get());
      side->registered = false;
    }
    side->fd.reset();
  }
  for (Flow* flow : {&up_, &down_}) {
    flow->buf.release();
    flow->pipe_r.reset();
    flow->pipe_w.reset();
  }
  worker_.unlink(this);
  worker_.loop().deferDelete(std::unique_ptr<core::Deletable>(this));
}

// ---------------------------------------------------------------------------------------------
// Worker

TcpProxyWorker::TcpProxyWorker(core::EventLoop& loop, core::Fd listener, const std::vector<Backend>& servers,
                               std::string_view algorithm, const TcpProxyOptions& options,
                               TcpProxyStats& stats, FailureReporter report_failure)
    : loop_(loop),
      pool_(loop, servers, algorithm, PoolOptions{}),
      options_(options),
      stats_(stats),
      report_failure_(std::move(report_failure)),
      // A database session is never idle in the HTTP sense (a pooled client connection waits
      // between queries): at the cap the new one is refused, none is evicted.
      sessions_(loop, std::move(listener), "lb tcp frontend",
                core::ConnectionLimits{options.max_connections, nullptr, false, &stats.refused, nullptr},
                [this](core::Fd fd, const core::SocketAddress& peer) { return accept(std::move(fd), peer); }) {}

TcpProxyWorker::~TcpProxyWorker() {
  sessions_.closeAll();  // while the pool the sessions hand their servers back to lives
}

TcpSession* TcpProxyWorker::accept(core::Fd fd, const core::SocketAddress& peer) {
  stats_.connections_total.add();
  stats_.connections_active.add();
  return new TcpSession(*this, std::move(fd), peer);  // start() picks a server once it is linked
}

void TcpProxyWorker::unlink(TcpSession* session) {
  stats_.connections_active.sub();
  sessions_.remove(session);
}

void TcpProxyWorker::setUp(uint32_t server, bool up) {
  pool_.setUp(server, up);
  if (!up) {
    sessions_.forEach([server](TcpSession* s) {
      if (s->server() == static_cast<int>(server)) {
        s->cut();
      }
    });
  }
}

void TcpProxyWorker::drain(std::function<void()> on_idle) {
  // Database sessions end when their clients end them; the grace period bounds the wait.
  sessions_.drain(std::move(on_idle));
}

}  // namespace fulcrum::lb
