#include "lb/vrrp/advert.h"

#include <gtest/gtest.h>

#include <vector>

namespace fulcrum::lb::vrrp {
namespace {

constexpr uint32_t kSource = 0x0AC73301;  // 10.199.51.1

// An IPv4 datagram around `vrrp`, as the raw socket delivers it.
std::vector<uint8_t> datagram(const std::vector<uint8_t>& vrrp, uint32_t source = kSource,
                              uint32_t destination = kVrrpGroup, uint8_t ttl = 255) {
  std::vector<uint8_t> p(20 + vrrp.size(), 0);
  p[0] = 0x45;
  size_t total = 20 + vrrp.size();
  p[2] = static_cast<uint8_t>(total >> 8);
  p[3] = static_cast<uint8_t>(total);
  p[8] = ttl;
  p[9] = kIpProtoVrrp;
  for (int i = 0; i < 4; ++i) {
    p[12 + i] = static_cast<uint8_t>(source >> (24 - 8 * i));
    p[16 + i] = static_cast<uint8_t>(destination >> (24 - 8 * i));
  }
  for (size_t i = 0; i < vrrp.size(); ++i) {
    p[20 + i] = vrrp[i];
  }
  return p;
}

TEST(VrrpAdvert, EncodesTheRfcLayout) {
  Advert a{51, 100, 100, {0x0AC73364}};
  std::vector<uint8_t> v = encodeAdvert(a, kSource, kVrrpGroup);
  ASSERT_EQ(v.size(), 12u);
  EXPECT_EQ(v[0], 0x31);  // version 3, type 1
  EXPECT_EQ(v[1], 51);
  EXPECT_EQ(v[2], 100);
  EXPECT_EQ(v[3], 1);
  EXPECT_EQ(v[4], 0x00);  // 100 cs in 12 bits
  EXPECT_EQ(v[5], 100);
  EXPECT_EQ((std::vector<uint8_t>{v[8], v[9], v[10], v[11]}), (std::vector<uint8_t>{10, 199, 51, 100}));
}

// A checksum computed by hand over the pseudo-header: 10.0.0.1 -> 224.0.0.18, protocol 112,
// length 12, then the message 31 01 64 01 00 64 [sum] 0a 00 00 64.
TEST(VrrpAdvert, ChecksumCoversThePseudoHeader) {
  std::vector<uint8_t> v = encodeAdvert(Advert{1, 100, 100, {0x0A000064}}, 0x0A000001, kVrrpGroup);
  uint32_t sum = 0x0A00 + 0x0001 + 0xE000 + 0x0012 + 112 + 12 + 0x3101 + 0x6401 + 0x0064 + 0x0A00 + 0x0064;
  while (sum >> 16) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  uint16_t expected = static_cast<uint16_t>(~sum);
  EXPECT_EQ(v[6], expected >> 8);
  EXPECT_EQ(v[7], expected & 0xff);
  // The same message from another source no longer checks out.
  EXPECT_EQ(decodeDatagram(datagram(v, 0x0A000002), 1).error, DecodeError::BadChecksum);
  EXPECT_EQ(decodeDatagram(datagram(v, 0x0A000001), 1).error, DecodeError::None);
}

TEST(VrrpAdvert, RoundTrips) {
  Advert a{200, 254, 4095, {0x0AC73364, 0x0AC73365}};
  Decoded d = decodeDatagram(datagram(encodeAdvert(a, kSource, kVrrpGroup)), 200);
  ASSERT_EQ(d.error, DecodeError::None);
  EXPECT_EQ(d.source, kSource);
  EXPECT_EQ(d.advert.vrid, 200);
  EXPECT_EQ(d.advert.priority, 254);
  EXPECT_EQ(d.advert.max_advert_cs, 4095);
  EXPECT_EQ(d.advert.addresses, a.addresses);
}

TEST(VrrpAdvert, UnicastChecksumUsesTheUnicastDestination) {
  std::vector<uint8_t> v = encodeAdvert(Advert{7, 50, 10, {}}, kSource, 0x0AC73302);
  EXPECT_EQ(decodeDatagram(datagram(v, kSource, 0x0AC73302), 7).error, DecodeError::None);
  EXPECT_EQ(decodeDatagram(datagram(v, kSource, kVrrpGroup), 7).error, DecodeError::BadChecksum);
}

struct Bad {
  const char* name;
  void (*mutate)(std::vector<uint8_t>&);
  DecodeError expected;
};

// Re-checksums the VRRP part after a field change, so only the intended check fails.
void fixChecksum(std::vector<uint8_t>& p) {
  std::vector<uint8_t> v(p.begin() + 20, p.end());
  v[6] = v[7] = 0;
  uint32_t src = uint32_t{p[12]} << 24 | uint32_t{p[13]} << 16 | uint32_t{p[14]} << 8 | p[15];
  uint32_t dst = uint32_t{p[16]} << 24 | uint32_t{p[17]} << 16 | uint32_t{p[18]} << 8 | p[19];
  uint32_t sum =
      (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + 112 + static_cast<uint32_t>(v.size());
  uint16_t c = internetChecksum(v, sum);
  p[26] = static_cast<uint8_t>(c >> 8);
  p[27] = static_cast<uint8_t>(c);
}

TEST(VrrpAdvert, StrictDecodingDiscards) {
  const Bad cases[] = {
      {"ttl_64", [](std::vector<uint8_t>& p) { p[8] = 64; }, DecodeError::BadTtl},
      {"version_2",
       [](std::vector<uint8_t>& p) {
         p[20] = 0x21;
         fixChecksum(p);
       },
       DecodeError::BadVersion},
      {"type_2",
       [](std::vector<uint8_t>& p) {
         p[20] = 0x32;
         fixChecksum(p);
       },
       DecodeError::BadType},
      {"other_vrid",
       [](std::vector<uint8_t>& p) {
         p[21] = 52;
         fixChecksum(p);
       },
       DecodeError::OtherVrid},
      {"checksum", [](std::vector<uint8_t>& p) { p[27] ^= 1; }, DecodeError::BadChecksum},
      {"payload_flip", [](std::vector<uint8_t>& p) { p[22] ^= 0x10; }, DecodeError::BadChecksum},
      {"interval_0",
       [](std::vector<uint8_t>& p) {
         p[24] = 0;
         p[25] = 0;
         fixChecksum(p);
       },
       DecodeError::BadInterval},
      {"count_too_big",
       [](std::vector<uint8_t>& p) {
         p[23] = 2;
         fixChecksum(p);
       },
       DecodeError::Truncated},
      {"ip_len_short", [](std::vector<uint8_t>& p) { p[3] = 24; }, DecodeError::Truncated},
      {"ip_len_long", [](std::vector<uint8_t>& p) { p[3] = 200; }, DecodeError::Truncated},
      {"header_only", [](std::vector<uint8_t>& p) { p.resize(19); }, DecodeError::Truncated},
      {"protocol", [](std::vector<uint8_t>& p) { p[9] = 17; }, DecodeError::NotIpv4},
      {"ipv6", [](std::vector<uint8_t>& p) { p[0] = 0x65; }, DecodeError::NotIpv4},
      {"ihl_4", [](std::vector<uint8_t>& p) { p[0] = 0x44; }, DecodeError::NotIpv4},
  };
  for (const Bad& c : cases) {
    std::vector<uint8_t> p = datagram(encodeAdvert(Advert{51, 100, 100, {0x0AC73364}}, kSource, kVrrpGroup));
    ASSERT_EQ(decodeDatagram(p, 51).error, DecodeError::None);
    c.mutate(p);
    EXPECT_EQ(decodeDatagram(p, 51).error, c.expected) << c.name;
  }
}

TEST(VrrpAdvert, IpOptionsAreSkipped) {
  std::vector<uint8_t> p = datagram(encodeAdvert(Advert{51, 100, 100, {}}, kSource, kVrrpGroup));
  std::vector<uint8_t> with(p.size() + 4, 0);
  for (size_t i = 0; i < p.size(); ++i) {
    with[i < 20 ? i : i + 4] = p[i];
  }
  with[20] = with[21] = with[22] = 1;  // four bytes of options (NOP NOP NOP EOL)
  p = with;
  p[0] = 0x46;
  p[3] = static_cast<uint8_t>(p.size());
  Decoded d = decodeDatagram(p, 51);
  EXPECT_EQ(d.error, DecodeError::None);
  EXPECT_EQ(d.advert.priority, 100);
}

// Every prefix and every single-byte change of a valid datagram: never a crash, and a change
// is either discarded or decodes to something (the checksum catches payload flips).
TEST(VrrpAdvert, MutationsNeverCrash) {
  std::vector<uint8_t> p = datagram(encodeAdvert(Advert{51, 100, 100, {0x0AC73364, 1}}, kSource, kVrrpGroup));
  for (size_t n = 0; n < p.size(); ++n) {
    EXPECT_NE(decodeDatagram(std::span(p.data(), n), 51).error, DecodeError::None);
  }
  for (size_t i = 20; i < p.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> q = p;
      q[i] ^= static_cast<uint8_t>(1 << bit);
      EXPECT_NE(decodeDatagram(q, 51).error, DecodeError::None) << i << ":" << bit;
    }
  }
}

}  // namespace
}  // namespace fulcrum::lb::vrrp
