#pragma once
// A scripted HTTP/1.1 server on a thread of its own, for the blocking client's tests (the client
// blocks, so the server cannot share its thread). It accepts connections on 127.0.0.1, one after
// another, and runs the test's script on each. Bounded: every wait gives up after a few seconds
// or when the server stops, and the destructor wakes and joins the thread.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/address.h"
#include "core/fd.h"
#include "core/socket.h"

namespace fulcrum::http::testing {

constexpr int kWaitMs = 5000;  // the longest any wait of the server lasts

// Every request the server read, in order (shared by the server thread and the test).
class RequestLog {
 public:
  void add(std::string request) {
    std::lock_guard lock(mutex_);
    requests_.push_back(std::move(request));
  }
  std::vector<std::string> all() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> requests_;
};

// One accepted connection, as the script sees it.
class ServerConn {
 public:
  ServerConn(int fd, int stop_fd, RequestLog& log) : fd_(fd), stop_fd_(stop_fd), log_(log) {}

  // One whole request (head and Content-Length body), or "" when the client closed first, the
  // server stops, or nothing came in time.
  std::string readRequest() {
    for (;;) {
      size_t end = in_.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t length = 0;
        size_t at = in_.find("Content-Length: ");
        if (at != std::string::npos && at < end) {
          length = std::stoul(in_.substr(at + 16));
        }
        if (in_.size() >= end + 4 + length) {
          std::string request = in_.substr(0, end + 4 + length);
          in_.erase(0, request.size());
          log_.add(request);
          return request;
        }
      }
      if (!receive()) {
        return "";
      }
    }
  }
  void write(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return;  // the client is gone: its test sees that
      }
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }
  // Waits until the client closes the connection (or the server stops).
  void waitForClose() {
    while (receive()) {
    }
  }

 private:
  bool receive() {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, kWaitMs) <= 0 || (fds[1].revents & POLLIN) != 0) {
      return false;
    }
    char buffer[4096];
    ssize_t n = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n <= 0) {
      return false;
    }
    in_.append(buffer, static_cast<size_t>(n));
    return true;
  }

  int fd_;
  int stop_fd_;
  RequestLog& log_;
  std::string in_;
};

class ScriptedServer {
 public:
  // The script for connection number `index` (0 first); the connection closes when it returns.
  using Script = std::function<void(ServerConn& conn, int index)>;

  explicit ScriptedServer(Script script) : script_(std::move(script)), stop_(::eventfd(0, EFD_CLOEXEC)) {
    std::string error;
    listener_ =
        core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), core::ListenOptions{false, 16}, error);
    EXPECT_TRUE(listener_) << error;
    address_ = core::localAddress(listener_.get());
    thread_ = std::thread([this] { run(); });
  }
  ~ScriptedServer() {
    uint64_t one = 1;
    EXPECT_EQ(::write(stop_.get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
    thread_.join();
  }

  const core::SocketAddress& address() const { return address_; }
  int accepted() const { return accepted_.load(); }
  std::vector<std::string> requests() const { return log_.all(); }
  // Waits (bounded) until `count` connections have been closed by the server.
  bool waitClosed(int count) {
    std::unique_lock lock(mutex_);
    return closed_cv_.wait_for(lock, std::chrono::milliseconds(kWaitMs), [&] { return closed_ >= count; });
  }

 private:
  void run() {
    for (;;) {
      pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 || (fds[1].revents & POLLIN) != 0) {
        return;
      }
      core::Fd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) {
        continue;
      }
      core::setNoDelay(conn.get());  // each write leaves at once, however a script splits them
      ServerConn scripted(conn.get(), stop_.get(), log_);
      script_(scripted, accepted_++);
      conn.reset();
      std::lock_guard lock(mutex_);
      ++closed_;
      closed_cv_.notify_all();
    }
  }

  Script script_;
  core::Fd stop_;
  core::Fd listener_;
  core::SocketAddress address_;
  std::atomic<int> accepted_{0};
  RequestLog log_;
  std::mutex mutex_;
  std::condition_variable closed_cv_;
  int closed_ = 0;
  std::thread thread_;
};

// A complete response with a Content-Length body.
inline std::string okResponse(std::string_view body, std::string_view extra_headers = "") {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra_headers) + "\r\n" + std::string(body);
}

}  // namespace fulcrum::http::testing
