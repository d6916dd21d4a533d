#pragma once
// The VRRPv3 advertisement for IPv4 (RFC 5798 §5): encoding, and strict decoding of a whole IPv4
// datagram as a raw IPPROTO_VRRP socket delivers it. Pure: no sockets, no clock.
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace fulcrum::lb::vrrp {

inline constexpr uint8_t kIpProtoVrrp = 112;
inline constexpr uint32_t kVrrpGroup = 0xE0000012;  // 224.0.0.18, host order
inline constexpr uint8_t kVrrpTtl = 255;

// One advertisement. IPv4 addresses are in host order.
struct Advert {
  uint8_t vrid = 0;
  uint8_t priority = 0;
  uint16_t max_advert_cs = 0;  // 12 bits: the sender's advert interval in centiseconds
  std::vector<uint32_t> addresses;
};

// The VRRP message (no IP header), its checksum computed over the IPv4 pseudo-header of
// `source` -> `destination` as RFC 5798 §5.2.8 says (what keepalived 2.2 checks).
std::vector<uint8_t> encodeAdvert(const Advert& advert, uint32_t source, uint32_t destination);

// Why a datagram was not taken. Each has its own counter.
enum class DecodeError : uint8_t {
  None,
  Truncated,    // shorter than its headers, or than the addresses it announces
  NotIpv4,      // IP version, header length or protocol wrong
  BadTtl,       // TTL is not 255: it crossed a router (RFC 5798 §7.1)
  BadVersion,   // not VRRP version 3
  BadType,      // not an ADVERTISEMENT
  BadChecksum,  // over the IPv4 pseudo-header
  BadInterval,  // Max Adver Int of 0
  OtherVrid,    // another virtual router's advertisement
};
inline constexpr size_t kDecodeErrorCount = 9;
std::string_view decodeErrorName(DecodeError error);

struct Decoded {
  DecodeError error = DecodeError::None;
  uint32_t source = 0;  // the IPv4 source address (host order): the sender's primary address
  Advert advert;
};

// Decodes one IPv4 datagram (header included). `vrid`: the only virtual router taken.
Decoded decodeDatagram(std::span<const uint8_t> datagram, uint8_t vrid);

// The Internet checksum (RFC 1071) of `data` continuing from `sum` (a partial 32-bit sum).
uint16_t internetChecksum(std::span<const uint8_t> data, uint32_t sum = 0);

}  // namespace fulcrum::lb::vrrp
