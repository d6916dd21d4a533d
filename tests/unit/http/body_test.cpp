#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "http/parser.h"

namespace fulcrum::http {
namespace {

using namespace std::string_literals;

struct Decoded {
  std::string payload;
  size_t consumed = 0;
  bool done = false;
  int error = 0;
};

// Feeds `pieces` the way a connection does: unconsumed bytes stay in its buffer and new bytes
// are appended; it steps while a step makes progress.
Decoded decode(BodyKind kind, uint64_t content_length, uint64_t max_body, size_t max_trailer,
               const std::vector<std::string_view>& pieces) {
  BodyDecoder decoder;
  decoder.reset(kind, content_length, max_body, max_trailer);
  Decoded out;
  std::string pending;
  // An empty first piece: some bodies are over before any byte arrives.
  std::vector<std::string_view> all = {std::string_view()};
  all.insert(all.end(), pieces.begin(), pieces.end());
  for (std::string_view piece : all) {
    pending.append(piece);
    for (;;) {
      BodyStep step = decoder.step(pending);
      EXPECT_LE(step.consumed, pending.size());
      if (!step.payload.empty()) {
        EXPECT_GE(step.payload.data(), pending.data());
        EXPECT_LE(step.payload.data() + step.payload.size(), pending.data() + step.consumed);
        EXPECT_EQ(step.error_status, 0) << "a step carries a payload or an error, not both";
      }
      out.payload.append(step.payload);
      out.consumed += step.consumed;
      pending.erase(0, step.consumed);
      if (step.error_status != 0) {
        out.error = step.error_status;
        EXPECT_FALSE(decoder.done());
        BodyStep again = decoder.step(pending);
        EXPECT_EQ(again.error_status, step.error_status);
        EXPECT_EQ(again.consumed, 0u);
        return out;
      }
      if (step.done) {
        out.done = true;
        EXPECT_TRUE(decoder.done());
        BodyStep again = decoder.step(pending);
        EXPECT_TRUE(again.done);
        EXPECT_EQ(again.consumed, 0u);
        EXPECT_TRUE(again.payload.empty());
        EXPECT_EQ(decoder.bodyBytes(), out.payload.size());
        return out;
      }
      EXPECT_FALSE(decoder.done());
      if (step.consumed == 0) {
        break;
      }
    }
  }
  EXPECT_EQ(decoder.bodyBytes(), out.payload.size());
  return out;
}

struct BodyCase {
  std::string name;
  BodyKind kind = BodyKind::Chunked;
  std::string input;
  std::string payload;
  bool done = true;
  int error = 0;
  size_t trailing = 0;  // input bytes left after the body
  uint64_t content_length = 0;
  uint64_t max_body = 0;
  size_t max_trailer = 16384;
};

class BodyTest : public ::testing::TestWithParam<BodyCase> {
 protected:
  Decoded run(const std::vector<std::string_view>& pieces) const {
    const BodyCase& c = GetParam();
    return decode(c.kind, c.content_length, c.max_body, c.max_trailer, pieces);
  }
};

TEST_P(BodyTest, WholeInput) {
  const BodyCase& c = GetParam();
  Decoded d = run({c.input});
  EXPECT_EQ(d.error, c.error);
  EXPECT_EQ(d.done, c.done);
  if (c.error == 0) {
    EXPECT_EQ(d.payload, c.payload);
    EXPECT_EQ(d.consumed, c.input.size() - c.trailing);
  }
}

TEST_P(BodyTest, EveryTwoWaySplit) {
  const BodyCase& c = GetParam();
  const Decoded whole = run({c.input});
  std::string_view input = c.input;
  for (size_t at = 0; at <= input.size(); ++at) {
    SCOPED_TRACE("split at " + std::to_string(at));
    Decoded d = run({input.substr(0, at), input.substr(at)});
    EXPECT_EQ(d.error, whole.error);
    EXPECT_EQ(d.done, whole.done);
    if (whole.error == 0) {
      EXPECT_EQ(d.payload, whole.payload);
      EXPECT_EQ(d.consumed, whole.consumed);
    }
  }
}

TEST_P(BodyTest, ByteAtATime) {
  const BodyCase& c = GetParam();
  const Decoded whole = run({c.input});
  std::vector<std::string_view> bytes;
  for (size_t i = 0; i < c.input.size(); ++i) {
    bytes.push_back(std::string_view(c.input).substr(i, 1));
  }
  Decoded d = run(bytes);
  EXPECT_EQ(d.error, whole.error);
  EXPECT_EQ(d.done, whole.done);
  if (whole.error == 0) {
    EXPECT_EQ(d.payload, whole.payload);
    EXPECT_EQ(d.consumed, whole.consumed);
  }
}

std::vector<BodyCase> bodyCases() {
  std::vector<BodyCase> v;
  // no body and tunnels
  v.push_back({.name = "none", .kind = BodyKind::None, .input = "GET / HTTP/1.1\r\n", .trailing = 16});
  v.push_back({.name = "none_empty", .kind = BodyKind::None, .input = ""});
  v.push_back({.name = "tunnel_is_not_a_body", .kind = BodyKind::Tunnel, .input = "raw", .trailing = 3});
  // Content-Length
  v.push_back({.name = "length_exact",
               .kind = BodyKind::ContentLength,
               .input = "hello",
               .payload = "hello",
               .content_length = 5});
  v.push_back({.name = "length_then_next_request",
               .kind = BodyKind::ContentLength,
               .input = "helloGET / HTTP/1.1\r\n",
               .payload = "hello",
               .trailing = 16,
               .content_length = 5});
  v.push_back({.name = "length_short",
               .kind = BodyKind::ContentLength,
               .input = "hel",
               .payload = "hel",
               .done = false,
               .content_length = 5});
  v.push_back({.name = "length_zero", .kind = BodyKind::ContentLength, .input = "x", .trailing = 1});
  v.push_back({.name = "length_binary",
               .kind = BodyKind::ContentLength,
               .input = "\0\r\n\xff"s,
               .payload = "\0\r\n\xff"s,
               .content_length = 4});
  v.push_back({.name = "length_at_limit",
               .kind = BodyKind::ContentLength,
               .input = "0123456789",
               .payload = "0123456789",
               .content_length = 10,
               .max_body = 10});
  v.push_back({.name = "length_over_limit",
               .kind = BodyKind::ContentLength,
               .input = "01234567890",
               .done = false,
               .error = 413,
               .content_length = 11,
               .max_body = 10});
  v.push_back({.name = "length_huge_unlimited",
               .kind = BodyKind::ContentLength,
               .input = "abc",
               .payload = "abc",
               .done = false,
               .content_length = UINT64_MAX});
  // until close
  v.push_back({.name = "until_close",
               .kind = BodyKind::UntilClose,
               .input = "everything\r\n0\r\n\r\n",
               .payload = "everything\r\n0\r\n\r\n",
               .done = false});
  v.push_back({.name = "until_close_empty", .kind = BodyKind::UntilClose, .input = "", .done = false});
  v.push_back({.name = "until_close_at_limit",
               .kind = BodyKind::UntilClose,
               .input = "abc",
               .payload = "abc",
               .done = false,
               .max_body = 3});
  v.push_back({.name = "until_close_over_limit",
               .kind = BodyKind::UntilClose,
               .input = "abcd",
               .done = false,
               .error = 413,
               .max_body = 3});
  // chunked
  v.push_back({.name = "chunked_simple", .input = "5\r\nhello\r\n0\r\n\r\n", .payload = "hello"});
  v.push_back({.name = "chunked_empty_body", .input = "0\r\n\r\n"});
  v.push_back(
      {.name = "chunked_multi", .input = "3\r\nabc\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n", .payload = "abcdef"});
  v.push_back(
      {.name = "chunked_hex_upper", .input = "A\r\n0123456789\r\n0\r\n\r\n", .payload = "0123456789"});
  v.push_back({.name = "chunked_hex_lower",
               .input = "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
               .payload = "abcdefghijklmnopqrstuvwxyz"});
  v.push_back({.name = "chunked_leading_zeros", .input = "0005\r\nhello\r\n000\r\n\r\n", .payload = "hello"});
  v.push_back({.name = "chunked_many_leading_zeros",
               .input = "00000000000000000000000005\r\nhello\r\n0\r\n\r\n",
               .payload = "hello"});
  v.push_back(
      {.name = "chunked_data_with_crlf", .input = "4\r\n\r\n\r\n\r\n0\r\n\r\n", .payload = "\r\n\r\n"});
  v.push_back({.name = "chunked_then_next_request",
               .input = "1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
               .payload = "x",
               .trailing = 16});
  v.push_back(
      {.name = "chunked_extension", .input = "5;name=value\r\nhello\r\n0;last\r\n\r\n", .payload = "hello"});
  v.push_back(
      {.name = "chunked_extension_bws", .input = "5 ;a=b\r\nhello\r\n0\t; x\r\n\r\n", .payload = "hello"});
  v.push_back({.name = "chunked_extension_quoted",
               .input = "5;a=\"quoted ; str\";b\r\nhello\r\n0\r\n\r\n",
               .payload = "hello"});
  v.push_back({.name = "chunked_extension_empty", .input = "5;\r\nhello\r\n0\r\n\r\n", .payload = "hello"});
  v.push_back({.name = "chunked_trailers",
               .input = "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nExpires:  never \r\n\r\n",
               .payload = "hello"});
  v.push_back({.name = "chunked_trailer_at_limit", .input = "0\r\nX: 12345678\r\n\r\n", .max_trailer = 15});
  v.push_back({.name = "chunked_incomplete_data", .input = "5\r\nhel", .payload = "hel", .done = false});
  v.push_back({.name = "chunked_incomplete_size", .input = "5", .done = false, .trailing = 1});
  v.push_back({.name = "chunked_incomplete_trailers",
               .input = "1\r\na\r\n0\r\nX: y\r\n",
               .payload = "a",
               .done = false});
  v.push_back({.name = "chunked_max_size_unlimited",
               .input = "ffffffffffffffff\r\nabc",
               .payload = "abc",
               .done = false});
  v.push_back({.name = "chunked_at_limit",
               .input = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
               .payload = "abcde",
               .max_body = 5});
  // chunked errors
  v.push_back({.name = "chunked_over_limit_single",
               .input = "6\r\nabcdef\r\n0\r\n\r\n",
               .done = false,
               .error = 413,
               .max_body = 5});
  v.push_back({.name = "chunked_over_limit_total",
               .input = "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
               .done = false,
               .error = 413,
               .max_body = 5});
  v.push_back({.name = "chunked_over_limit_huge",
               .input = "ffffffffffffffff\r\n",
               .done = false,
               .error = 413,
               .max_body = 1 << 20});
  v.push_back(
      {.name = "chunked_size_overflow", .input = "10000000000000000\r\n", .done = false, .error = 400});
  v.push_back({.name = "chunked_size_overflow_long",
               .input = "fffffffffffffffffffffffffffffffff\r\n",
               .done = false,
               .error = 400});
  for (const char* line : {"x\r\n", "\r\n", "-1\r\n", "+5\r\n", "0x5\r\n", " 5\r\n", "5 \r\n", "5\t\r\n",
                           "5\n", "5\rx", "5;a\x01\r\n", "5 x\r\n", "5x\r\n", "5;a\nb\r\n", "g\r\n"}) {
    v.push_back({.name = "chunked_bad_line_" + std::to_string(v.size()),
                 .input = std::string(line) + "hello\r\n0\r\n\r\n",
                 .done = false,
                 .error = 400});
  }
  v.push_back(
      {.name = "chunked_bad_nul_size", .input = "5\0\r\nhello\r\n0\r\n\r\n"s, .done = false, .error = 400});
  v.push_back({.name = "chunked_missing_crlf_after_data",
               .input = "5\r\nhelloX\r\n0\r\n\r\n",
               .done = false,
               .error = 400});
  v.push_back(
      {.name = "chunked_bare_cr_after_data", .input = "5\r\nhello\rX0\r\n\r\n", .done = false, .error = 400});
  v.push_back(
      {.name = "chunked_bare_lf_after_data", .input = "5\r\nhello\n0\r\n\r\n", .done = false, .error = 400});
  v.push_back({.name = "chunked_data_longer_than_size",
               .input = "2\r\nabc\r\n0\r\n\r\n",
               .done = false,
               .error = 400});
  v.push_back(
      {.name = "chunked_bad_trailer_name", .input = "0\r\nX : y\r\n\r\n", .done = false, .error = 400});
  v.push_back(
      {.name = "chunked_trailer_obs_fold", .input = "0\r\nA: b\r\n c\r\n\r\n", .done = false, .error = 400});
  v.push_back({.name = "chunked_trailer_ctl", .input = "0\r\nA: b\x01\r\n\r\n", .done = false, .error = 400});
  v.push_back({.name = "chunked_trailer_bare_lf_end", .input = "0\r\n\n", .done = false, .error = 400});
  v.push_back({.name = "chunked_trailer_bare_lf", .input = "0\r\nA: b\n\r\n", .done = false, .error = 400});
  v.push_back({.name = "chunked_trailer_content_length", .input = "0\r\nContent-Length: 50\r\n\r\n", .done = false,
               .error = 400});
  v.push_back({.name = "chunked_trailer_transfer_encoding", .input = "0\r\ntransfer-encoding: chunked\r\n\r\n",
               .done = false, .error = 400});
  v.push_back({.name = "chunked_trailer_host", .input = "0\r\nHOST: other\r\n\r\n", .done = false, .error = 400});
  v.push_back({.name = "chunked_trailer_no_colon", .input = "0\r\nAb\r\n\r\n", .done = false, .error = 400});
  v.push_back({.name = "chunked_trailer_over_limit",
               .input = "0\r\nX: 123456789\r\n\r\n",
               .done = false,
               .error = 400,
               .max_trailer = 15});
  v.push_back({.name = "chunked_trailer_over_limit_incomplete",
               .input = "0\r\nX: 12345678901234567890",
               .done = false,
               .error = 400,
               .max_trailer = 15});
  v.push_back({.name = "chunked_line_too_long",
               .input = "5;" + std::string(5000, 'a') + "\r\nhello\r\n0\r\n\r\n",
               .done = false,
               .error = 400});
  v.push_back({.name = "chunked_line_too_long_incomplete",
               .input = "5;" + std::string(5000, 'a'),
               .done = false,
               .error = 400});
  return v;
}

std::string bodyName(const ::testing::TestParamInfo<BodyCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Bodies, BodyTest, ::testing::ValuesIn(bodyCases()), bodyName);

TEST(BodyDecoder, DefaultIsDone) {
  BodyDecoder decoder;
  EXPECT_TRUE(decoder.done());
  EXPECT_TRUE(decoder.step("abc").done);
}

TEST(BodyDecoder, ChunkPayloadIsAViewIntoInput) {
  BodyDecoder decoder;
  decoder.reset(BodyKind::Chunked, 0, 0);
  const std::string input = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  BodyStep s = decoder.step(input);
  EXPECT_EQ(s.payload, "abc");
  EXPECT_EQ(s.payload.data(), input.data() + 3);
  EXPECT_FALSE(s.done);
  // Framing after the piece is consumed in the same step, up to the next piece.
  EXPECT_EQ(s.consumed, 11u);
  s = decoder.step(std::string_view(input).substr(11));
  EXPECT_EQ(s.payload, "de");
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.consumed, input.size() - 11);
  EXPECT_EQ(decoder.bodyBytes(), 5u);
}

TEST(BodyDecoder, ResetStartsOver) {
  BodyDecoder decoder;
  decoder.reset(BodyKind::Chunked, 0, 10);
  EXPECT_EQ(decoder.step("zz\r\n").error_status, 400);
  decoder.reset(BodyKind::ContentLength, 2, 10);
  EXPECT_FALSE(decoder.done());
  BodyStep s = decoder.step("ok");
  EXPECT_EQ(s.payload, "ok");
  EXPECT_TRUE(s.done);
  EXPECT_EQ(decoder.bodyBytes(), 2u);
  decoder.reset(BodyKind::ContentLength, 0, 10);
  EXPECT_TRUE(decoder.done());
  EXPECT_EQ(decoder.bodyBytes(), 0u);
}

TEST(BodyDecoder, LargeChunkedBodyInRandomPieces) {
  std::string input;
  std::string expected;
  for (int i = 1; i < 200; ++i) {
    std::string data(static_cast<size_t>(i * 7 % 300 + 1), static_cast<char>('a' + i % 26));
    char size[32];
    std::snprintf(size, sizeof size, "%zx", data.size());
    input += std::string(size) + (i % 3 == 0 ? ";ext=1" : "") + "\r\n" + data + "\r\n";
    expected += data;
  }
  input += "0\r\nT: v\r\n\r\n";
  std::vector<std::string_view> pieces;
  size_t pos = 0;
  uint32_t seed = 12345;
  while (pos < input.size()) {
    seed = seed * 1103515245 + 12345;
    size_t n = std::min<size_t>(input.size() - pos, (seed >> 16) % 97 + 1);
    pieces.push_back(std::string_view(input).substr(pos, n));
    pos += n;
  }
  Decoded d = decode(BodyKind::Chunked, 0, 0, 16384, pieces);
  EXPECT_EQ(d.error, 0);
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.payload, expected);
  EXPECT_EQ(d.consumed, input.size());
}

}  // namespace
}  // namespace fulcrum::http
