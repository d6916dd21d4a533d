// HttpServer with a handler that answers later (DeferredResponse): pipelined requests wait
// their turn, a client that leaves meanwhile is harmless, and a drain waits for the answer.
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/event_loop.h"
#include "core/socket.h"
#include "http/server.h"

namespace fulcrum::http {
namespace {

using namespace std::chrono_literals;

// Defers every request to /later; answers /now at once; /sync defers and completes inside handle().
class LaterHandler final : public Handler {
 public:
  void handle(const Request& request, Response& response) override {
    std::string path(request.head.path);
    seen.push_back(path);
    if (path == "/later") {
      pending.push_back(request.defer());
      return;
    }
    if (path == "/sync") {
      DeferredResponse d = request.defer();
      Response r;
      r.setBody(200, "text/plain", "sync");
      d.complete(std::move(r));
      return;
    }
    response.setBody(200, "text/plain", path);
  }
  std::vector<std::string> seen;
  std::vector<DeferredResponse> pending;
};

class DeferredTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    core::Fd listener = core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), {}, error);
    ASSERT_TRUE(listener) << error;
    address = core::localAddress(listener.get());
    server = std::make_unique<HttpServer>(loop, std::move(listener), handler, ServerOptions{}, stats);
  }

  int connectClient() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_EQ(::connect(fd, address.sockaddrPtr(), address.sockaddrLen()), 0);
    return fd;
  }

  void spin(int rounds = 20) {
    for (int i = 0; i < rounds; ++i) {
      loop.runOnce(1ms);
    }
  }

  // Everything the server sent so far (non-blocking read after spinning the loop).
  std::string readAvailable(int fd) {
    spin();
    std::string out;
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) {
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  static Response text(std::string body) {
    Response r;
    r.setBody(200, "text/plain", std::move(body));
    return r;
  }

  core::EventLoop loop;
  LaterHandler handler;
  ServerStats stats;
  core::SocketAddress address;
  std::unique_ptr<HttpServer> server;
};

TEST_F(DeferredTest, PipelinedRequestsWaitForTheDeferredAnswer) {
  int fd = connectClient();
  std::string two = "GET /later HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, two.data(), two.size(), 0), static_cast<ssize_t>(two.size()));
  EXPECT_EQ(readAvailable(fd), "");
  ASSERT_EQ(handler.pending.size(), 1u);
  EXPECT_EQ(handler.seen, std::vector<std::string>{"/later"});  // the second is not parsed yet
  EXPECT_TRUE(handler.pending[0].wanted());

  handler.pending[0].complete(text("first answer"));
  EXPECT_FALSE(handler.pending[0].wanted());
  std::string out = readAvailable(fd);
  size_t first = out.find("first answer");
  size_t second = out.find("/second");
  ASSERT_NE(first, std::string::npos) << out;
  ASSERT_NE(second, std::string::npos) << out;
  EXPECT_LT(first, second);
  // A second completion of the same answer does nothing.
  handler.pending[0].complete(text("again"));
  EXPECT_EQ(readAvailable(fd), "");
  ::close(fd);
}

TEST_F(DeferredTest, CompletingInsideHandleAnswersAtOnce) {
  int fd = connectClient();
  std::string req = "GET /sync HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  std::string out = readAvailable(fd);
  EXPECT_NE(out.find("\r\n\r\nsync"), std::string::npos) << out;
  EXPECT_NE(out.find("/after"), std::string::npos) << out;
  ::close(fd);
}

TEST_F(DeferredTest, ClientGoneBeforeTheAnswerIsHarmless) {
  int fd = connectClient();
  std::string req = "GET /later HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  spin();
  ASSERT_EQ(handler.pending.size(), 1u);
  // A reset (not a polite FIN) so the server sees EPOLLHUP while it is not reading.
  linger hard{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  ::close(fd);
  spin();
  EXPECT_EQ(server->connectionCount(), 0u);
  EXPECT_FALSE(handler.pending[0].wanted());
  handler.pending[0].complete(text("nobody listens"));  // must not touch the freed connection
  spin();
}

TEST_F(DeferredTest, DrainWaitsForThePendingAnswer) {
  int fd = connectClient();
  std::string req = "GET /later HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  spin();
  ASSERT_EQ(handler.pending.size(), 1u);
  bool idle = false;
  server->drain([&] { idle = true; });
  spin();
  EXPECT_FALSE(idle);
  EXPECT_EQ(server->connectionCount(), 1u);
  handler.pending[0].complete(text("late but delivered"));
  std::string out = readAvailable(fd);
  EXPECT_NE(out.find("late but delivered"), std::string::npos) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos) << out;
  ::close(fd);  // the server lingers until the client has read and closed
  spin();
  EXPECT_TRUE(idle);
}

}  // namespace
}  // namespace fulcrum::http
