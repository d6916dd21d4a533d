#include "core/proxy_protocol.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace fulcrum::core::proxy_protocol {

namespace {

constexpr std::string_view kV2Signature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr std::string_view kV1Prefix = "PROXY ";
constexpr size_t kV2Fixed = 16;

// v2's byte 13 (version and command) and 14 (family and transport).
constexpr uint8_t kV2Version = 0x20;
constexpr uint8_t kCommandLocal = 0x0;
constexpr uint8_t kCommandProxy = 0x1;
constexpr uint8_t kFamilyUnspec = 0x0;
constexpr uint8_t kFamilyInet = 0x1;
constexpr uint8_t kFamilyInet6 = 0x2;
constexpr uint8_t kTransportStream = 0x1;

std::optional<IpAddress> parseIp(std::string_view text, int family) {
  // inet_pton wants a C string; an address is at most 45 characters (INET6_ADDRSTRLEN - 1).
  char cstr[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof cstr) {
    return std::nullopt;
  }
  std::memcpy(cstr, text.data(), text.size());
  cstr[text.size()] = '\0';
  IpAddress ip;
  ip.family = family;
  if (::inet_pton(family, cstr, ip.bytes.data()) != 1) {
    return std::nullopt;
  }
  return ip;
}

// The spec's ports: decimal, 0..65535, no leading zero.
std::optional<uint16_t> parsePort(std::string_view text) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) {
    return std::nullopt;
  }
  uint32_t port = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(port);
}

// Splits off the text up to the next single space.
std::string_view nextField(std::string_view& rest) {
  size_t space = rest.find(' ');
  std::string_view field = rest.substr(0, space);
  rest = space == std::string_view::npos ? std::string_view{} : rest.substr(space + 1);
  return field;
}

IpAddress toV6(const IpAddress& ip) {
  if (ip.family == AF_INET6) {
    return ip;
  }
  IpAddress mapped;
  mapped.family = AF_INET6;
  mapped.bytes[10] = 0xff;
  mapped.bytes[11] = 0xff;
  std::copy_n(ip.bytes.begin(), 4, mapped.bytes.begin() + 12);
  return mapped;
}

// The pair in one family, as both versions need: a v4 client on a dual-stack listener is
// written as its mapped v6 address.
std::pair<SocketAddress, SocketAddress> sameFamily(const SocketAddress& source,
                                                   const SocketAddress& destination) {
  if (source.family() == destination.family()) {
    return {source, destination};
  }
  return {SocketAddress(toV6(source.ip()), source.port()),
          SocketAddress(toV6(destination.ip()), destination.port())};
}

void appendPort(std::string& out, uint16_t port) {
  out.push_back(static_cast<char>(port >> 8));
  out.push_back(static_cast<char>(port & 0xff));
}

uint16_t readU16(const std::string& buf, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(buf[at]) << 8) | static_cast<uint8_t>(buf[at + 1]));
}

}  // namespace

Parser::Step Parser::fail(std::string message, size_t consumed) {
  error_ = std::move(message);
  return {Status::Invalid, consumed};
}

Parser::Step Parser::feed(std::string_view in) {
  if (kind_ == Kind::Unknown) {
    if (in.empty()) {
      return {Status::NeedMore, 0};
    }
    // The two signatures differ from their first byte.
    if (in[0] == kV2Signature[0]) {
      kind_ = Kind::V2;
    } else if (in[0] == kV1Prefix[0]) {
      kind_ = Kind::V1;
    } else {
      return fail("no PROXY protocol signature", 0);
    }
  }
  return kind_ == Kind::V1 ? feedV1(in) : feedV2(in);
}

Parser::Step Parser::feedV1(std::string_view in) {
  size_t lf = in.find('\n');
  size_t take = lf == std::string_view::npos ? in.size() : lf + 1;
  take = std::min(take, kMaxV1Line - buf_.size());
  buf_.append(in.substr(0, take));
  // The prefix is judged as soon as its bytes arrive, so a non-PROXY client is refused at once.
  size_t judged = std::min(buf_.size(), kV1Prefix.size());
  if (std::string_view(buf_).substr(0, judged) != kV1Prefix.substr(0, judged)) {
    return fail("no PROXY protocol signature", take);
  }
  if (buf_.back() != '\n') {
    if (buf_.size() >= kMaxV1Line) {
      return fail(fmt::format("v1 header longer than {} bytes", kMaxV1Line), take);
    }
    return {Status::NeedMore, take};
  }
  if (buf_.size() < 2 || buf_[buf_.size() - 2] != '\r') {
    return fail("v1 header not ended by CRLF", take);
  }
  if (!parseV1(std::string_view(buf_).substr(kV1Prefix.size(), buf_.size() - kV1Prefix.size() - 2))) {
    return {Status::Invalid, take};
  }
  return {Status::Done, take};
}

bool Parser::parseV1(std::string_view line) {
  header_.version = 1;
  std::string_view rest = line;
  std::string_view proto = nextField(rest);
  if (proto == "UNKNOWN") {
    return true;  // the rest of the line is to be ignored
  }
  int family = proto == "TCP4" ? AF_INET : proto == "TCP6" ? AF_INET6 : AF_UNSPEC;
  if (family == AF_UNSPEC) {
    error_ = "v1 protocol is not TCP4, TCP6 or UNKNOWN";
    return false;
  }
  std::string_view src = nextField(rest);
  std::string_view dst = nextField(rest);
  std::string_view src_port = nextField(rest);
  std::string_view dst_port = rest;  // the last field: a space inside makes it invalid below
  std::optional<IpAddress> src_ip = parseIp(src, family);
  std::optional<IpAddress> dst_ip = parseIp(dst, family);
  if (!src_ip || !dst_ip) {
    error_ = fmt::format("v1 address is not {}", family == AF_INET ? "IPv4" : "IPv6");
    return false;
  }
  std::optional<uint16_t> sport = parsePort(src_port);
  std::optional<uint16_t> dport = parsePort(dst_port);
  if (!sport || !dport) {
    error_ = "v1 port is not a number from 0 to 65535";
    return false;
  }
  header_.source = SocketAddress(*src_ip, *sport);
  header_.destination = SocketAddress(*dst_ip, *dport);
  return true;
}

Parser::Step Parser::feedV2(std::string_view in) {
  size_t need = kV2Fixed;
  if (buf_.size() >= kV2Fixed) {
    need += readU16(buf_, 14);
  }
  size_t take = std::min(in.size(), need - buf_.size());
  buf_.append(in.substr(0, take));
  size_t judged = std::min(buf_.size(), kV2Signature.size());
  if (std::string_view(buf_).substr(0, judged) != kV2Signature.substr(0, judged)) {
    return fail("no PROXY protocol signature", take);
  }
  if (buf_.size() < kV2Fixed) {
    return {Status::NeedMore, take};
  }
  if (need == kV2Fixed) {
    // The fixed part just completed: judge it before waiting for what its length announces.
    uint8_t ver_cmd = static_cast<uint8_t>(buf_[12]);
    if ((ver_cmd & 0xf0) != kV2Version) {
      return fail(fmt::format("v2 version {} is not 2", ver_cmd >> 4), take);
    }
    if ((ver_cmd & 0x0f) != kCommandLocal && (ver_cmd & 0x0f) != kCommandProxy) {
      return fail(fmt::format("v2 command {} is not LOCAL or PROXY", ver_cmd & 0x0f), take);
    }
    uint16_t length = readU16(buf_, 14);
    if (length > kMaxV2Payload) {
      return fail(fmt::format("v2 header length {} over the limit of {}", length, kMaxV2Payload), take);
    }
    if (length > 0) {
      Step more = feedV2(in.substr(take));
      more.consumed += take;
      return more;
    }
  } else if (buf_.size() < need) {
    return {Status::NeedMore, take};
  }
  if (!parseV2()) {
    return {Status::Invalid, take};
  }
  return {Status::Done, take};
}

bool Parser::parseV2() {
  header_.version = 2;
  uint8_t command = static_cast<uint8_t>(buf_[12]) & 0x0f;
  uint8_t family = static_cast<uint8_t>(buf_[13]) >> 4;
  uint8_t transport = static_cast<uint8_t>(buf_[13]) & 0x0f;
  size_t payload = buf_.size() - kV2Fixed;
  if (command == kCommandLocal) {
    return true;  // the addresses (if any) are to be ignored: the sender's own connection
  }
  size_t addresses = 0;
  if (family == kFamilyUnspec) {
    return true;  // the spec: accept it and keep the socket's own addresses
  }
  if (family != kFamilyInet && family != kFamilyInet6) {
    error_ = fmt::format("v2 address family {} is not supported (IPv4 and IPv6 are)", family);
    return false;
  }
  if (transport != kTransportStream) {
    error_ = fmt::format("v2 transport {} is not STREAM", transport);
    return false;
  }
  size_t ip_len = family == kFamilyInet ? 4 : 16;
  addresses = 2 * ip_len + 4;
  if (payload < addresses) {
    error_ = fmt::format("v2 length {} too short for the addresses ({})", payload, addresses);
    return false;
  }
  IpAddress src;
  IpAddress dst;
  src.family = dst.family = family == kFamilyInet ? AF_INET : AF_INET6;
  const char* p = buf_.data() + kV2Fixed;
  std::memcpy(src.bytes.data(), p, ip_len);
  std::memcpy(dst.bytes.data(), p + ip_len, ip_len);
  header_.source = SocketAddress(src, readU16(buf_, kV2Fixed + 2 * ip_len));
  header_.destination = SocketAddress(dst, readU16(buf_, kV2Fixed + 2 * ip_len + 2));
  // The TLVs are skipped, but they must tile what is left exactly.
  size_t at = kV2Fixed + addresses;
  while (at < buf_.size()) {
    if (buf_.size() - at < 3) {
      error_ = "v2 TLV truncated";
      return false;
    }
    size_t value = readU16(buf_, at + 1);
    if (buf_.size() - at - 3 < value) {
      error_ = "v2 TLV longer than the header";
      return false;
    }
    at += 3 + value;
  }
  return true;
}

Presence detect(std::string_view start) {
  for (std::string_view signature : {kV2Signature, kV1Prefix}) {
    size_t n = std::min(start.size(), signature.size());
    if (start.substr(0, n) == signature.substr(0, n)) {
      return n == signature.size() ? Presence::Present : Presence::Unsure;
    }
  }
  return Presence::Absent;
}

std::string encodeV1(const SocketAddress& source, const SocketAddress& destination) {
  auto [src, dst] = sameFamily(source, destination);
  return fmt::format("PROXY {} {} {} {} {}\r\n", src.family() == AF_INET ? "TCP4" : "TCP6",
                     src.ip().toString(), dst.ip().toString(), src.port(), dst.port());
}

std::string encodeV2(const SocketAddress& source, const SocketAddress& destination) {
  auto [src, dst] = sameFamily(source, destination);
  IpAddress src_ip = src.ip();
  IpAddress dst_ip = dst.ip();
  bool v4 = src.family() == AF_INET;
  size_t ip_len = v4 ? 4 : 16;
  std::string out(kV2Signature);
  out.push_back(static_cast<char>(kV2Version | kCommandProxy));
  out.push_back(static_cast<char>(((v4 ? kFamilyInet : kFamilyInet6) << 4) | kTransportStream));
  appendPort(out, static_cast<uint16_t>(2 * ip_len + 4));
  out.append(reinterpret_cast<const char*>(src_ip.bytes.data()), ip_len);
  out.append(reinterpret_cast<const char*>(dst_ip.bytes.data()), ip_len);
  appendPort(out, src.port());
  appendPort(out, dst.port());
  return out;
}

std::string encodeV1Unknown() {
  return "PROXY UNKNOWN\r\n";
}

std::string encodeV2Local() {
  std::string out(kV2Signature);
  out.push_back(static_cast<char>(kV2Version | kCommandLocal));
  out.push_back(static_cast<char>(kFamilyUnspec << 4));
  appendPort(out, 0);
  return out;
}

}  // namespace fulcrum::core::proxy_protocol
