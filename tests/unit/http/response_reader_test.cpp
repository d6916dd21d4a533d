// ResponseReader: one response out of bytes however they are split.
#include "http/response_reader.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace fulcrum::http {
namespace {

using State = ResponseReader::State;

// Feeds `wire` in pieces of `piece` bytes as a connection would (unused bytes stay in front of
// the next piece); returns the body read.
std::string feed(ResponseReader& reader, std::string_view wire, size_t piece, std::string* left = nullptr) {
  std::string in;
  std::string body;
  for (size_t at = 0; at < wire.size() && reader.state() != State::Done && reader.state() != State::Failed;
       at += piece) {
    in.append(wire.substr(at, piece));
    in.erase(0, reader.read(in, body));
  }
  if (left != nullptr) {
    *left = in;
  }
  return body;
}

TEST(ResponseReaderTest, ContentLengthWholeOrByteByByte) {
  const std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT";
  for (size_t piece : {wire.size(), size_t{1}, size_t{7}}) {
    ResponseReader reader;
    reader.reset(Method::Get, 0);
    std::string left;
    EXPECT_EQ(feed(reader, wire, piece, &left), "hello") << piece;
    EXPECT_EQ(reader.state(), State::Done);
    EXPECT_EQ(reader.status(), 200);
    EXPECT_TRUE(reader.reusable());
    EXPECT_TRUE(std::string_view("NEXT").starts_with(left)) << "the next response is left alone: " << left;
  }
}

TEST(ResponseReaderTest, ChunkedWithTrailers) {
  const std::string wire =
      "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4\r\nabcd\r\n1;ext=1\r\ne\r\n0\r\nX-Trailer: t\r\n\r\n";
  for (size_t piece : {wire.size(), size_t{1}, size_t{3}}) {
    ResponseReader reader;
    reader.reset(Method::Post, 100);
    EXPECT_EQ(feed(reader, wire, piece), "abcde") << piece;
    EXPECT_EQ(reader.state(), State::Done);
    EXPECT_EQ(reader.status(), 201);
    EXPECT_EQ(reader.bodyKind(), BodyKind::Chunked);
    EXPECT_TRUE(reader.reusable());
  }
}

TEST(ResponseReaderTest, InterimAnswersAreSkippedButNot101) {
  ResponseReader reader;
  reader.reset(Method::Post, 0);
  std::string body;
  const std::string wire = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
  EXPECT_EQ(reader.read(wire, body), wire.size());
  EXPECT_EQ(reader.state(), State::Done);
  EXPECT_EQ(reader.status(), 204);

  reader.reset(Method::Get, 0);
  const std::string upgrade = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n";
  reader.read(upgrade, body);
  EXPECT_EQ(reader.state(), State::Done);
  EXPECT_EQ(reader.status(), 101);
  EXPECT_FALSE(reader.reusable());  // a tunnel is no HTTP connection any more
}

TEST(ResponseReaderTest, UntilCloseEndsWithTheClose) {
  ResponseReader reader;
  reader.reset(Method::Get, 0);
  std::string body;
  const std::string wire = "HTTP/1.0 200 OK\r\n\r\nstream";
  EXPECT_EQ(reader.read(wire, body), wire.size());
  EXPECT_EQ(reader.state(), State::Body);
  reader.closed();
  EXPECT_EQ(reader.state(), State::Done);
  EXPECT_EQ(body, "stream");
  EXPECT_FALSE(reader.reusable());
}

TEST(ResponseReaderTest, ConnectionCloseIsNotReusable) {
  ResponseReader reader;
  reader.reset(Method::Get, 0);
  std::string body;
  reader.read("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", body);
  EXPECT_EQ(reader.state(), State::Done);
  EXPECT_FALSE(reader.reusable());
}

TEST(ResponseReaderTest, EarlyClosesSayWhere) {
  ResponseReader reader;
  reader.reset(Method::Get, 0);
  reader.closed();
  EXPECT_EQ(reader.state(), State::Failed);
  EXPECT_EQ(reader.error(), "connection closed before a response");

  std::string body;
  reader.reset(Method::Get, 0);
  EXPECT_EQ(reader.read("HTTP/1.1 200 OK\r\nContent-", body), 0u);
  reader.closed();
  EXPECT_EQ(reader.error(), "connection closed before the end of the response head");

  reader.reset(Method::Get, 0);
  reader.read("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", body);
  reader.closed();
  EXPECT_EQ(reader.state(), State::Failed);
  EXPECT_TRUE(reader.headDone());
  EXPECT_EQ(reader.error(), "connection closed before the end of the response");
}

TEST(ResponseReaderTest, BodyCapAndBadFraming) {
  ResponseReader reader;
  std::string body;
  reader.reset(Method::Get, 8);
  reader.read("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", body);
  EXPECT_EQ(reader.state(), State::Failed);
  EXPECT_EQ(reader.error(), "response body too large (over 8 bytes)");

  body.clear();
  reader.reset(Method::Get, 8);
  reader.read("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n5\r\nfghij\r\n", body);
  EXPECT_EQ(reader.state(), State::Failed);
  EXPECT_EQ(reader.error(), "response body too large (over 8 bytes)");

  reader.reset(Method::Get, 0);
  reader.read("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", body);
  EXPECT_EQ(reader.state(), State::Failed);
  EXPECT_EQ(reader.error(), "bad response body framing");

  reader.reset(Method::Get, 0);
  reader.read("HTTP/1.1 2OO OK\r\n\r\n", body);
  EXPECT_EQ(reader.state(), State::Failed);
  EXPECT_TRUE(reader.error().starts_with("bad response: ")) << reader.error();
  EXPECT_FALSE(reader.headDone());
}

TEST(ResponseReaderTest, HeadResponseHasNoBody) {
  ResponseReader reader;
  reader.reset(Method::Head, 0);
  std::string body;
  const std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
  EXPECT_EQ(reader.read(wire, body), wire.size());
  EXPECT_EQ(reader.state(), State::Done);
  EXPECT_TRUE(body.empty());
}

}  // namespace
}  // namespace fulcrum::http
