#pragma once
// A tiny HTTP server for health-check tests, on the same EventLoop as the checker (no threads):
// it listens on 127.0.0.1 port 0 and answers each request the way a test asks it to.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/address.h"
#include "core/buffer.h"
#include "core/event_loop.h"
#include "core/fd.h"
#include "core/socket.h"

namespace fulcrum::lb::testing {

class TestServer final : public core::IoHandler {
 public:
  enum class Mode {
    Respond,            // reads the request head, sends the response, closes
    CloseAfterRequest,  // reads the request head, closes without a word
    CloseAtOnce,        // closes as soon as the connection is accepted
    Silent,             // accepts and reads, never answers, keeps the connection open
  };

  explicit TestServer(core::EventLoop& loop) : loop_(loop) {
    EXPECT_TRUE(listen(*core::SocketAddress::parse("127.0.0.1:0")));
  }
  ~TestServer() override {
    stopListening();
    for (auto& conn : conns_) {
      conn->close();
    }
  }

  const core::SocketAddress& address() const { return address_; }
  void setMode(Mode mode) { mode_ = mode; }
  void setStatus(int status) {
    mode_ = Mode::Respond;
    response_ =
        "HTTP/1.1 " + std::to_string(status) + " Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  }
  void setRawResponse(std::string response) {
    mode_ = Mode::Respond;
    response_ = std::move(response);
  }

  // Closes the listening socket: new connections to the port are refused.
  void stopListening() {
    if (listener_) {
      loop_.remove(listener_.get());
      listener_.reset();
    }
  }
  // Listens again on the same port.
  bool listenAgain() { return listen(address_); }

  int accepted() const { return accepted_; }
  int requests() const { return requests_; }  // request heads received
  int clientCloses() const { return client_closes_; }
  const std::string& lastRequest() const { return last_request_; }

  void onIoEvents(uint32_t) override {
    for (;;) {
      core::Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        return;
      }
      ++accepted_;
      if (mode_ == Mode::CloseAtOnce) {
        continue;  // fd closes here
      }
      conns_.push_back(std::make_unique<Conn>(*this, std::move(fd)));
    }
  }

 private:
  // Kept until the server is destroyed, so a closed connection never dangles in the loop.
  struct Conn final : core::IoHandler {
    Conn(TestServer& server, core::Fd socket) : owner(server), fd(std::move(socket)) {
      owner.loop_.add(fd.get(), EPOLLIN, this);
    }
    void close() {
      if (fd) {
        owner.loop_.remove(fd.get());
        fd.reset();
      }
    }
    void onIoEvents(uint32_t) override {
      if (!fd) {
        return;
      }
      ssize_t n = in.readFrom(fd.get(), 65536);
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        ++owner.client_closes_;
        close();
        return;
      }
      if (answered || in.view().find("\r\n\r\n") == std::string_view::npos) {
        return;
      }
      answered = true;
      ++owner.requests_;
      owner.last_request_ = std::string(in.view());
      if (owner.mode_ == Mode::Respond) {
        ssize_t w = ::send(fd.get(), owner.response_.data(), owner.response_.size(), MSG_NOSIGNAL);
        EXPECT_EQ(w, static_cast<ssize_t>(owner.response_.size()));
        close();
      } else if (owner.mode_ == Mode::CloseAfterRequest) {
        close();
      }  // Silent: keep reading so a close by the checker is seen
    }

    TestServer& owner;
    core::Fd fd;
    core::Buffer in;
    bool answered = false;
  };

  bool listen(const core::SocketAddress& address) {
    std::string error;
    listener_ = core::listenTcp(address, core::ListenOptions{.reuse_port = false, .backlog = 64}, error);
    if (!listener_) {
      ADD_FAILURE() << error;
      return false;
    }
    address_ = core::localAddress(listener_.get());
    return loop_.add(listener_.get(), EPOLLIN, this);
  }

  core::EventLoop& loop_;
  core::Fd listener_;
  core::SocketAddress address_;
  Mode mode_ = Mode::Respond;
  std::string response_ = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  std::vector<std::unique_ptr<Conn>> conns_;
  int accepted_ = 0;
  int requests_ = 0;
  int client_closes_ = 0;
  std::string last_request_;
};

// Runs the loop until `done()` holds or a generous real-time deadline passes (then false).
template <typename Predicate>
bool runUntil(core::EventLoop& loop, Predicate done,
              std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    loop.runOnce(std::chrono::milliseconds(5));
  }
  return true;
}

// A loopback listener on a free port; `bound` learns the port.
inline core::Fd listenLoopback(core::SocketAddress& bound) {
  std::string error;
  core::Fd fd =
      core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), core::ListenOptions{false}, error);
  EXPECT_TRUE(fd.valid()) << error;
  bound = core::localAddress(fd.get());
  return fd;
}

// A server the test drives by hand: accept(), then read and write its connections directly.
struct HandServer {
  HandServer() { fd = listenLoopback(address); }
  // Accepts a waiting connection, or returns an invalid Fd.
  core::Fd accept() { return core::Fd(::accept4(fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)); }
  core::Fd fd;
  core::SocketAddress address;
};

// A port with nothing listening: bound, learned, closed.
inline core::SocketAddress closedPort() {
  std::string error;
  core::Fd fd = core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"),
                                core::ListenOptions{.reuse_port = false, .backlog = 1}, error);
  EXPECT_TRUE(fd.valid()) << error;
  return core::localAddress(fd.get());
}

}  // namespace fulcrum::lb::testing
