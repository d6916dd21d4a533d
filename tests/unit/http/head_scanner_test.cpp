// HeadScanner: a head fed in pieces costs work linear in its size (bytes examined are counted,
// not timed), and the scanner answers as the stateless parsers do, early where they are early.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "http/parser.h"

namespace fulcrum::http {
namespace {

// A request head of exactly `size` bytes: Host and then as many headers as fit under the default
// max_headers (128), each padded to share the bytes.
std::string requestHeadOf(size_t size) {
  std::string head = "GET /index.html?x=1 HTTP/1.1\r\nHost: www.example.com\r\n";
  const size_t fields = 120;
  const size_t per_field = (size - head.size() - 2) / fields;
  for (size_t i = 0; i < fields; ++i) {
    std::string name = "X-Field-" + std::to_string(i) + ": ";
    size_t value = (i + 1 == fields ? size - head.size() - 2 : per_field) - name.size() - 2;
    head += name + std::string(value, 'v') + "\r\n";
  }
  head += "\r\n";
  return head;
}

std::string responseHeadOf(size_t size) {
  std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n";
  const size_t fields = 120;
  const size_t per_field = (size - head.size() - 2) / fields;
  for (size_t i = 0; i < fields; ++i) {
    std::string name = "X-Field-" + std::to_string(i) + ": ";
    size_t value = (i + 1 == fields ? size - head.size() - 2 : per_field) - name.size() - 2;
    head += name + std::string(value, 'v') + "\r\n";
  }
  head += "\r\n";
  return head;
}

// Feeds `whole` `piece` bytes at a time as a connection buffer grows; `reparse` resets the
// scanner before every call, which is what re-parsing from byte 0 on every read amounts to (the
// callers before the scanner). Returns the final answer; `examined` gets the bytes examined.
template <typename Scan>
ParseResult feed(std::string_view whole, size_t piece, bool reparse, uint64_t& examined, Scan&& scan) {
  HeadScanner scanner;
  std::string buffer;
  ParseResult result;
  while (buffer.size() < whole.size()) {
    buffer.append(whole.substr(buffer.size(), piece));
    if (reparse) {
      scanner.reset();
    }
    result = scan(scanner, std::string_view(buffer));
    if (result.state != ParseState::Incomplete) {
      break;
    }
  }
  examined = scanner.examined();
  return result;
}

ParseResult feedRequest(std::string_view whole, size_t piece, bool reparse, uint64_t& examined,
                        const Limits& limits = Limits{}) {
  RequestHead head;
  return feed(whole, piece, reparse, examined, [&](HeadScanner& scanner, std::string_view data) {
    return scanner.parseRequest(data, limits, head);
  });
}

ParseResult feedResponse(std::string_view whole, size_t piece, bool reparse, uint64_t& examined) {
  ResponseHead head;
  return feed(whole, piece, reparse, examined, [&](HeadScanner& scanner, std::string_view data) {
    return scanner.parseResponse(data, Limits{}, Method::Get, head);
  });
}

// A few passes over the head: the LF scan, the line checks, the final parse.
constexpr uint64_t kPasses = 4;

TEST(HeadScanner, RequestHeadByteByByteIsLinear) {
  const std::string head = requestHeadOf(16384);
  ASSERT_EQ(head.size(), 16384u);
  uint64_t examined = 0;
  ParseResult r = feedRequest(head, 1, false, examined);
  ASSERT_EQ(r.state, ParseState::Complete) << r.reason;
  EXPECT_EQ(r.consumed, head.size());
  EXPECT_LE(examined, kPasses * head.size());

  // Re-parsing from byte 0 on every read examines ~n²/2 bytes: the bound above catches it.
  r = feedRequest(head, 1, true, examined);
  ASSERT_EQ(r.state, ParseState::Complete);
  EXPECT_GT(examined, head.size() * head.size() / 2);
}

TEST(HeadScanner, ResponseHeadByteByByteIsLinear) {
  const std::string head = responseHeadOf(16384);
  ASSERT_EQ(head.size(), 16384u);
  uint64_t examined = 0;
  ParseResult r = feedResponse(head, 1, false, examined);
  ASSERT_EQ(r.state, ParseState::Complete) << r.reason;
  EXPECT_EQ(r.consumed, head.size());
  EXPECT_LE(examined, kPasses * head.size());

  r = feedResponse(head, 1, true, examined);
  ASSERT_EQ(r.state, ParseState::Complete);
  EXPECT_GT(examined, head.size() * head.size() / 2);
}

TEST(HeadScanner, LinearWhateverTheShape) {
  const std::string long_value =
      "GET / HTTP/1.1\r\nHost: a\r\nCookie: " + std::string(16000, 'c') + "\r\n\r\n";
  const std::string long_target = "GET /" + std::string(8000, 't') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  std::string empty_lines;
  for (int i = 0; i < 8000; ++i) {
    empty_lines += "\r\n";
  }
  empty_lines += "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  for (const std::string* head :
       std::initializer_list<const std::string*>{&long_value, &long_target, &empty_lines}) {
    for (size_t piece : {1, 4, 100}) {
      SCOPED_TRACE(head->substr(0, 24) + " in pieces of " + std::to_string(piece));
      uint64_t examined = 0;
      ParseResult r = feedRequest(*head, piece, false, examined);
      ASSERT_EQ(r.state, ParseState::Complete) << r.reason;
      EXPECT_EQ(r.consumed, head->size());
      EXPECT_LE(examined, kPasses * head->size());
    }
  }
}

TEST(HeadScanner, OversizedHeadIsRefusedAtTheLimitInLinearTime) {
  const std::string head = requestHeadOf(16384) + "more";
  std::string over = head.substr(0, 16382) + "X-Late: value\r\n\r\n";
  uint64_t examined = 0;
  ParseResult r = feedRequest(over, 1, false, examined);
  ASSERT_EQ(r.state, ParseState::Error);
  EXPECT_EQ(r.status, 431);
  EXPECT_LE(examined, kPasses * over.size());

  Limits small;
  small.max_header_bytes = 512;
  const std::string endless = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(1000, 'x');
  RequestHead out;
  HeadScanner scanner;
  for (size_t len = 1; len <= endless.size(); ++len) {
    ParseResult step = scanner.parseRequest(std::string_view(endless).substr(0, len), small, out);
    if (len < small.max_header_bytes) {
      ASSERT_EQ(step.state, ParseState::Incomplete) << len;
    } else {
      ASSERT_EQ(step.state, ParseState::Error) << len;
      EXPECT_EQ(step.status, 431);
      break;
    }
  }
}

// The stateless parser refuses an over-long request-target before its line ends; the scanner at
// the very same byte.
TEST(HeadScanner, LongTargetIsRefusedAsEarlyAsTheStatelessParser) {
  for (std::string method : {"GET", "OPTIONS", "X-VERY-LONG-METHOD"}) {
    Limits limits;
    limits.max_uri_bytes = 64;
    const std::string raw = "\r\n" + method + " /" + std::string(200, 'a');
    RequestHead head;
    size_t stateless_at = 0;
    for (size_t len = 1; len <= raw.size() && stateless_at == 0; ++len) {
      if (parseRequestHead(std::string_view(raw).substr(0, len), limits, head).state == ParseState::Error) {
        stateless_at = len;
      }
    }
    ASSERT_GT(stateless_at, 0u);
    HeadScanner scanner;
    for (size_t len = 1; len <= raw.size(); ++len) {
      ParseResult r = scanner.parseRequest(std::string_view(raw).substr(0, len), limits, head);
      if (r.state != ParseState::Incomplete) {
        EXPECT_EQ(len, stateless_at) << method;
        EXPECT_EQ(r.status, 414);
        break;
      }
    }
  }
}

// An error inside a line is reported when that line's LF arrives, before the head ends.
TEST(HeadScanner, BadLineIsRefusedWhenItEnds) {
  const std::string raw = "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\nMore: y\r\n\r\n";
  const size_t bad_line_end = raw.find("x\r\n") + 3;
  RequestHead head;
  HeadScanner scanner;
  for (size_t len = 1; len <= raw.size(); ++len) {
    ParseResult r = scanner.parseRequest(std::string_view(raw).substr(0, len), Limits{}, head);
    if (r.state != ParseState::Incomplete) {
      EXPECT_LE(len, bad_line_end);
      EXPECT_EQ(r.status, 400);
      EXPECT_EQ(r.reason, "whitespace before colon");
      break;
    }
  }
  const std::string bad_line = "GET /a b HTTP/1.1\r\n";
  for (size_t len = 1; len <= bad_line.size(); ++len) {
    ParseResult r = scanner.parseRequest(std::string_view(bad_line).substr(0, len), Limits{}, head);
    if (len == bad_line.size()) {
      EXPECT_EQ(r.state, ParseState::Error);
      EXPECT_EQ(r.status, 400);
    } else if (r.state != ParseState::Incomplete) {
      break;
    }
  }
}

// After a complete head the scanner is ready for the next one: pipelined requests, and a 1xx
// followed by the final response, each fed a byte at a time with the parsed head consumed.
TEST(HeadScanner, NextHeadAfterComplete) {
  const std::string requests =
      "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
      "GET /3 HTTP/1.0\r\n\r\n";
  HeadScanner scanner;
  RequestHead head;
  std::string buffer;
  std::vector<std::string> paths;
  for (char c : requests) {
    buffer += c;
    ParseResult r = scanner.parseRequest(buffer, Limits{}, head);
    ASSERT_NE(r.state, ParseState::Error) << r.reason;
    if (r.state == ParseState::Complete) {
      paths.emplace_back(head.path);
      buffer.erase(0, r.consumed);
    }
  }
  EXPECT_EQ(paths, (std::vector<std::string>{"/1", "/2", "/3"}));

  const std::string responses =
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  ResponseHead response;
  std::vector<int> statuses;
  buffer.clear();
  for (char c : responses) {
    buffer += c;
    ParseResult r = scanner.parseResponse(buffer, Limits{}, Method::Post, response);
    ASSERT_NE(r.state, ParseState::Error) << r.reason;
    if (r.state == ParseState::Complete) {
      statuses.push_back(response.status);
      buffer.erase(0, r.consumed);
    }
  }
  EXPECT_EQ(statuses, (std::vector<int>{100, 103, 200}));
}

// A head that arrives whole costs one parse, as it did before the scanner.
TEST(HeadScanner, WholeHeadIsParsedOnce) {
  const std::string head = requestHeadOf(4096);
  HeadScanner scanner;
  RequestHead out;
  ParseResult r = scanner.parseRequest(head, Limits{}, out);
  ASSERT_EQ(r.state, ParseState::Complete);
  EXPECT_EQ(scanner.examined(), head.size());
  EXPECT_EQ(out.headers.size(), 121u);
  EXPECT_EQ(out.host, "www.example.com");
}

}  // namespace
}  // namespace fulcrum::http
