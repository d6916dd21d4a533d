// BlockingClient against a scripted server on a thread: keep-alive, the replay rule, bodies,
// deadlines. Real sockets on loopback; the only real-time wait is the deadline test's 200 ms.
#include "http/client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "scripted_server.h"

namespace fulcrum::http {
namespace {

using std::chrono::milliseconds;
using testing::okResponse;
using testing::ScriptedServer;
using testing::ServerConn;
using SteadyClock = std::chrono::steady_clock;

core::TimePoint in(milliseconds ms) {
  return SteadyClock::now() + ms;
}

ClientRequest get(std::string_view path, Replay replay = Replay::Safe) {
  ClientRequest request;
  request.path = path;
  request.replay = replay;
  return request;
}

ClientRequest post(std::string_view path, std::string_view body, Replay replay) {
  ClientRequest request;
  request.method = Method::Post;
  request.path = path;
  request.body = body;
  request.replay = replay;
  return request;
}

// Answers every request on every connection with its own target as the body.
void echoTargets(ServerConn& conn, int) {
  for (std::string request = conn.readRequest(); !request.empty(); request = conn.readRequest()) {
    std::string target = request.substr(request.find(' ') + 1);
    conn.write(okResponse(target.substr(0, target.find(' '))));
  }
}

TEST(BlockingClientTest, KeepAliveReusesOneConnection) {
  ScriptedServer server(echoTargets);
  BlockingClient client(server.address());
  for (const char* path : {"/a", "/b", "/c"}) {
    ClientOutcome got = client.exchange(get(path), in(milliseconds(3000)));
    ASSERT_TRUE(got.response.ok) << got.response.error;
    EXPECT_EQ(got.response.value.status, 200);
    EXPECT_EQ(got.response.value.body, path);
  }
  ClientOutcome posted =
      client.exchange(post("/p", "{\"k\":1}", Replay::OnlyIfUnsent), in(milliseconds(3000)));
  ASSERT_TRUE(posted.response.ok) << posted.response.error;
  EXPECT_TRUE(client.connected());
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_EQ(client.connectionsOpened(), 1u);
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 4u);
  EXPECT_TRUE(requests[0].starts_with("GET /a HTTP/1.1\r\nHost: " + server.address().toString() + "\r\n"))
      << requests[0];
  EXPECT_EQ(requests[0].find("Connection:"), std::string::npos);
  EXPECT_NE(requests[3].find("Content-Type: application/json\r\nContent-Length: 7\r\n"), std::string::npos)
      << requests[3];
  EXPECT_TRUE(requests[3].ends_with("\r\n\r\n{\"k\":1}"));
}

TEST(BlockingClientTest, ConnectionCloseFromTheServerIsHonoured) {
  ScriptedServer server([](ServerConn& conn, int) {
    conn.readRequest();
    conn.write(okResponse("bye", "Connection: close\r\n"));
  });
  BlockingClient client(server.address());
  for (int i = 0; i < 2; ++i) {
    ClientOutcome got = client.exchange(get("/"), in(milliseconds(3000)));
    ASSERT_TRUE(got.response.ok) << got.response.error;
    EXPECT_EQ(got.response.value.body, "bye");
    EXPECT_FALSE(client.connected());
  }
  EXPECT_EQ(server.accepted(), 2);
}

TEST(BlockingClientTest, IdleConnectionClosedByTheServerIsReplacedBeforeSending) {
  // The server answers one request per connection and then closes, as an idle timeout would.
  ScriptedServer server([](ServerConn& conn, int index) {
    conn.readRequest();
    conn.write(okResponse("conn " + std::to_string(index)));
  });
  BlockingClient client(server.address());
  ASSERT_TRUE(client.exchange(get("/"), in(milliseconds(3000))).response.ok);
  ASSERT_TRUE(server.waitClosed(1));
  // Even a request that must never be sent twice goes out: nothing of it went to the dead one.
  ClientOutcome got = client.exchange(post("/once", "{}", Replay::OnlyIfUnsent), in(milliseconds(3000)));
  ASSERT_TRUE(got.response.ok) << got.response.error;
  EXPECT_EQ(got.response.value.body, "conn 1");
  EXPECT_EQ(server.accepted(), 2);
  EXPECT_EQ(server.requests().size(), 2u);
}

// The first connection answers one request, then reads the next and closes without a word: the
// close raced the request (an idle timeout firing as it arrived).
void closeOnSecondRequest(ServerConn& conn, int index) {
  if (index == 0) {
    conn.readRequest();
    conn.write(okResponse("first"));
    conn.readRequest();
    return;
  }
  echoTargets(conn, index);
}

TEST(BlockingClientTest, SafeRequestIsSentAgainWhenTheReusedConnectionDies) {
  ScriptedServer server(closeOnSecondRequest);
  BlockingClient client(server.address());
  ASSERT_TRUE(client.exchange(get("/"), in(milliseconds(3000))).response.ok);
  ClientOutcome got = client.exchange(post("/read", "{}", Replay::Safe), in(milliseconds(3000)));
  ASSERT_TRUE(got.response.ok) << got.response.error;
  EXPECT_EQ(got.response.value.body, "/read");
  EXPECT_EQ(server.accepted(), 2);
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_TRUE(requests[1].starts_with("POST /read "));
  EXPECT_TRUE(requests[2].starts_with("POST /read "));
}

TEST(BlockingClientTest, UnsafeRequestIsNeverSentTwice) {
  ScriptedServer server(closeOnSecondRequest);
  BlockingClient client(server.address());
  ASSERT_TRUE(client.exchange(get("/"), in(milliseconds(3000))).response.ok);
  ClientOutcome got = client.exchange(post("/write", "{}", Replay::OnlyIfUnsent), in(milliseconds(3000)));
  EXPECT_FALSE(got.response.ok);
  EXPECT_TRUE(got.request_sent);
  EXPECT_NE(got.response.error.find("connection closed before a response"), std::string::npos)
      << got.response.error;
  ASSERT_TRUE(server.waitClosed(1));
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_EQ(server.requests().size(), 2u);
  EXPECT_FALSE(client.connected());
  // The next exchange starts on a new connection.
  ClientOutcome next = client.exchange(get("/next"), in(milliseconds(3000)));
  ASSERT_TRUE(next.response.ok) << next.response.error;
  EXPECT_EQ(server.accepted(), 2);
}

TEST(BlockingClientTest, FreshConnectionClosedIsNotRetried) {
  ScriptedServer server([](ServerConn& conn, int) { conn.readRequest(); });
  BlockingClient client(server.address());
  ClientOutcome got = client.exchange(get("/", Replay::Safe), in(milliseconds(3000)));
  EXPECT_FALSE(got.response.ok);
  EXPECT_TRUE(got.request_sent);
  ASSERT_TRUE(server.waitClosed(1));
  EXPECT_EQ(server.accepted(), 1);
}

TEST(BlockingClientTest, ChunkedBodyInPieces) {
  ScriptedServer server([](ServerConn& conn, int) {
    for (std::string request = conn.readRequest(); !request.empty(); request = conn.readRequest()) {
      conn.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
      conn.write("5\r\nhello\r\n");
      conn.write("6\r\n, worl\r\n1\r\nd\r\n");
      conn.write("0\r\n\r\n");
    }
  });
  BlockingClient client(server.address());
  for (int i = 0; i < 2; ++i) {
    ClientOutcome got = client.exchange(get("/"), in(milliseconds(3000)));
    ASSERT_TRUE(got.response.ok) << got.response.error;
    EXPECT_EQ(got.response.value.body, "hello, world");
  }
  EXPECT_EQ(server.accepted(), 1);
}

TEST(BlockingClientTest, DeadlineHoldsAgainstASilentServer) {
  ScriptedServer server([](ServerConn& conn, int) {
    conn.readRequest();
    conn.waitForClose();
  });
  BlockingClient client(server.address());
  const auto start = SteadyClock::now();
  ClientOutcome got = client.exchange(get("/"), in(milliseconds(200)));
  const auto took = SteadyClock::now() - start;
  EXPECT_FALSE(got.response.ok);
  EXPECT_TRUE(got.request_sent);
  EXPECT_NE(got.response.error.find("timeout waiting for a response from"), std::string::npos)
      << got.response.error;
  EXPECT_GE(took, milliseconds(200));
  EXPECT_LT(took, milliseconds(2000));
  EXPECT_FALSE(client.connected());  // whatever it answers later belongs to no exchange
  // A deadline already passed sends nothing.
  ClientOutcome late = client.exchange(get("/"), SteadyClock::now());
  EXPECT_FALSE(late.response.ok);
  EXPECT_FALSE(late.request_sent);
}

TEST(BlockingClientTest, BodyOverTheCapFails) {
  ScriptedServer server([](ServerConn& conn, int index) {
    conn.readRequest();
    if (index == 0) {
      conn.write(okResponse(std::string(4096, 'x')));
    } else {
      conn.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + std::string(1024, 'y') +
                 "\r\n400\r\n" + std::string(1024, 'y') + "\r\n0\r\n\r\n");
    }
    conn.waitForClose();
  });
  ClientOptions options;
  options.max_body_bytes = 1500;
  BlockingClient client(server.address(), options);
  for (int i = 0; i < 2; ++i) {
    ClientOutcome got = client.exchange(get("/"), in(milliseconds(3000)));
    EXPECT_FALSE(got.response.ok);
    EXPECT_NE(got.response.error.find("too large (over 1500 bytes)"), std::string::npos)
        << got.response.error;
    EXPECT_FALSE(client.connected());
  }
  EXPECT_EQ(server.accepted(), 2);
}

TEST(BlockingClientTest, FetchOnceAsksForClose) {
  ScriptedServer server(echoTargets);
  ClientRequest request = get("/healthz");
  request.headers = "Authorization: Bearer t\r\n";
  ClientOutcome got = fetchOnce(server.address(), request, in(milliseconds(3000)));
  ASSERT_TRUE(got.response.ok) << got.response.error;
  EXPECT_EQ(got.response.value.body, "/healthz");
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_TRUE(requests[0].ends_with("Authorization: Bearer t\r\nConnection: close\r\n\r\n")) << requests[0];
}

TEST(BlockingClientTest, RefusedConnectionFailsAtOnce) {
  std::string error;
  core::Fd bound =
      core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), core::ListenOptions{false, 1}, error);
  ASSERT_TRUE(bound) << error;
  const core::SocketAddress address = core::localAddress(bound.get());
  bound.reset();  // nobody listens there now
  BlockingClient client(address);
  ClientOutcome got = client.exchange(get("/"), in(milliseconds(3000)));
  EXPECT_FALSE(got.response.ok);
  EXPECT_FALSE(got.request_sent);
  EXPECT_NE(got.response.error.find("Connection refused"), std::string::npos) << got.response.error;
}

}  // namespace
}  // namespace fulcrum::http
