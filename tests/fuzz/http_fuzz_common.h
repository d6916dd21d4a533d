#pragma once
// Checks shared by the HTTP fuzz targets: a head parsed from a prefix must agree with the head
// parsed from the whole input, and a body decoded in two pieces must equal the body decoded at
// once. Any disagreement aborts, which libFuzzer reports as a crash.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/parser.h"

namespace fulcrum::http::fuzz {

inline void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

inline bool within(std::string_view inner, std::string_view outer) {
  return inner.empty() ||
         (inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size());
}

// A completed head's fields are views into the head bytes, free of CR, LF and NUL.
template <typename Head>
void checkHeaders(const Head& head, std::string_view bytes) {
  for (const Header& header : head.headers) {
    check(within(header.name, bytes) && within(header.value, bytes), "header outside the head");
    check(!header.name.empty(), "empty header name");
    check(header.name.find_first_of(std::string_view(" \t\r\n\0:", 6)) == std::string_view::npos,
          "bad header name accepted");
    check(header.value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos,
          "bad header value accepted");
    check(header.value.empty() || (header.value.front() != ' ' && header.value.back() != ' '),
          "header value not trimmed");
  }
}

// A prefix is Incomplete, or gives exactly the whole input's answer.
inline void checkPrefix(const ParseResult& part, const ParseResult& whole, size_t prefix_len) {
  if (part.state == ParseState::Incomplete) {
    check(whole.state != ParseState::Complete || whole.consumed > prefix_len, "prefix incomplete too long");
    return;
  }
  check(part.state == whole.state, "prefix and whole disagree on state");
  if (part.state == ParseState::Complete) {
    check(part.consumed == whole.consumed, "prefix and whole disagree on consumed");
  } else {
    check(part.status == whole.status, "prefix and whole disagree on status");
  }
}

// A HeadScanner fed the input in pieces (at `split` and then the rest, or a byte at a time)
// answers as the stateless parser does on the same bytes; it may wait for the LF of a line in
// which the stateless parser already found an error, and then gives that error.
template <typename Parse, typename Scan>
void checkScanner(std::string_view input, size_t split, Parse&& parse, Scan&& scan) {
  const ParseResult whole = parse(input);
  for (int byte_at_a_time = 0; byte_at_a_time < 2; ++byte_at_a_time) {
    HeadScanner scanner;
    std::string buffer;
    ParseResult answer;
    for (size_t call = 0; buffer.size() < input.size() && answer.state == ParseState::Incomplete; ++call) {
      const size_t len = byte_at_a_time != 0 ? buffer.size() + 1 : (call == 0 ? split : input.size());
      buffer = std::string(input.substr(0, len));  // a fresh buffer each time: the bytes move
      answer = scan(scanner, std::string_view(buffer));
    }
    if (answer.state != ParseState::Incomplete) {
      // The first answer is the stateless one on the same bytes, and not later than a head the
      // stateless parser found complete.
      const ParseResult stateless = parse(std::string_view(buffer));
      check(answer.state == stateless.state && answer.status == stateless.status &&
                answer.reason == stateless.reason && answer.consumed == stateless.consumed,
            "scanner and stateless parser disagree");
      if (byte_at_a_time != 0 && answer.state == ParseState::Complete) {
        check(answer.consumed == buffer.size(), "scanner answered late");
      }
    } else {
      check(whole.state != ParseState::Complete, "scanner missed a complete head");
    }
    if (answer.state == ParseState::Incomplete && whole.state == ParseState::Error) {
      buffer += '\n';
      answer = scan(scanner, std::string_view(buffer));
      check(
          answer.state == ParseState::Error && answer.status == whole.status && answer.reason == whole.reason,
          "scanner missed an error once its line ended");
    }
    check(scanner.examined() <= 8 * (input.size() + 1) + 64, "scanner examined too many bytes");
  }
}

struct Decoded {
  std::string payload;
  size_t consumed = 0;
  bool done = false;
  int error = 0;
};

// Feeds the pieces like a connection: unconsumed bytes stay buffered, new ones are appended.
inline Decoded decodeBody(BodyKind kind, uint64_t content_length, uint64_t max_body, size_t max_trailer,
                          std::string_view first, std::string_view second) {
  BodyDecoder decoder;
  decoder.reset(kind, content_length, max_body, max_trailer);
  Decoded out;
  std::string pending;
  for (std::string_view piece : {std::string_view(), first, second}) {
    pending.append(piece);
    for (;;) {
      BodyStep step = decoder.step(pending);
      check(step.consumed <= pending.size(), "step consumed more than its input");
      check(within(step.payload, std::string_view(pending).substr(0, step.consumed)),
            "payload outside the consumed input");
      check(step.payload.empty() || step.error_status == 0, "payload with an error");
      check(!(step.done && step.error_status != 0), "done with an error");
      out.payload.append(step.payload);
      out.consumed += step.consumed;
      pending.erase(0, step.consumed);
      check(decoder.bodyBytes() == out.payload.size(), "bodyBytes disagrees with the payload");
      if (max_body != 0) {
        check(decoder.bodyBytes() <= max_body, "body over the limit");
      }
      if (step.error_status != 0) {
        out.error = step.error_status;
        check(step.error_status == 400 || step.error_status == 413, "unexpected body error status");
        return out;
      }
      if (step.done) {
        check(decoder.done(), "done step but decoder not done");
        out.done = true;
        return out;
      }
      if (step.consumed == 0) {
        break;
      }
    }
  }
  return out;
}

inline void checkBody(BodyKind kind, uint64_t content_length, uint64_t max_body, std::string_view body,
                      size_t split) {
  const size_t max_trailer = 64;  // small, so the trailer limit is reachable
  Decoded whole = decodeBody(kind, content_length, max_body, max_trailer, body, {});
  Decoded parts =
      decodeBody(kind, content_length, max_body, max_trailer, body.substr(0, split), body.substr(split));
  check(whole.error == parts.error, "split body disagrees on error");
  check(whole.done == parts.done, "split body disagrees on done");
  if (whole.error == 0) {
    check(whole.payload == parts.payload, "split body disagrees on payload");
    check(whole.consumed == parts.consumed, "split body disagrees on consumed");
  }
  if (kind == BodyKind::ContentLength && whole.error == 0) {
    check(whole.payload.size() == std::min<uint64_t>(content_length, body.size()), "length body size");
  }
}

}  // namespace fulcrum::http::fuzz
