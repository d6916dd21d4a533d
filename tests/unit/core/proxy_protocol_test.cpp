#include "core/proxy_protocol.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace fulcrum::core::proxy_protocol {
namespace {

using Status = Parser::Status;

// What follows the header on the connection: the parser must never take a byte of it.
const std::string kAfter = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

struct Outcome {
  Status status = Status::NeedMore;
  size_t consumed = 0;  // in all
  Header header;
  std::string error;
};

// Feeds `bytes` cut at `cuts` (offsets, increasing), as the socket would give them after the
// caller drops what each step took; stops at Done or Invalid.
Outcome feedPieces(const std::string& bytes, const std::vector<size_t>& cuts) {
  Parser parser;
  Outcome out;
  size_t arrived = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(bytes.size());
  for (size_t end : ends) {
    arrived = end;
    // What is queued: everything arrived and not yet taken.
    std::string_view queued = std::string_view(bytes).substr(out.consumed, arrived - out.consumed);
    Parser::Step step = parser.feed(queued);
    EXPECT_LE(step.consumed, queued.size());
    out.consumed += step.consumed;
    out.status = step.status;
    if (step.status != Status::NeedMore) {
      break;
    }
    EXPECT_EQ(step.consumed, queued.size()) << "NeedMore must take every byte it was given";
  }
  out.header = parser.header();
  out.error = parser.error();
  return out;
}

Outcome feedAll(const std::string& bytes) {
  return feedPieces(bytes, {});
}

SocketAddress addr(const char* text) {
  return *SocketAddress::parse(text);
}

std::string v2Header(uint8_t ver_cmd, uint8_t fam, const std::string& payload) {
  std::string out("\r\n\r\n\0\r\nQUIT\n", 12);
  out.push_back(static_cast<char>(ver_cmd));
  out.push_back(static_cast<char>(fam));
  out.push_back(static_cast<char>(payload.size() >> 8));
  out.push_back(static_cast<char>(payload.size() & 0xff));
  return out + payload;
}

std::string v4Payload() {
  // 192.0.2.1:56324 -> 198.51.100.7:443
  return std::string("\xc0\x00\x02\x01\xc6\x33\x64\x07\xdc\x04\x01\xbb", 12);
}

// Every valid header, split at every point (and then byte by byte), ends at its own last byte.
void expectEverySplit(const std::string& header) {
  std::string bytes = header + kAfter;
  for (size_t cut = 1; cut < bytes.size(); ++cut) {
    Outcome o = feedPieces(bytes, {cut});
    EXPECT_EQ(o.status, Status::Done) << "cut at " << cut << ": " << o.error;
    EXPECT_EQ(o.consumed, header.size()) << "cut at " << cut;
  }
  std::vector<size_t> each;
  for (size_t i = 1; i < bytes.size(); ++i) {
    each.push_back(i);
  }
  Outcome o = feedPieces(bytes, each);
  EXPECT_EQ(o.status, Status::Done) << o.error;
  EXPECT_EQ(o.consumed, header.size());
}

TEST(ProxyProtocol, V1Tcp4) {
  std::string header = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
  Outcome o = feedAll(header + kAfter);
  ASSERT_EQ(o.status, Status::Done) << o.error;
  EXPECT_EQ(o.consumed, header.size());
  EXPECT_EQ(o.header.version, 1);
  EXPECT_EQ(o.header.source->toString(), "192.0.2.1:56324");
  EXPECT_EQ(o.header.destination->toString(), "198.51.100.7:443");
  expectEverySplit(header);
}

TEST(ProxyProtocol, V1Tcp6) {
  std::string header = "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n";
  Outcome o = feedAll(header + kAfter);
  ASSERT_EQ(o.status, Status::Done) << o.error;
  EXPECT_EQ(o.header.source->toString(), "[2001:db8::1]:65535");
  EXPECT_EQ(o.header.destination->toString(), "[2001:db8::2]:0");
  expectEverySplit(header);
}

TEST(ProxyProtocol, V1UnknownKeepsTheSocketsAddresses) {
  for (std::string header : {std::string("PROXY UNKNOWN\r\n"),
                             std::string("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")}) {
    Outcome o = feedAll(header + kAfter);
    ASSERT_EQ(o.status, Status::Done) << o.error;
    EXPECT_EQ(o.consumed, header.size());
    EXPECT_FALSE(o.header.source.has_value());
    expectEverySplit(header);
  }
}

TEST(ProxyProtocol, V1AtTheLongestLine) {
  // The spec's worst case, 107 bytes exactly, and the longest TCP6 line.
  std::string longest =
      "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 "
      "65535\r\n";
  ASSERT_EQ(longest.size(), kMaxV1Line);
  std::string tcp6 =
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 "
      "65535\r\n";
  for (const std::string& header : {longest, tcp6}) {
    Outcome o = feedAll(header + kAfter);
    EXPECT_EQ(o.status, Status::Done) << o.error;
    EXPECT_EQ(o.consumed, header.size());
    expectEverySplit(header);
  }
}

TEST(ProxyProtocol, V1Malformed) {
  const char* bad[] = {
      "GET / HTTP/1.1\r\n",                      // no signature
      "PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n",      // signature wrong in its prefix
      "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",      // case matters
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",        // LF without CR
      "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",      // unknown protocol
      "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",        // bad IPv4
      "PROXY TCP4 1.2.3.4 2001:db8::1 1 2\r\n",  // family mismatch
      "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",      // v4 under TCP6
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",  // port out of range
      "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",     // leading zero
      "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",     // sign
      "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",        // a field missing
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",    // a field too many
      "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",     // double space
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",     // trailing space
      "PROXY \r\n",                              // nothing
  };
  for (const char* text : bad) {
    std::string bytes = std::string(text) + kAfter;
    Outcome o = feedAll(bytes);
    EXPECT_EQ(o.status, Status::Invalid) << text;
    EXPECT_FALSE(o.error.empty()) << text;
    EXPECT_LE(o.consumed, std::string(text).size()) << text;
    // Byte by byte it is refused just the same.
    std::vector<size_t> each;
    for (size_t i = 1; i < bytes.size(); ++i) {
      each.push_back(i);
    }
    EXPECT_EQ(feedPieces(bytes, each).status, Status::Invalid) << text;
  }
}

TEST(ProxyProtocol, V1WithoutCrlfWithin107BytesIsRefused) {
  std::string endless = "PROXY TCP4 " + std::string(200, '1');
  Outcome o = feedAll(endless);
  EXPECT_EQ(o.status, Status::Invalid);
  EXPECT_EQ(o.consumed, kMaxV1Line);  // never reads past the longest line
  // A line that would end at byte 108 is one too long.
  std::string long_line = "PROXY UNKNOWN " + std::string(kMaxV1Line - 15, 'x') + "\r\n";
  ASSERT_EQ(long_line.size(), kMaxV1Line + 1);
  EXPECT_EQ(feedAll(long_line).status, Status::Invalid);
}

TEST(ProxyProtocol, AWrongFirstByteIsRefusedAtOnce) {
  Parser parser;
  Parser::Step step = parser.feed("G");
  EXPECT_EQ(step.status, Status::Invalid);
  EXPECT_EQ(step.consumed, 0u);
  Parser v1;
  EXPECT_EQ(v1.feed("PRO").status, Status::NeedMore);
  EXPECT_EQ(v1.feed("T").status, Status::Invalid);
  Parser v2;
  EXPECT_EQ(v2.feed(std::string_view("\r\n\r\n\0", 5)).status, Status::NeedMore);
  EXPECT_EQ(v2.feed("X").status, Status::Invalid);
}

TEST(ProxyProtocol, V2ProxyIpv4) {
  std::string header = v2Header(0x21, 0x11, v4Payload());
  Outcome o = feedAll(header + kAfter);
  ASSERT_EQ(o.status, Status::Done) << o.error;
  EXPECT_EQ(o.consumed, header.size());
  EXPECT_EQ(o.header.version, 2);
  EXPECT_EQ(o.header.source->toString(), "192.0.2.1:56324");
  EXPECT_EQ(o.header.destination->toString(), "198.51.100.7:443");
  expectEverySplit(header);
}

TEST(ProxyProtocol, V2ProxyIpv6WithTlvs) {
  std::string payload(36, '\0');
  payload[0] = 0x20;
  payload[1] = 0x01;
  payload[2] = 0x0d;
  payload[3] = static_cast<char>(0xb8);
  payload[15] = 0x01;  // 2001:db8::1
  payload[16] = 0x20;
  payload[17] = 0x01;
  payload[18] = 0x0d;
  payload[19] = static_cast<char>(0xb8);
  payload[31] = 0x02;  // 2001:db8::2
  payload[32] = 0x30;
  payload[33] = 0x39;  // 12345
  payload[34] = 0x00;
  payload[35] = 0x50;  // 80
  // ALPN "h2", an AWS VPC endpoint id, and NOOP padding of zero length.
  payload += std::string("\x01\x00\x02h2", 5);
  payload += std::string("\xea\x00\x0a\x01vpce-0123", 13);
  payload += std::string("\x04\x00\x00", 3);
  std::string header = v2Header(0x21, 0x21, payload);
  Outcome o = feedAll(header + kAfter);
  ASSERT_EQ(o.status, Status::Done) << o.error;
  EXPECT_EQ(o.consumed, header.size());
  EXPECT_EQ(o.header.source->toString(), "[2001:db8::1]:12345");
  EXPECT_EQ(o.header.destination->toString(), "[2001:db8::2]:80");
  expectEverySplit(header);
}

TEST(ProxyProtocol, V2LocalKeepsTheSocketsAddresses) {
  // LOCAL with no addresses, and LOCAL with addresses that must be ignored.
  for (std::string header : {v2Header(0x20, 0x00, ""), v2Header(0x20, 0x11, v4Payload())}) {
    Outcome o = feedAll(header + kAfter);
    ASSERT_EQ(o.status, Status::Done) << o.error;
    EXPECT_EQ(o.consumed, header.size());
    EXPECT_FALSE(o.header.source.has_value());
    expectEverySplit(header);
  }
  // PROXY over UNSPEC: accepted, the socket's addresses kept (the spec).
  Outcome o = feedAll(v2Header(0x21, 0x00, "") + kAfter);
  EXPECT_EQ(o.status, Status::Done);
  EXPECT_FALSE(o.header.source.has_value());
}

TEST(ProxyProtocol, V2Malformed) {
  std::string huge(kMaxV2Payload + 1, '\0');
  struct Case {
    const char* why;
    std::string bytes;
  } cases[] = {
      {"version 1 in a v2 header", v2Header(0x11, 0x11, v4Payload())},
      {"version 3", v2Header(0x31, 0x11, v4Payload())},
      {"command 2", v2Header(0x22, 0x11, v4Payload())},
      {"family 4", v2Header(0x21, 0x41, v4Payload())},
      {"AF_UNIX", v2Header(0x21, 0x31, std::string(216, '\0'))},
      {"DGRAM", v2Header(0x21, 0x12, v4Payload())},
      {"length short of the IPv4 addresses", v2Header(0x21, 0x11, v4Payload().substr(0, 11))},
      {"length short of the IPv6 addresses", v2Header(0x21, 0x21, std::string(35, '\0'))},
      {"length over the limit", v2Header(0x21, 0x11, v4Payload() + huge)},
      {"a TLV cut in its header", v2Header(0x21, 0x11, v4Payload() + std::string("\x01\x00", 2))},
      {"a TLV longer than the header", v2Header(0x21, 0x11, v4Payload() + std::string("\x01\x00\x05h2", 5))},
      {"a signature byte wrong",
       std::string("\r\n\r\n\0\r\nQUIX\n", 12) + v2Header(0x21, 0x11, v4Payload()).substr(12)},
  };
  for (const Case& c : cases) {
    Outcome o = feedAll(c.bytes + kAfter);
    EXPECT_EQ(o.status, Status::Invalid) << c.why;
    EXPECT_FALSE(o.error.empty()) << c.why;
    EXPECT_LE(o.consumed, c.bytes.size()) << c.why;
  }
  // The length is judged before the payload is awaited: no 2 KiB buffered for a header refused anyway.
  Parser parser;
  std::string fixed = v2Header(0x21, 0x11, v4Payload() + huge).substr(0, 16);
  Parser::Step step = parser.feed(fixed);
  EXPECT_EQ(step.status, Status::Invalid);
  EXPECT_EQ(step.consumed, 16u);
}

TEST(ProxyProtocol, EncodedHeadersParseBack) {
  struct Pair {
    const char* source;
    const char* destination;
    const char* source_after;  // as parsed back
  } pairs[] = {
      {"192.0.2.1:40000", "127.0.0.1:8080", "192.0.2.1:40000"},
      {"[2001:db8::7]:1", "[::1]:443", "[2001:db8::7]:1"},
      // A v4 client on a v6 listener goes as its mapped address.
      {"192.0.2.1:40000", "[::1]:443", "[::ffff:192.0.2.1]:40000"},
  };
  for (const Pair& p : pairs) {
    for (int version : {1, 2}) {
      std::string header = version == 1 ? encodeV1(addr(p.source), addr(p.destination))
                                        : encodeV2(addr(p.source), addr(p.destination));
      Outcome o = feedAll(header + kAfter);
      ASSERT_EQ(o.status, Status::Done) << p.source << " v" << version << ": " << o.error;
      EXPECT_EQ(o.consumed, header.size());
      EXPECT_EQ(o.header.source->toString(), p.source_after);
    }
  }
  EXPECT_EQ(encodeV1(addr("192.0.2.1:40000"), addr("127.0.0.1:8080")),
            "PROXY TCP4 192.0.2.1 127.0.0.1 40000 8080\r\n");
  for (const std::string& local : {encodeV1Unknown(), encodeV2Local()}) {
    Outcome o = feedAll(local + kAfter);
    ASSERT_EQ(o.status, Status::Done) << o.error;
    EXPECT_EQ(o.consumed, local.size());
    EXPECT_FALSE(o.header.source.has_value());
  }
}

TEST(ProxyProtocol, DetectTellsAHeaderFromARequest) {
  EXPECT_EQ(detect("GET / HTTP/1.1\r\n"), Presence::Absent);
  EXPECT_EQ(detect("PUT /x"), Presence::Absent);
  EXPECT_EQ(detect("P"), Presence::Unsure);
  EXPECT_EQ(detect("PROXY"), Presence::Unsure);
  EXPECT_EQ(detect("PROXY TCP4"), Presence::Present);
  EXPECT_EQ(detect(std::string_view("\r\n\r\n\0\r\nQUIT", 11)), Presence::Unsure);
  EXPECT_EQ(detect(encodeV2Local()), Presence::Present);
  EXPECT_EQ(detect("\r\n\r\nGET"), Presence::Absent);
  EXPECT_EQ(detect("\x16\x03\x01"), Presence::Absent);  // a TLS ClientHello
}

}  // namespace
}  // namespace fulcrum::core::proxy_protocol
