#include "lb/forwarding.h"

#include <string>

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

}  // namespace

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

void appendUpstreamRequestHead(std::string& out, const http::RequestHead& head, const ForwardInfo& info) {
  out += head.method_text;
  out += ' ';
  out += head.target;
  out += " HTTP/1.1\r\n";
  std::string_view connection = head.find("Connection").value_or(std::string_view());
  std::string_view xff;
  std::string_view forwarded;
  bool has_host = false;
  for (const http::Header& h : head.headers) {
    if (isHopByHop(h.name, connection, head.upgrade)) {
      continue;
    }
    // Our own forwarding fields are rebuilt below: the client's earlier values come first.
    if (equalsIgnoreCase(h.name, "x-forwarded-for")) {
      xff = h.value;
      continue;
    }
    if (equalsIgnoreCase(h.name, "forwarded")) {
      forwarded = h.value;
      continue;
    }
    if (equalsIgnoreCase(h.name, "x-forwarded-proto")) {
      continue;
    }
    if (equalsIgnoreCase(h.name, "content-length")) {
      continue;  // re-emitted once below: "5, 5" or a repeated field never goes upstream
    }
    if (equalsIgnoreCase(h.name, "host")) {
      has_host = true;
    }
    appendField(out, h.name, h.value);
  }
  if (head.body_kind == http::BodyKind::ContentLength) {
    out += "Content-Length: ";
    out += std::to_string(head.content_length);
    out += "\r\n";
  }
  if (!has_host && !info.server_address.empty()) {
    appendField(out, "Host", info.server_address);
  }
  if (head.upgrade) {
    out += "Connection: upgrade\r\n";
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
  std::string_view connection = head.find("Connection").value_or(std::string_view());
  for (const http::Header& h : head.headers) {
    if (isHopByHop(h.name, connection, tunnel)) {
      continue;
    }
    if (framing.dechunk && equalsIgnoreCase(h.name, "transfer-encoding")) {
      continue;
    }
    appendField(out, h.name, h.value);
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

}  // namespace fulcrum::lb
