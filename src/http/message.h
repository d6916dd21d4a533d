#pragma once
// HTTP/1.1 message heads (RFC 9110/9112). Heads hold string_views into the buffer they were
// parsed from: they are valid only while that buffer is unchanged.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fulcrum::http {

enum class Method : uint8_t { Get, Head, Post, Put, Delete, Options, Patch, Trace, Connect, Other };

// Idempotent per RFC 9110 §9.2.2: safe to retry after a reset with no response.
bool isIdempotent(Method method);
std::string_view methodName(Method method);  // "GET"...; "" for Other

struct Header {
  std::string_view name;
  std::string_view value;  // leading/trailing whitespace already trimmed
};

// How the body after a head is delimited (RFC 9112 §6.3).
enum class BodyKind : uint8_t {
  None,           // no body
  ContentLength,  // exactly content_length bytes
  Chunked,        // chunked transfer coding, ends with the last chunk and trailers
  UntilClose,     // responses only: everything until the server closes
  Tunnel,         // after a 101 or a 2xx to CONNECT: raw bytes both ways
};

struct RequestHead {
  Method method = Method::Other;
  std::string_view method_text;
  std::string_view target;  // request-target exactly as sent
  std::string_view path;    // target up to '?' (origin-form); for absolute-form, the path part
  std::string_view query;   // after '?', without it; empty when none
  uint8_t version_minor = 1;  // HTTP/1.0 -> 0, HTTP/1.1 -> 1
  std::vector<Header> headers;
  std::string_view host;  // the Host header value
  BodyKind body_kind = BodyKind::None;
  uint64_t content_length = 0;  // meaningful when body_kind == ContentLength
  bool keep_alive = true;       // from version and Connection
  bool expect_continue = false;
  bool upgrade = false;  // Connection: upgrade with an Upgrade header (e.g. websocket)

  // Case-insensitive lookup of the first header with this name. Only for singleton fields,
  // and then check count() == 1: a list field may be split over several lines.
  std::optional<std::string_view> find(std::string_view name) const;
  // A list-valued field (If-None-Match, Accept-Encoding, Cache-Control...) sent on several
  // lines is one list (RFC 9110 §5.3): its lines joined in order with `separator` ("; " for
  // Cookie, RFC 9113 §8.2.3). nullopt when absent.
  std::optional<std::string> findList(std::string_view name, std::string_view separator = ", ") const;
  // How many lines carry this field.
  size_t count(std::string_view name) const;
  void clear();
};

struct ResponseHead {
  uint8_t version_minor = 1;
  int status = 0;
  std::string_view reason;
  std::vector<Header> headers;
  BodyKind body_kind = BodyKind::None;
  uint64_t content_length = 0;
  bool keep_alive = true;

  std::optional<std::string_view> find(std::string_view name) const;
  void clear();
};

// Checks for a request whose parts arrive separately (HTTP/2 pseudo-header fields), by the
// rules the HTTP/1.1 parser applies to a request line and Host.
Method methodFromName(std::string_view name);    // Other for an extension method
bool isValidMethodName(std::string_view name);   // a token (RFC 9110 §9.1)
bool isValidAuthority(std::string_view text);    // uri-host [":" port], not empty
bool isValidOriginTarget(std::string_view target);  // "/" then visible ASCII except '#'

// Case-insensitive ASCII comparison, for header names and tokens.
bool equalsIgnoreCase(std::string_view a, std::string_view b);
// True when the comma-separated header value contains `token` (case-insensitive), e.g.
// hasToken("keep-alive, Upgrade", "upgrade").
bool hasToken(std::string_view list, std::string_view token);

}  // namespace fulcrum::http
