#include "lb/takeover.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/log.h"

namespace fulcrum::lb {

namespace {

constexpr size_t kMaxFds = 253;  // SCM_MAX_FD: what one message may carry
constexpr size_t kMaxMessage = 64 * 1024;
constexpr std::string_view kRequest = "takeover";
constexpr std::string_view kServing = "serving";

bool unixAddress(const std::filesystem::path& path, sockaddr_un& addr, std::string& error) {
  addr = {};
  addr.sun_family = AF_UNIX;
  const std::string text = path.string();
  if (text.size() >= sizeof addr.sun_path) {
    error = fmt::format("{}: path too long for a unix socket", text);
    return false;
  }
  std::memcpy(addr.sun_path, text.c_str(), text.size() + 1);
  return true;
}

}  // namespace

// One connected new process.
class TakeoverServer::Peer : public core::IoHandler {
 public:
  Peer(TakeoverServer& server, core::Fd fd) : server_(server), fd_(std::move(fd)) {
    server_.loop_.add(fd_.get(), EPOLLIN, this);
  }
  ~Peer() override {
    if (fd_) {
      server_.loop_.remove(fd_.get());
    }
  }

  void onIoEvents(uint32_t events) override {
    char buf[256];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return;
    }
    if (n <= 0 || (events & EPOLLERR)) {
      if (sent_) {
        log::warn("takeover: the new process (pid {}) went away before serving; this one keeps serving", pid_);
      }
      server_.peerDone(this);  // deletes this
      return;
    }
    std::string_view message(buf, static_cast<size_t>(n));
    if (!sent_ && message == kRequest) {
      send();
      return;
    }
    if (sent_ && message == kServing) {
      log::info("takeover: pid {} serves the listeners now; this process stops accepting and drains", pid_);
      pid_t pid = pid_;
      TakeoverServer& server = server_;
      server.taken_ = true;
      server.peerDone(this);  // deletes this (after the loop's batch)
      server.on_taken_(pid);
      return;
    }
    log::warn("takeover: unexpected message from pid {}; closed", pid_);
    server_.peerDone(this);
  }

 private:
  void send() {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != ::getuid()) {
      log::warn("takeover: refused a caller of another user (uid {})", cred.uid);
      server_.peerDone(this);
      return;
    }
    pid_ = cred.pid;
    nlohmann::json listeners = nlohmann::json::array();
    std::vector<int> fds;
    for (const HandedListener& l : server_.listeners_) {
      listeners.push_back({{"kind", l.kind}, {"address", l.address}});
      fds.push_back(l.fd);
    }
    std::string text = nlohmann::json{{"listeners", listeners}, {"pid", ::getpid()}}.dump();
    iovec iov{text.data(), text.size()};
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    if (::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL) < 0) {
      log::warn("takeover: sending the listeners to pid {}: {}", pid_, std::strerror(errno));
      server_.peerDone(this);
      return;
    }
    sent_ = true;
    log::info("takeover: {} listening sockets handed to pid {}; serving on until it says it serves them", fds.size(),
              pid_);
  }

  TakeoverServer& server_;
  core::Fd fd_;
  bool sent_ = false;
  pid_t pid_ = 0;
};

std::unique_ptr<TakeoverServer> TakeoverServer::create(core::EventLoop& loop, std::filesystem::path path,
                                                       std::vector<HandedListener> listeners, OnTaken on_taken,
                                                       std::string& error) {
  if (listeners.empty() || listeners.size() > kMaxFds) {
    error = fmt::format("takeover: {} listeners (1..{} can be handed over)", listeners.size(), kMaxFds);
    return nullptr;
  }
  sockaddr_un addr{};
  if (!unixAddress(path, addr, error)) {
    return nullptr;
  }
  core::Fd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    error = fmt::format("takeover: socket: {}", std::strerror(errno));
    return nullptr;
  }
  std::error_code ec;
  std::filesystem::remove(path, ec);  // a socket left by a killed process (the pid file says who runs)
  const mode_t old_mask = ::umask(0177);
  const int rc = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  ::umask(old_mask);
  struct stat st {};
  if (rc != 0 || ::listen(fd.get(), 4) != 0 || ::stat(path.c_str(), &st) != 0) {
    error = fmt::format("takeover: {}: {}", path.string(), std::strerror(errno));
    return nullptr;
  }
  auto server = std::unique_ptr<TakeoverServer>(
      new TakeoverServer(loop, std::move(path), std::move(fd), std::move(listeners), std::move(on_taken)));
  server->inode_ = st.st_ino;
  return server;
}

TakeoverServer::TakeoverServer(core::EventLoop& loop, std::filesystem::path path, core::Fd fd,
                               std::vector<HandedListener> listeners, OnTaken on_taken)
    : loop_(loop), path_(std::move(path)), fd_(std::move(fd)), listeners_(std::move(listeners)),
      on_taken_(std::move(on_taken)) {
  loop_.add(fd_.get(), EPOLLIN, this);
}

TakeoverServer::~TakeoverServer() {
  peers_.clear();
  if (fd_) {
    loop_.remove(fd_.get());
    // Only ours: a successor that took over has bound its own socket at this path since.
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0 && st.st_ino == inode_) {
      std::error_code ec;
      std::filesystem::remove(path_, ec);
    }
  }
}

void TakeoverServer::onIoEvents(uint32_t) { accept(); }

void TakeoverServer::accept() {
  for (;;) {
    int fd = ::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      return;
    }
    if (taken_ || !peers_.empty()) {
      ::close(fd);  // one takeover at a time, and only one
      continue;
    }
    peers_.push_back(std::make_unique<Peer>(*this, core::Fd(fd)));
  }
}

void TakeoverServer::peerDone(Peer* peer) {
  for (auto& p : peers_) {
    if (p.get() == peer) {
      // Inside the peer's own callback: freed after the loop's current batch.
      struct Deferred : core::Deletable {
        std::unique_ptr<Peer> peer;
      };
      auto d = std::make_unique<Deferred>();
      d->peer = std::move(p);
      loop_.deferDelete(std::move(d));
    }
  }
  std::erase_if(peers_, [](const auto& p) { return p == nullptr; });
}

bool receiveListeners(const std::filesystem::path& path, std::vector<TakenListener>& out, core::Fd& channel,
                      std::chrono::milliseconds timeout, std::string& error) {
  sockaddr_un addr{};
  if (!unixAddress(path, addr, error)) {
    return false;
  }
  core::Fd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    error = fmt::format("{}: {} (is the node running here?)", path.string(), std::strerror(errno));
    return false;
  }
  if (::send(fd.get(), kRequest.data(), kRequest.size(), MSG_NOSIGNAL) < 0) {
    error = fmt::format("{}: {}", path.string(), std::strerror(errno));
    return false;
  }
  pollfd p{fd.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
    error = fmt::format("{}: no answer within {} ms", path.string(), timeout.count());
    return false;
  }
  std::string text(kMaxMessage, '\0');
  iovec iov{text.data(), text.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n = ::recvmsg(fd.get(), &msg, MSG_CMSG_CLOEXEC);
  if (n <= 0) {
    error = fmt::format("{}: {}", path.string(), n == 0 ? "closed without an answer" : std::strerror(errno));
    return false;
  }
  text.resize(static_cast<size_t>(n));
  std::vector<core::Fd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received = -1;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(received);
      }
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    error = fmt::format("{}: the answer was truncated", path.string());
    return false;
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("listeners") || !j["listeners"].is_array() || j["listeners"].size() != fds.size()) {
    error = fmt::format("{}: not a listener description ({} descriptors)", path.string(), fds.size());
    return false;
  }
  out.clear();
  for (size_t i = 0; i < fds.size(); ++i) {
    const nlohmann::json& l = j["listeners"][i];
    if (!l.is_object() || !l.contains("kind") || !l["kind"].is_string() || !l.contains("address") ||
        !l["address"].is_string()) {
      error = fmt::format("{}: listener {} is not described", path.string(), i);
      return false;
    }
    out.push_back(TakenListener{l["kind"].get<std::string>(), l["address"].get<std::string>(), std::move(fds[i])});
  }
  channel = std::move(fd);
  return true;
}

bool confirmServing(core::Fd& channel, std::string& error) {
  if (::send(channel.get(), kServing.data(), kServing.size(), MSG_NOSIGNAL) < 0) {
    error = std::strerror(errno);
    return false;
  }
  channel.reset();
  return true;
}

}  // namespace fulcrum::lb
