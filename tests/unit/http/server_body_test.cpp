// HttpServer and the body limits routes declare: refused from the head when the declared length
// is too long (no 100 Continue, no body read), chunked bodies refused once they pass the limit,
// decoded in place (framing never buffered beside the body), the server's limit as the ceiling.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "core/event_loop.h"
#include "core/socket.h"
#include "http/server.h"

namespace fulcrum::http {
namespace {

using namespace std::chrono_literals;

// /small takes 16 bytes, /none none, anything else what the server allows. Echoes body sizes.
class LimitedHandler final : public Handler {
 public:
  uint64_t maxBodyBytes(const RequestHead& head) const override {
    if (head.path == "/small") {
      return 16;
    }
    if (head.path == "/none") {
      return 0;
    }
    return kServerBodyLimit;
  }
  void handle(const Request& request, Response& response) override {
    bodies.emplace_back(request.body);
    response.setBody(200, "text/plain", "got " + std::to_string(request.body.size()));
  }
  std::vector<std::string> bodies;
};

class ServerBodyTest : public ::testing::Test {
 protected:
  void start(ServerOptions options = {}) {
    std::string error;
    core::Fd listener = core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), {}, error);
    ASSERT_TRUE(listener) << error;
    address = core::localAddress(listener.get());
    server = std::make_unique<HttpServer>(loop, std::move(listener), handler, options, stats);
  }

  int connectClient() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;  // small writes leave at once (Nagle would hold them for the server's ACK)
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    EXPECT_EQ(::connect(fd, address.sockaddrPtr(), address.sockaddrLen()), 0);
    return fd;
  }

  // Runs the loop until `done` holds, at most ~2 s.
  template <typename Done>
  void spinUntil(Done done) {
    for (int i = 0; i < 2000 && !done(); ++i) {
      loop.runOnce(1ms);
    }
  }

  void send(int fd, const std::string& bytes) {
    ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }

  // Runs the loop until the server has sent something (or, when `expect_data` is false, for
  // 20 rounds), then returns all it sent so far; `closed` says whether it half-closed after.
  std::string readAvailable(int fd, bool* closed = nullptr, bool expect_data = true) {
    auto readable = [fd] {
      pollfd p{fd, POLLIN, 0};
      return ::poll(&p, 1, 0) == 1;
    };
    if (expect_data) {
      spinUntil(readable);
    }
    for (int i = 0; i < 20; ++i) {
      loop.runOnce(1ms);
    }
    std::string out;
    char buf[4096];
    bool eof = false;
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0) {
        eof = true;
      }
      if (n <= 0) {
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    if (closed != nullptr) {
      *closed = eof;
    }
    return out;
  }

  core::EventLoop loop;
  LimitedHandler handler;
  ServerStats stats;
  core::SocketAddress address;
  std::unique_ptr<HttpServer> server;
};

TEST_F(ServerBodyTest, LongerDeclaredLengthIs413InsteadOf100Continue) {
  start();
  int fd = connectClient();
  send(fd, "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\nExpect: 100-continue\r\n\r\n");
  bool closed = false;
  std::string out = readAvailable(fd, &closed);
  EXPECT_EQ(out.rfind("HTTP/1.1 413 ", 0), 0u) << out;
  EXPECT_EQ(out.find("100 Continue"), std::string::npos) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos) << out;
  EXPECT_TRUE(closed);
  EXPECT_TRUE(handler.bodies.empty());
  ::close(fd);
}

TEST_F(ServerBodyTest, AcceptedLengthGets100ContinueAndTheBody) {
  start();
  int fd = connectClient();
  send(fd, "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_EQ(readAvailable(fd), "HTTP/1.1 100 Continue\r\n\r\n");
  send(fd, "0123456789abcdef");
  std::string out = readAvailable(fd);
  EXPECT_EQ(out.rfind("HTTP/1.1 200 ", 0), 0u) << out;
  ASSERT_EQ(handler.bodies.size(), 1u);
  EXPECT_EQ(handler.bodies[0], "0123456789abcdef");
  ::close(fd);
}

TEST_F(ServerBodyTest, ChunkedBodyIsRefusedOnceItPassesTheLimit) {
  start();
  int fd = connectClient();
  send(fd, "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n");
  EXPECT_EQ(readAvailable(fd, nullptr, false), "");  // 10 bytes: within the limit, waiting for more
  // The next chunk would make 20: refused on its size line, before its data.
  send(fd, "a\r\n");
  bool closed = false;
  std::string out = readAvailable(fd, &closed);
  EXPECT_EQ(out.rfind("HTTP/1.1 413 ", 0), 0u) << out;
  EXPECT_TRUE(closed);
  EXPECT_TRUE(handler.bodies.empty());
  ::close(fd);
}

TEST_F(ServerBodyTest, RouteWithoutBodyTakesEmptyBodiesOnly) {
  start();
  int fd = connectClient();
  send(fd,
       "POST /none HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
       "POST /none HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  std::string out = readAvailable(fd);
  EXPECT_EQ(out.find("HTTP/1.1 200 "), 0u) << out;
  EXPECT_NE(out.find("HTTP/1.1 200 ", 1), std::string::npos) << out;
  // Refused when the first payload byte arrives (a route taking n > 0 bytes refuses a chunk
  // longer than what is left on its size line).
  send(fd, "GET /none HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n");
  EXPECT_EQ(readAvailable(fd, nullptr, false), "");
  send(fd, "x");
  bool closed = false;
  out = readAvailable(fd, &closed);
  EXPECT_EQ(out.rfind("HTTP/1.1 413 ", 0), 0u) << out;
  EXPECT_TRUE(closed);
  EXPECT_EQ(handler.bodies.size(), 2u);
  ::close(fd);

  fd = connectClient();
  send(fd, "GET /none HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n");
  out = readAvailable(fd, &closed);
  EXPECT_EQ(out.rfind("HTTP/1.1 413 ", 0), 0u) << out;
  EXPECT_TRUE(closed);
  ::close(fd);
}

TEST_F(ServerBodyTest, ServerLimitIsTheCeiling) {
  ServerOptions options;
  options.limits.max_body_bytes = 8;
  start(options);
  int fd = connectClient();
  send(fd, "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n");  // the route would take 16
  std::string out = readAvailable(fd);
  EXPECT_EQ(out.rfind("HTTP/1.1 413 ", 0), 0u) << out;
  ::close(fd);
}

// 60 KiB of payload in 1-byte chunks is 360 KiB of framing: decoded in place, only the payload
// is kept, so a route taking 64 KiB accepts it however heavy the framing.
TEST_F(ServerBodyTest, ChunkFramingIsNotBufferedBesideTheBody) {
  ServerOptions options;
  options.limits.max_body_bytes = 64 * 1024;
  start(options);
  int fd = connectClient();
  std::string payload;
  std::string framed = "POST /any HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 60 * 1024; ++i) {
    char c = static_cast<char>('a' + i % 26);
    payload += c;
    framed += "1\r\n";
    framed += c;
    framed += "\r\n";
  }
  framed += "0\r\nX-Trailer: t\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n";
  size_t sent = 0;
  std::string out;
  while (sent < framed.size()) {
    ssize_t n = ::send(fd, framed.data() + sent, framed.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    }
    out += readAvailable(fd, nullptr, false);
    ASSERT_EQ(out.find("413"), std::string::npos) << out;
  }
  spinUntil([&] { return handler.bodies.size() == 2; });
  out += readAvailable(fd);
  ASSERT_EQ(handler.bodies.size(), 2u) << out;
  EXPECT_EQ(handler.bodies[0], payload);
  EXPECT_EQ(handler.bodies[1], "");
  ::close(fd);
}

// A body split at every byte still arrives whole, and the request after it is answered.
TEST_F(ServerBodyTest, ChunkedBodyInOneBytePieces) {
  start();
  int fd = connectClient();
  std::string framed =
      "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3;ext=1\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n";
  for (char c : framed) {
    send(fd, std::string(1, c));
    loop.runOnce(0ms);
  }
  spinUntil([&] { return handler.bodies.size() == 2; });
  ASSERT_EQ(handler.bodies.size(), 2u);
  EXPECT_EQ(handler.bodies[0], "abcdefgh");
  ::close(fd);
}

}  // namespace
}  // namespace fulcrum::http
