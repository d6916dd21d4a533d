#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "http/parser.h"
#include "split_check.h"

namespace fulcrum::http {
namespace {

using namespace std::string_literals;

Limits smallLimits() {
  Limits limits;
  limits.max_header_bytes = 128;
  limits.max_uri_bytes = 16;
  limits.max_headers = 3;
  limits.max_body_bytes = 100;
  return limits;
}

// ---------------------------------------------------------------------------------------------
// Valid requests

struct ValidRequest {
  std::string name;
  std::string raw;
  Method method = Method::Get;
  std::string method_text = "GET";
  std::string target = "/";
  std::string path = "/";
  std::string query;
  int version_minor = 1;
  std::string host = "a";
  BodyKind body_kind = BodyKind::None;
  uint64_t content_length = 0;
  bool keep_alive = true;
  bool expect_continue = false;
  bool upgrade = false;
  size_t header_count = 1;
  size_t trailing = 0;  // bytes after the head (body or next request)
  Limits limits = Limits{};
};

class ValidRequestTest : public ::testing::TestWithParam<ValidRequest> {};

TEST_P(ValidRequestTest, Parses) {
  const ValidRequest& c = GetParam();
  RequestHead head;
  ParseResult result = parseRequestHead(c.raw, c.limits, head);
  ASSERT_EQ(result.state, ParseState::Complete) << result.status << " " << result.reason;
  EXPECT_EQ(result.consumed, c.raw.size() - c.trailing);
  EXPECT_EQ(head.method, c.method);
  EXPECT_EQ(head.method_text, c.method_text);
  EXPECT_EQ(head.target, c.target);
  EXPECT_EQ(head.path, c.path);
  EXPECT_EQ(head.query, c.query);
  EXPECT_EQ(head.version_minor, c.version_minor);
  EXPECT_EQ(head.host, c.host);
  EXPECT_EQ(head.body_kind, c.body_kind);
  EXPECT_EQ(head.content_length, c.content_length);
  EXPECT_EQ(head.keep_alive, c.keep_alive);
  EXPECT_EQ(head.expect_continue, c.expect_continue);
  EXPECT_EQ(head.upgrade, c.upgrade);
  EXPECT_EQ(head.headers.size(), c.header_count);
}

TEST_P(ValidRequestTest, SameResultByteAtATime) {
  const ValidRequest& c = GetParam();
  RequestHead head;
  testing::expectSplitConsistent(
      c.raw, [&](std::string_view data) { return parseRequestHead(data, c.limits, head); });
}

TEST_P(ValidRequestTest, ScannerAgreesInPieces) {
  const ValidRequest& c = GetParam();
  RequestHead head;
  testing::expectScannerAgrees(
      c.raw, [&](std::string_view data) { return parseRequestHead(data, c.limits, head); },
      [&](HeadScanner& scanner, std::string_view data) {
        return scanner.parseRequest(data, c.limits, head);
      });
}

TEST_P(ValidRequestTest, ReusesHeadObject) {
  const ValidRequest& c = GetParam();
  RequestHead head;
  std::string other = "POST /other?x HTTP/1.0\r\nA: b\r\nC: d\r\nE: f\r\nContent-Length: 3\r\n\r\n";
  ASSERT_EQ(parseRequestHead(other, Limits{}, head).state, ParseState::Complete);
  ParseResult result = parseRequestHead(c.raw, c.limits, head);
  ASSERT_EQ(result.state, ParseState::Complete);
  EXPECT_EQ(head.query, c.query);
  EXPECT_EQ(head.host, c.host);
  EXPECT_EQ(head.content_length, c.content_length);
  EXPECT_EQ(head.headers.size(), c.header_count);
}

Limits withLimits(size_t header_bytes, size_t uri_bytes, size_t headers, uint64_t body) {
  Limits limits;
  limits.max_header_bytes = header_bytes;
  limits.max_uri_bytes = uri_bytes;
  limits.max_headers = headers;
  limits.max_body_bytes = body;
  return limits;
}

const std::string kBrowser =
    "GET /assets/app.js?v=3 HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0\r\n"
    "Accept: */*\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Referer: https://www.example.com/\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=abc123; theme=dark\r\n"
    "Sec-Fetch-Dest: script\r\n"
    "Sec-Fetch-Mode: no-cors\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "\r\n";

std::vector<ValidRequest> validRequests() {
  std::vector<ValidRequest> v;
  v.push_back({.name = "minimal", .raw = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"});
  v.push_back(
      {.name = "curl",
       .raw = "GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
       .host = "localhost:8080",
       .header_count = 3});
  v.push_back({.name = "browser",
               .raw = kBrowser,
               .target = "/assets/app.js?v=3",
               .path = "/assets/app.js",
               .query = "v=3",
               .host = "www.example.com",
               .header_count = 11});
  v.push_back({.name = "http10_no_host",
               .raw = "GET / HTTP/1.0\r\n\r\n",
               .version_minor = 0,
               .host = "",
               .keep_alive = false,
               .header_count = 0});
  v.push_back({.name = "http10_keep_alive",
               .raw = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
               .version_minor = 0,
               .host = "",
               .keep_alive = true});
  v.push_back({.name = "http10_keep_alive_mixed_case",
               .raw = "GET / HTTP/1.0\r\nHost: a\r\nconnection: Keep-Alive\r\n\r\n",
               .version_minor = 0,
               .keep_alive = true,
               .header_count = 2});
  v.push_back({.name = "http10_keep_alive_and_close",
               .raw = "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
               .version_minor = 0,
               .host = "",
               .keep_alive = false});
  v.push_back({.name = "http10_with_content_length",
               .raw = "POST /f HTTP/1.0\r\nContent-Length: 2\r\n\r\nab",
               .method = Method::Post,
               .method_text = "POST",
               .target = "/f",
               .path = "/f",
               .version_minor = 0,
               .host = "",
               .body_kind = BodyKind::ContentLength,
               .content_length = 2,
               .keep_alive = false,
               .trailing = 2});
  v.push_back({.name = "connection_close",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
               .keep_alive = false,
               .header_count = 2});
  v.push_back({.name = "connection_close_upper",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nCONNECTION: CLOSE\r\n\r\n",
               .keep_alive = false,
               .header_count = 2});
  v.push_back({.name = "connection_close_in_list",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo,  close ,bar\r\n\r\n",
               .keep_alive = false,
               .header_count = 2});
  v.push_back({.name = "connection_close_second_header",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: close\r\n\r\n",
               .keep_alive = false,
               .header_count = 3});
  v.push_back({.name = "connection_closed_is_not_close",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
               .keep_alive = true,
               .header_count = 2});
  v.push_back({.name = "query",
               .raw = "GET /search?q=a&b=c HTTP/1.1\r\nHost: a\r\n\r\n",
               .target = "/search?q=a&b=c",
               .path = "/search",
               .query = "q=a&b=c"});
  v.push_back(
      {.name = "empty_query", .raw = "GET /p? HTTP/1.1\r\nHost: a\r\n\r\n", .target = "/p?", .path = "/p"});
  v.push_back({.name = "question_mark_in_query",
               .raw = "GET /p??x=/y HTTP/1.1\r\nHost: a\r\n\r\n",
               .target = "/p??x=/y",
               .path = "/p",
               .query = "?x=/y"});
  v.push_back({.name = "uri_punctuation",
               .raw = "GET /a%20b/c;d=e,f!$&'()*+@:=~[]{}|\\^` HTTP/1.1\r\nHost: a\r\n\r\n",
               .target = "/a%20b/c;d=e,f!$&'()*+@:=~[]{}|\\^`",
               .path = "/a%20b/c;d=e,f!$&'()*+@:=~[]{}|\\^`"});
  v.push_back({.name = "absolute_form",
               .raw = "GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
               .target = "http://example.com/p?q",
               .path = "/p",
               .query = "q",
               .host = "example.com"});
  v.push_back({.name = "absolute_form_no_path",
               .raw = "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
               .target = "http://example.com",
               .path = "/",
               .host = "example.com"});
  v.push_back({.name = "absolute_form_query_no_path",
               .raw = "GET http://example.com?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
               .target = "http://example.com?x=1",
               .path = "/",
               .query = "x=1",
               .host = "example.com"});
  v.push_back({.name = "absolute_form_port_https",
               .raw = "GET https://example.com:8443/a/b HTTP/1.1\r\nHost: other\r\n\r\n",
               .target = "https://example.com:8443/a/b",
               .path = "/a/b",
               .host = "other"});
  v.push_back({.name = "absolute_form_ipv6",
               .raw = "GET http://[::1]:80/x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
               .target = "http://[::1]:80/x",
               .path = "/x",
               .host = "[::1]:80"});
  v.push_back({.name = "connect",
               .raw = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
               .method = Method::Connect,
               .method_text = "CONNECT",
               .target = "example.com:443",
               .path = "",
               .host = "example.com:443"});
  v.push_back({.name = "connect_ipv6",
               .raw = "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n",
               .method = Method::Connect,
               .method_text = "CONNECT",
               .target = "[2001:db8::1]:443",
               .path = "",
               .host = "[2001:db8::1]:443"});
  v.push_back({.name = "options_asterisk",
               .raw = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
               .method = Method::Options,
               .method_text = "OPTIONS",
               .target = "*",
               .path = "*"});
  v.push_back({.name = "options_path",
               .raw = "OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n",
               .method = Method::Options,
               .method_text = "OPTIONS",
               .target = "/x",
               .path = "/x"});
  v.push_back({.name = "leading_empty_lines", .raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"});
  v.push_back({.name = "content_length",
               .raw = "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
               .method = Method::Post,
               .method_text = "POST",
               .target = "/up",
               .path = "/up",
               .body_kind = BodyKind::ContentLength,
               .content_length = 5,
               .header_count = 2,
               .trailing = 5});
  v.push_back({.name = "content_length_zero",
               .raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
               .method = Method::Post,
               .method_text = "POST",
               .body_kind = BodyKind::ContentLength,
               .header_count = 2});
  v.push_back({.name = "content_length_repeated_same",
               .raw = "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n",
               .method = Method::Put,
               .method_text = "PUT",
               .body_kind = BodyKind::ContentLength,
               .content_length = 7,
               .header_count = 3});
  v.push_back({.name = "content_length_list_same",
               .raw = "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 7 , 7,7\r\n\r\n",
               .method = Method::Put,
               .method_text = "PUT",
               .body_kind = BodyKind::ContentLength,
               .content_length = 7,
               .header_count = 2});
  v.push_back({.name = "content_length_leading_zeros",
               .raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000000000042\r\n\r\n",
               .method = Method::Post,
               .method_text = "POST",
               .body_kind = BodyKind::ContentLength,
               .content_length = 42,
               .header_count = 2});
  v.push_back({.name = "content_length_uint64_max_unlimited",
               .raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n",
               .method = Method::Post,
               .method_text = "POST",
               .body_kind = BodyKind::ContentLength,
               .content_length = 18446744073709551615ULL,
               .header_count = 2,
               .limits = withLimits(16384, 8192, 128, 0)});
  v.push_back({.name = "content_length_at_limit",
               .raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n",
               .method = Method::Post,
               .method_text = "POST",
               .body_kind = BodyKind::ContentLength,
               .content_length = 100,
               .header_count = 2,
               .limits = smallLimits()});
  v.push_back({.name = "chunked",
               .raw = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
               .method = Method::Post,
               .method_text = "POST",
               .body_kind = BodyKind::Chunked,
               .header_count = 2});
  v.push_back({.name = "chunked_mixed_case",
               .raw = "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:   ChUnKeD  \r\n\r\n",
               .method = Method::Post,
               .method_text = "POST",
               .body_kind = BodyKind::Chunked,
               .header_count = 2});
  v.push_back({.name = "expect_continue",
               .raw = "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
               .method = Method::Put,
               .method_text = "PUT",
               .body_kind = BodyKind::ContentLength,
               .content_length = 1,
               .expect_continue = true,
               .header_count = 3});
  v.push_back({.name = "expect_continue_case",
               .raw = "PUT / HTTP/1.1\r\nHost: a\r\nexpect: 100-Continue\r\n\r\n",
               .method = Method::Put,
               .method_text = "PUT",
               .expect_continue = true,
               .header_count = 2});
  v.push_back({.name = "expect_continue_ignored_in_http10",
               .raw = "PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
               .method = Method::Put,
               .method_text = "PUT",
               .version_minor = 0,
               .host = "",
               .keep_alive = false});
  v.push_back({.name = "upgrade_websocket",
               .raw = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
               .target = "/ws",
               .path = "/ws",
               .upgrade = true,
               .header_count = 3});
  v.push_back({.name = "upgrade_in_connection_list",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: keep-alive, upgrade\r\n\r\n",
               .upgrade = true,
               .header_count = 3});
  v.push_back({.name = "upgrade_header_without_connection_token",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
               .upgrade = false,
               .header_count = 2});
  v.push_back({.name = "connection_upgrade_without_upgrade_header",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
               .upgrade = false,
               .header_count = 2});
  v.push_back({.name = "upgrade_ignored_in_http10",
               .raw = "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
               .version_minor = 0,
               .host = "",
               .keep_alive = false,
               .header_count = 2});
  for (auto [text, method] : {std::pair{"HEAD", Method::Head},
                              {"DELETE", Method::Delete},
                              {"PATCH", Method::Patch},
                              {"TRACE", Method::Trace},
                              {"PROPFIND", Method::Other},
                              {"M-SEARCH", Method::Other},
                              {"get", Method::Other},
                              {"GETS", Method::Other},
                              {"!#$%&'*+-.^_`|~09", Method::Other}}) {
    std::string name = "method_" + std::to_string(v.size());
    v.push_back({.name = name,
                 .raw = std::string(text) + " / HTTP/1.1\r\nHost: a\r\n\r\n",
                 .method = method,
                 .method_text = text});
  }
  v.push_back({.name = "value_trimmed",
               .raw = "GET / HTTP/1.1\r\nHost: \t a \t \r\nX-Y:\t  in ner \t\r\n\r\n",
               .header_count = 2});
  v.push_back({.name = "empty_values",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Space: \r\n\r\n",
               .header_count = 3});
  v.push_back({.name = "obs_text_value",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n",
               .header_count = 2});
  v.push_back({.name = "all_tchar_name",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n",
               .header_count = 2});
  v.push_back({.name = "value_with_colons_and_quotes",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nX: \"a:b\", c=(d)\r\n\r\n",
               .header_count = 2});
  v.push_back(
      {.name = "host_ipv6", .raw = "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", .host = "[::1]:8080"});
  v.push_back({.name = "host_ipv4", .raw = "GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n", .host = "10.0.0.1"});
  v.push_back({.name = "host_empty", .raw = "GET / HTTP/1.1\r\nHost:\r\n\r\n", .host = ""});
  v.push_back({.name = "host_empty_port", .raw = "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", .host = "a:"});
  v.push_back({.name = "host_pct_encoded", .raw = "GET / HTTP/1.1\r\nHost: a%41b\r\n\r\n", .host = "a%41b"});
  v.push_back(
      {.name = "host_lowercase_name", .raw = "GET / HTTP/1.1\r\nhOsT: x-y.z_w~\r\n\r\n", .host = "x-y.z_w~"});
  v.push_back({.name = "pipelined_first",
               .raw = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
               .target = "/1",
               .path = "/1",
               .trailing = 28});
  v.push_back({.name = "max_headers_exact",
               .raw = "GET / HTTP/1.1\r\nHost: a\r\nB: b\r\nC: c\r\n\r\n",
               .header_count = 3,
               .limits = smallLimits()});
  v.push_back({.name = "max_uri_exact",
               .raw = "GET /123456789012345 HTTP/1.1\r\nHost: a\r\n\r\n",
               .target = "/123456789012345",
               .path = "/123456789012345",
               .limits = smallLimits()});
  {
    // A head of exactly max_header_bytes (128) is accepted.
    std::string raw = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    raw += std::string(128 - raw.size() - 4, 'x') + "\r\n\r\n";
    v.push_back({.name = "max_header_bytes_exact", .raw = raw, .header_count = 2, .limits = smallLimits()});
  }
  {
    // Leading empty lines count towards the limit, which the head still fits.
    std::string raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: ";
    raw += std::string(128 - raw.size() - 4, 'x') + "\r\n\r\n";
    v.push_back({.name = "max_header_bytes_exact_leading_crlf",
                 .raw = raw,
                 .header_count = 2,
                 .limits = smallLimits()});
  }
  return v;
}

std::string caseName(const ::testing::TestParamInfo<ValidRequest>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Requests, ValidRequestTest, ::testing::ValuesIn(validRequests()), caseName);

// ---------------------------------------------------------------------------------------------
// Rejected requests

struct BadRequest {
  std::string name;
  std::string raw;
  int status;
  Limits limits = Limits{};
};

class BadRequestTest : public ::testing::TestWithParam<BadRequest> {};

TEST_P(BadRequestTest, Rejects) {
  const BadRequest& c = GetParam();
  RequestHead head;
  ParseResult result = parseRequestHead(c.raw, c.limits, head);
  ASSERT_EQ(result.state, ParseState::Error);
  EXPECT_EQ(result.status, c.status) << result.reason;
  EXPECT_FALSE(result.reason.empty());
}

TEST_P(BadRequestTest, SameResultByteAtATime) {
  const BadRequest& c = GetParam();
  RequestHead head;
  testing::expectSplitConsistent(
      c.raw, [&](std::string_view data) { return parseRequestHead(data, c.limits, head); });
}

TEST_P(BadRequestTest, ScannerAgreesInPieces) {
  const BadRequest& c = GetParam();
  RequestHead head;
  testing::expectScannerAgrees(
      c.raw, [&](std::string_view data) { return parseRequestHead(data, c.limits, head); },
      [&](HeadScanner& scanner, std::string_view data) {
        return scanner.parseRequest(data, c.limits, head);
      });
}

std::string hostReq(std::string_view host) {
  return "GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n";
}
std::string withHeader(std::string_view line) {
  return "POST / HTTP/1.1\r\nHost: a\r\n" + std::string(line) + "\r\n\r\n";
}

std::vector<BadRequest> badRequests() {
  std::vector<BadRequest> v;
  auto add = [&](std::string name, std::string raw, int status, Limits limits = Limits{}) {
    v.push_back({std::move(name), std::move(raw), status, limits});
  };
  // request line
  add("double_space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("space_before_target_twice", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("leading_space", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("trailing_space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);
  add("tab_separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("method_non_tchar", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("method_empty_line", "\r\n\r\n\r\nX\r\n\r\n", 400);
  add("tls_client_hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s, 400);
  add("nul_in_method", "GE\0T / HTTP/1.1\r\nHost: a\r\n\r\n"s, 400);
  add("lowercase_protocol", "GET / http/1.1\r\nHost: a\r\n\r\n", 400);
  add("https_protocol", "GET / HTTPS/1.1\r\nHost: a\r\n\r\n", 400);
  add("http09", "GET /\r\n\r\n", 400);
  add("version_missing_minor", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400);
  add("version_three_parts", "GET / HTTP/1.1.1\r\nHost: a\r\n\r\n", 400);
  add("version_two_digit_major", "GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400);
  add("version_two_digit_minor", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400);
  add("version_letters", "GET / HTTP/a.b\r\nHost: a\r\n\r\n", 400);
  add("version_empty", "GET / \r\nHost: a\r\n\r\n", 400);
  add("bare_lf_request_line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
  add("bare_cr_request_line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
  add("bare_lf_leading", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("bare_cr_leading", "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("target_space_inside", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("target_control", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("target_nul", "GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n"s, 400);
  add("target_del", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("target_tab", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("target_non_ascii", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("target_fragment", "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("target_relative", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("asterisk_for_get", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("authority_form_for_get", "GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("authority_form_for_options", "OPTIONS example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("connect_origin_form", "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("connect_absolute_form", "CONNECT http://a:1/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("connect_no_port", "CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("connect_empty_port", "CONNECT example.com: HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("connect_asterisk", "CONNECT * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("absolute_single_slash", "GET http:/x HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("absolute_empty_authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("absolute_userinfo", "GET http://user@host/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("absolute_bad_scheme", "GET 1http://x/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  add("absolute_bad_port", "GET http://x:8a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  // header fields
  add("obs_fold", "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n  c\r\n\r\n", 400);
  add("obs_fold_tab", "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n", 400);
  add("whitespace_before_first_header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
  add("space_before_colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
  add("tab_before_colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400);
  add("space_in_name", "GET / HTTP/1.1\r\nHost: a\r\nX Y: b\r\n\r\n", 400);
  add("empty_name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400);
  add("name_paren", "GET / HTTP/1.1\r\nHost: a\r\nX(Y): b\r\n\r\n", 400);
  add("name_non_ascii", "GET / HTTP/1.1\r\nHost: a\r\n\xc3\xa9: b\r\n\r\n", 400);
  add("name_nul", "GET / HTTP/1.1\r\nHost: a\r\nX\0: b\r\n\r\n"s, 400);
  add("no_colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400);
  add("value_nul", "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"s, 400);
  add("value_ctl", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", 400);
  add("value_esc", "GET / HTTP/1.1\r\nHost: a\r\nX: abcdefghijklmnop\x1b[0m\r\n\r\n", 400);
  add("value_del", "GET / HTTP/1.1\r\nHost: a\r\nX: abcdefgh\x7f\r\n\r\n", 400);
  add("value_bare_cr", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400);
  add("value_bare_lf", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400);
  add("bare_lf_end", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400);
  add("bare_cr_end", "GET / HTTP/1.1\r\nHost: a\r\n\rX", 400);
  add("lf_lf_end", "GET / HTTP/1.1\nHost: a\n\n", 400);
  // Host
  add("missing_host", "GET / HTTP/1.1\r\nX: a\r\n\r\n", 400);
  add("repeated_host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
  add("repeated_host_case", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400);
  add("repeated_host_http10", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
  add("host_space", hostReq("a b"), 400);
  add("host_slash", hostReq("a/b"), 400);
  add("host_userinfo", hostReq("u@a"), 400);
  add("host_two_colons", hostReq("a:1:2"), 400);
  add("host_port_letters", hostReq("a:http"), 400);
  add("host_only_port", hostReq(":80"), 400);
  add("host_unclosed_bracket", hostReq("[::1"), 400);
  add("host_empty_brackets", hostReq("[]"), 400);
  add("host_bracket_garbage", hostReq("[::1]x"), 400);
  add("host_bad_pct", hostReq("a%zz"), 400);
  add("host_short_pct", hostReq("a%4"), 400);
  add("host_question", hostReq("a?b"), 400);
  add("host_quote", hostReq("\"a\""), 400);
  add("host_non_ascii", hostReq("caf\xc3\xa9"), 400);
  // Content-Length
  for (const char* value : {"abc", "-1", "+1", "1.0", "0x10", "1 2", "5, 6", "5,", ",5", "5,,5", "1e3",
                            "18446744073709551616", "99999999999999999999999", "\"5\""}) {
    add("content_length_" + std::to_string(v.size()), withHeader(std::string("Content-Length: ") + value),
        400);
  }
  add("content_length_empty", withHeader("Content-Length:"), 400);
  add("content_length_differing_headers", withHeader("Content-Length: 5\r\nContent-Length: 6"), 400);
  add("content_length_then_empty", withHeader("Content-Length: 5\r\nContent-Length: "), 400);
  // framing conflicts
  add("te_and_cl", withHeader("Transfer-Encoding: chunked\r\nContent-Length: 5"), 400);
  add("cl_and_te", withHeader("Content-Length: 5\r\nTransfer-Encoding: chunked"), 400);
  add("cl_and_te_gzip", withHeader("Content-Length: 5\r\nTransfer-Encoding: gzip"), 400);
  add("te_in_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
  add("te_chunked_twice", withHeader("Transfer-Encoding: chunked, chunked"), 400);
  add("te_chunked_two_headers", withHeader("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"), 400);
  add("te_empty", withHeader("Transfer-Encoding:"), 400);
  add("te_only_commas", withHeader("Transfer-Encoding: , ,"), 400);
  add("te_trailing_comma", withHeader("Transfer-Encoding: chunked,"), 400);
  add("te_quoted", withHeader("Transfer-Encoding: \"chunked\""), 400);
  add("te_space_inside", withHeader("Transfer-Encoding: chun ked"), 400);
  add("te_gzip_chunked_chunked", withHeader("Transfer-Encoding: gzip, chunked, chunked"), 400);
  // RFC 9112 §6.3: chunked not the final coding is a 400; §6.1: an unknown coding before a final
  // chunked is a 501.
  add("te_gzip", withHeader("Transfer-Encoding: gzip"), 400);
  add("te_gzip_chunked", withHeader("Transfer-Encoding: gzip, chunked"), 501);
  add("te_chunked_gzip", withHeader("Transfer-Encoding: chunked, gzip"), 400);
  add("te_deflate", withHeader("Transfer-Encoding: deflate"), 400);
  add("te_identity", withHeader("Transfer-Encoding: identity"), 400);
  add("te_chunked_identity", withHeader("Transfer-Encoding: chunked, identity"), 400);
  add("te_chunked_param", withHeader("Transfer-Encoding: chunked;q=1"), 400);
  add("te_two_headers_gzip_chunked", withHeader("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked"),
      501);
  add("te_two_headers_chunked_gzip", withHeader("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip"),
      400);
  add("te_xchunked", withHeader("Transfer-Encoding: xchunked"), 400);
  // sizes
  add("content_length_over_limit", withHeader("Content-Length: 101"), 413, smallLimits());
  add("content_length_over_default_limit", withHeader("Content-Length: 10485761"), 413);
  add("content_length_huge_over_limit", withHeader("Content-Length: 18446744073709551615"), 413);
  add("uri_too_long", "GET /1234567890123456 HTTP/1.1\r\nHost: a\r\n\r\n", 414, smallLimits());
  add("uri_too_long_incomplete", "GET /1234567890123456", 414, smallLimits());
  add("uri_too_long_absolute", "GET http://a/23456789012 HTTP/1.1\r\n", 414, smallLimits());
  add("uri_too_long_default", "GET /" + std::string(8192, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n", 414);
  add("uri_too_long_default_incomplete", "GET /" + std::string(8192, 'a'), 414);
  add("too_many_headers", "GET / HTTP/1.1\r\nHost: a\r\nB: b\r\nC: c\r\nD: d\r\n\r\n", 431, smallLimits());
  add("too_many_headers_incomplete", "GET / HTTP/1.1\r\nHost: a\r\nB: b\r\nC: c\r\nD: d\r\n", 431,
      smallLimits());
  {
    std::string raw = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    raw += std::string(128 - raw.size() - 3, 'x') + "\r\n\r\n";
    add("head_one_byte_over", raw, 431, smallLimits());
    add("head_too_large_incomplete", "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(200, 'x'), 431,
        smallLimits());
    add("head_too_large_default", "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(16384, 'x') + "\r\n\r\n",
        431);
    std::string flood;
    for (int i = 0; i < 100; ++i) {
      flood += "\r\n";
    }
    add("leading_crlf_flood", flood, 431, smallLimits());
  }
  // expectations and versions
  add("expect_other", withHeader("Expect: something"), 417);
  add("expect_continue_and_other", withHeader("Expect: 100-continue, foo"), 417);
  add("expect_continue_then_other", withHeader("Expect: 100-continue\r\nExpect: foo"), 417);
  add("expect_empty", withHeader("Expect:"), 417);
  add("http20", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
  add("http12", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
  add("http19", "GET / HTTP/1.9\r\nHost: a\r\n\r\n", 505);
  add("http09_versioned", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505);
  add("http30", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505);
  add("http99_line_only", "GET / HTTP/9.9\r\n", 505);
  return v;
}

std::string badName(const ::testing::TestParamInfo<BadRequest>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Requests, BadRequestTest, ::testing::ValuesIn(badRequests()), badName);

// ---------------------------------------------------------------------------------------------
// Incomplete input and pipelining

TEST(RequestParser, EmptyInputIsIncomplete) {
  RequestHead head;
  EXPECT_EQ(parseRequestHead("", Limits{}, head).state, ParseState::Incomplete);
  EXPECT_EQ(parseRequestHead(std::string_view(), Limits{}, head).state, ParseState::Incomplete);
}

TEST(RequestParser, PrefixesOfValidHeadAreIncomplete) {
  RequestHead head;
  for (std::string_view prefix :
       {"G", "GET", "GET ", "GET /", "GET / ", "GET / H", "GET / HTTP/1.", "GET / HTTP/1.1",
        "GET / HTTP/1.1\r", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost",
        "GET / HTTP/1.1\r\nHost:", "GET / HTTP/1.1\r\nHost: a", "GET / HTTP/1.1\r\nHost: a\r",
        "GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r", "\r", "\r\n", "\r\n\r"}) {
    EXPECT_EQ(parseRequestHead(prefix, Limits{}, head).state, ParseState::Incomplete) << prefix;
  }
}

TEST(RequestParser, PipelinedRequestsParseInTurn) {
  const std::string first = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
  const std::string second = "POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\n";
  const std::string third = "\r\nGET /three HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n";
  const std::string buffer = first + second + "abc" + third;
  RequestHead head;
  std::string_view rest = buffer;

  ParseResult r = parseRequestHead(rest, Limits{}, head);
  ASSERT_EQ(r.state, ParseState::Complete);
  EXPECT_EQ(r.consumed, first.size());
  EXPECT_EQ(head.path, "/one");
  rest.remove_prefix(r.consumed);

  r = parseRequestHead(rest, Limits{}, head);
  ASSERT_EQ(r.state, ParseState::Complete);
  EXPECT_EQ(r.consumed, second.size());
  EXPECT_EQ(head.path, "/two");
  EXPECT_EQ(head.host, "b");
  EXPECT_EQ(head.content_length, 3u);
  rest.remove_prefix(r.consumed + head.content_length);

  r = parseRequestHead(rest, Limits{}, head);
  ASSERT_EQ(r.state, ParseState::Complete);
  EXPECT_EQ(r.consumed, third.size());
  EXPECT_EQ(head.path, "/three");
  EXPECT_FALSE(head.keep_alive);
  rest.remove_prefix(r.consumed);
  EXPECT_TRUE(rest.empty());
}

TEST(RequestParser, HeadersAreViewsIntoTheBuffer) {
  const std::string raw = "GET /x?y HTTP/1.1\r\nHost: h\r\nX-Trim:   v  w \t\r\nAccept: */*\r\n\r\n";
  RequestHead head;
  ASSERT_EQ(parseRequestHead(raw, Limits{}, head).state, ParseState::Complete);
  ASSERT_EQ(head.headers.size(), 3u);
  EXPECT_EQ(head.headers[0].name, "Host");
  EXPECT_EQ(head.headers[1].name, "X-Trim");
  EXPECT_EQ(head.headers[1].value, "v  w");
  EXPECT_EQ(head.find("x-trim"), std::optional<std::string_view>("v  w"));
  EXPECT_EQ(head.find("ACCEPT"), std::optional<std::string_view>("*/*"));
  EXPECT_FALSE(head.find("missing").has_value());
  EXPECT_GE(head.headers[1].value.data(), raw.data());
  EXPECT_LT(head.headers[1].value.data(), raw.data() + raw.size());
  EXPECT_EQ(head.target.data(), raw.data() + 4);
}

TEST(RequestParser, FindReturnsFirstOfRepeatedHeaders) {
  const std::string raw = "GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\nx: 2\r\n\r\n";
  RequestHead head;
  ASSERT_EQ(parseRequestHead(raw, Limits{}, head).state, ParseState::Complete);
  EXPECT_EQ(head.find("X"), std::optional<std::string_view>("1"));
}

TEST(RequestParser, HeaderVectorCapacityIsReused) {
  RequestHead head;
  ASSERT_EQ(parseRequestHead(kBrowser, Limits{}, head).state, ParseState::Complete);
  const Header* storage = head.headers.data();
  const size_t capacity = head.headers.capacity();
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(parseRequestHead(kBrowser, Limits{}, head).state, ParseState::Complete);
  }
  EXPECT_EQ(head.headers.data(), storage);
  EXPECT_EQ(head.headers.capacity(), capacity);
}

TEST(RequestParser, ClearResetsEverything) {
  RequestHead head;
  ASSERT_EQ(parseRequestHead("POST /a?b HTTP/1.0\r\nContent-Length: 4\r\n\r\n", Limits{}, head).state,
            ParseState::Complete);
  head.clear();
  EXPECT_EQ(head.method, Method::Other);
  EXPECT_TRUE(head.target.empty());
  EXPECT_TRUE(head.query.empty());
  EXPECT_TRUE(head.headers.empty());
  EXPECT_EQ(head.version_minor, 1);
  EXPECT_EQ(head.body_kind, BodyKind::None);
  EXPECT_EQ(head.content_length, 0u);
  EXPECT_TRUE(head.keep_alive);
}

TEST(RequestParser, UriLimitAppliesBeforeHeaderLimit) {
  Limits limits;
  limits.max_uri_bytes = 4;
  limits.max_header_bytes = 12;
  RequestHead head;
  ParseResult r = parseRequestHead("GET /abcdefghijklmnop", limits, head);
  EXPECT_EQ(r.status, 414);
  r = parseRequestHead("GET /abc HTTP/1.1\r\nHost: a\r\n\r\n", limits, head);
  EXPECT_EQ(r.status, 431);
}

TEST(RequestParser, EveryHeaderCountUpToLimit) {
  for (size_t limit = 1; limit < 40; ++limit) {
    Limits limits;
    limits.max_headers = limit;
    std::string raw = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (size_t i = 1; i < limit; ++i) {
      raw += "X-" + std::to_string(i) + ": v\r\n";
    }
    RequestHead head;
    EXPECT_EQ(parseRequestHead(raw + "\r\n", limits, head).state, ParseState::Complete) << limit;
    EXPECT_EQ(head.headers.size(), limit);
    ParseResult r = parseRequestHead(raw + "Y: z\r\n\r\n", limits, head);
    EXPECT_EQ(r.state, ParseState::Error);
    EXPECT_EQ(r.status, 431);
  }
}

TEST(RequestParser, EveryControlByteInValueIsRejected) {
  for (int c = 0; c < 256; ++c) {
    std::string raw = "GET / HTTP/1.1\r\nHost: a\r\nX: ab";
    raw.push_back(static_cast<char>(c));
    raw += "cdefghijklmnopqrstu\r\n\r\n";
    RequestHead head;
    ParseResult r = parseRequestHead(raw, Limits{}, head);
    bool allowed = c == '\t' || (c >= 0x20 && c != 0x7f);
    EXPECT_EQ(r.state, allowed ? ParseState::Complete : ParseState::Error) << c;
    if (allowed) {
      EXPECT_EQ(head.find("x")->size(), 22u);
    } else {
      EXPECT_EQ(r.status, 400);
    }
  }
}

TEST(RequestParser, OnlyTokenCharactersInNames) {
  const std::string_view tchar =
      "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  for (int c = 0; c < 256; ++c) {
    if (c == ':') {
      continue;
    }
    std::string raw = "GET / HTTP/1.1\r\nHost: a\r\nX";
    raw.push_back(static_cast<char>(c));
    raw += "Y: v\r\n\r\n";
    RequestHead head;
    ParseResult r = parseRequestHead(raw, Limits{}, head);
    bool allowed = tchar.find(static_cast<char>(c)) != std::string_view::npos;
    EXPECT_EQ(r.state, allowed ? ParseState::Complete : ParseState::Error) << c;
  }
}

TEST(RequestParser, TargetCharacters) {
  for (int c = 0; c < 256; ++c) {
    std::string raw = "GET /a";
    raw.push_back(static_cast<char>(c));
    raw += "b HTTP/1.1\r\nHost: a\r\n\r\n";
    RequestHead head;
    ParseResult r = parseRequestHead(raw, Limits{}, head);
    bool allowed = c > 0x20 && c < 0x7f && c != '#';
    EXPECT_EQ(r.state, allowed ? ParseState::Complete : ParseState::Error) << c;
  }
}

TEST(RequestParser, LongValuesCrossTheWordScanEverywhere) {
  // The value scanner works eight bytes at a time: put a forbidden byte at every offset.
  for (size_t len = 0; len < 40; ++len) {
    for (size_t at = 0; at <= len; ++at) {
      std::string value(len, 'v');
      std::string raw = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
      if (at < len) {
        value[at] = '\x01';
      }
      raw += value + "\r\n\r\n";
      RequestHead head;
      ParseResult r = parseRequestHead(raw, Limits{}, head);
      if (at < len) {
        EXPECT_EQ(r.status, 400) << len << " " << at;
      } else {
        ASSERT_EQ(r.state, ParseState::Complete);
        EXPECT_EQ(head.find("X")->size(), len);
      }
    }
  }
}

// The scanners test 16 bytes at a time: put each interesting byte at every offset of long
// names, values and targets.
TEST(RequestParser, VectorScansHandleEveryOffset) {
  struct Probe {
    char byte;
    bool in_name;
    bool in_value;
    bool in_target;
  };
  const Probe probes[] = {
      {'_', true, true, true},       {'.', true, true, true},      {'~', true, true, true},
      {'!', true, true, true},       {'\t', false, true, false},   {'(', false, true, true},
      {'\x80', false, true, false},  {'\xff', false, true, false}, {'\x7f', false, false, false},
      {'\x1f', false, false, false}, {'\0', false, false, false},  {'#', true, true, false},
      {'@', false, true, true},      {'[', false, true, true},     {'`', true, true, true},
      {'{', false, true, true}};
  for (const Probe& probe : probes) {
    for (size_t len = 1; len < 50; ++len) {
      for (size_t at = 0; at < len; ++at) {
        std::string text(len, 'a');
        text[at] = probe.byte;
        RequestHead head;
        SCOPED_TRACE(::testing::Message() << "byte " << int(probe.byte) << " len " << len << " at " << at);

        std::string name = "N" + text;
        std::string raw = "GET / HTTP/1.1\r\nHost: a\r\n" + name + ": v\r\n\r\n";
        ParseResult r = parseRequestHead(raw, Limits{}, head);
        ASSERT_EQ(r.state, probe.in_name ? ParseState::Complete : ParseState::Error);
        if (probe.in_name) {
          EXPECT_EQ(head.headers[1].name, name);
        }

        std::string value = "v" + text + "v";
        raw = "GET / HTTP/1.1\r\nHost: a\r\nX: " + value + "\r\n\r\n";
        r = parseRequestHead(raw, Limits{}, head);
        ASSERT_EQ(r.state, probe.in_value ? ParseState::Complete : ParseState::Error);
        if (probe.in_value) {
          EXPECT_EQ(head.headers[1].value, value);
        }

        std::string target = "/" + text;
        raw = "GET " + target + " HTTP/1.1\r\nHost: a\r\n\r\n";
        r = parseRequestHead(raw, Limits{}, head);
        ASSERT_EQ(r.state, probe.in_target ? ParseState::Complete : ParseState::Error);
        if (probe.in_target) {
          EXPECT_EQ(head.target, target);
        }
      }
    }
  }
}

TEST(RequestParser, IdempotencyAndNames) {
  EXPECT_TRUE(isIdempotent(Method::Get));
  EXPECT_TRUE(isIdempotent(Method::Head));
  EXPECT_TRUE(isIdempotent(Method::Put));
  EXPECT_TRUE(isIdempotent(Method::Delete));
  EXPECT_TRUE(isIdempotent(Method::Options));
  EXPECT_TRUE(isIdempotent(Method::Trace));
  EXPECT_FALSE(isIdempotent(Method::Post));
  EXPECT_FALSE(isIdempotent(Method::Patch));
  EXPECT_FALSE(isIdempotent(Method::Connect));
  EXPECT_FALSE(isIdempotent(Method::Other));
  EXPECT_EQ(methodName(Method::Get), "GET");
  EXPECT_EQ(methodName(Method::Connect), "CONNECT");
  EXPECT_EQ(methodName(Method::Patch), "PATCH");
  EXPECT_EQ(methodName(Method::Other), "");
}

TEST(Message, EqualsIgnoreCase) {
  EXPECT_TRUE(equalsIgnoreCase("Content-Length", "content-length"));
  EXPECT_TRUE(equalsIgnoreCase("", ""));
  EXPECT_FALSE(equalsIgnoreCase("a", "ab"));
  EXPECT_FALSE(equalsIgnoreCase("[", "{"));
  EXPECT_FALSE(equalsIgnoreCase("@", "`"));
}

TEST(Message, HasToken) {
  EXPECT_TRUE(hasToken("keep-alive, Upgrade", "upgrade"));
  EXPECT_TRUE(hasToken("close", "close"));
  EXPECT_TRUE(hasToken(" ,\tclose\t, ", "CLOSE"));
  EXPECT_FALSE(hasToken("closed", "close"));
  EXPECT_FALSE(hasToken("", "close"));
  EXPECT_FALSE(hasToken("x-close", "close"));
  EXPECT_FALSE(hasToken("keep-alive", "alive"));
}

}  // namespace
}  // namespace fulcrum::http
