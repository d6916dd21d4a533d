#include "lb/forwarding.h"

#include <string>
#include <vector>

#include "http/util.h"

namespace fulcrum::lb {

namespace {

using http::equalsIgnoreCase;

void appendField(std::string& out, std::string_view name, std::string_view value) {
  out += name;
  out += ": ";
  out += value;
  out += "\r\n";
}

bool quoteForwardedFor(std::string_view ip) {
  return ip.find(':') != std::string_view::npos;
}

// A list field may be split over several lines (RFC 9110 §5.3): the value of all of them, in
// order, joined by ", ". One line (the usual case) is used as is, without a copy; more are
// joined in `scratch` (per-thread in the callers, so its capacity is reused).
class ListJoin {
 public:
  explicit ListJoin(std::string& scratch) : scratch_(scratch) {}
  void add(std::string_view value) {
    if (value.empty()) {
      return;
    }
    if (++count_ == 1) {
      first_ = value;
      return;
    }
    if (count_ == 2) {
      scratch_.assign(first_);
    }
    scratch_ += ", ";
    scratch_ += value;
  }
  std::string_view value() const { return count_ <= 1 ? first_ : std::string_view(scratch_); }

 private:
  std::string& scratch_;
  std::string_view first_;
  size_t count_ = 0;
};

}  // namespace

// The authority of an absolute-form target ("http://a.test:8080/x" -> "a.test:8080"); a null
// view for the other forms. The parser has checked the form.
std::string_view absoluteFormAuthority(const http::RequestHead& head) {
  std::string_view target = head.target;
  if (target.empty() || target[0] == '/' || head.method == http::Method::Connect || target == "*") {
    return {};
  }
  size_t start = target.find("://");
  if (start == std::string_view::npos) {
    return {};
  }
  start += 3;
  size_t end = target.find_first_of("/?", start);
  return target.substr(start, (end == std::string_view::npos ? target.size() : end) - start);
}

// The origin-form of an absolute-form target: its path and query, "/" when the path is empty.
std::string originForm(std::string_view target, std::string_view authority) {
  size_t rest = static_cast<size_t>(authority.data() + authority.size() - target.data());
  std::string out(target.substr(rest));
  if (out.empty() || out[0] == '?') {
    out.insert(0, 1, '/');
  }
  return out;
}

bool isHopByHop(std::string_view name, std::string_view connection, bool keep_upgrade) {
  if (equalsIgnoreCase(name, "connection") || equalsIgnoreCase(name, "keep-alive") ||
      equalsIgnoreCase(name, "proxy-connection") || equalsIgnoreCase(name, "te")) {
    return true;
  }
  if (equalsIgnoreCase(name, "upgrade")) {
    return !keep_upgrade;
  }
  // Fields named by Connection are hop-by-hop too ("Connection: close, X-Internal").
  return !connection.empty() && http::hasToken(connection, name);
}

size_t appendUpstreamRequestHead(std::string& out, const http::RequestHead& head, const ForwardInfo& info) {
  out += head.method_text;
  out += ' ';
  // absolute-form is for requests to a proxy; a server is sent origin-form, and the authority
  // of the target replaces Host (RFC 9112 §3.2.1, §3.2.2).
  std::string_view authority = absoluteFormAuthority(head);
  out += authority.data() != nullptr ? originForm(head.target, authority) : head.target;
  out += " HTTP/1.1\r\n";
  if (authority.data() == nullptr) {
    authority = !head.host.empty() || head.find("host") ? head.host : info.server_address;
  }
  // One pass gathers the lists the rewriting reads. Our own forwarding fields are rebuilt below:
  // the client's earlier values come first, every line of them in order.
  thread_local std::string scratch[3];
  ListJoin connection_list(scratch[0]);
  ListJoin xff_list(scratch[1]);
  ListJoin forwarded_list(scratch[2]);
  for (const http::Header& h : head.headers) {
    if (equalsIgnoreCase(h.name, "connection")) {
      connection_list.add(h.value);
    } else if (equalsIgnoreCase(h.name, "x-forwarded-for")) {
      xff_list.add(h.value);
    } else if (equalsIgnoreCase(h.name, "forwarded")) {
      forwarded_list.add(h.value);
    }
  }
  const std::string_view connection = connection_list.value();
  const std::string_view xff = xff_list.value();
  const std::string_view forwarded = forwarded_list.value();
  size_t fields = 3;  // X-Forwarded-For, X-Forwarded-Proto, Forwarded
  bool has_host = false;
  for (const http::Header& h : head.headers) {
    // Host and the framing fields are ours to write, whatever Connection names: a client's
    // "Connection: Transfer-Encoding" must not strip the framing of a body we pass on as is.
    if (equalsIgnoreCase(h.name, "host")) {
      if (!has_host) {
        appendField(out, "Host", authority);  // where the client put it
        has_host = true;
        ++fields;
      }
      continue;
    }
    if (equalsIgnoreCase(h.name, "content-length") || equalsIgnoreCase(h.name, "transfer-encoding")) {
      continue;  // re-emitted once below: "5, 5", "CHUNKED" or a repeated field never goes upstream
    }
    if (isHopByHop(h.name, connection, head.upgrade)) {
      continue;
    }
    if (equalsIgnoreCase(h.name, "x-forwarded-for") || equalsIgnoreCase(h.name, "forwarded")) {
      continue;
    }
    if (equalsIgnoreCase(h.name, "x-forwarded-proto")) {
      continue;
    }
    appendField(out, h.name, h.value);
    ++fields;
  }
  if (head.body_kind == http::BodyKind::ContentLength) {
    out += "Content-Length: ";
    out += std::to_string(head.content_length);
    out += "\r\n";
    ++fields;
  } else if (head.body_kind == http::BodyKind::Chunked) {
    out += "Transfer-Encoding: chunked\r\n";
    ++fields;
  }
  if (!has_host && !authority.empty()) {
    appendField(out, "Host", authority);
    ++fields;
  }
  if (head.upgrade) {
    out += "Connection: upgrade\r\n";
    ++fields;
  }
  out += "X-Forwarded-For: ";
  if (!xff.empty()) {
    out += xff;
    out += ", ";
  }
  out += info.client_ip;
  out += "\r\nX-Forwarded-Proto: ";
  out += info.proto;
  out += "\r\nForwarded: ";
  if (!forwarded.empty()) {
    out += forwarded;
    out += ", ";
  }
  out += "for=";
  if (quoteForwardedFor(info.client_ip)) {
    out += "\"[";
    out += info.client_ip;
    out += "]\"";
  } else {
    out += info.client_ip;
  }
  out += ";proto=";
  out += info.proto;
  out += "\r\n\r\n";
  return fields;
}

void appendClientResponseHead(std::string& out, const http::ResponseHead& head,
                              const ClientFraming& framing) {
  out += "HTTP/1.1 ";
  char code[4] = {static_cast<char>('0' + head.status / 100), static_cast<char>('0' + head.status / 10 % 10),
                  static_cast<char>('0' + head.status % 10), ' '};
  out.append(code, 4);
  out += head.reason.empty() ? http::reasonPhrase(head.status) : head.reason;
  out += "\r\n";
  bool tunnel = head.body_kind == http::BodyKind::Tunnel;
  thread_local std::string scratch;
  ListJoin connection_list(scratch);
  for (const http::Header& h : head.headers) {
    if (equalsIgnoreCase(h.name, "connection")) {
      connection_list.add(h.value);
    }
  }
  const std::string_view connection = connection_list.value();
  for (const http::Header& h : head.headers) {
    if (isHopByHop(h.name, connection, tunnel)) {
      continue;
    }
    if (framing.dechunk && equalsIgnoreCase(h.name, "transfer-encoding")) {
      continue;
    }
    if (framing.hsts && equalsIgnoreCase(h.name, "strict-transport-security")) {
      continue;
    }
    appendField(out, h.name, h.value);
  }
  if (framing.hsts) {
    out += kHstsField;
  }
  if (!framing.sticky_cookie.empty()) {
    out += "Set-Cookie: ";
    appendStickyCookie(out, framing.sticky_cookie, framing.sticky_server);
    out += "\r\n";
  }
  if (tunnel && head.status == 101) {
    out += "Connection: upgrade\r\n";
  } else if (framing.close) {
    out += "Connection: close\r\n";
  } else if (framing.http10_keep_alive) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
}

std::string_view findCookie(const http::RequestHead& head, std::string_view name) {
  for (const http::Header& h : head.headers) {
    if (!equalsIgnoreCase(h.name, "cookie")) {
      continue;
    }
    // cookie-string = cookie-pair *( ";" SP cookie-pair ) (RFC 6265 §4.2.1), read leniently.
    std::string_view rest = h.value;
    while (!rest.empty()) {
      size_t end = rest.find(';');
      std::string_view pair = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
      size_t first = pair.find_first_not_of(" \t");
      if (first == std::string_view::npos) {
        continue;
      }
      pair.remove_prefix(first);
      size_t eq = pair.find('=');
      if (eq == std::string_view::npos || pair.substr(0, eq) != name) {
        continue;
      }
      std::string_view value = pair.substr(eq + 1);
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
        value.remove_suffix(1);
      }
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      return value;
    }
  }
  return {};
}

void appendStickyCookie(std::string& out, std::string_view cookie, std::string_view server) {
  out.append(cookie).append(1, '=').append(server).append("; Path=/; HttpOnly; SameSite=Lax");
}

}  // namespace fulcrum::lb
