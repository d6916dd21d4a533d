#include "core/acceptor.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/log.h"
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
    setNoDelay(fd);
    on_accept_(Fd(fd), SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len));
  }
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
