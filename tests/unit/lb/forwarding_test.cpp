#include "lb/forwarding.h"

#include <gtest/gtest.h>

#include "http/parser.h"

namespace fulcrum::lb {
namespace {

// Heads hold views into the text they were parsed from: callers keep the text alive.
http::RequestHead parseRequest(const std::string& text) {
  http::RequestHead head;
  http::Limits limits;
  auto result = http::parseRequestHead(text, limits, head);
  EXPECT_EQ(result.state, http::ParseState::Complete) << result.reason;
  return head;
}

TEST(ForwardingTest, DropsHopByHopAndAddsForwardingFields) {
  const std::string text =
      "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n"
      "Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n";
  auto head = parseRequest(text);
  std::string out;
  appendUpstreamRequestHead(out, head, ForwardInfo{"192.0.2.7", "http", "127.0.0.1:9001"});
  EXPECT_EQ(out,
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.7\r\n"
            "X-Forwarded-Proto: http\r\nForwarded: for=192.0.2.7;proto=http\r\n\r\n");
}

TEST(ForwardingTest, AppendsToEarlierProxies) {
  const std::string text =
      "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\n"
      "X-Forwarded-Proto: https\r\n\r\n";
  auto head = parseRequest(text);
  std::string out;
  appendUpstreamRequestHead(out, head, ForwardInfo{"2001:db8::1", "http", ""});
  EXPECT_NE(out.find("X-Forwarded-For: 10.0.0.1, 2001:db8::1\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("Forwarded: for=10.0.0.1, for=\"[2001:db8::1]\";proto=http\r\n"), std::string::npos)
      << out;
  // The client's own X-Forwarded-Proto is replaced by what the balancer saw.
  EXPECT_EQ(out.find("X-Forwarded-Proto: https"), std::string::npos) << out;
}

TEST(ForwardingTest, CombinesListsSplitOverLinesInOrder) {
  // RFC 9110 §5.3: a list field sent as several lines is one list, in order. Each earlier
  // proxy's entry is kept, and every Connection line names hop-by-hop fields.
  const std::string text =
      "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: X-A\r\n"
      "Forwarded: for=10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\nForwarded: for=10.0.0.2\r\n"
      "Connection: X-B\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n";
  auto head = parseRequest(text);
  std::string out;
  size_t fields = appendUpstreamRequestHead(out, head, ForwardInfo{"192.0.2.9", "http", ""});
  EXPECT_EQ(out,
            "GET / HTTP/1.1\r\nHost: h\r\nX-C: 3\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, "
            "192.0.2.9\r\nX-Forwarded-Proto: http\r\nForwarded: for=10.0.0.1, for=10.0.0.2, "
            "for=192.0.2.9;proto=http\r\n\r\n");
  EXPECT_EQ(fields, 5u);
}

TEST(ForwardingTest, NormalisesContentLengthAndAddsHostForHttp10) {
  const std::string text = "POST /p HTTP/1.0\r\nContent-Length: 5, 5\r\n\r\n";
  auto head = parseRequest(text);
  std::string out;
  appendUpstreamRequestHead(out, head, ForwardInfo{"127.0.0.1", "http", "127.0.0.1:9001"});
  EXPECT_EQ(out.rfind("POST /p HTTP/1.1\r\n", 0), 0u) << out;
  EXPECT_NE(out.find("\r\nHost: 127.0.0.1:9001\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\r\nContent-Length: 5\r\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("5, 5"), std::string::npos) << out;
}

TEST(ForwardingTest, ConnectionCannotStripHostOrFraming) {
  // "Connection: Transfer-Encoding" once made the chunked body we pass on as is arrive with no
  // framing: the server read it as the next request (smuggling). Host went the same way.
  const std::string text =
      "POST / HTTP/1.1\r\nHost: h\r\nConnection: Transfer-Encoding, Host, Content-Length\r\n"
      "Transfer-Encoding: CHUNKED\r\n\r\n";
  auto head = parseRequest(text);
  ASSERT_EQ(head.body_kind, http::BodyKind::Chunked);
  std::string out;
  size_t fields = appendUpstreamRequestHead(out, head, ForwardInfo{"192.0.2.1", "http", ""});
  EXPECT_EQ(out,
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 192.0.2.1\r\n"
            "X-Forwarded-Proto: http\r\nForwarded: for=192.0.2.1;proto=http\r\n\r\n");
  EXPECT_EQ(fields, 5u);
}

TEST(ForwardingTest, AbsoluteFormGoesUpstreamInOriginFormWithItsAuthorityAsHost) {
  // RFC 9112 §3.2.2: the target's authority wins over a different Host.
  const std::string text = "GET http://a.test:8080/x?y=1 HTTP/1.1\r\nHost: b.test\r\nAccept: */*\r\n\r\n";
  auto head = parseRequest(text);
  std::string out;
  appendUpstreamRequestHead(out, head, ForwardInfo{"192.0.2.1", "http", ""});
  EXPECT_EQ(out.rfind("GET /x?y=1 HTTP/1.1\r\nHost: a.test:8080\r\nAccept: */*\r\n", 0), 0u) << out;
  EXPECT_EQ(out.find("b.test"), std::string::npos) << out;

  const std::string bare = "GET http://a.test?q HTTP/1.0\r\n\r\n";
  auto head10 = parseRequest(bare);
  out.clear();
  appendUpstreamRequestHead(out, head10, ForwardInfo{"192.0.2.1", "http", "127.0.0.1:9001"});
  EXPECT_EQ(out.rfind("GET /?q HTTP/1.1\r\n", 0), 0u) << out;
  EXPECT_NE(out.find("\r\nHost: a.test\r\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("9001"), std::string::npos) << out;
}

TEST(ForwardingTest, KeepsAnEmptyHost) {
  const std::string text = "GET / HTTP/1.1\r\nHost:\r\n\r\n";
  auto head = parseRequest(text);
  std::string out;
  appendUpstreamRequestHead(out, head, ForwardInfo{"192.0.2.1", "http", "127.0.0.1:9001"});
  EXPECT_NE(out.find("\r\nHost: \r\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("9001"), std::string::npos) << out;
}

TEST(ForwardingTest, KeepsUpgradeForTunnels) {
  const std::string text =
      "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: "
      "k\r\n\r\n";
  auto head = parseRequest(text);
  ASSERT_TRUE(head.upgrade);
  std::string out;
  appendUpstreamRequestHead(out, head, ForwardInfo{"127.0.0.1", "http", ""});
  EXPECT_NE(out.find("\r\nUpgrade: websocket\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\r\nConnection: upgrade\r\n"), std::string::npos) << out;
}

TEST(ForwardingTest, DropsUpgradeWithoutConnectionUpgrade) {
  const std::string text = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
  auto head = parseRequest(text);
  std::string out;
  appendUpstreamRequestHead(out, head, ForwardInfo{"127.0.0.1", "http", ""});
  EXPECT_EQ(out.find("Upgrade"), std::string::npos) << out;
}

http::ResponseHead parseResponse(const std::string& text, http::Method method = http::Method::Get) {
  http::ResponseHead head;
  http::Limits limits;
  auto result = http::parseResponseHead(text, limits, method, head);
  EXPECT_EQ(result.state, http::ParseState::Complete) << result.reason;
  return head;
}

TEST(ForwardingTest, ResponseForKeepAliveClient) {
  const std::string text =
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: x\r\n\r\n";
  auto head = parseResponse(text);
  std::string out;
  appendClientResponseHead(out, head, ClientFraming{});
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
}

TEST(ForwardingTest, ResponseClosingAndHttp10) {
  const std::string text = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
  auto head = parseResponse(text);
  std::string out;
  appendClientResponseHead(out, head, ClientFraming{true, false, false});
  EXPECT_EQ(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  out.clear();
  appendClientResponseHead(out, head, ClientFraming{false, true, false});
  EXPECT_EQ(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
}

TEST(ForwardingTest, DechunkDropsTransferEncoding) {
  const std::string text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n";
  auto head = parseResponse(text);
  std::string out;
  appendClientResponseHead(out, head, ClientFraming{true, false, true});
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nX-A: b\r\nConnection: close\r\n\r\n");
}

TEST(ForwardingTest, SwitchingProtocolsKeepsUpgrade) {
  const std::string text =
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
  auto head = parseResponse(text);
  std::string out;
  appendClientResponseHead(out, head, ClientFraming{});
  EXPECT_EQ(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
}

TEST(ForwardingTest, EmptyReasonGetsStandardPhrase) {
  const std::string text = "HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n";
  auto head = parseResponse(text);
  std::string out;
  appendClientResponseHead(out, head, ClientFraming{});
  EXPECT_EQ(out.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u) << out;
}

TEST(ForwardingTest, HopByHopNames) {
  EXPECT_TRUE(isHopByHop("Connection", "", false));
  EXPECT_TRUE(isHopByHop("keep-alive", "", false));
  EXPECT_TRUE(isHopByHop("TE", "", false));
  EXPECT_TRUE(isHopByHop("Upgrade", "", false));
  EXPECT_FALSE(isHopByHop("Upgrade", "", true));
  EXPECT_TRUE(isHopByHop("X-Foo", "close, x-foo", false));
  EXPECT_FALSE(isHopByHop("X-Foobar", "close, x-foo", false));
  EXPECT_FALSE(isHopByHop("Transfer-Encoding", "", false));
}

TEST(ForwardingTest, FindsACookieAmongOthersAndOverSeveralLines) {
  const std::string text =
      "GET / HTTP/1.1\r\nHost: x\r\nCookie: session=abc; FULCRUM_SERVER=web-2 ; theme=dark\r\n"
      "Cookie: other=1;QUOTED=\"web-3\"\r\n\r\n";
  auto head = parseRequest(text);
  EXPECT_EQ(findCookie(head, "FULCRUM_SERVER"), "web-2");
  EXPECT_EQ(findCookie(head, "QUOTED"), "web-3");
  EXPECT_EQ(findCookie(head, "other"), "1");
  EXPECT_EQ(findCookie(head, "fulcrum_server"), "") << "cookie names are case-sensitive";
  EXPECT_EQ(findCookie(head, "SERVER"), "");
  EXPECT_EQ(findCookie(parseRequest("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "FULCRUM_SERVER"), "");
  EXPECT_EQ(findCookie(parseRequest("GET / HTTP/1.1\r\nHost: x\r\nCookie: ;;FULCRUM_SERVER\r\n\r\n"),
                       "FULCRUM_SERVER"),
            "");
}

TEST(ForwardingTest, TheStickyCookieGoesOnTheClientsResponse) {
  http::ResponseHead head;
  head.status = 200;
  head.reason = "OK";
  head.body_kind = http::BodyKind::None;
  std::string out;
  ClientFraming framing;
  framing.sticky_cookie = "FULCRUM_SERVER";
  framing.sticky_server = "web-1";
  appendClientResponseHead(out, head, framing);
  EXPECT_NE(out.find("\r\nSet-Cookie: FULCRUM_SERVER=web-1; Path=/; HttpOnly; SameSite=Lax\r\n"), std::string::npos)
      << out;
}

}  // namespace
}  // namespace fulcrum::lb
