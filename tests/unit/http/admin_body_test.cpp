// Admin API inputs: exactly one credential, strict JSON bodies.
#include <gtest/gtest.h>

#include <string>

#include "http/bearer.h"
#include "http/json_body.h"
#include "http/parser.h"

namespace fulcrum::http {
namespace {

bool authorized(const std::string& text, std::string_view token) {
  RequestHead head;
  ParseResult result = parseRequestHead(text, Limits{}, head);
  EXPECT_EQ(result.state, ParseState::Complete) << result.reason;
  return hasBearerToken(head, token);
}

TEST(AdminInputs, ExactlyOneAuthorizationField) {
  EXPECT_TRUE(authorized("POST /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer s3cret\r\n\r\n", "s3cret"));
  EXPECT_TRUE(authorized("POST /x HTTP/1.1\r\nHost: h\r\nauthorization: bearer s3cret\r\n\r\n", "s3cret"));
  EXPECT_FALSE(authorized("POST /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer wrong\r\n\r\n", "s3cret"));
  // A second field, before or after the good one, is refused either way.
  EXPECT_FALSE(authorized(
      "POST /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer s3cret\r\nAuthorization: Bearer x\r\n\r\n", "s3cret"));
  EXPECT_FALSE(authorized(
      "POST /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\nAuthorization: Bearer s3cret\r\n\r\n", "s3cret"));
  EXPECT_FALSE(authorized("POST /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer \r\n\r\n", ""));
}

TEST(AdminInputs, StrictJson) {
  std::string error;
  auto ok = parseStrictJson(R"({"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]})", error);
  ASSERT_TRUE(ok) << error;  // the same key in different objects is fine
  EXPECT_FALSE(parseStrictJson(R"({"to":"db-02","to":"db-03"})", error));
  EXPECT_EQ(error, "duplicate key 'to'");
  EXPECT_FALSE(parseStrictJson(R"({"x":{"state":"a","state":"b"}})", error));
  EXPECT_EQ(error, "duplicate key 'state'");
  EXPECT_FALSE(parseStrictJson("{", error));
  EXPECT_EQ(error, "the body is not valid JSON");
}

}  // namespace
}  // namespace fulcrum::http
