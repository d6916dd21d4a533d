#include "web/guestbook_model.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace fulcrum::web::guestbook {
namespace {

constexpr std::string_view kJson = "application/json";

std::string body(std::string_view author, std::string_view text) {
  return nlohmann::json{{"author", author}, {"text", text}}.dump();
}

NewMessage accepted(std::string_view content_type, std::string_view raw) {
  auto result = parseNewMessage(content_type, raw);
  if (auto* invalid = std::get_if<Invalid>(&result)) {
    ADD_FAILURE() << raw << " refused: " << invalid->status << " " << invalid->message;
    return {};
  }
  return std::get<NewMessage>(result);
}

Invalid refused(std::string_view content_type, std::string_view raw) {
  auto result = parseNewMessage(content_type, raw);
  if (!std::holds_alternative<Invalid>(result)) {
    ADD_FAILURE() << raw << " accepted";
    return {0, ""};
  }
  return std::get<Invalid>(result);
}

std::string repeat(std::string_view s, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += s;
  }
  return out;
}

TEST(GuestbookParse, AcceptsAValidMessage) {
  NewMessage m = accepted(kJson, R"({"author":"Ada","text":"Hello\nworld\tagain"})");
  EXPECT_EQ(m.author, "Ada");
  EXPECT_EQ(m.text, "Hello\nworld\tagain");
}

TEST(GuestbookParse, TrimsSurroundingWhitespaceAndNormalizesCrLf) {
  NewMessage m = accepted(kJson, R"({"author":"  Ada \t","text":"\r\n line one\r\nline two \n"})");
  EXPECT_EQ(m.author, "Ada");
  EXPECT_EQ(m.text, "line one\nline two");
}

TEST(GuestbookParse, IgnoresUnknownFields) {
  NewMessage m = accepted(kJson, R"({"id":5,"author":"a","text":"b","extra":{"x":[1,2]}})");
  EXPECT_EQ(m.author, "a");
  EXPECT_EQ(m.text, "b");
}

TEST(GuestbookParse, ContentTypeMustBeJson) {
  const std::string ok = body("a", "b");
  for (std::string_view type : {"application/json", "Application/JSON", "application/json; charset=utf-8",
                                "application/json;charset=\"UTF-8\"", " application/json ; foo=bar"}) {
    accepted(type, ok);
  }
  for (std::string_view type : {"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                                "application/json; charset=latin1", "application/vnd.api+json"}) {
    Invalid i = refused(type, ok);
    EXPECT_EQ(i.status, 415) << type;
    EXPECT_EQ(i.message, "Content-Type must be application/json (UTF-8)");
  }
}

TEST(GuestbookParse, BodyOver16KiBIs413EvenIfOtherwiseBad) {
  std::string at_limit = body("a", repeat("x", kMaxBodyBytes - body("a", "").size()));
  ASSERT_EQ(at_limit.size(), kMaxBodyBytes);
  // Exactly 16 KiB is read and judged on its fields (the text is too long), one more byte is 413.
  EXPECT_EQ(refused(kJson, at_limit).status, 400);
  std::string over = at_limit + " ";
  Invalid i = refused(kJson, over);
  EXPECT_EQ(i.status, 413);
  EXPECT_EQ(i.message, "request body is larger than 16384 bytes");
  EXPECT_EQ(refused("text/plain", over).status, 413);
}

TEST(GuestbookParse, RefusesWhatIsNotAJsonObject) {
  EXPECT_EQ(refused(kJson, "").message, "request body is not valid JSON");
  EXPECT_EQ(refused(kJson, "{\"author\":").message, "request body is not valid JSON");
  EXPECT_EQ(refused(kJson, R"({"author":"a","text":"b"} x)").message, "request body is not valid JSON");
  for (std::string_view raw : {"[]", "\"author\"", "42", "null", R"([{"author":"a","text":"b"}])"}) {
    Invalid i = refused(kJson, raw);
    EXPECT_EQ(i.status, 400);
    EXPECT_EQ(i.message, R"(request body must be a JSON object {"author": "...", "text": "..."})") << raw;
  }
}

TEST(GuestbookParse, DeepNestingWithinTheSizeLimitIsRefusedCleanly) {
  const size_t depth = kMaxBodyBytes / 2;
  EXPECT_EQ(refused(kJson, repeat("[", depth) + repeat("]", depth)).status, 400);
  EXPECT_EQ(refused(kJson, repeat("[", kMaxBodyBytes)).message, "request body is not valid JSON");
  std::string nested = R"({"author":"a","text":"b","x":)" + repeat("[", 8000) + repeat("]", 8000) + "}";
  EXPECT_EQ(accepted(kJson, nested).text, "b");
}

TEST(GuestbookParse, FieldsMustBePresentStrings) {
  EXPECT_EQ(refused(kJson, R"({"text":"b"})").message, "author is missing");
  EXPECT_EQ(refused(kJson, R"({"author":"a"})").message, "text is missing");
  EXPECT_EQ(refused(kJson, R"({})").message, "author is missing");
  for (std::string_view value : {"1", "null", "true", "[\"a\"]", "{}"}) {
    std::string a = std::string(R"({"author":)") + std::string(value) + R"(,"text":"b"})";
    std::string t = std::string(R"({"author":"a","text":)") + std::string(value) + "}";
    EXPECT_EQ(refused(kJson, a).message, "author must be a string") << a;
    EXPECT_EQ(refused(kJson, t).message, "text must be a string") << t;
    EXPECT_EQ(refused(kJson, a).status, 400);
  }
}

TEST(GuestbookParse, EmptyAfterTrimmingIsRefused) {
  EXPECT_EQ(refused(kJson, body("", "b")).message, "author must not be empty");
  EXPECT_EQ(refused(kJson, body(" \t ", "b")).message, "author must not be empty");
  EXPECT_EQ(refused(kJson, body("a", "\n\r\n \t")).message, "text must not be empty");
}

TEST(GuestbookParse, LengthsCountCodePointsNotBytes) {
  // "é" is 2 bytes, "€" 3, "😀" 4: 64 of each fits the author, 65 does not.
  for (std::string_view ch : {"a", "\u00e9", "\u20ac", "\U0001F600"}) {
    EXPECT_EQ(accepted(kJson, body(repeat(ch, 64), "b")).author, repeat(ch, 64));
    Invalid i = refused(kJson, body(repeat(ch, 65), "b"));
    EXPECT_EQ(i.status, 400);
    EXPECT_EQ(i.message, "author is too long: 65 characters, at most 64");
  }
  EXPECT_EQ(accepted(kJson, body("a", repeat("\u20ac", 2000))).text.size(), 6000u);
  EXPECT_EQ(refused(kJson, body("a", repeat("\u00e9", 2001))).message,
            "text is too long: 2001 characters, at most 2000");
  // Escaped forms count the same as raw ones: a \uD83D\uDE00 pair is one character.
  std::string escaped = R"({"author":")" + repeat("\\ud83d\\ude00", 64) + R"(","text":"b"})";
  EXPECT_EQ(accepted(kJson, escaped).author, repeat("\U0001F600", 64));
}

TEST(GuestbookParse, RefusesControlCharacters) {
  Invalid i = refused(kJson, R"({"author":"a\nb","text":"b"})");
  EXPECT_EQ(i.status, 400);
  EXPECT_EQ(i.message, "author must not contain control characters (found U+000A)");
  EXPECT_EQ(refused(kJson, R"({"author":"a\tb","text":"b"})").message,
            "author must not contain control characters (found U+0009)");
  EXPECT_EQ(refused(kJson, R"({"author":"a","text":"x\u0000y"})").message,
            "text must not contain control characters (found U+0000); only newlines and tabs are allowed");
  EXPECT_EQ(refused(kJson, R"({"author":"a","text":"x\ry"})").message,
            "text must not contain control characters (found U+000D); only newlines and tabs are allowed");
  EXPECT_EQ(refused(kJson, R"({"author":"a","text":"x\u001by"})").status, 400);
  EXPECT_EQ(refused(kJson, R"({"author":"a\u007f","text":"b"})").status, 400);
  EXPECT_EQ(refused(kJson, R"({"author":"a\u0085","text":"b"})").message,
            "author must not contain control characters (found U+0085)");
}

TEST(GuestbookParse, RefusesInvalidUtf8) {
  const std::string bad_bytes[] = {
      "\xff",              // never valid
      "\x80",              // lone continuation
      "\xc3",              // truncated 2-byte sequence
      "\xe2\x82",          // truncated 3-byte sequence
      "\xc0\xaf",          // overlong '/'
      "\xc1\xbf",          // overlong
      "\xe0\x80\xaf",      // overlong 3-byte '/'
      "\xf0\x80\x80\xaf",  // overlong 4-byte '/'
      "\xed\xa0\x80",      // UTF-16 surrogate U+D800 encoded directly
      "\xed\xbf\xbf",      // surrogate U+DFFF
      "\xf4\x90\x80\x80",  // U+110000, above Unicode
      "\xf5\x80\x80\x80",  // lead byte past F4
  };
  for (const std::string& bad : bad_bytes) {
    for (const std::string& raw :
         {R"({"author":"a)" + bad + R"(","text":"b"})", R"({"author":"a","text":"b)" + bad + R"("})"}) {
      Invalid i = refused(kJson, raw);
      EXPECT_EQ(i.status, 400);
      EXPECT_EQ(i.message, "request body is not valid UTF-8");
    }
  }
  // Unpaired surrogate escapes cannot become UTF-8: the JSON parser refuses them.
  EXPECT_EQ(refused(kJson, R"({"author":"\ud800","text":"b"})").status, 400);
  EXPECT_EQ(refused(kJson, R"({"author":"a","text":"\udc00x"})").status, 400);
  EXPECT_EQ(refused(kJson, R"({"author":"\ud800\u0041","text":"b"})").status, 400);
}

TEST(Utf8Length, CountsWellFormedAndRefusesIllFormed) {
  EXPECT_EQ(utf8Length(""), 0u);
  EXPECT_EQ(utf8Length("abc"), 3u);
  EXPECT_EQ(utf8Length("\u00e9\u20ac\U0001F600\U0010FFFF\uD7FF\uE000"), 6u);
  EXPECT_EQ(utf8Length("\xef\xbf\xbf"), 1u);     // U+FFFF is a noncharacter but well-formed
  EXPECT_FALSE(utf8Length("\xe0\x9f\xbf"));      // overlong U+07FF
  EXPECT_FALSE(utf8Length("\xf0\x8f\xbf\xbf"));  // overlong U+FFFF
  EXPECT_FALSE(utf8Length("abc\xf0\x9f\x98"));   // truncated at the end
  EXPECT_FALSE(utf8Length("\xe2\x28\xa1"));      // bad continuation
}

struct LimitCase {
  const char* query;
  int limit;  // 0: refused with 400
};

class LimitTest : public ::testing::TestWithParam<LimitCase> {};

TEST_P(LimitTest, Parses) {
  const LimitCase& c = GetParam();
  auto result = parseLimit(c.query);
  if (c.limit == 0) {
    ASSERT_TRUE(std::holds_alternative<Invalid>(result)) << c.query;
    EXPECT_EQ(std::get<Invalid>(result).status, 400);
    return;
  }
  ASSERT_TRUE(std::holds_alternative<int>(result)) << c.query << ": " << std::get<Invalid>(result).message;
  EXPECT_EQ(std::get<int>(result), c.limit) << c.query;
}

INSTANTIATE_TEST_SUITE_P(
    Queries, LimitTest,
    ::testing::Values(LimitCase{"", 20}, LimitCase{"?", 20}, LimitCase{"limit=1", 1},
                      LimitCase{"?limit=50", 50}, LimitCase{"limit=200", 200}, LimitCase{"limit=007", 7},
                      LimitCase{"a=1&limit=5&b", 5}, LimitCase{"x=limit%3D9", 20}, LimitCase{"limits=3", 20},
                      LimitCase{"Limit=3", 20}, LimitCase{"&&limit=3&&", 3}, LimitCase{"limit=", 0},
                      LimitCase{"limit", 0}, LimitCase{"limit=abc", 0}, LimitCase{"limit=0", 0},
                      LimitCase{"limit=000", 0}, LimitCase{"limit=201", 0},
                      LimitCase{"limit=99999999999999999999", 0}, LimitCase{"limit=-5", 0},
                      LimitCase{"limit=+5", 0}, LimitCase{"limit= 5", 0}, LimitCase{"limit=5 ", 0},
                      LimitCase{"limit=1e2", 0}, LimitCase{"limit=%35", 0}, LimitCase{"limit=5&limit=6", 0}));

TEST(GuestbookLimit, ErrorsSayWhatIsExpected) {
  auto result = parseLimit("limit=abc");
  ASSERT_TRUE(std::holds_alternative<Invalid>(result));
  EXPECT_EQ(std::get<Invalid>(result).message, "limit must be a whole number from 1 to 200");
  result = parseLimit("limit=1&limit=2");
  EXPECT_EQ(std::get<Invalid>(result).message, "limit is given more than once");
}

TEST(GuestbookJson, SingleMessageHasRowFieldsAndNodes) {
  Message m{42, "Ada", "Hi", "2026-11-27T14:30:00.123Z"};
  EXPECT_EQ(messageJson(m, "web-01", "db-02"),
            R"({"id":42,"author":"Ada","text":"Hi","created_at":"2026-11-27T14:30:00.123Z",)"
            R"("web_node":"web-01","db_node":"db-02"})");
}

TEST(GuestbookJson, ListKeepsOrderAndNames) {
  std::vector<Message> rows{{2, "b", "second", "t2"}, {1, "a", "first", "t1"}};
  EXPECT_EQ(
      messagesJson(rows, "web-01", "db-01"),
      R"({"messages":[{"id":2,"author":"b","text":"second","created_at":"t2"},)"
      R"({"id":1,"author":"a","text":"first","created_at":"t1"}],"web_node":"web-01","db_node":"db-01"})");
  EXPECT_EQ(messagesJson({}, "w", "d"), R"({"messages":[],"web_node":"w","db_node":"d"})");
  Message big{INT64_MAX, "a", "b", "t"};
  EXPECT_NE(messageJson(big, "w", "d").find(R"({"id":9223372036854775807,)"), std::string::npos);
}

TEST(GuestbookJson, HostileTextIsEscapedAndRoundTrips) {
  const std::string hostile = "<script>alert(\"x\")</script> & 'q' \\ \n\t\u00e9\u20ac\U0001F600 \u2028";
  Message m{7, "\"><img src=x onerror=alert(1)>", hostile, "t"};
  std::string json = messageJson(m, "web-<1>", "db-&");
  EXPECT_EQ(json.find('<'), std::string::npos) << json;
  EXPECT_EQ(json.find('>'), std::string::npos) << json;
  EXPECT_EQ(json.find('&'), std::string::npos) << json;
  EXPECT_NE(json.find(R"(\u003cscript\u003e)"), std::string::npos) << json;
  nlohmann::json back = nlohmann::json::parse(json);
  EXPECT_EQ(back["id"], 7);
  EXPECT_EQ(back["author"], m.author);
  EXPECT_EQ(back["text"], hostile);
  EXPECT_EQ(back["web_node"], "web-<1>");
  EXPECT_EQ(back["db_node"], "db-&");

  nlohmann::json list = nlohmann::json::parse(messagesJson({m}, "w", "d"));
  EXPECT_EQ(list["messages"][0]["text"], hostile);
}

TEST(GuestbookJson, ParsedInputRoundTripsToOutput) {
  NewMessage in = accepted(kJson, body("J\u00fcrgen \U0001F600", "a \"quoted\" <b>word</b>\nnext"));
  Message stored{1, in.author, in.text, "t"};
  nlohmann::json out = nlohmann::json::parse(messageJson(stored, "w", "d"));
  EXPECT_EQ(out["author"], "J\u00fcrgen \U0001F600");
  EXPECT_EQ(out["text"], "a \"quoted\" <b>word</b>\nnext");
}

TEST(GuestbookJson, ErrorJson) {
  EXPECT_EQ(errorJson("limit must be a whole number"), R"({"error":"limit must be a whole number"})");
  EXPECT_EQ(nlohmann::json::parse(errorJson("bad \"<x>\"\n"))["error"], "bad \"<x>\"\n");
}

TEST(GuestbookSchema, IsIdempotentAndChecksLengths) {
  EXPECT_NE(kSchemaSql.find("CREATE TABLE IF NOT EXISTS guestbook_messages"), std::string_view::npos);
  EXPECT_NE(kSchemaSql.find("char_length(author) BETWEEN 1 AND 64"), std::string_view::npos);
  EXPECT_NE(kSchemaSql.find("char_length(text) BETWEEN 1 AND 2000"), std::string_view::npos);
  EXPECT_EQ(kMaxAuthorChars, 64u);
  EXPECT_EQ(kMaxTextChars, 2000u);
}

}  // namespace
}  // namespace fulcrum::web::guestbook
