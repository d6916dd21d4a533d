#pragma once
// Reads one HTTP/1.1 response as its bytes arrive, whoever does the I/O: the blocking client
// (client.h), the load balancer's health checks and the etcd watch on an event loop. Interim 1xx
// answers are skipped (101 is final: a tunnel), the head is parsed, then the body is decoded
// (Content-Length, chunked or until close) under a size cap. No I/O, no allocation of its own
// beyond the caller's body string.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/message.h"
#include "http/parser.h"

namespace fulcrum::http {

class ResponseReader {
 public:
  enum class State : uint8_t { Head, Body, Done, Failed };

  // A response to a `request_method` request (HEAD and CONNECT change what has a body).
  // `max_body_bytes` 0: no cap (an endless stream).
  void reset(Method request_method, uint64_t max_body_bytes);

  // Reads from the start of `input` what it can: the head once complete, then body bytes, which
  // are appended to `body`. Returns how many bytes of `input` were used (the caller drops them);
  // bytes past the end of the response are left unused.
  size_t read(std::string_view input, std::string& body);
  // The peer closed the connection: ends a body delimited by the close, else fails.
  void closed();

  State state() const { return state_; }
  bool headDone() const { return status_ != 0; }  // also when Failed in the body
  // Of the final head, once headDone().
  int status() const { return status_; }
  BodyKind bodyKind() const { return body_kind_; }
  // Done, and the server keeps the connection open for another request.
  bool reusable() const;
  // Why it Failed: "bad response: ...", "response body too large (over N bytes)",
  // "bad response body framing", "connection closed before a response", ...
  const std::string& error() const { return error_; }

 private:
  void fail(std::string why);

  Method method_ = Method::Get;
  uint64_t max_body_bytes_ = 0;
  State state_ = State::Head;
  bool saw_bytes_ = false;  // any input at all (for the message of an early close)
  int status_ = 0;
  bool keep_alive_ = false;
  BodyKind body_kind_ = BodyKind::None;
  ResponseHead head_;  // reused across parses; its views are dead once read() returns
  HeadScanner scanner_;
  BodyDecoder decoder_;
  std::string error_;
};

}  // namespace fulcrum::http
