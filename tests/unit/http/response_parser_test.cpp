#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "http/parser.h"
#include "split_check.h"

namespace fulcrum::http {
namespace {

using namespace std::string_literals;

struct ValidResponse {
  std::string name;
  std::string raw;
  Method request_method = Method::Get;
  int status = 200;
  std::string reason = "OK";
  int version_minor = 1;
  BodyKind body_kind = BodyKind::ContentLength;
  uint64_t content_length = 0;
  bool keep_alive = true;
  size_t header_count = 1;
  size_t trailing = 0;
};

class ValidResponseTest : public ::testing::TestWithParam<ValidResponse> {};

TEST_P(ValidResponseTest, Parses) {
  const ValidResponse& c = GetParam();
  ResponseHead head;
  ParseResult result = parseResponseHead(c.raw, Limits{}, c.request_method, head);
  ASSERT_EQ(result.state, ParseState::Complete) << result.status << " " << result.reason;
  EXPECT_EQ(result.consumed, c.raw.size() - c.trailing);
  EXPECT_EQ(head.status, c.status);
  EXPECT_EQ(head.reason, c.reason);
  EXPECT_EQ(head.version_minor, c.version_minor);
  EXPECT_EQ(head.body_kind, c.body_kind);
  EXPECT_EQ(head.content_length, c.content_length);
  EXPECT_EQ(head.keep_alive, c.keep_alive);
  EXPECT_EQ(head.headers.size(), c.header_count);
}

TEST_P(ValidResponseTest, SameResultByteAtATime) {
  const ValidResponse& c = GetParam();
  ResponseHead head;
  testing::expectSplitConsistent(c.raw, [&](std::string_view data) {
    return parseResponseHead(data, Limits{}, c.request_method, head);
  });
}

TEST_P(ValidResponseTest, ScannerAgreesInPieces) {
  const ValidResponse& c = GetParam();
  ResponseHead head;
  testing::expectScannerAgrees(
      c.raw, [&](std::string_view data) { return parseResponseHead(data, Limits{}, c.request_method, head); },
      [&](HeadScanner& scanner, std::string_view data) {
        return scanner.parseResponse(data, Limits{}, c.request_method, head);
      });
}

std::vector<ValidResponse> validResponses() {
  std::vector<ValidResponse> v;
  v.push_back({.name = "content_length",
               .raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
               .content_length = 5,
               .trailing = 5});
  v.push_back({.name = "content_length_zero", .raw = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"});
  v.push_back({.name = "content_length_repeated",
               .raw = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
               .content_length = 3,
               .header_count = 2});
  v.push_back({.name = "chunked",
               .raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
               .body_kind = BodyKind::Chunked});
  v.push_back({.name = "until_close",
               .raw = "HTTP/1.1 200 OK\r\nServer: x\r\n\r\n",
               .body_kind = BodyKind::UntilClose,
               .keep_alive = false});
  v.push_back({.name = "http10_content_length",
               .raw = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
               .version_minor = 0,
               .content_length = 2,
               .keep_alive = false});
  v.push_back({.name = "http10_keep_alive",
               .raw = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
               .version_minor = 0,
               .content_length = 2,
               .keep_alive = true,
               .header_count = 2});
  v.push_back({.name = "http10_until_close",
               .raw = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
               .version_minor = 0,
               .body_kind = BodyKind::UntilClose,
               .keep_alive = false});
  v.push_back({.name = "connection_close",
               .raw = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
               .content_length = 1,
               .keep_alive = false,
               .header_count = 2});
  v.push_back({.name = "no_content",
               .raw = "HTTP/1.1 204 No Content\r\n\r\n",
               .status = 204,
               .reason = "No Content",
               .body_kind = BodyKind::None,
               .header_count = 0});
  v.push_back({.name = "not_modified_with_length",
               .raw = "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
               .status = 304,
               .reason = "Not Modified",
               .body_kind = BodyKind::None});
  v.push_back({.name = "head_response_with_length",
               .raw = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
               .request_method = Method::Head,
               .body_kind = BodyKind::None});
  v.push_back({.name = "head_response_chunked",
               .raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
               .request_method = Method::Head,
               .body_kind = BodyKind::None});
  v.push_back({.name = "continue",
               .raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
               .status = 100,
               .reason = "Continue",
               .body_kind = BodyKind::None,
               .header_count = 0,
               .trailing = 17});
  v.push_back({.name = "early_hints",
               .raw = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
               .status = 103,
               .reason = "Early Hints",
               .body_kind = BodyKind::None});
  v.push_back({.name = "switching_protocols",
               .raw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
               .status = 101,
               .reason = "Switching Protocols",
               .body_kind = BodyKind::Tunnel,
               .keep_alive = false,
               .header_count = 2});
  v.push_back({.name = "connect_established",
               .raw = "HTTP/1.1 200 Connection Established\r\n\r\n",
               .request_method = Method::Connect,
               .reason = "Connection Established",
               .body_kind = BodyKind::Tunnel,
               .keep_alive = false,
               .header_count = 0});
  v.push_back({.name = "connect_refused",
               .raw = "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
               .request_method = Method::Connect,
               .status = 407,
               .reason = "Proxy Authentication Required"});
  v.push_back(
      {.name = "no_reason_no_space", .raw = "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", .reason = ""});
  v.push_back(
      {.name = "no_reason_with_space", .raw = "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", .reason = ""});
  v.push_back({.name = "reason_with_spaces_and_obs_text",
               .raw = "HTTP/1.1 404 Not \tFound \xe2\x9c\x97\r\nContent-Length: 0\r\n\r\n",
               .status = 404,
               .reason = "Not \tFound \xe2\x9c\x97"});
  v.push_back({.name = "status_599",
               .raw = "HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n",
               .status = 599,
               .reason = "Whatever"});
  v.push_back({.name = "status_100_min",
               .raw = "HTTP/1.1 199 X\r\n\r\n",
               .status = 199,
               .reason = "X",
               .body_kind = BodyKind::None,
               .header_count = 0});
  v.push_back({.name = "error_until_close",
               .raw = "HTTP/1.1 500 Internal Server Error\r\n\r\n",
               .status = 500,
               .reason = "Internal Server Error",
               .body_kind = BodyKind::UntilClose,
               .keep_alive = false,
               .header_count = 0});
  v.push_back({.name = "many_headers",
               .raw = "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: nginx\r\n"
                      "Content-Type: text/html; charset=utf-8\r\nContent-Length: 12\r\n"
                      "Set-Cookie: a=b; Path=/; HttpOnly\r\nCache-Control: no-cache\r\n\r\n",
               .content_length = 12,
               .header_count = 6});
  return v;
}

std::string responseName(const ::testing::TestParamInfo<ValidResponse>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Responses, ValidResponseTest, ::testing::ValuesIn(validResponses()), responseName);

struct BadResponse {
  std::string name;
  std::string raw;
  Method request_method = Method::Get;
};

class BadResponseTest : public ::testing::TestWithParam<BadResponse> {};

Limits smallLimits() {
  Limits limits;
  limits.max_header_bytes = 100;
  limits.max_headers = 2;
  return limits;
}

TEST_P(BadResponseTest, RejectsWith502) {
  const BadResponse& c = GetParam();
  ResponseHead head;
  ParseResult result = parseResponseHead(c.raw, smallLimits(), c.request_method, head);
  ASSERT_EQ(result.state, ParseState::Error);
  EXPECT_EQ(result.status, 502) << result.reason;
  EXPECT_FALSE(result.reason.empty());
}

TEST_P(BadResponseTest, SameResultByteAtATime) {
  const BadResponse& c = GetParam();
  ResponseHead head;
  testing::expectSplitConsistent(c.raw, [&](std::string_view data) {
    return parseResponseHead(data, smallLimits(), c.request_method, head);
  });
}

TEST_P(BadResponseTest, ScannerAgreesInPieces) {
  const BadResponse& c = GetParam();
  ResponseHead head;
  testing::expectScannerAgrees(
      c.raw,
      [&](std::string_view data) { return parseResponseHead(data, smallLimits(), c.request_method, head); },
      [&](HeadScanner& scanner, std::string_view data) {
        return scanner.parseResponse(data, smallLimits(), c.request_method, head);
      });
}

std::vector<BadResponse> badResponses() {
  return {
      {"status_two_digits", "HTTP/1.1 99 X\r\n\r\n"},
      {"status_below_100", "HTTP/1.1 099 X\r\n\r\n"},
      {"status_600", "HTTP/1.1 600 X\r\n\r\n"},
      {"status_four_digits", "HTTP/1.1 2000 X\r\n\r\n"},
      {"status_letters", "HTTP/1.1 2x0 OK\r\n\r\n"},
      {"status_missing", "HTTP/1.1 \r\n\r\n"},
      {"status_tab", "HTTP/1.1 200\tOK\r\n\r\n"},
      {"double_space", "HTTP/1.1  200 OK\r\n\r\n"},
      {"http2", "HTTP/2.0 200 OK\r\n\r\n"},
      {"http12", "HTTP/1.2 200 OK\r\n\r\n"},
      {"http09", "HTTP/0.9 200 OK\r\n\r\n"},
      {"no_space_after_version", "HTTP/1.1200 OK\r\n\r\n"},
      {"lowercase", "http/1.1 200 OK\r\n\r\n"},
      {"icy", "ICY 200 OK\r\n\r\n"},
      {"leading_crlf", "\r\nHTTP/1.1 200 OK\r\n\r\n"},
      {"bare_lf_status", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"},
      {"bare_cr_status", "HTTP/1.1 200 OK\rX\r\n\r\n"},
      {"reason_ctl", "HTTP/1.1 200 O\x01K\r\n\r\n"},
      {"reason_nul", "HTTP/1.1 200 O\0K\r\n\r\n"s},
      {"obs_fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"},
      {"space_before_colon", "HTTP/1.1 200 OK\r\nX : a\r\n\r\n"},
      {"value_ctl", "HTTP/1.1 200 OK\r\nX: a\x02\r\n\r\n"},
      {"bare_lf_end", "HTTP/1.1 200 OK\r\nX: a\r\n\n"},
      {"te_and_cl", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"},
      {"te_and_cl_on_304", "HTTP/1.1 304 X\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"te_gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"},
      {"te_gzip_chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
      {"te_chunked_twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"},
      {"te_in_http10", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"cl_invalid", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"},
      {"cl_overflow", "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n"},
      {"cl_differing", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"},
      {"cl_invalid_on_head", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", Method::Head},
      {"too_many_headers", "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"},
      {"head_too_large", "HTTP/1.1 200 OK\r\nA: " + std::string(100, 'a') + "\r\n\r\n"},
      {"head_too_large_incomplete", "HTTP/1.1 200 OK\r\nA: " + std::string(100, 'a')},
  };
}

std::string badResponseName(const ::testing::TestParamInfo<BadResponse>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Responses, BadResponseTest, ::testing::ValuesIn(badResponses()), badResponseName);

TEST(ResponseParser, PrefixesAreIncomplete) {
  ResponseHead head;
  for (std::string_view prefix : {"", "H", "HTTP/1.1", "HTTP/1.1 ", "HTTP/1.1 20", "HTTP/1.1 200",
                                  "HTTP/1.1 200 O", "HTTP/1.1 200 OK\r", "HTTP/1.1 200 OK\r\n\r"}) {
    EXPECT_EQ(parseResponseHead(prefix, Limits{}, Method::Get, head).state, ParseState::Incomplete) << prefix;
  }
}

TEST(ResponseParser, InterimThenFinal) {
  const std::string raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
  ResponseHead head;
  std::string_view rest = raw;
  ParseResult r = parseResponseHead(rest, Limits{}, Method::Post, head);
  ASSERT_EQ(r.state, ParseState::Complete);
  EXPECT_EQ(head.status, 100);
  rest.remove_prefix(r.consumed);
  r = parseResponseHead(rest, Limits{}, Method::Post, head);
  ASSERT_EQ(r.state, ParseState::Complete);
  EXPECT_EQ(head.status, 201);
  EXPECT_EQ(head.reason, "Created");
  EXPECT_EQ(head.content_length, 2u);
  EXPECT_EQ(rest.substr(r.consumed), "ok");
  EXPECT_EQ(head.find("content-length"), std::optional<std::string_view>("2"));
}

TEST(ResponseParser, EveryStatusCode) {
  for (int status = 0; status < 1000; ++status) {
    char code[4];
    std::snprintf(code, sizeof code, "%03d", status);
    std::string raw = "HTTP/1.1 " + std::string(code) + " R\r\nContent-Length: 1\r\n\r\n";
    ResponseHead head;
    ParseResult r = parseResponseHead(raw, Limits{}, Method::Get, head);
    if (status < 100 || status > 599) {
      EXPECT_EQ(r.status, 502) << status;
      continue;
    }
    ASSERT_EQ(r.state, ParseState::Complete) << status;
    EXPECT_EQ(head.status, status);
    BodyKind expected = BodyKind::ContentLength;
    if (status == 101) {
      expected = BodyKind::Tunnel;
    } else if (status < 200 || status == 204 || status == 304) {
      expected = BodyKind::None;
    }
    EXPECT_EQ(head.body_kind, expected) << status;
    ASSERT_EQ(parseResponseHead(raw, Limits{}, Method::Connect, head).state, ParseState::Complete);
    if (status >= 200 && status < 300) {
      EXPECT_EQ(head.body_kind, BodyKind::Tunnel) << status;
    }
    ASSERT_EQ(parseResponseHead(raw, Limits{}, Method::Head, head).state, ParseState::Complete);
    EXPECT_EQ(head.body_kind, status == 101 ? BodyKind::Tunnel : BodyKind::None) << status;
  }
}

}  // namespace
}  // namespace fulcrum::http
