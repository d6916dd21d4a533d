#include "site/up_control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"

namespace fulcrum::site {

namespace {

using Clock = std::chrono::steady_clock;

bool unixAddress(const std::filesystem::path& path, sockaddr_un& addr, std::string& error) {
  addr = {};
  addr.sun_family = AF_UNIX;
  const std::string text = path.string();
  if (text.size() >= sizeof addr.sun_path) {
    error = text + ": path too long for a unix socket (at most " + std::to_string(sizeof addr.sun_path - 1) +
            " bytes; a shorter [site] state_dir)";
    return false;
  }
  std::memcpy(addr.sun_path, text.c_str(), text.size() + 1);
  return true;
}

nlohmann::json failure(const std::string& error) {
  return {{"ok", false}, {"error", error}};
}

}  // namespace

std::string_view controlOpName(ControlOp op) {
  switch (op) {
    case ControlOp::List:
      return "list";
    case ControlOp::Stop:
      return "stop";
    case ControlOp::Start:
      return "start";
    case ControlOp::Restart:
      return "restart";
  }
  return "?";
}

bool parseControlRequest(std::string_view line, ControlRequest& out, std::string& error) {
  if (line.size() > kMaxControlRequest) {
    error = "request longer than " + std::to_string(kMaxControlRequest) + " bytes";
    return false;
  }
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (!j.is_object()) {
    error = "not a JSON object";
    return false;
  }
  const auto op = j.find("op");
  if (op == j.end() || !op->is_string()) {
    error = "no \"op\" (a string: list, stop, start or restart)";
    return false;
  }
  const std::string name = op->get<std::string>();
  bool known = false;
  for (ControlOp candidate : {ControlOp::List, ControlOp::Stop, ControlOp::Start, ControlOp::Restart}) {
    if (controlOpName(candidate) == name) {
      out.op = candidate;
      known = true;
    }
  }
  if (!known) {
    error = "unknown op \"" + name + "\" (list, stop, start or restart)";
    return false;
  }
  for (const auto& [key, value] : j.items()) {
    if (key != "op" && key != "node") {
      error = "unknown key \"" + key + "\"";
      return false;
    }
  }
  const auto node = j.find("node");
  if (out.op == ControlOp::List) {
    if (node != j.end()) {
      error = "list takes no \"node\"";
      return false;
    }
    out.node.clear();
    return true;
  }
  if (node == j.end() || !node->is_string() || node->get<std::string>().empty()) {
    error = std::string(controlOpName(out.op)) + " needs \"node\" (a node's name)";
    return false;
  }
  out.node = node->get<std::string>();
  return true;
}

std::filesystem::path controlSocketPath(const std::filesystem::path& state_dir) {
  return state_dir / "up.sock";
}

// One client: reads its request line, hands it to the handler, writes the answer, closes.
class ControlServer::Connection final : public core::IoHandler, public core::Deletable {
 public:
  Connection(ControlServer& server, uint64_t id, core::Fd fd)
      : server_(server), id_(id), fd_(std::move(fd)), timeout_(server.loop_, [this] {
          log::debug("control: a client stalled for {} s: closed",
                     std::chrono::duration_cast<std::chrono::seconds>(kRequestTimeout).count());
          server_.finish(id_);
        }) {
    server_.loop_.add(fd_.get(), EPOLLIN, this);
    timeout_.armAfter(kRequestTimeout);
  }

  void onIoEvents(uint32_t events) override {
    if ((events & EPOLLOUT) != 0 && !out_.empty()) {
      flush();
      return;
    }
    if (waiting_) {
      // A client that hangs up while its node stops or starts: that goes on; nobody to answer.
      if ((events & (EPOLLHUP | EPOLLERR)) != 0) {
        server_.finish(id_);
      }
      return;
    }
    char buf[1024];
    for (;;) {
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && errno == EAGAIN) {
        return;
      }
      if (n <= 0) {
        server_.finish(id_);  // gone before a whole request
        return;
      }
      in_.append(buf, static_cast<size_t>(n));
      const size_t end = in_.find('\n');
      if (end != std::string::npos) {
        in_.resize(end);
        handle();
        return;
      }
      if (in_.size() > kMaxControlRequest) {
        answer(failure("request longer than " + std::to_string(kMaxControlRequest) + " bytes"));
        return;
      }
    }
  }

  // Sends `answer` and closes once it is written.
  void answer(const nlohmann::json& answer) {
    if (answered_) {
      return;
    }
    answered_ = true;
    waiting_ = false;
    out_ = answer.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    timeout_.armAfter(kRequestTimeout);
    flush();
  }

  void shutdown() {
    if (fd_) {
      // Unread bytes at close would reset the connection, and the client could lose the answer
      // to an oversized request: what it has sent so far is read and dropped.
      char buf[4096];
      for (size_t drained = 0; drained < 64 * 1024;) {
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) {
          break;
        }
        drained += static_cast<size_t>(n);
      }
      server_.loop_.remove(fd_.get());
      fd_.reset();
    }
    timeout_.disarm();
  }

 private:
  void handle() {
    if (!in_.empty() && in_.back() == '\r') {
      in_.pop_back();
    }
    ControlRequest request;
    std::string error;
    if (!parseControlRequest(in_, request, error)) {
      log::debug("control: bad request: {}", error);
      answer(failure("bad request: " + error));
      return;
    }
    waiting_ = true;
    timeout_.disarm();  // the handler answers when it is done (bounded by the node's timeouts)
    server_.loop_.modify(fd_.get(), 0, this);
    ControlServer& server = server_;
    const uint64_t id = id_;
    // The connection may be gone when the answer comes: the reply finds it by id.
    server_.handler_(request, [&server, id](const nlohmann::json& a) {
      auto it = server.connections_.find(id);
      if (it != server.connections_.end()) {
        it->second->answer(a);
      }
    });
  }

  void flush() {
    while (!out_.empty()) {
      ssize_t n = ::send(fd_.get(), out_.data(), out_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && errno == EAGAIN) {
        server_.loop_.modify(fd_.get(), EPOLLOUT, this);
        return;
      }
      if (n <= 0) {
        break;  // the client has gone
      }
      out_.erase(0, static_cast<size_t>(n));
    }
    server_.finish(id_);
  }

  ControlServer& server_;
  const uint64_t id_;
  core::Fd fd_;
  core::Timer timeout_;
  std::string in_;
  std::string out_;
  bool waiting_ = false;  // the handler has the request
  bool answered_ = false;
};

ControlServer::ControlServer(core::EventLoop& loop, Handler handler)
    : loop_(loop), handler_(std::move(handler)) {}

ControlServer::~ControlServer() {
  close("fulcrum up is stopping");
}

bool ControlServer::listen(const std::filesystem::path& path, std::string& error) {
  sockaddr_un addr;
  if (!unixAddress(path, addr, error)) {
    return false;
  }
  core::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  ::unlink(path.c_str());  // left by an `up` that died: the site lock says none runs now
  // 0600 from the start: only this user (and root) may stop the site's nodes.
  const mode_t old_mask = ::umask(0177);
  const int bound = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int bind_errno = errno;
  ::umask(old_mask);
  if (bound != 0) {
    error = "bind " + path.string() + ": " + std::strerror(bind_errno);
    return false;
  }
  if (::listen(fd.get(), 16) != 0 || !loop_.add(fd.get(), EPOLLIN, this)) {
    error = "listen " + path.string() + ": " + std::strerror(errno);
    ::unlink(path.c_str());
    return false;
  }
  fd_ = std::move(fd);
  path_ = path;
  return true;
}

void ControlServer::close(const std::string& error) {
  // Out of the map first: an answer written at once would finish() its connection.
  std::map<uint64_t, std::unique_ptr<Connection>> connections = std::move(connections_);
  connections_.clear();
  for (auto& [id, connection] : connections) {
    connection->answer(failure(error));  // best effort: one non-blocking write
    connection->shutdown();
  }
  if (fd_) {
    loop_.remove(fd_.get());
    fd_.reset();
    ::unlink(path_.c_str());
  }
}

void ControlServer::onIoEvents(uint32_t) {
  for (;;) {
    core::Fd client(::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!client) {
      if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      if (errno != EAGAIN) {
        log::warn("control: accept: {}", std::strerror(errno));
      }
      return;
    }
    if (connections_.size() >= kMaxConnections) {
      log::warn("control: {} clients at once: one more refused", kMaxConnections);
      continue;  // closed here
    }
    const uint64_t id = next_id_++;
    connections_.emplace(id, std::make_unique<Connection>(*this, id, std::move(client)));
  }
}

void ControlServer::finish(uint64_t id) {
  auto it = connections_.find(id);
  if (it == connections_.end()) {
    return;
  }
  it->second->shutdown();
  // Called from the connection's own callbacks: freed after this batch of events.
  loop_.deferDelete(std::move(it->second));
  connections_.erase(it);
}

bool askUp(const std::filesystem::path& socket, const nlohmann::json& request,
           std::chrono::milliseconds timeout, nlohmann::json& answer, std::string& error, bool& refused) {
  refused = false;
  sockaddr_un addr;
  if (!unixAddress(socket, addr, error)) {
    return false;
  }
  core::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    refused = errno == ENOENT || errno == ECONNREFUSED;
    error = "connect " + socket.string() + ": " + std::strerror(errno);
    return false;
  }
  const std::string line = request.dump() + "\n";
  if (::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    error = "send to " + socket.string() + ": " + std::strerror(errno);
    return false;
  }
  const auto deadline = Clock::now() + timeout;
  std::string in;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      error = "no answer from `fulcrum up` within " + std::to_string(timeout.count() / 1000) + " s";
      return false;
    }
    pollfd p{fd.get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    if (ready <= 0) {
      continue;  // the deadline check above ends it
    }
    char buf[4096];
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      error = "`fulcrum up` closed the connection without an answer";
      return false;
    }
    in.append(buf, static_cast<size_t>(n));
    const size_t end = in.find('\n');
    if (end != std::string::npos) {
      answer = nlohmann::json::parse(std::string_view(in).substr(0, end), nullptr, false);
      if (!answer.is_object()) {
        error = "`fulcrum up` answered something that is not a JSON object";
        return false;
      }
      return true;
    }
  }
}

}  // namespace fulcrum::site
