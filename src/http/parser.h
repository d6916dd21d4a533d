#pragma once
// Strict, incremental HTTP/1.1 parsing (RFC 9112). No exceptions and no allocation beyond the
// header vector's reuse: a parse either completes, asks for more bytes, or names the status
// the peer must be answered with before the connection is closed.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "http/message.h"

namespace fulcrum::http {

struct Limits {
  size_t max_header_bytes = 16384;     // request/status line + headers + empty line; over: 431
  size_t max_uri_bytes = 8192;         // request-target; over: 414
  size_t max_headers = 128;            // number of header fields; over: 431
  uint64_t max_body_bytes = 10485760;  // declared or decoded body; over: 413 (0: no limit)
};

enum class ParseState : uint8_t { Incomplete, Complete, Error };

struct ParseResult {
  ParseState state = ParseState::Incomplete;
  size_t consumed = 0;      // Complete: bytes of the head, through the empty line
  int status = 0;           // Error: status to answer (400, 413, 414, 417, 431, 501, 505);
                            // always 502 for a response head (the proxy's answer to its client)
  std::string_view reason;  // Error: short static description, for logs and the error body
};

// Parses a request head at the start of `data`. Stateless: call again with the grown buffer
// when Incomplete. Leading empty lines (RFC 9112 §2.2) are skipped and counted in `consumed`.
// Rejects: obs-fold, bare CR, whitespace before a colon, control chars in names/values,
// both Content-Length and Transfer-Encoding, differing or malformed Content-Length,
// Transfer-Encoding other than exactly chunked (501), unknown HTTP version (505), missing
// or repeated Host in HTTP/1.1 (400).
ParseResult parseRequestHead(std::string_view data, const Limits& limits, RequestHead& out);

// Parses a response head. Header rules are those of requests; Transfer-Encoding must be exactly
// "chunked" and never comes with Content-Length. max_body_bytes is not applied to responses.
// `request_method` decides bodiless responses (HEAD; CONNECT 2xx is
// a Tunnel); status 1xx/204/304 have no body; 101 is a Tunnel. Interim 1xx other than 101
// complete like any head; the caller then parses the next head.
ParseResult parseResponseHead(std::string_view data, const Limits& limits, Method request_method,
                              ResponseHead& out);

namespace detail {
// What the field lines of one head said, gathered line by line (parser.cpp). Plain values, no
// views into the bytes: a HeadScanner keeps one between calls while its caller's buffer moves.
struct FieldSummary {
  size_t count = 0;
  int host_count = 0;
  bool have_length = false;
  uint64_t content_length = 0;
  int te_count = 0;
  bool te_chunked = false;  // the last Transfer-Encoding value is exactly "chunked"
  bool close = false;       // Connection tokens
  bool keep_alive = false;
  bool upgrade_token = false;
  bool have_upgrade = false;  // an Upgrade header field
  bool expect_100 = false;
  bool expect_other = false;
};
}  // namespace detail

// The parsers above for a head that arrives in pieces, in time linear in its size however it is
// split: each call looks only at the bytes added since the last one, checks each line once when
// its LF arrives, and runs the full parse once, on the complete head (or at max_header_bytes).
// The results are those of the stateless parsers on the same bytes, but an error inside a line
// is reported when that line ends (an over-long request-target: as soon as it is too long).
// `data` is the caller's buffer from the first byte of the head, grown by each read; it may move
// between calls. After Complete or Error the scanner is ready for the next head; reset() when
// the bytes are replaced otherwise (a new connection, a retry).
class HeadScanner {
 public:
  ParseResult parseRequest(std::string_view data, const Limits& limits, RequestHead& out);
  ParseResult parseResponse(std::string_view data, const Limits& limits, Method request_method,
                            ResponseHead& out);
  void reset();
  // Bytes looked at so far, by scans and parses, rescans counted again; reset() keeps it. For the
  // tests that check the work stays linear.
  uint64_t examined() const { return examined_; }

 private:
  template <typename StartLine, typename Fields, typename Whole>
  ParseResult scan(std::string_view data, size_t max_header_bytes, StartLine&& start_line, Fields&& fields,
                   Whole&& whole);
  void watchRequestTarget(std::string_view data, size_t from, size_t window, const Limits& limits,
                          RequestHead& out, ParseResult& error);

  size_t line_start_ = 0;        // the first line not yet checked
  size_t scanned_ = 0;           // bytes [line_start_, scanned_) hold no LF
  bool in_fields_ = false;       // the start line has been checked
  size_t method_end_ = kNotYet;  // requests: offset of the SP after the method, once seen
  bool target_checked_ = false;  // requests: the unfinished request line was checked for a 414
  detail::FieldSummary seen_;
  uint64_t examined_ = 0;

  static constexpr size_t kNotYet = static_cast<size_t>(-1);
};

// Decodes a message body incrementally. The caller feeds whatever bytes it has; each step
// consumes some framing and returns at most one piece of payload (a view into the input).
struct BodyStep {
  size_t consumed = 0;       // bytes of input used by this step (payload + framing)
  std::string_view payload;  // decoded body bytes, may be empty
  bool done = false;         // the body (and any trailers) ended with this step
  int error_status = 0;      // non-zero: malformed (400) or too large (413); close the connection
};

class BodyDecoder {
 public:
  // `max_body_bytes` = 0 means no limit (responses). None, Tunnel (raw bytes are not a body) and
  // ContentLength 0 are done right after reset. Trailer fields are validated and discarded; a
  // trailer section over `max_trailer_bytes` is a 400.
  void reset(BodyKind kind, uint64_t content_length, uint64_t max_body_bytes,
             size_t max_trailer_bytes = 16384);
  // Call repeatedly while input remains and the step consumed something; a step that consumes
  // nothing and is not done needs more input.
  BodyStep step(std::string_view input);
  bool done() const { return state_ == State::Done; }
  uint64_t bodyBytes() const { return body_bytes_; }

 private:
  enum class State : uint8_t {
    Length,
    ChunkSize,
    ChunkData,
    ChunkDataCrlf,
    Trailers,
    UntilClose,
    Done,
    Failed,  // every later step repeats error_status_
  };
  State state_ = State::Done;
  uint64_t remaining_ = 0;
  uint64_t body_bytes_ = 0;
  uint64_t max_body_bytes_ = 0;
  size_t max_trailer_bytes_ = 16384;
  size_t trailer_bytes_ = 0;
  int error_status_ = 0;
};

}  // namespace fulcrum::http
