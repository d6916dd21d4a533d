#include "web/guestbook_page.h"

#include <string>

#include <gtest/gtest.h>

#include "web/guestbook_model.h"

namespace fulcrum::web::guestbook {
namespace {

size_t count(std::string_view haystack, std::string_view needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string_view::npos;
       pos = haystack.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

TEST(GuestbookPage, HasTheElementsTheBrowserTestUses) {
  std::string page = pageHtml("web-01");
  EXPECT_EQ(page.rfind("<!doctype html>", 0), 0u);
  EXPECT_NE(page.find("<title>Guestbook</title>"), std::string::npos);
  for (std::string_view id : {R"(<form id="post-form")", R"(<input id="author")", R"(<textarea id="text")",
                              R"(<button id="post")", R"(<ol id="messages">)", R"(<span id="served-by")"}) {
    EXPECT_EQ(count(page, id), 1u) << id;
  }
  // Items are built by the script with these classes.
  EXPECT_NE(page.find(R"(element("li", "message", ""))"), std::string::npos);
  EXPECT_NE(page.find(R"(element("span", "author", m.author))"), std::string::npos);
  EXPECT_NE(page.find(R"(element("p", "text", m.text))"), std::string::npos);
  EXPECT_NE(page.find(R"(fetch("/api/messages?limit=)"), std::string::npos);
  EXPECT_NE(page.find(R"(method: "POST")"), std::string::npos);
  EXPECT_NE(page.find("Page served by web node web-01."), std::string::npos);
  EXPECT_NE(page.find(R"(data-page-node="web-01")"), std::string::npos);
  EXPECT_EQ(page.find("{{"), std::string::npos);
}

TEST(GuestbookPage, ShowsTheServersLimitsAndReadsRightToLeftText) {
  std::string page = pageHtml("w");
  EXPECT_NE(page.find("maxlength=\"" + std::to_string(kMaxAuthorChars) + "\""), std::string::npos);
  EXPECT_NE(page.find("maxlength=\"" + std::to_string(kMaxTextChars) + "\""), std::string::npos);
  EXPECT_NE(page.find("0 / " + std::to_string(kMaxTextChars) + " characters"), std::string::npos);
  EXPECT_EQ(count(page, R"(dir = "auto")"), 2u);  // author and text of each message
  EXPECT_EQ(count(page, R"(dir="auto")"), 2u);    // the two fields
  EXPECT_NE(page.find(R"(role="status" aria-live="polite")"), std::string::npos);
  // The icon is inline: no /favicon.ico request, no 404 in the console.
  EXPECT_NE(page.find(R"(<link rel="icon" href="data:image/svg+xml,)"), std::string::npos);
}

TEST(GuestbookPage, ScriptNeverParsesDataAsHtml) {
  std::string page = pageHtml("w");
  EXPECT_EQ(page.find("innerHTML"), std::string::npos);
  EXPECT_EQ(page.find("outerHTML"), std::string::npos);
  EXPECT_EQ(page.find("insertAdjacentHTML"), std::string::npos);
  EXPECT_EQ(page.find("document.write"), std::string::npos);
  EXPECT_NE(page.find("e.textContent = text"), std::string::npos);
  // Only one script element, the inline one; nothing loaded from elsewhere.
  EXPECT_EQ(count(page, "<script"), 1u);
  EXPECT_EQ(page.find("src="), std::string::npos);
  EXPECT_NE(page.find("Content-Security-Policy"), std::string::npos);
}

TEST(GuestbookPage, EscapesAHostileNodeName) {
  const std::string hostile = R"(web"><script>alert('x')</script>&)";
  std::string page = pageHtml(hostile);
  EXPECT_EQ(page.find(hostile), std::string::npos);
  EXPECT_EQ(page.find("<script>alert"), std::string::npos);
  const std::string escaped = "web&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;";
  EXPECT_EQ(count(page, escaped), 2u);  // the footer text and its data attribute
  EXPECT_EQ(count(page, "<script"), 1u);
}

TEST(GuestbookPage, HtmlEscape) {
  EXPECT_EQ(htmlEscape(""), "");
  EXPECT_EQ(htmlEscape("plain web-01 \u00e9"), "plain web-01 \u00e9");
  EXPECT_EQ(htmlEscape(R"(<a href="x" title='y'>&amp;</a>)"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;");
}

}  // namespace
}  // namespace fulcrum::web::guestbook
