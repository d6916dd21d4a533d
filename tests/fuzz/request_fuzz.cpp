// Fuzzes the request head parser and the body decoder behind it. The first input byte steers:
// bit 7 picks small limits, bit 6 decodes the rest as a chunked body directly, the low bits
// pick where the input is split for the prefix and two-piece checks.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "http/parser.h"
#include "http/util.h"
#include "http_fuzz_common.h"

using namespace fulcrum::http;
using fulcrum::http::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  const uint8_t control = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const size_t split = input.size() * (control & 0x3f) / 0x3f;

  Limits limits;
  if ((control & 0x80) != 0) {
    limits.max_header_bytes = 96;
    limits.max_uri_bytes = 24;
    limits.max_headers = 4;
    limits.max_body_bytes = 32;
  }
  if ((control & 0x40) != 0) {
    fuzz::checkBody(BodyKind::Chunked, 0, limits.max_body_bytes, input, split);
    return 0;
  }

  RequestHead head;
  const ParseResult whole = parseRequestHead(input, limits, head);
  RequestHead part_head;
  fuzz::checkPrefix(parseRequestHead(input.substr(0, split), limits, part_head), whole, split);
  fuzz::checkScanner(
      input, split, [&](std::string_view bytes) { return parseRequestHead(bytes, limits, part_head); },
      [&](HeadScanner& scanner, std::string_view bytes) {
        return scanner.parseRequest(bytes, limits, part_head);
      });
  if (whole.state == ParseState::Error) {
    const int s = whole.status;
    check(s == 400 || s == 413 || s == 414 || s == 417 || s == 431 || s == 501 || s == 505,
          "unexpected request error status");
    return 0;
  }
  if (whole.state == ParseState::Incomplete) {
    check(input.size() < limits.max_header_bytes, "incomplete head over the limit");
    return 0;
  }

  const std::string_view bytes = input.substr(0, whole.consumed);
  check(whole.consumed <= limits.max_header_bytes, "head over the limit accepted");
  check(head.headers.size() <= limits.max_headers, "too many headers accepted");
  check(head.target.size() <= limits.max_uri_bytes && !head.target.empty(), "bad target length");
  check(fuzz::within(head.target, bytes) && (fuzz::within(head.path, bytes) || head.path == "/"),
        "target outside the head");
  check(head.version_minor <= 1, "bad version");
  fuzz::checkHeaders(head, bytes);
  if (head.version_minor == 1) {
    check(head.find("host").has_value(), "HTTP/1.1 without Host accepted");
  }
  const bool has_te = head.find("transfer-encoding").has_value();
  const bool has_cl = head.find("content-length").has_value();
  check(!(has_te && has_cl), "both Transfer-Encoding and Content-Length accepted");
  check(head.body_kind == BodyKind::None || head.body_kind == BodyKind::ContentLength ||
            head.body_kind == BodyKind::Chunked,
        "bad request body kind");
  check((head.body_kind == BodyKind::Chunked) == has_te, "chunked without Transfer-Encoding");
  check((head.body_kind == BodyKind::ContentLength) == has_cl, "length without Content-Length");
  if (limits.max_body_bytes != 0) {
    check(head.content_length <= limits.max_body_bytes, "body over the limit accepted");
  }

  // Parsing exactly the head gives the same head.
  RequestHead again;
  const ParseResult exact = parseRequestHead(bytes, limits, again);
  check(exact.state == ParseState::Complete && exact.consumed == whole.consumed, "exact head differs");
  check(again.target == head.target && again.headers.size() == head.headers.size() &&
            again.body_kind == head.body_kind && again.content_length == head.content_length &&
            again.keep_alive == head.keep_alive && again.host == head.host,
        "exact head fields differ");

  // Helpers the server runs on request data must not misbehave either.
  (void)percentDecodePath(head.path);
  if (auto since = head.find("if-modified-since")) {
    (void)parseHttpDate(*since);
  }

  const std::string_view body = input.substr(whole.consumed);
  fuzz::checkBody(head.body_kind, head.content_length, limits.max_body_bytes, body,
                  body.size() * (control & 0x3f) / 0x3f);
  return 0;
}
