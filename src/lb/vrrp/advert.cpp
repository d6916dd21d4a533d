#include "lb/vrrp/advert.h"

namespace fulcrum::lb::vrrp {

namespace {

constexpr size_t kVrrpHeader = 8;
constexpr uint8_t kVersionType = 0x31;  // version 3, type 1 (ADVERTISEMENT)

void put32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

uint32_t get32(std::span<const uint8_t> p, size_t at) {
  return uint32_t{p[at]} << 24 | uint32_t{p[at + 1]} << 16 | uint32_t{p[at + 2]} << 8 | p[at + 3];
}

// The 32-bit partial sum of the IPv4 pseudo-header (RFC 5798 §5.2.8, as for UDP).
uint32_t pseudoHeaderSum(uint32_t source, uint32_t destination, size_t length) {
  uint32_t sum = 0;
  sum += source >> 16;
  sum += source & 0xffff;
  sum += destination >> 16;
  sum += destination & 0xffff;
  sum += kIpProtoVrrp;
  sum += static_cast<uint32_t>(length);
  return sum;
}

}  // namespace

uint16_t internetChecksum(std::span<const uint8_t> data, uint32_t sum) {
  uint64_t total = sum;
  size_t i = 0;
  for (; i + 1 < data.size(); i += 2) {
    total += uint32_t{data[i]} << 8 | data[i + 1];
  }
  if (i < data.size()) {
    total += uint32_t{data[i]} << 8;
  }
  while (total >> 16) {
    total = (total & 0xffff) + (total >> 16);
  }
  return static_cast<uint16_t>(~total);
}

std::vector<uint8_t> encodeAdvert(const Advert& advert, uint32_t source, uint32_t destination) {
  std::vector<uint8_t> out;
  out.reserve(kVrrpHeader + 4 * advert.addresses.size());
  out.push_back(kVersionType);
  out.push_back(advert.vrid);
  out.push_back(advert.priority);
  out.push_back(static_cast<uint8_t>(advert.addresses.size()));
  uint16_t interval = advert.max_advert_cs & 0x0fff;  // the 4 reserved bits are zero
  out.push_back(static_cast<uint8_t>(interval >> 8));
  out.push_back(static_cast<uint8_t>(interval));
  out.push_back(0);
  out.push_back(0);
  for (uint32_t a : advert.addresses) {
    put32(out, a);
  }
  uint16_t sum = internetChecksum(out, pseudoHeaderSum(source, destination, out.size()));
  out[6] = static_cast<uint8_t>(sum >> 8);
  out[7] = static_cast<uint8_t>(sum);
  return out;
}

std::string_view decodeErrorName(DecodeError error) {
  switch (error) {
    case DecodeError::None:
      return "none";
    case DecodeError::Truncated:
      return "truncated";
    case DecodeError::NotIpv4:
      return "not_ipv4";
    case DecodeError::BadTtl:
      return "ttl";
    case DecodeError::BadVersion:
      return "version";
    case DecodeError::BadType:
      return "type";
    case DecodeError::BadChecksum:
      return "checksum";
    case DecodeError::BadInterval:
      return "interval";
    case DecodeError::OtherVrid:
      return "other_vrid";
  }
  return "unknown";
}

Decoded decodeDatagram(std::span<const uint8_t> p, uint8_t vrid) {
  Decoded d;
  if (p.size() < 20) {
    d.error = DecodeError::Truncated;
    return d;
  }
  size_t ihl = size_t{p[0] & 0x0fu} * 4;
  if ((p[0] >> 4) != 4 || ihl < 20 || p[9] != kIpProtoVrrp) {
    d.error = DecodeError::NotIpv4;
    return d;
  }
  size_t total = size_t{p[2]} << 8 | p[3];
  if (total < ihl + kVrrpHeader || total > p.size()) {
    d.error = DecodeError::Truncated;
    return d;
  }
  if (p[8] != kVrrpTtl) {
    d.error = DecodeError::BadTtl;
    return d;
  }
  d.source = get32(p, 12);
  uint32_t destination = get32(p, 16);
  std::span<const uint8_t> v = p.subspan(ihl, total - ihl);
  if ((v[0] >> 4) != 3) {
    d.error = DecodeError::BadVersion;
    return d;
  }
  if ((v[0] & 0x0f) != 1) {
    d.error = DecodeError::BadType;
    return d;
  }
  size_t count = v[3];
  if (v.size() < kVrrpHeader + 4 * count) {
    d.error = DecodeError::Truncated;
    return d;
  }
  // The checksum covers the whole VRRP message the IP length gives.
  if (internetChecksum(v, pseudoHeaderSum(d.source, destination, v.size())) != 0) {
    d.error = DecodeError::BadChecksum;
    return d;
  }
  if (v[1] != vrid) {
    d.error = DecodeError::OtherVrid;
    return d;
  }
  d.advert.vrid = v[1];
  d.advert.priority = v[2];
  d.advert.max_advert_cs = static_cast<uint16_t>((v[4] & 0x0f) << 8 | v[5]);
  if (d.advert.max_advert_cs == 0) {
    d.error = DecodeError::BadInterval;
    return d;
  }
  for (size_t i = 0; i < count; ++i) {
    d.advert.addresses.push_back(get32(v, kVrrpHeader + 4 * i));
  }
  return d;
}

}  // namespace fulcrum::lb::vrrp
