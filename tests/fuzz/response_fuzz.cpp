// Fuzzes the response head parser, the body decoder behind it and the ResponseReader that
// drives both for the clients. The first input byte steers: bit 7 picks small limits, bit 6
// decodes the rest as a chunked body directly, bits 4-5 pick the request method, the low bits
// pick where the input is split.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/parser.h"
#include "http/response_reader.h"
#include "http/util.h"
#include "http_fuzz_common.h"

using namespace fulcrum::http;
using fulcrum::http::fuzz::check;

namespace {

// The reader ends in the same place whether the bytes come at once or in two pieces, as a
// connection delivers them.
void checkReader(std::string_view input, size_t split, Method method) {
  ResponseReader whole;
  whole.reset(method, 4096);
  std::string whole_body;
  const size_t used = whole.read(input, whole_body);
  check(used <= input.size(), "reader used more than it was given");
  if (whole.state() == ResponseReader::State::Failed) {
    check(!whole.error().empty(), "reader failed without a reason");
  }
  check(whole_body.size() <= 4096, "reader body over its cap");

  ResponseReader parts;
  parts.reset(method, 4096);
  std::string parts_body;
  std::string in(input.substr(0, split));
  in.erase(0, parts.read(in, parts_body));
  if (parts.state() == ResponseReader::State::Head || parts.state() == ResponseReader::State::Body) {
    in.append(input.substr(split));
    in.erase(0, parts.read(in, parts_body));
  } else {
    in.append(input.substr(split));
  }
  check(parts.state() == whole.state(), "reader state depends on the split");
  check(parts.status() == whole.status(), "reader status depends on the split");
  if (whole.state() != ResponseReader::State::Failed) {
    check(parts_body == whole_body, "reader body depends on the split");
    check(in == input.substr(used), "reader leaves different bytes depending on the split");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  const uint8_t control = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const size_t split = input.size() * (control & 0x0f) / 0x0f;
  static constexpr Method kMethods[] = {Method::Get, Method::Head, Method::Connect, Method::Post};
  const Method method = kMethods[(control >> 4) & 3];

  checkReader(input, split, method);

  Limits limits;
  if ((control & 0x80) != 0) {
    limits.max_header_bytes = 96;
    limits.max_headers = 4;
  }
  if ((control & 0x40) != 0) {
    fuzz::checkBody(BodyKind::Chunked, 0, 0, input, split);
    return 0;
  }

  ResponseHead head;
  const ParseResult whole = parseResponseHead(input, limits, method, head);
  ResponseHead part_head;
  fuzz::checkPrefix(parseResponseHead(input.substr(0, split), limits, method, part_head), whole, split);
  fuzz::checkScanner(
      input, split,
      [&](std::string_view bytes) { return parseResponseHead(bytes, limits, method, part_head); },
      [&](HeadScanner& scanner, std::string_view bytes) {
        return scanner.parseResponse(bytes, limits, method, part_head);
      });
  if (whole.state == ParseState::Error) {
    check(whole.status == 502, "unexpected response error status");
    return 0;
  }
  if (whole.state == ParseState::Incomplete) {
    check(input.size() < limits.max_header_bytes, "incomplete head over the limit");
    return 0;
  }

  const std::string_view bytes = input.substr(0, whole.consumed);
  check(whole.consumed <= limits.max_header_bytes, "head over the limit accepted");
  check(head.headers.size() <= limits.max_headers, "too many headers accepted");
  check(head.status >= 100 && head.status <= 599, "bad status accepted");
  check(fuzz::within(head.reason, bytes), "reason outside the head");
  fuzz::checkHeaders(head, bytes);
  const bool has_te = head.find("transfer-encoding").has_value();
  const bool has_cl = head.find("content-length").has_value();
  check(!(has_te && has_cl), "both Transfer-Encoding and Content-Length accepted");
  if (head.body_kind == BodyKind::Chunked) {
    check(has_te, "chunked without Transfer-Encoding");
  }
  if (head.body_kind == BodyKind::ContentLength) {
    check(has_cl, "length without Content-Length");
  }
  if (head.body_kind == BodyKind::UntilClose || head.body_kind == BodyKind::Tunnel) {
    check(!head.keep_alive, "keep-alive on a connection that must close");
  }
  if (method == Method::Head && head.status != 101) {
    check(head.body_kind == BodyKind::None, "body on a HEAD response");
  }

  ResponseHead again;
  const ParseResult exact = parseResponseHead(bytes, limits, method, again);
  check(exact.state == ParseState::Complete && exact.consumed == whole.consumed, "exact head differs");
  check(again.status == head.status && again.body_kind == head.body_kind &&
            again.content_length == head.content_length && again.keep_alive == head.keep_alive,
        "exact head fields differ");

  if (auto date = head.find("date")) {
    (void)parseHttpDate(*date);
  }

  const std::string_view body = input.substr(whole.consumed);
  fuzz::checkBody(head.body_kind, head.content_length, 0, body, body.size() * (control & 0x0f) / 0x0f);
  return 0;
}
