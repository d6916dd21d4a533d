// Request and response heads (RFC 9112 §2-§6): one pass over the bytes, nothing copied.
#include "http/parser.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "http/syntax.h"

namespace fulcrum::http {

namespace {

using namespace syntax;

ParseResult failure(int status, std::string_view reason) {
  ParseResult result;
  result.state = ParseState::Error;
  result.status = status;
  result.reason = reason;
  return result;
}

// ---------------------------------------------------------------------------------------------
// Header values with framing or connection semantics.

// Calls fn(element) for each non-empty, OWS-trimmed element of a comma-separated list.
template <typename Fn>
void forEachListElement(std::string_view list, Fn&& fn) {
  size_t pos = 0;
  while (pos < list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string_view::npos) {
      comma = list.size();
    }
    size_t begin = pos;
    size_t end = comma;
    while (begin < end && isOws(list[begin])) {
      ++begin;
    }
    while (end > begin && isOws(list[end - 1])) {
      --end;
    }
    if (begin < end) {
      fn(list.substr(begin, end - begin));
    }
    pos = comma + 1;
  }
}

// Content-Length = 1*DIGIT; a list of identical values ("5, 5") is one value (RFC 9110 §8.6).
bool parseContentLength(std::string_view value, uint64_t& out) {
  bool have = false;
  uint64_t first = 0;
  size_t i = 0;
  for (;;) {
    size_t start = i;
    uint64_t number = 0;
    while (i < value.size() && isDigit(value[i])) {
      uint64_t digit = static_cast<uint64_t>(value[i] - '0');
      if (number > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
        return false;
      }
      number = number * 10 + digit;
      ++i;
    }
    if (i == start || (have && number != first)) {
      return false;
    }
    have = true;
    first = number;
    while (i < value.size() && isOws(value[i])) {
      ++i;
    }
    if (i == value.size()) {
      out = first;
      return true;
    }
    if (value[i] != ',') {
      return false;
    }
    ++i;
    while (i < value.size() && isOws(value[i])) {
      ++i;
    }
  }
}

bool isToken(std::string_view text) {
  if (text.empty()) {
    return false;
  }
  for (char c : text) {
    if (!has(c, kTcharBit)) {
      return false;
    }
  }
  return true;
}

// Status for a Transfer-Encoding that is not exactly one "chunked": 400 for malformed or
// redundant ones ("chunked, chunked") and whenever chunked is not the final coding, for then the
// body's length cannot be known (RFC 9112 §6.3: "gzip", "chunked, identity", "xchunked"); 501
// for a well-formed list ending in chunked with a coding we do not implement before it ("gzip,
// chunked", §6.1).
template <typename Headers>
int rejectTransferEncoding(const Headers& headers) {
  int chunked = 0;
  int others = 0;
  bool malformed = false;
  bool chunked_last = false;
  for (const Header& header : headers) {
    if (!equalsLower(header.name, "transfer-encoding")) {
      continue;
    }
    forEachListElement(header.value, [&](std::string_view element) {
      size_t semi = element.find(';');
      std::string_view coding = element.substr(0, semi);
      while (!coding.empty() && isOws(coding.back())) {
        coding.remove_suffix(1);
      }
      chunked_last = false;
      if (!isToken(coding)) {
        malformed = true;
      } else if (semi == std::string_view::npos && equalsLower(coding, "chunked")) {
        ++chunked;
        chunked_last = true;
      } else {
        ++others;
      }
    });
  }
  if (malformed || chunked > 1 || others == 0 || !chunked_last) {
    return 400;
  }
  return 501;
}

// uri-host [ ":" port ] (RFC 3986 §3.2.2). An empty value is allowed for Host (RFC 9110 §7.2).
bool validAuthority(std::string_view text, bool require_port) {
  if (text.empty()) {
    return !require_port;
  }
  size_t i = 0;
  if (text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close == 1) {
      return false;
    }
    for (i = 1; i < close; ++i) {
      if (!has(text[i], kHostBit) && text[i] != ':') {
        return false;
      }
    }
    i = close + 1;
  } else {
    while (i < text.size() && has(text[i], kHostBit)) {
      if (text[i] == '%' && (i + 2 >= text.size() || kHexValue[static_cast<unsigned char>(text[i + 1])] < 0 ||
                             kHexValue[static_cast<unsigned char>(text[i + 2])] < 0)) {
        return false;
      }
      ++i;
    }
    if (i == 0) {
      return false;
    }
  }
  if (i == text.size()) {
    return !require_port;
  }
  if (text[i] != ':') {
    return false;
  }
  size_t port = ++i;
  while (i < text.size() && isDigit(text[i])) {
    ++i;
  }
  return i == text.size() && (!require_port || i > port);
}

Method identifyMethod(std::string_view m) {
  switch (m.size()) {
    case 3:
      if (m == "GET") {
        return Method::Get;
      }
      if (m == "PUT") {
        return Method::Put;
      }
      break;
    case 4:
      if (m == "POST") {
        return Method::Post;
      }
      if (m == "HEAD") {
        return Method::Head;
      }
      break;
    case 5:
      if (m == "PATCH") {
        return Method::Patch;
      }
      if (m == "TRACE") {
        return Method::Trace;
      }
      break;
    case 6:
      if (m == "DELETE") {
        return Method::Delete;
      }
      break;
    case 7:
      if (m == "OPTIONS") {
        return Method::Options;
      }
      if (m == "CONNECT") {
        return Method::Connect;
      }
      break;
    default:
      break;
  }
  return Method::Other;
}

void splitPathQuery(std::string_view rest, RequestHead& out) {
  size_t q = rest.find('?');
  if (q == std::string_view::npos) {
    out.path = rest;
  } else {
    out.path = rest.substr(0, q);
    out.query = rest.substr(q + 1);
  }
}

// Checks the request-target form against the method (RFC 9112 §3.2) and fills path/query.
bool classifyTarget(RequestHead& out) {
  std::string_view target = out.target;
  if (out.method == Method::Connect) {
    return validAuthority(target, /*require_port=*/true);  // authority-form only
  }
  if (target[0] == '/') {
    splitPathQuery(target, out);
    return true;
  }
  if (target == "*") {
    out.path = target;
    return out.method == Method::Options;
  }
  // absolute-form: scheme "://" authority [ path-abempty ] [ "?" query ]
  if (!isAlpha(target[0])) {
    return false;
  }
  size_t i = 1;
  while (i < target.size() && has(target[i], kSchemeBit)) {
    ++i;
  }
  if (target.substr(i, 3) != "://") {
    return false;
  }
  i += 3;
  size_t authority_end = target.find_first_of("/?", i);
  if (authority_end == std::string_view::npos) {
    authority_end = target.size();
  }
  std::string_view authority = target.substr(i, authority_end - i);
  // userinfo is deprecated and a known phishing vector (RFC 9110 §4.2.4): reject it.
  if (authority.empty() || !validAuthority(authority, false)) {
    return false;
  }
  std::string_view rest = target.substr(authority_end);
  splitPathQuery(rest, out);
  if (out.path.empty()) {
    out.path = "/";  // a static string: no buffer view to point into
  }
  return true;
}

// Matches "HTTP/" DIGIT "." DIGIT followed by `tail` against the bytes available. Returns the
// number of bytes matched (the full pattern length), 0 when more bytes are needed, or -1 on a
// mismatch.
int matchVersion(const char* p, const char* end, char tail) {
  static constexpr char kPattern[] = "HTTP/#.#";
  for (int i = 0; i < 9; ++i) {
    if (p + i == end) {
      return 0;
    }
    char c = p[i];
    char expect = i < 8 ? kPattern[i] : tail;
    if (expect == '#' ? !isDigit(c) : c != expect) {
      return -1;
    }
  }
  return 9;
}

// The field lines' connection and framing headers, folded into the summary.
using detail::FieldSummary;

void addConnection(FieldSummary& seen, std::string_view value) {
  forEachListElement(value, [&](std::string_view token) {
    if (equalsLower(token, "close")) {
      seen.close = true;
    } else if (equalsLower(token, "keep-alive")) {
      seen.keep_alive = true;
    } else if (equalsLower(token, "upgrade")) {
      seen.upgrade_token = true;
    }
  });
}

// False for a malformed or conflicting Content-Length.
bool addContentLength(FieldSummary& seen, std::string_view value) {
  uint64_t length = 0;
  if (!parseContentLength(value, length) || (seen.have_length && length != seen.content_length)) {
    return false;
  }
  seen.have_length = true;
  seen.content_length = length;
  return true;
}

bool keepAlive(const FieldSummary& seen, uint8_t version_minor) {
  return !seen.close && (version_minor == 1 || seen.keep_alive);
}

bool chunkedOnly(const FieldSummary& seen) {
  return seen.te_count == 1 && seen.te_chunked;
}

enum class Role : uint8_t { Request, Response };

ParseResult complete(const char* begin, const char* p) {
  ParseResult result;
  result.state = ParseState::Complete;
  result.consumed = static_cast<size_t>(p - begin);
  return result;
}

// Parses field lines from p through the empty line that ends the section (RFC 9112 §5): the one
// field parser of request and response heads, whose refusals differ only in status and wording.
// Each line is checked against those before it (`seen`) and appended to `headers` when given.
// Complete: p is past the empty line. Incomplete: p is at the start of the unfinished line.
template <Role role>
ParseResult parseFields(const char*& p, const char* end, const Limits& limits, FieldSummary& seen,
                        std::vector<Header>* headers, std::string_view* host) {
  constexpr bool kRequest = role == Role::Request;
  constexpr int kBad = kRequest ? 400 : 502;
  for (;;) {
    FieldLine line = parseFieldLine(p, end);
    if (line.kind == LineKind::More) {
      return ParseResult{};
    }
    if (line.kind == LineKind::Bad) {
      return failure(kBad, line.reason);
    }
    const char* const line_begin = p;
    p = line.next;
    if (line.kind == LineKind::End) {
      return complete(line_begin, p);
    }
    if (++seen.count > limits.max_headers) {
      return kRequest ? failure(431, "too many header fields")
                      : failure(502, "too many header fields in response");
    }
    if (headers != nullptr) {
      headers->push_back(Header{line.name, line.value});
    }
    const std::string_view name = line.name;
    const std::string_view value = line.value;
    switch (name.size()) {
      case 4:
        if (kRequest && equalsLower(name, "host")) {
          if (++seen.host_count > 1) {
            return failure(400, "repeated Host");
          }
          if (!validAuthority(value, false)) {
            return failure(400, "invalid Host");
          }
          if (host != nullptr) {
            *host = value;
          }
        }
        break;
      case 6:
        if (kRequest && equalsLower(name, "expect")) {
          (equalsLower(value, "100-continue") ? seen.expect_100 : seen.expect_other) = true;
        }
        break;
      case 7:
        if (kRequest && equalsLower(name, "upgrade")) {
          seen.have_upgrade = true;
        }
        break;
      case 10:
        if (equalsLower(name, "connection")) {
          addConnection(seen, value);
        }
        break;
      case 14:
        if (equalsLower(name, "content-length") && !addContentLength(seen, value)) {
          return failure(kBad, kRequest ? "invalid Content-Length" : "invalid Content-Length in response");
        }
        break;
      case 17:
        if (equalsLower(name, "transfer-encoding")) {
          ++seen.te_count;
          seen.te_chunked = equalsLower(value, "chunked");
        }
        break;
      default:
        break;
    }
  }
}

// Leading empty lines (RFC 9112 §2.2), then method SP request-target SP HTTP-version CRLF. p moves
// past the empty lines even when the request line is unfinished, and past the line when Complete.
// An over-long request-target is refused as soon as max_uri_bytes + 1 of it are there.
ParseResult parseRequestLine(const char*& p, const char* end, const Limits& limits, RequestHead& out) {
  while (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
    p += 2;
  }
  if (end - p == 1 && *p == '\r') {
    return ParseResult{};
  }
  const char* q = p;

  // method SP
  const char* method = q;
  while (q < end && has(*q, kTcharBit)) {
    ++q;
  }
  if (q == end) {
    return ParseResult{};
  }
  if (*q != ' ' || q == method) {
    return failure(400, "invalid method");
  }
  out.method_text = std::string_view(method, static_cast<size_t>(q - method));
  out.method = identifyMethod(out.method_text);
  ++q;

  // request-target SP
  const char* target = q;
  const size_t available = static_cast<size_t>(end - q);
  const char* target_scan_end = available > limits.max_uri_bytes ? q + limits.max_uri_bytes + 1 : end;
  q = scanTarget(q, target_scan_end);
  if (static_cast<size_t>(q - target) > limits.max_uri_bytes) {
    return failure(414, "request target too long");
  }
  if (q == end) {
    return ParseResult{};
  }
  if (*q != ' ' || q == target) {
    return failure(400, "invalid request target");
  }
  out.target = std::string_view(target, static_cast<size_t>(q - target));
  ++q;

  // HTTP-version CRLF
  if (end - q >= 10 && std::memcmp(q, "HTTP/1.1\r\n", 10) == 0) {
    out.version_minor = 1;
    q += 10;
  } else {
    int matched = matchVersion(q, end, '\r');
    if (matched == 0) {
      return ParseResult{};
    }
    if (matched < 0) {
      return failure(400, "invalid HTTP version");
    }
    if (q + 9 == end) {
      return ParseResult{};
    }
    if (q[9] != '\n') {
      return failure(400, "bare CR");
    }
    if (q[5] != '1' || q[7] > '1') {
      return failure(505, "HTTP version not supported");
    }
    out.version_minor = static_cast<uint8_t>(q[7] - '0');
    q += 10;
  }
  if (!classifyTarget(out)) {
    return failure(400, "request target does not fit the method");
  }
  const char* const line_begin = p;
  p = q;
  return complete(line_begin, p);
}

// What the whole request head says once its fields are in; `consumed` is its length.
ParseResult finishRequest(const FieldSummary& seen, const Limits& limits, size_t consumed, RequestHead& out) {
  if (out.version_minor == 1 && seen.host_count == 0) {
    return failure(400, "missing Host");
  }
  if (seen.te_count > 0) {
    if (out.version_minor == 0) {
      return failure(400, "Transfer-Encoding in HTTP/1.0");
    }
    if (seen.have_length) {
      return failure(400, "both Content-Length and Transfer-Encoding");
    }
    if (!chunkedOnly(seen)) {
      int status = rejectTransferEncoding(out.headers);
      return failure(status, status == 501 ? "unsupported transfer coding" : "invalid Transfer-Encoding");
    }
    out.body_kind = BodyKind::Chunked;
  } else if (seen.have_length) {
    if (limits.max_body_bytes != 0 && seen.content_length > limits.max_body_bytes) {
      return failure(413, "request body too large");
    }
    out.body_kind = BodyKind::ContentLength;
    out.content_length = seen.content_length;
  }
  if (seen.expect_other) {
    return failure(417, "unsupported expectation");
  }
  out.keep_alive = keepAlive(seen, out.version_minor);
  // HTTP/1.0 has neither 100-continue nor Upgrade (RFC 9110 §10.1.1, §7.8).
  out.expect_continue = seen.expect_100 && out.version_minor == 1;
  out.upgrade = seen.upgrade_token && seen.have_upgrade && out.version_minor == 1;
  ParseResult result;
  result.state = ParseState::Complete;
  result.consumed = consumed;
  return result;
}

// HTTP-version SP status-code [ SP reason-phrase ] CRLF; p moves past the line when Complete.
ParseResult parseStatusLine(const char*& p, const char* end, ResponseHead& out) {
  const char* q = p;
  int matched = matchVersion(q, end, ' ');
  if (matched == 0) {
    return ParseResult{};
  }
  if (matched < 0) {
    return failure(502, "invalid response status line");
  }
  if (q[5] != '1' || q[7] > '1') {
    return failure(502, "unsupported HTTP version in response");
  }
  out.version_minor = static_cast<uint8_t>(q[7] - '0');
  q += 9;
  int status = 0;
  for (int i = 0; i < 3; ++i, ++q) {
    if (q == end) {
      return ParseResult{};
    }
    if (!isDigit(*q)) {
      return failure(502, "invalid response status code");
    }
    status = status * 10 + (*q - '0');
  }
  if (q == end) {
    return ParseResult{};
  }
  if (*q == ' ') {
    ++q;
  } else if (*q != '\r') {
    return failure(502, "invalid response status code");
  }
  if (status < 100 || status > 599) {
    return failure(502, "invalid response status code");
  }
  out.status = status;
  const char* reason = q;
  q = scanFieldValue(q, end);
  if (q == end) {
    return ParseResult{};
  }
  if (*q != '\r') {
    return failure(502, "invalid response reason phrase");
  }
  if (q + 1 == end) {
    return ParseResult{};
  }
  if (q[1] != '\n') {
    return failure(502, "bare CR");
  }
  out.reason = std::string_view(reason, static_cast<size_t>(q - reason));
  const char* const line_begin = p;
  p = q + 2;
  return complete(line_begin, p);
}

// What the whole response head says once its fields are in; `consumed` is its length.
ParseResult finishResponse(const FieldSummary& seen, Method request_method, size_t consumed,
                           ResponseHead& out) {
  // Framing headers are validated even where the status makes the body empty: a proxy must not
  // forward anything ambiguous.
  if (seen.te_count > 0) {
    if (seen.have_length) {
      return failure(502, "both Content-Length and Transfer-Encoding in response");
    }
    if (out.version_minor == 0) {
      return failure(502, "Transfer-Encoding in HTTP/1.0 response");
    }
    if (!chunkedOnly(seen)) {
      return failure(502, "unsupported Transfer-Encoding in response");
    }
  }
  const int status = out.status;
  out.keep_alive = keepAlive(seen, out.version_minor);
  // RFC 9112 §6.3: a 2xx to CONNECT is a tunnel right after the head, even a 204.
  if (status == 101 || (request_method == Method::Connect && status >= 200 && status < 300)) {
    out.body_kind = BodyKind::Tunnel;
  } else if (request_method == Method::Head || status < 200 || status == 204 || status == 304) {
    out.body_kind = BodyKind::None;
  } else if (seen.te_count > 0) {
    out.body_kind = BodyKind::Chunked;
  } else if (seen.have_length) {
    out.body_kind = BodyKind::ContentLength;
    out.content_length = seen.content_length;
  } else {
    out.body_kind = BodyKind::UntilClose;
  }
  if (out.body_kind == BodyKind::UntilClose || out.body_kind == BodyKind::Tunnel) {
    out.keep_alive = false;
  }
  ParseResult result;
  result.state = ParseState::Complete;
  result.consumed = consumed;
  return result;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

ParseResult parseRequestHead(std::string_view data, const Limits& limits, RequestHead& out) {
  out.clear();
  // Scan at most max_header_bytes: running out of bytes inside that window means "incomplete"
  // unless the window is already the whole limit, in which case the head is too large.
  const bool capped = data.size() >= limits.max_header_bytes;
  const char* const begin = data.data();
  const char* const end = begin + (capped ? limits.max_header_bytes : data.size());
  const char* p = begin;
  ParseResult step = parseRequestLine(p, end, limits, out);
  if (step.state == ParseState::Complete) {
    FieldSummary seen;
    step = parseFields<Role::Request>(p, end, limits, seen, &out.headers, &out.host);
    if (step.state == ParseState::Complete) {
      return finishRequest(seen, limits, static_cast<size_t>(p - begin), out);
    }
  }
  if (step.state == ParseState::Incomplete && capped) {
    return failure(431, "request head too large");
  }
  return step;
}

ParseResult parseResponseHead(std::string_view data, const Limits& limits, Method request_method,
                              ResponseHead& out) {
  out.clear();
  const bool capped = data.size() >= limits.max_header_bytes;
  const char* const begin = data.data();
  const char* const end = begin + (capped ? limits.max_header_bytes : data.size());
  const char* p = begin;
  ParseResult step = parseStatusLine(p, end, out);
  if (step.state == ParseState::Complete) {
    FieldSummary seen;
    step = parseFields<Role::Response>(p, end, limits, seen, &out.headers, nullptr);
    if (step.state == ParseState::Complete) {
      return finishResponse(seen, request_method, static_cast<size_t>(p - begin), out);
    }
  }
  if (step.state == ParseState::Incomplete && capped) {
    return failure(502, "response head too large");
  }
  return step;
}

// ---------------------------------------------------------------------------------------------
// HeadScanner

void HeadScanner::reset() {
  line_start_ = 0;
  scanned_ = 0;
  in_fields_ = false;
  method_end_ = kNotYet;
  target_checked_ = false;
  seen_ = detail::FieldSummary{};
}

// The first call parses what is there, as the stateless parser would: a head that arrives whole
// costs one parse. Later calls scan the new bytes for LF; the lines they complete are checked by
// `start_line` and `fields` (the stateless parser's own steps, so they fail where it would), and
// `whole` runs the full parse once the empty line is in, or at the size limit.
template <typename StartLine, typename Fields, typename Whole>
ParseResult HeadScanner::scan(std::string_view data, size_t max_header_bytes, StartLine&& start_line,
                              Fields&& fields, Whole&& whole) {
  const size_t window = std::min(data.size(), max_header_bytes);
  auto finish = [&]() {
    examined_ += window;
    reset();
    return whole();
  };
  if (data.size() < scanned_) {
    reset();  // not the bytes scanned before: start again
  }
  if (scanned_ == 0) {
    examined_ += window;
    ParseResult result = whole();
    if (result.state != ParseState::Incomplete) {
      return result;
    }
  }
  const char* const begin = data.data();
  const size_t from = scanned_;  // line_start_ <= scanned_
  if (window > from) {
    examined_ += window - from;
    const void* lf = ::memrchr(begin + from, '\n', window - from);
    scanned_ = window;
    if (lf != nullptr) {
      // Check the lines completed since the last call, each once.
      const char* const lines_end = static_cast<const char*>(lf) + 1;
      const char* p = begin + line_start_;
      examined_ += static_cast<uint64_t>(lines_end - p);
      ParseResult step;
      step.state = ParseState::Complete;
      if (!in_fields_) {
        step = start_line(p, lines_end);
        in_fields_ = step.state == ParseState::Complete;
      }
      if (step.state == ParseState::Complete) {
        step = fields(p, lines_end);
      }
      line_start_ = static_cast<size_t>(p - begin);
      if (step.state == ParseState::Complete) {
        return finish();  // the empty line is in: parse the head, once
      }
      if (step.state == ParseState::Error) {
        reset();
        return step;
      }
    }
  }
  if (data.size() >= max_header_bytes) {
    return finish();  // 431 (502 for a response), or what the unfinished line holds
  }
  return ParseResult{};
}

ParseResult HeadScanner::parseRequest(std::string_view data, const Limits& limits, RequestHead& out) {
  const size_t from = data.size() < scanned_ ? 0 : scanned_;  // bytes not yet searched for SP
  ParseResult result = scan(
      data, limits.max_header_bytes,
      [&](const char*& p, const char* end) {
        out.clear();
        ParseResult line = parseRequestLine(p, end, limits, out);
        if (line.state == ParseState::Incomplete) {
          method_end_ = kNotYet;  // only empty lines so far: the request line starts at p
        }
        return line;
      },
      [&](const char*& p, const char* end) {
        return parseFields<Role::Request>(p, end, limits, seen_, nullptr, nullptr);
      },
      [&]() { return parseRequestHead(data, limits, out); });
  if (result.state == ParseState::Incomplete && !in_fields_) {
    watchRequestTarget(data, from, std::min(data.size(), limits.max_header_bytes), limits, out, result);
  }
  return result;
}

// The stateless parser refuses a request-target with 414 as soon as max_uri_bytes + 1 of it
// are in, before its line ends; so does the scanner, checking the unfinished request line once,
// when that many bytes follow the method's SP (found by scanning each new byte once).
void HeadScanner::watchRequestTarget(std::string_view data, size_t from, size_t window, const Limits& limits,
                                     RequestHead& out, ParseResult& error) {
  if (target_checked_) {
    return;
  }
  if (method_end_ == kNotYet) {
    from = std::max(from, line_start_);
    if (window <= from) {
      return;
    }
    examined_ += window - from;
    const void* sp = std::memchr(data.data() + from, ' ', window - from);
    if (sp == nullptr) {
      return;
    }
    method_end_ = static_cast<size_t>(static_cast<const char*>(sp) - data.data());
  }
  if (window - method_end_ - 1 <= limits.max_uri_bytes) {
    return;
  }
  target_checked_ = true;
  const char* p = data.data() + line_start_;
  const char* const end = data.data() + window;
  examined_ += window - line_start_;
  out.clear();
  ParseResult line = parseRequestLine(p, end, limits, out);
  if (line.state == ParseState::Error) {
    reset();
    error = line;
  }
}

ParseResult HeadScanner::parseResponse(std::string_view data, const Limits& limits, Method request_method,
                                       ResponseHead& out) {
  return scan(
      data, limits.max_header_bytes,
      [&](const char*& p, const char* end) {
        out.clear();
        return parseStatusLine(p, end, out);
      },
      [&](const char*& p, const char* end) {
        return parseFields<Role::Response>(p, end, limits, seen_, nullptr, nullptr);
      },
      [&]() { return parseResponseHead(data, limits, request_method, out); });
}

// ---------------------------------------------------------------------------------------------
// The same checks for a request that arrives in another framing (HTTP/2's pseudo-header fields).

Method methodFromName(std::string_view name) {
  return identifyMethod(name);
}

bool isValidAuthority(std::string_view text) {
  return !text.empty() && validAuthority(text, false);
}

bool isValidOriginTarget(std::string_view target) {
  if (target.empty() || target[0] != '/') {
    return false;
  }
  for (char c : target) {
    if (!has(c, kTargetBit)) {
      return false;
    }
  }
  return true;
}

bool isValidMethodName(std::string_view name) {
  if (name.empty()) {
    return false;
  }
  for (char c : name) {
    if (!has(c, kTcharBit)) {
      return false;
    }
  }
  return true;
}

}  // namespace fulcrum::http
