#pragma once
// IP addresses and socket addresses (IPv4 and IPv6), parsed from "host:port" / "[v6]:port".
// Host names are not resolved: a topology file names addresses, never DNS names.
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fulcrum::core {

struct IpAddress {
  int family = AF_INET;             // AF_INET or AF_INET6
  std::array<uint8_t, 16> bytes{};  // network order; IPv4 uses the first 4

  static std::optional<IpAddress> parse(std::string_view text);
  std::string toString() const;
  size_t length() const { return family == AF_INET ? 4 : 16; }
  // True when the first `prefix_len` bits equal those of `network` (same family only).
  bool inPrefix(const IpAddress& network, uint8_t prefix_len) const;
  bool operator==(const IpAddress& other) const = default;
};

class SocketAddress {
 public:
  SocketAddress() = default;
  SocketAddress(const IpAddress& ip, uint16_t port);

  // "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:80". Port 0 is accepted (ephemeral).
  static std::optional<SocketAddress> parse(std::string_view text);
  static SocketAddress fromSockaddr(const sockaddr* sa, socklen_t len);

  const sockaddr* sockaddrPtr() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t sockaddrLen() const { return len_; }
  int family() const { return storage_.ss_family; }
  uint16_t port() const;
  IpAddress ip() const;
  std::string toString() const;  // same forms as parse accepts
  bool operator==(const SocketAddress& other) const;

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

}  // namespace fulcrum::core
