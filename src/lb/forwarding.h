#pragma once
// Rewriting message heads as they pass through the proxy (RFC 9110 §7.6): hop-by-hop fields
// are dropped (Connection, the fields it names, Keep-Alive, Proxy-Connection, TE, Upgrade
// unless tunnelling), and the client's identity is added (X-Forwarded-For,
// X-Forwarded-Proto, Forwarded).
#include <string>
#include <string_view>

#include "http/message.h"

namespace fulcrum::lb {

struct ForwardInfo {
  std::string_view client_ip;       // "192.0.2.1" or "2001:db8::1"
  std::string_view proto = "http";  // "http" | "https"
  std::string_view server_address;  // Host for HTTP/1.0 requests that carry none
};

// The authority of an absolute-form target ("http://a.test:8080/x" -> "a.test:8080"); a null
// view for the other forms.
std::string_view absoluteFormAuthority(const http::RequestHead& head);
// The origin-form of an absolute-form target: its path and query, "/" when the path is empty.
std::string originForm(std::string_view target, std::string_view authority);

// Appends the request head to send upstream: always HTTP/1.1, keep-alive, with the
// forwarding fields. An upgrade request keeps "Connection: upgrade" and its Upgrade field.
// List fields split over several lines (Connection, X-Forwarded-For, Forwarded) count as one
// list, in order. Host and the framing fields are the proxy's own, whatever Connection names:
// one Host (the authority of an absolute-form target, which is sent in origin-form; else the
// client's Host; else server_address), one Content-Length or "Transfer-Encoding: chunked".
// Returns the number of header fields written.
size_t appendUpstreamRequestHead(std::string& out, const http::RequestHead& head, const ForwardInfo& info);

struct ClientFraming {
  bool close = false;              // the client connection closes after this response
  bool http10_keep_alive = false;  // an HTTP/1.0 client asked for keep-alive and keeps it
  bool dechunk = false;            // body is decoded for an HTTP/1.0 client: drop Transfer-Encoding
  bool hsts = false;               // an https response under [lb.tls] hsts: ours replaces the server's
  // Sticky sessions: the cookie to set, naming the server that answered (both empty: none).
  std::string_view sticky_cookie;
  std::string_view sticky_server;
};

// The Strict-Transport-Security field of [lb.tls] hsts: two years, subdomains included.
inline constexpr std::string_view kHstsField = "Strict-Transport-Security: max-age=63072000; includeSubDomains\r\n";

// The value of cookie `name` in a request's Cookie fields (several lines in HTTP/2), or empty.
std::string_view findCookie(const http::RequestHead& head, std::string_view name);
// The Set-Cookie field's value that keeps a client on `server` (sticky sessions): for the whole
// site, out of scripts' reach, sent on top-level navigations from other sites too.
void appendStickyCookie(std::string& out, std::string_view cookie, std::string_view server);

// Appends the response head to send to the client.
void appendClientResponseHead(std::string& out, const http::ResponseHead& head, const ClientFraming& framing);

// True when a field must not be forwarded. `connection` is the message's Connection value.
bool isHopByHop(std::string_view name, std::string_view connection, bool keep_upgrade);

}  // namespace fulcrum::lb
