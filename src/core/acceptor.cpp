#include "core/acceptor.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <unistd.h>

#include "core/log.h"
#include "core/proxy_protocol.h"
#include "core/socket.h"

namespace fulcrum::core {

namespace {

constexpr Duration kFirstBackoff = std::chrono::milliseconds(100);
constexpr Duration kMaxBackoff = std::chrono::seconds(1);
constexpr Duration kLogEvery = std::chrono::seconds(1);

bool outOfResources(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

}  // namespace

// A connection owing its PROXY header. It peeks at what has arrived, lets the parser take the
// header's bytes and drops exactly those from the socket: what follows is never read here.
class Acceptor::PendingHeader final : public IoHandler, public Deletable {
 public:
  PendingHeader(Acceptor& owner, Fd fd, const SocketAddress& peer)
      : owner_(owner), fd_(std::move(fd)), peer_(peer), timer_(owner.loop_, [this] { timedOut(); }) {}

  void start(std::list<std::unique_ptr<PendingHeader>>::iterator self) {
    self_ = self;
    timer_.armAfter(owner_.proxy_policy_.timeout);
    // Edge-triggered: bytes peeked but left in the socket (an unsure start, or what follows the
    // header) must not wake the loop again until more arrive.
    owner_.loop_.add(fd_.get(), EPOLLIN | EPOLLRDHUP | EPOLLET, this);
  }

  void onIoEvents(uint32_t) override {
    if (finished_) {
      return;
    }
    char buf[16 + proxy_protocol::kMaxV2Payload];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_PEEK);
    if (n < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        owner_.headerDone(this, nullptr, std::strerror(errno));
      }
      return;
    }
    if (n == 0) {
      // A connection closed before its first byte (a TCP check) is no malformed header.
      owner_.headerDone(this, nullptr,
                        received_ ? "closed before the end of the header" : std::string_view{});
      return;
    }
    received_ = true;
    std::string_view peeked(buf, static_cast<size_t>(n));
    if (owner_.proxy_policy_.optional && !present_) {
      proxy_protocol::Presence presence = proxy_protocol::detect(peeked);
      if (presence == proxy_protocol::Presence::Unsure) {
        return;
      }
      if (presence == proxy_protocol::Presence::Absent) {
        owner_.headerDone(this, &peer_, {});  // every byte stays for the connection
        return;
      }
      present_ = true;
    }
    proxy_protocol::Parser::Step step = parser_.feed(peeked);
    // The peeked bytes are still queued: the ones the header took are now read for good (all of
    // them unless the header ended; NeedMore always takes everything, so the loop cannot spin).
    if (step.consumed > 0 &&
        ::recv(fd_.get(), buf, step.consumed, 0) != static_cast<ssize_t>(step.consumed)) {
      owner_.headerDone(this, nullptr, "short read of peeked bytes");
      return;
    }
    if (step.status == proxy_protocol::Parser::Status::Invalid) {
      owner_.headerDone(this, nullptr, parser_.error());
    } else if (step.status == proxy_protocol::Parser::Status::Done) {
      const proxy_protocol::Header& header = parser_.header();
      // LOCAL, UNKNOWN and UNSPEC: the front balancer's own connection (its health check).
      owner_.headerDone(this, header.source ? &*header.source : &peer_, {});
    }
  }

  // Leaves the loop and gives up the descriptor; the object is deleted after this batch.
  Fd finish() {
    finished_ = true;
    timer_.disarm();
    owner_.loop_.remove(fd_.get());
    return std::move(fd_);
  }
  const SocketAddress& peer() const { return peer_; }
  std::list<std::unique_ptr<PendingHeader>>::iterator self() const { return self_; }

 private:
  void timedOut() { owner_.headerDone(this, nullptr, "no complete header within the request timeout"); }

  Acceptor& owner_;
  Fd fd_;
  SocketAddress peer_;
  Timer timer_;
  proxy_protocol::Parser parser_;
  std::list<std::unique_ptr<PendingHeader>>::iterator self_;
  bool finished_ = false;
  bool received_ = false;  // a byte has arrived
  bool present_ = false;   // optional policy: the signature is there
};

Acceptor::Acceptor(EventLoop& loop, Fd listener, std::string what, OnAccept on_accept, int batch)
    : loop_(loop),
      listener_(std::move(listener)),
      what_(std::move(what) + " " + localAddress(listener_.get()).toString()),
      on_accept_(std::move(on_accept)),
      batch_(batch),
      retry_(loop, [this] { resume(); }),
      backoff_(kFirstBackoff) {
  loop_.add(listener_.get(), EPOLLIN, this);
}

Acceptor::~Acceptor() {
  close();
}

void Acceptor::onIoEvents(uint32_t) {
  for (int i = 0; i < batch_ && listener_; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (outOfResources(errno)) {
        pause(errno);
      }
      // EAGAIN: the backlog is empty. ECONNABORTED, EPROTO, EPERM (a firewall) and the like
      // concern one connection: the next wake-up goes on.
      return;
    }
    backoff_ = kFirstBackoff;
    SocketAddress peer = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    if (expect_proxy_) {
      waitForHeader(Fd(fd), peer);
      continue;
    }
    admit(Fd(fd), peer);
  }
}

void Acceptor::admit(Fd fd, const SocketAddress& peer) {
  if (filter_ != nullptr && filter_->admit(peer.ip()) != IpFilter::Verdict::Allowed) {
    return;  // closed by fd's destructor, before a byte is read
  }
  setNoDelay(fd.get());
  on_accept_(std::move(fd), peer);
}

void Acceptor::expectProxyHeader(const ProxyHeaderPolicy& policy) {
  expect_proxy_ = true;
  proxy_policy_ = policy;
}

void Acceptor::waitForHeader(Fd fd, const SocketAddress& peer) {
  if (proxy_policy_.from != nullptr && proxy_policy_.from->admit(peer.ip()) != IpFilter::Verdict::Allowed) {
    headerError(peer, "peer not in accept_proxy_from");
    return;
  }
  if (pending_.size() >= proxy_policy_.max_waiting) {
    return;  // at the cap: closed, as a full ConnectionSet would
  }
  pending_.push_back(std::make_unique<PendingHeader>(*this, std::move(fd), peer));
  pending_.back()->start(std::prev(pending_.end()));
}

void Acceptor::headerDone(PendingHeader* pending, const SocketAddress* client, std::string_view error) {
  Fd fd = pending->finish();
  SocketAddress peer = pending->peer();
  std::optional<SocketAddress> named;
  if (client != nullptr) {
    named = *client;  // points into `pending`, about to be handed to the loop for deletion
  }
  auto self = pending->self();
  loop_.deferDelete(std::move(*self));
  pending_.erase(self);
  if (!named) {
    if (!error.empty()) {
      headerError(peer, error);
    }
    return;  // fd closes
  }
  admit(std::move(fd), *named);
}

void Acceptor::headerError(const SocketAddress& peer, std::string_view error) {
  if (proxy_policy_.errors != nullptr) {
    proxy_policy_.errors->add();
  }
  // One line a second at most: a flood of bad headers must not flood the log.
  TimePoint now = loop_.now();
  if (last_header_log_ != TimePoint{} && now - last_header_log_ < kLogEvery) {
    ++header_errors_unlogged_;
    return;
  }
  if (header_errors_unlogged_ > 0) {
    log::warn("{}: PROXY header from {}: {}; connection closed ({} more since the last report)", what_,
              peer.toString(), error, header_errors_unlogged_);
  } else {
    log::warn("{}: PROXY header from {}: {}; connection closed", what_, peer.toString(), error);
  }
  last_header_log_ = now;
  header_errors_unlogged_ = 0;
}

void Acceptor::pause(int err) {
  ++exhausted_total_;
  TimePoint now = loop_.now();
  if (!logged_ || now - last_log_ >= kLogEvery) {
    if (suppressed_ > 0) {
      log::warn("{}: accept: {}; listener paused, retrying in {} ms ({} more since the last report)", what_,
                std::strerror(err), std::chrono::duration_cast<std::chrono::milliseconds>(backoff_).count(),
                suppressed_);
    } else {
      log::warn("{}: accept: {}; listener paused, retrying in {} ms", what_, std::strerror(err),
                std::chrono::duration_cast<std::chrono::milliseconds>(backoff_).count());
    }
    logged_ = true;
    last_log_ = now;
    suppressed_ = 0;
  } else {
    ++suppressed_;
  }
  if (!paused_) {
    paused_ = true;
    loop_.modify(listener_.get(), 0, this);
  }
  retry_.armAfter(backoff_);
  backoff_ = std::min(backoff_ * 2, kMaxBackoff);
}

void Acceptor::resume() {
  if (!paused_ || !listener_) {
    return;
  }
  paused_ = false;
  retry_.disarm();
  loop_.modify(listener_.get(), EPOLLIN, this);
  // Level-triggered: a connection still waiting in the backlog wakes the loop at once.
}

void Acceptor::connectionClosed() {
  if (paused_) {
    resume();
  }
}

void Acceptor::close() {
  retry_.disarm();
  pending_.clear();  // connections still owing their header close: they have sent no request
  paused_ = false;
  if (listener_) {
    loop_.remove(listener_.get());
    listener_.reset();
  }
}

bool fileLimitFits(uint64_t needed, std::string_view who) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY || needed <= limit.rlim_cur) {
    return true;
  }
  log::warn("{}: max_connections needs about {} file descriptors but the limit is {} (ulimit -n, "
            "LimitNOFILE=): beyond it new connections wait in the backlog",
            who, needed, static_cast<uint64_t>(limit.rlim_cur));
  return false;
}

rlim_t raiseFileLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return 0;
  }
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      return raised.rlim_cur;
    }
    // An unlimited hard limit is still capped by fs.nr_open: settle for a large finite one.
    raised.rlim_cur = std::max<rlim_t>(limit.rlim_cur, 1 << 20);
    if (limit.rlim_max == RLIM_INFINITY && ::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      return raised.rlim_cur;
    }
  }
  return limit.rlim_cur;
}

}  // namespace fulcrum::core
