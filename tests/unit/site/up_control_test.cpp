// The control socket of `fulcrum up`: its request parser, and the server on a real event loop
// (a unix socket in a temporary directory; the loop is turned until the answer is there).
#include "site/up_control.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace fulcrum::site {
namespace {

ControlRequest parsed(std::string_view line) {
  ControlRequest request;
  std::string error;
  EXPECT_TRUE(parseControlRequest(line, request, error)) << line << ": " << error;
  return request;
}

std::string refused(std::string_view line) {
  ControlRequest request;
  std::string error;
  EXPECT_FALSE(parseControlRequest(line, request, error)) << line;
  return error;
}

TEST(ControlRequestTest, ParsesEachOp) {
  EXPECT_EQ(parsed(R"({"op":"list"})").op, ControlOp::List);
  ControlRequest stop = parsed(R"({"op": "stop", "node": "db-1"})");
  EXPECT_EQ(stop.op, ControlOp::Stop);
  EXPECT_EQ(stop.node, "db-1");
  EXPECT_EQ(parsed(R"({"node":"web-2","op":"start"})").op, ControlOp::Start);
  EXPECT_EQ(parsed(R"({"op":"restart","node":"lb-1"})").node, "lb-1");
  for (ControlOp op : {ControlOp::List, ControlOp::Stop, ControlOp::Start, ControlOp::Restart}) {
    ControlRequest request;
    std::string error;
    std::string line = std::string(R"({"op":")") + std::string(controlOpName(op)) + "\"" +
                       (op == ControlOp::List ? "" : R"(,"node":"x")") + "}";
    EXPECT_TRUE(parseControlRequest(line, request, error)) << error;
    EXPECT_EQ(request.op, op);
  }
}

TEST(ControlRequestTest, RefusesAnythingElseSayingWhy) {
  EXPECT_EQ(refused(""), "not a JSON object");
  EXPECT_EQ(refused("stop db-1"), "not a JSON object");
  EXPECT_EQ(refused("[1,2]"), "not a JSON object");
  EXPECT_EQ(refused(R"({"op":"stop","node":"db-1")"), "not a JSON object");  // cut short
  EXPECT_NE(refused(R"({"node":"db-1"})").find("no \"op\""), std::string::npos);
  EXPECT_NE(refused(R"({"op":7})").find("no \"op\""), std::string::npos);
  EXPECT_EQ(refused(R"({"op":"kill","node":"db-1"})"), "unknown op \"kill\" (list, stop, start or restart)");
  EXPECT_EQ(refused(R"({"op":"stop"})"), "stop needs \"node\" (a node's name)");
  EXPECT_EQ(refused(R"({"op":"stop","node":""})"), "stop needs \"node\" (a node's name)");
  EXPECT_EQ(refused(R"({"op":"start","node":["db-1"]})"), "start needs \"node\" (a node's name)");
  EXPECT_EQ(refused(R"({"op":"list","node":"db-1"})"), "list takes no \"node\"");
  EXPECT_EQ(refused(R"({"op":"stop","node":"db-1","force":true})"), "unknown key \"force\"");
  const std::string huge = R"({"op":"stop","node":")" + std::string(kMaxControlRequest, 'x') + "\"}";
  EXPECT_NE(refused(huge).find("longer than"), std::string::npos);
}

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/fulcrum-control-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    path_ = controlSocketPath(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  int connectClient() {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0)
        << std::strerror(errno);
    return fd;
  }

  // Turns the loop until the server has answered and closed `fd`: what it wrote.
  std::string answerOn(core::EventLoop& loop, int fd) {
    std::string in;
    for (int turns = 0; turns < 200; ++turns) {
      loop.runOnce(std::chrono::milliseconds(10));
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
        in.append(buf, static_cast<size_t>(n));
      }
      if (n == 0) {
        break;
      }
    }
    ::close(fd);
    return in;
  }

  std::filesystem::path dir_;
  std::filesystem::path path_;
};

TEST_F(ControlServerTest, AnswersRequestsNowOrLaterAndRefusesGarbage) {
  core::EventLoop loop;
  std::vector<ControlReply> later;
  ControlServer server(loop, [&](const ControlRequest& request, ControlReply reply) {
    if (request.op == ControlOp::List) {
      reply({{"ok", true}, {"nodes", nlohmann::json::array()}});
    } else {
      later.push_back(std::move(reply));
    }
  });
  std::filesystem::create_directories(dir_);
  { std::ofstream(path_) << "stale"; }  // left by an `up` that died
  std::string error;
  ASSERT_TRUE(server.listen(path_, error)) << error;
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  int fd = connectClient();
  ASSERT_EQ(::send(fd, "{\"op\":\"list\"}\n", 14, 0), 14);
  EXPECT_EQ(nlohmann::json::parse(answerOn(loop, fd))["ok"], true);

  fd = connectClient();
  ASSERT_GT(::send(fd, "GET / HTTP/1.1\r\n\r\n", 18, 0), 0);
  auto bad = nlohmann::json::parse(answerOn(loop, fd));
  EXPECT_EQ(bad["ok"], false);
  EXPECT_EQ(bad["error"], "bad request: not a JSON object");

  fd = connectClient();
  const std::string endless(kMaxControlRequest + 100, 'x');  // no newline
  ASSERT_GT(::send(fd, endless.data(), endless.size(), 0), 0);
  EXPECT_NE(answerOn(loop, fd).find("longer than"), std::string::npos);

  // A stop answered later; a client that hangs up meanwhile costs nothing.
  int gone = connectClient();
  ASSERT_GT(::send(gone, "{\"op\":\"stop\",\"node\":\"a\"}\n", 25, 0), 0);
  fd = connectClient();
  ASSERT_GT(::send(fd, "{\"op\":\"stop\",\"node\":\"b\"}\n", 25, 0), 0);
  for (int turns = 0; turns < 100 && later.size() < 2; ++turns) {
    loop.runOnce(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(later.size(), 2u);
  ::close(gone);
  loop.runOnce(std::chrono::milliseconds(10));
  later[0]({{"ok", true}, {"message", "stopped a"}});
  later[1]({{"ok", true}, {"message", "stopped b"}});
  EXPECT_EQ(nlohmann::json::parse(answerOn(loop, fd))["message"], "stopped b");

  // At up's exit: a request still waiting is answered, and the socket is gone.
  fd = connectClient();
  ASSERT_GT(::send(fd, "{\"op\":\"start\",\"node\":\"c\"}\n", 26, 0), 0);
  for (int turns = 0; turns < 100 && later.size() < 3; ++turns) {
    loop.runOnce(std::chrono::milliseconds(10));
  }
  server.close("fulcrum up is stopping");
  later[2]({{"ok", true}});  // too late: nothing happens
  EXPECT_EQ(nlohmann::json::parse(answerOn(loop, fd))["error"], "fulcrum up is stopping");
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(ControlServerTest, ClientSaysWhenNoUpListens) {
  nlohmann::json answer;
  std::string error;
  bool refused = false;
  EXPECT_FALSE(askUp(path_, {{"op", "list"}}, std::chrono::milliseconds(100), answer, error, refused));
  EXPECT_TRUE(refused);
  EXPECT_NE(error.find("No such file"), std::string::npos) << error;
}

}  // namespace
}  // namespace fulcrum::site
