#include "http/util.h"

#include <gtest/gtest.h>

#include <string>

namespace fulcrum::http {
namespace {

using namespace std::string_view_literals;

// ---------------------------------------------------------------------------------------------
// Reason phrases

struct Reason {
  int status;
  std::string_view text;
};

class ReasonTest : public ::testing::TestWithParam<Reason> {};

TEST_P(ReasonTest, Known) {
  EXPECT_EQ(reasonPhrase(GetParam().status), GetParam().text);
}

INSTANTIATE_TEST_SUITE_P(
    Util, ReasonTest,
    ::testing::Values(
        Reason{100, "Continue"}, Reason{101, "Switching Protocols"}, Reason{200, "OK"},
        Reason{201, "Created"}, Reason{204, "No Content"}, Reason{206, "Partial Content"},
        Reason{301, "Moved Permanently"}, Reason{302, "Found"}, Reason{303, "See Other"},
        Reason{304, "Not Modified"}, Reason{307, "Temporary Redirect"}, Reason{308, "Permanent Redirect"},
        Reason{400, "Bad Request"}, Reason{401, "Unauthorized"}, Reason{403, "Forbidden"},
        Reason{404, "Not Found"}, Reason{405, "Method Not Allowed"}, Reason{408, "Request Timeout"},
        Reason{411, "Length Required"}, Reason{412, "Precondition Failed"}, Reason{413, "Content Too Large"},
        Reason{414, "URI Too Long"}, Reason{416, "Range Not Satisfiable"}, Reason{417, "Expectation Failed"},
        Reason{421, "Misdirected Request"}, Reason{429, "Too Many Requests"},
        Reason{431, "Request Header Fields Too Large"}, Reason{500, "Internal Server Error"},
        Reason{501, "Not Implemented"}, Reason{502, "Bad Gateway"}, Reason{503, "Service Unavailable"},
        Reason{504, "Gateway Timeout"}, Reason{505, "HTTP Version Not Supported"}, Reason{0, "Unknown"},
        Reason{299, "Unknown"}, Reason{-1, "Unknown"}, Reason{1000, "Unknown"}));

// ---------------------------------------------------------------------------------------------
// Dates

struct DateCase {
  std::string_view text;
  std::optional<std::time_t> expected;
};

class DateTest : public ::testing::TestWithParam<DateCase> {};

TEST_P(DateTest, Parses) {
  EXPECT_EQ(parseHttpDate(GetParam().text), GetParam().expected) << GetParam().text;
}

constexpr std::time_t kRfcExample = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT

INSTANTIATE_TEST_SUITE_P(
    Util, DateTest,
    ::testing::Values(
        DateCase{"Sun, 06 Nov 1994 08:49:37 GMT", kRfcExample},
        DateCase{"Sunday, 06-Nov-94 08:49:37 GMT", kRfcExample},
        DateCase{"Sun Nov  6 08:49:37 1994", kRfcExample}, DateCase{"Sun Nov 06 08:49:37 1994", kRfcExample},
        DateCase{"Thu, 01 Jan 1970 00:00:00 GMT", 0}, DateCase{"Thursday, 01-Jan-70 00:00:00 GMT", 0},
        DateCase{"Thu Jan  1 00:00:00 1970", 0}, DateCase{"Tue, 29 Feb 2000 12:00:00 GMT", 951825600},
        DateCase{"Fri, 31 Dec 1999 23:59:59 GMT", 946684799},
        DateCase{"Saturday, 01-Jan-00 00:00:00 GMT", 946684800},
        DateCase{"Wed, 18 May 2033 03:33:20 GMT", 2000000000},
        DateCase{"Tue, 19 Jan 2038 03:14:08 GMT", 2147483648LL},
        DateCase{"Sat, 31 Dec 2005 23:59:60 GMT", 1136073600},  // a leap second rolls over
        // rejected
        DateCase{"", std::nullopt}, DateCase{"garbage", std::nullopt},
        DateCase{"Sun, 06 Nov 1994 08:49:37 UTC", std::nullopt},
        DateCase{"Sun, 06 Nov 1994 08:49:37 GMT ", std::nullopt},
        DateCase{" Sun, 06 Nov 1994 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 6 Nov 1994 08:49:37 GMT", std::nullopt},
        DateCase{"sun, 06 Nov 1994 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 06 nov 1994 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 06 Nox 1994 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 06 Nov 94 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 06 Nov 1994 24:00:00 GMT", std::nullopt},
        DateCase{"Sun, 06 Nov 1994 08:60:00 GMT", std::nullopt},
        DateCase{"Sun, 06 Nov 1994 08:49:61 GMT", std::nullopt},
        DateCase{"Sun, 00 Nov 1994 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 31 Nov 1994 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 29 Feb 1900 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 30 Feb 2000 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 06 Nov 1994 8:49:37 GMT", std::nullopt},
        DateCase{"Sun, 06 Nov 1994 08:49 GMT", std::nullopt},
        DateCase{"Sun 06 Nov 1994 08:49:37 GMT", std::nullopt},
        DateCase{"Sunday, 06-Nov-1994 08:49:37 GMT", std::nullopt},
        DateCase{"Sun, 06-Nov-94 08:49:37 GMT", std::nullopt},
        DateCase{"Sun Nov 6 08:49:37 1994", std::nullopt}, DateCase{"Sun Nov  6 08:49:37 94", std::nullopt},
        DateCase{"Sun Nov  6 08:49:37 1994 GMT", std::nullopt},
        DateCase{"Sun, 06 Nov 1994 08:49:37 GMT\0"sv, std::nullopt}));

TEST(HttpDate, FormatsImfFixdate) {
  EXPECT_EQ(formatHttpDate(kRfcExample), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(formatHttpDate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(formatHttpDate(951825600), "Tue, 29 Feb 2000 12:00:00 GMT");
  EXPECT_EQ(formatHttpDate(253402300799), "Fri, 31 Dec 9999 23:59:59 GMT");
}

TEST(HttpDate, RoundTripsAcrossYears) {
  for (std::time_t t = 0; t < 4102444800; t += 86400 * 13 + 3607) {  // 1970..2100
    std::string text = formatHttpDate(t);
    ASSERT_EQ(text.size(), 29u);
    ASSERT_EQ(parseHttpDate(text), t) << text;
  }
}

// ---------------------------------------------------------------------------------------------
// Percent-decoding

struct DecodeCase {
  std::string_view input;
  std::optional<std::string> expected;
};

class PercentDecodeTest : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(PercentDecodeTest, Decodes) {
  EXPECT_EQ(percentDecodePath(GetParam().input), GetParam().expected) << GetParam().input;
}

INSTANTIATE_TEST_SUITE_P(
    Util, PercentDecodeTest,
    ::testing::Values(DecodeCase{"", ""}, DecodeCase{"/", "/"}, DecodeCase{"/plain/path", "/plain/path"},
                      DecodeCase{"/a%20b", "/a b"}, DecodeCase{"%41%42%43", "ABC"},
                      DecodeCase{"/%e2%9c%93", "/\xe2\x9c\x93"}, DecodeCase{"/%E2%9C%93", "/\xe2\x9c\x93"},
                      DecodeCase{"/a+b", "/a+b"}, DecodeCase{"/%2B", "/+"}, DecodeCase{"/%2f", "//"},
                      DecodeCase{"/%25", "/%"}, DecodeCase{"/%2525", "/%25"}, DecodeCase{"%ff", "\xff"},
                      DecodeCase{"%01", "\x01"}, DecodeCase{"/%", std::nullopt},
                      DecodeCase{"/%4", std::nullopt}, DecodeCase{"/%zz", std::nullopt},
                      DecodeCase{"/%4g", std::nullopt}, DecodeCase{"/%g4", std::nullopt},
                      DecodeCase{"/% 4", std::nullopt}, DecodeCase{"/%00", std::nullopt},
                      DecodeCase{"/a%00b", std::nullopt}, DecodeCase{"/ok%20then%", std::nullopt},
                      DecodeCase{"/%-1", std::nullopt}, DecodeCase{"/%+1", std::nullopt}));

// ---------------------------------------------------------------------------------------------
// Serializing

TEST(Append, StatusLine) {
  std::string out;
  appendStatusLine(out, 200);
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\n");
  out.clear();
  appendStatusLine(out, 404);
  EXPECT_EQ(out, "HTTP/1.1 404 Not Found\r\n");
  out = "x";
  appendStatusLine(out, 431);
  EXPECT_EQ(out, "xHTTP/1.1 431 Request Header Fields Too Large\r\n");
  out.clear();
  appendStatusLine(out, 299);
  EXPECT_EQ(out, "HTTP/1.1 299 Unknown\r\n");
  out.clear();
  appendStatusLine(out, 1000);
  EXPECT_EQ(out, "HTTP/1.1 1000 Unknown\r\n");
}

TEST(Append, Header) {
  std::string out;
  appendHeader(out, "Content-Length", "12");
  appendHeader(out, "X-Empty", "");
  EXPECT_EQ(out, "Content-Length: 12\r\nX-Empty: \r\n");
}

}  // namespace
}  // namespace fulcrum::http
