// Header lookup on a parsed request head: list fields across lines (RFC 9110 §5.3).
#include "http/message.h"

#include <gtest/gtest.h>

#include <string>

#include "http/parser.h"

namespace fulcrum::http {
namespace {

RequestHead parse(const std::string& text) {
  RequestHead head;
  ParseResult r = parseRequestHead(text, Limits{}, head);
  EXPECT_EQ(r.state, ParseState::Complete) << text;
  return head;
}

TEST(RequestHeadTest, ListFieldLinesAreJoinedInOrder) {
  std::string text =
      "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"zzz\"\r\nAccept: a\r\nif-none-match: \"abc\", "
      "W/\"d\"\r\n\r\n";
  RequestHead head = parse(text);
  EXPECT_EQ(head.find("If-None-Match"), "\"zzz\"");  // the first line only
  EXPECT_EQ(head.findList("If-None-Match"), "\"zzz\", \"abc\", W/\"d\"");
  EXPECT_EQ(head.count("IF-NONE-MATCH"), 2u);
  EXPECT_EQ(head.findList("Accept"), "a");
  EXPECT_EQ(head.findList("Accept-Encoding"), std::nullopt);
  EXPECT_EQ(head.count("Accept-Encoding"), 0u);
}

TEST(RequestHeadTest, CookieLinesJoinWithSemicolons) {
  const std::string text = "GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2; c=3\r\n\r\n";
  RequestHead head = parse(text);  // the head's views point into `text`: it must outlive them
  EXPECT_EQ(head.findList("Cookie", "; "), "a=1; b=2; c=3");
}

TEST(RequestHeadTest, EmptyLinesStayEmptyMembers) {
  const std::string text = "GET / HTTP/1.1\r\nHost: x\r\nCache-Control:\r\nCache-Control: no-cache\r\n\r\n";
  RequestHead head = parse(text);
  EXPECT_EQ(head.findList("Cache-Control"), ", no-cache");
  EXPECT_TRUE(hasToken(*head.findList("Cache-Control"), "no-cache"));
}

}  // namespace
}  // namespace fulcrum::http
