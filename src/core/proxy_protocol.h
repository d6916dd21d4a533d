#pragma once
// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header a balancer in
// front of us sends first on a connection to say whom it accepted it from, and the one we send
// first to a server for the same reason. The parser takes bytes as they arrive, split anywhere,
// and never takes a byte past the header's end, so the caller can leave the rest in the socket
// for the TLS or HTTP layer that follows (it peeks, feeds, then drops what was taken).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/address.h"

namespace fulcrum::core::proxy_protocol {

// The longest v1 line, CRLF included (the spec's 107 bytes).
inline constexpr size_t kMaxV1Line = 107;
// The most a v2 header may carry after its fixed 16 bytes (addresses and TLVs). The spec allows
// 65535; the TLVs real balancers add (AWS, Azure, GCP, HAProxy's SSL ones) fit well within this.
inline constexpr size_t kMaxV2Payload = 2048;

struct Header {
  int version = 0;  // 1 or 2
  // The addresses of the connection the sender accepted (source: the client). Absent for v2
  // LOCAL (the sender's own connection, e.g. its health check), v1 UNKNOWN, and v2 UNSPEC: the
  // receiver then keeps the socket's own addresses.
  std::optional<SocketAddress> source;
  std::optional<SocketAddress> destination;
};

class Parser {
 public:
  enum class Status : uint8_t { NeedMore, Done, Invalid };
  struct Step {
    Status status;
    size_t consumed;  // bytes of `in` that belong to the header (never one past its end)
  };

  // Feeds the next bytes of the connection. After Done or Invalid, feed must not be called again.
  Step feed(std::string_view in);
  const Header& header() const { return header_; }
  // Why the header was refused (after Invalid).
  const std::string& error() const { return error_; }

 private:
  Step fail(std::string message, size_t consumed);
  Step feedV1(std::string_view in);
  Step feedV2(std::string_view in);
  bool parseV1(std::string_view line);
  bool parseV2();

  enum class Kind : uint8_t { Unknown, V1, V2 };
  Kind kind_ = Kind::Unknown;
  std::string buf_;  // the header's bytes so far
  Header header_;
  std::string error_;
};

// Whether a connection's first bytes are a PROXY header, for a receiver that takes one only when
// it comes: Unsure while they are a strict prefix of a signature (wait for more).
enum class Presence : uint8_t { Present, Absent, Unsure };
Presence detect(std::string_view start);

// The header announcing a connection from `source` to `destination` (same family).
std::string encodeV1(const SocketAddress& source, const SocketAddress& destination);
std::string encodeV2(const SocketAddress& source, const SocketAddress& destination);
// The header of a connection made on the sender's own behalf (a health check): v1 UNKNOWN, v2 LOCAL.
std::string encodeV1Unknown();
std::string encodeV2Local();

}  // namespace fulcrum::core::proxy_protocol
