#include "web/static_files.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "http/parser.h"
#include "web/mime.h"

namespace fulcrum::web {
namespace {

struct RangeCase {
  const char* header;
  uint64_t size;
  bool use;          // header honoured (false: serve the whole file)
  bool satisfiable;  // false: 416
  uint64_t first;
  uint64_t length;
};

class ByteRangeTest : public ::testing::TestWithParam<RangeCase> {};

TEST_P(ByteRangeTest, Parses) {
  const RangeCase& c = GetParam();
  uint64_t first = 0;
  uint64_t length = 0;
  bool satisfiable = true;
  bool use = parseByteRange(c.header, c.size, first, length, satisfiable);
  ASSERT_EQ(use, c.use) << c.header;
  if (!use) {
    return;
  }
  ASSERT_EQ(satisfiable, c.satisfiable) << c.header;
  if (satisfiable) {
    EXPECT_EQ(first, c.first) << c.header;
    EXPECT_EQ(length, c.length) << c.header;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Ranges, ByteRangeTest,
    ::testing::Values(
        RangeCase{"bytes=0-99", 1000, true, true, 0, 100},
        RangeCase{"bytes=100-199", 1000, true, true, 100, 100},
        RangeCase{"bytes=900-", 1000, true, true, 900, 100},
        RangeCase{"bytes=-10", 1000, true, true, 990, 10},
        RangeCase{"bytes=-5000", 1000, true, true, 0, 1000},      // suffix longer than the file
        RangeCase{"bytes=500-5000", 1000, true, true, 500, 500},  // end clamps
        RangeCase{"bytes=999-999", 1000, true, true, 999, 1}, RangeCase{"BYTES=0-0", 1000, true, true, 0, 1},
        RangeCase{"bytes= 1-2 ", 1000, true, true, 1, 2},
        RangeCase{"bytes=1000-", 1000, true, false, 0, 0},  // starts past the end: 416
        RangeCase{"bytes=2000-3000", 1000, true, false, 0, 0}, RangeCase{"bytes=-0", 1000, true, false, 0, 0},
        RangeCase{"bytes=0-", 0, true, false, 0, 0},      // empty file
        RangeCase{"bytes=5-1", 1000, false, true, 0, 0},  // malformed: ignored
        RangeCase{"bytes=a-b", 1000, false, true, 0, 0}, RangeCase{"bytes=", 1000, false, true, 0, 0},
        RangeCase{"bytes=-", 1000, false, true, 0, 0}, RangeCase{"items=0-1", 1000, false, true, 0, 0},
        RangeCase{"bytes=0-1,5-6", 1000, false, true, 0, 0},  // several: whole file
        RangeCase{"bytes=+1-2", 1000, false, true, 0, 0},
        RangeCase{"bytes=18446744073709551616-", 1000, false, true, 0, 0}));

TEST(EtagTest, WeakComparisonOverLists) {
  EXPECT_TRUE(etagMatchesAny("\"a\"", "\"a\""));
  EXPECT_TRUE(etagMatchesAny("W/\"a\"", "\"a\""));
  EXPECT_TRUE(etagMatchesAny("\"x\", \"a\"", "\"a\""));
  EXPECT_TRUE(etagMatchesAny(" * ", "\"a\""));
  EXPECT_FALSE(etagMatchesAny("\"b\"", "\"a\""));
  EXPECT_FALSE(etagMatchesAny("", "\"a\""));
  EXPECT_FALSE(etagMatchesAny("a", "\"a\""));  // unquoted is not the same tag
}

// StaticFiles::serve on a real file, for the request heads built by each test.
class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "fulcrum-static-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root = tmpl;
    std::ofstream(root / "a.txt") << "0123456789";
    files = std::make_unique<StaticFiles>(root);
  }
  void TearDown() override { std::filesystem::remove_all(root); }

  http::Response get(const std::string& extra_headers) {
    text = "GET /a.txt HTTP/1.1\r\nHost: x\r\n" + extra_headers + "\r\n";
    http::ParseResult r = http::parseRequestHead(text, http::Limits{}, head);
    EXPECT_EQ(r.state, http::ParseState::Complete);
    core::SocketAddress peer;
    http::Request request{head, {}, peer, nullptr};
    http::Response response;
    files->serve(request, response);
    return response;
  }
  std::string header(const http::Response& r, const std::string& name) {
    size_t at = r.headers.find(name + ": ");
    return at == std::string::npos
               ? ""
               : r.headers.substr(at + name.size() + 2, r.headers.find("\r\n", at) - at - name.size() - 2);
  }

  std::filesystem::path root;
  std::unique_ptr<StaticFiles> files;
  std::string text;
  http::RequestHead head;
};

TEST_F(ServeTest, IfNoneMatchOverSeveralLinesIsOneList) {
  std::string etag = header(get(""), "ETag");
  ASSERT_FALSE(etag.empty());
  EXPECT_EQ(get("If-None-Match: \"zzz\"\r\nIf-None-Match: " + etag + "\r\n").status, 304);
  EXPECT_EQ(get("If-None-Match: \"zzz\"\r\nIf-None-Match: \"yyy\"\r\n").status, 200);
}

TEST_F(ServeTest, RepeatedSingleValueValidatorsAreIgnored) {
  std::string future = "Fri, 01 Jan 2100 00:00:00 GMT";
  EXPECT_EQ(get("If-Modified-Since: " + future + "\r\n").status, 304);
  // Two lines are an invalid value (RFC 9110 §13.1.3): ignored, the file is sent.
  EXPECT_EQ(get("If-Modified-Since: " + future + "\r\nIf-Modified-Since: " + future + "\r\n").status, 200);
  EXPECT_EQ(get("Range: bytes=0-1\r\n").status, 206);
  EXPECT_EQ(get("Range: bytes=0-1\r\nRange: bytes=0-1\r\n").status, 200);
  std::string etag = header(get(""), "ETag");
  EXPECT_EQ(get("Range: bytes=0-1\r\nIf-Range: " + etag + "\r\n").status, 206);
  EXPECT_EQ(get("Range: bytes=0-1\r\nIf-Range: " + etag + "\r\nIf-Range: " + etag + "\r\n").status, 200);
}

TEST(MimeTest, KnownAndUnknownTypes) {
  EXPECT_EQ(mimeTypeFor("index.html"), "text/html; charset=utf-8");
  EXPECT_EQ(mimeTypeFor("a/b/STYLE.CSS"), "text/css; charset=utf-8");
  EXPECT_EQ(mimeTypeFor("app.js"), "text/javascript; charset=utf-8");
  EXPECT_EQ(mimeTypeFor("logo.svg"), "image/svg+xml");
  EXPECT_EQ(mimeTypeFor("photo.JPeG"), "image/jpeg");
  EXPECT_EQ(mimeTypeFor("font.woff2"), "font/woff2");
  EXPECT_EQ(mimeTypeFor("Makefile"), "application/octet-stream");
  EXPECT_EQ(mimeTypeFor("archive.unknownext"), "application/octet-stream");
  EXPECT_EQ(mimeTypeFor("dir.d/noext"), "application/octet-stream");
  EXPECT_EQ(mimeTypeFor("trailingdot."), "application/octet-stream");
}

}  // namespace
}  // namespace fulcrum::web
