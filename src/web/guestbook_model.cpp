#include "web/guestbook_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace fulcrum::web::guestbook {

namespace {

using Json = nlohmann::ordered_json;  // keeps fields in the documented order

// Decodes one code point at s[i] and advances i; false for ill-formed UTF-8 (RFC 3629 table 3-7:
// the second byte's range is narrowed after E0, ED, F0 and F4 to refuse overlongs, surrogates and
// values above U+10FFFF).
bool nextCodePoint(std::string_view s, size_t& i, char32_t& cp) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b0 = byte(i);
  if (b0 < 0x80) {
    cp = b0;
    i += 1;
    return true;
  }
  size_t extra = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    extra = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    extra = 2;
    cp = b0 & 0x0F;
    lo = b0 == 0xE0 ? 0xA0 : 0x80;
    hi = b0 == 0xED ? 0x9F : 0xBF;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    extra = 3;
    cp = b0 & 0x07;
    lo = b0 == 0xF0 ? 0x90 : 0x80;
    hi = b0 == 0xF4 ? 0x8F : 0xBF;
  } else {
    return false;  // continuation byte, C0/C1 (always overlong) or F5..FF
  }
  if (s.size() - i <= extra) {
    return false;
  }
  for (size_t k = 1; k <= extra; ++k) {
    unsigned char b = byte(i + k);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) {
      return false;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  i += extra + 1;
  return true;
}

bool isControl(char32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

std::string_view trimSpace(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) {
    return {};
  }
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

std::string normalizeNewlines(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') {
      continue;  // CRLF → LF (what a textarea submits on some systems)
    }
    out.push_back(s[i]);
  }
  return out;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// "application/json" with optional parameters; a charset, when given, must be UTF-8 (RFC 8259 §8.1).
bool isJsonContentType(std::string_view content_type) {
  size_t semi = content_type.find(';');
  if (!equalsIgnoreCase(trimSpace(content_type.substr(0, semi)), "application/json")) {
    return false;
  }
  while (semi != std::string_view::npos) {
    content_type.remove_prefix(semi + 1);
    semi = content_type.find(';');
    std::string_view param = trimSpace(content_type.substr(0, semi));
    size_t eq = param.find('=');
    if (eq == std::string_view::npos || !equalsIgnoreCase(trimSpace(param.substr(0, eq)), "charset")) {
      continue;
    }
    std::string_view value = trimSpace(param.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (!equalsIgnoreCase(value, "utf-8")) {
      return false;
    }
  }
  return true;
}

// Trims `raw`, checks it and stores it in `out`; returns the reason it is refused, or "".
std::string checkField(std::string_view name, std::string_view raw, size_t max_chars, bool multiline,
                       std::string& out) {
  out = multiline ? normalizeNewlines(trimSpace(raw)) : std::string(trimSpace(raw));
  size_t count = 0;
  for (size_t i = 0; i < out.size(); ++count) {
    char32_t cp = 0;
    if (!nextCodePoint(out, i, cp)) {
      return fmt::format("{} is not valid UTF-8", name);
    }
    if (isControl(cp) && !(multiline && (cp == '\n' || cp == '\t'))) {
      return fmt::format("{} must not contain control characters (found U+{:04X}){}", name,
                         static_cast<uint32_t>(cp), multiline ? "; only newlines and tabs are allowed" : "");
    }
  }
  if (count == 0) {
    return fmt::format("{} must not be empty", name);
  }
  if (count > max_chars) {
    return fmt::format("{} is too long: {} characters, at most {}", name, count, max_chars);
  }
  return {};
}

// '<', '>' and '&' can only stand inside strings in JSON; escaping them keeps the answer inert
// even where something sniffs it as HTML.
std::string dumpJson(const Json& value) {
  return replaceChars(value.dump(-1, ' ', false, Json::error_handler_t::replace),
                      {{'<', "\\u003c"}, {'>', "\\u003e"}, {'&', "\\u0026"}});
}

Json rowJson(const Message& m) {
  return Json{{"id", m.id}, {"author", m.author}, {"text", m.text}, {"created_at", m.created_at}};
}

}  // namespace

std::string replaceChars(std::string_view s, std::initializer_list<CharReplacement> table) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    auto hit =
        std::find_if(table.begin(), table.end(), [c](const CharReplacement& r) { return r.from == c; });
    if (hit == table.end()) {
      out.push_back(c);
    } else {
      out.append(hit->to);
    }
  }
  return out;
}

std::optional<size_t> utf8Length(std::string_view s) {
  size_t count = 0;
  char32_t cp = 0;
  for (size_t i = 0; i < s.size(); ++count) {
    if (!nextCodePoint(s, i, cp)) {
      return std::nullopt;
    }
  }
  return count;
}

std::variant<NewMessage, Invalid> parseNewMessage(std::string_view content_type, std::string_view body) {
  if (body.size() > kMaxBodyBytes) {
    return Invalid{413, fmt::format("request body is larger than {} bytes", kMaxBodyBytes)};
  }
  if (!isJsonContentType(content_type)) {
    return Invalid{415, "Content-Type must be application/json (UTF-8)"};
  }
  // Checked first so a bad byte is named as such rather than as a JSON syntax error.
  if (!utf8Length(body)) {
    return Invalid{400, "request body is not valid UTF-8"};
  }
  Json doc = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return Invalid{400, "request body is not valid JSON"};
  }
  if (!doc.is_object()) {
    return Invalid{400, R"(request body must be a JSON object {"author": "...", "text": "..."})"};
  }
  NewMessage message;
  struct Field {
    const char* name;
    size_t max_chars;
    bool multiline;
    std::string* out;
  };
  for (const Field& f : {Field{"author", kMaxAuthorChars, false, &message.author},
                         Field{"text", kMaxTextChars, true, &message.text}}) {
    auto it = doc.find(f.name);
    if (it == doc.end()) {
      return Invalid{400, fmt::format("{} is missing", f.name)};
    }
    if (!it->is_string()) {
      return Invalid{400, fmt::format("{} must be a string", f.name)};
    }
    std::string error =
        checkField(f.name, it->get_ref<const std::string&>(), f.max_chars, f.multiline, *f.out);
    if (!error.empty()) {
      return Invalid{400, std::move(error)};
    }
  }
  return message;
}

std::variant<int, Invalid> parseLimit(std::string_view query) {
  if (!query.empty() && query.front() == '?') {
    query.remove_prefix(1);
  }
  std::optional<std::string_view> value;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    size_t eq = param.find('=');
    if (param.substr(0, eq) != "limit") {
      continue;
    }
    if (value) {
      return Invalid{400, "limit is given more than once"};
    }
    value = eq == std::string_view::npos ? std::string_view{} : param.substr(eq + 1);
  }
  if (!value) {
    return kDefaultLimit;
  }
  const Invalid bad{400, fmt::format("limit must be a whole number from 1 to {}", kMaxLimit)};
  std::string_view digits = *value;
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string_view::npos) {
    return bad;
  }
  digits.remove_prefix(std::min(digits.find_first_not_of('0'), digits.size()));
  if (digits.empty() || digits.size() > 3) {
    return bad;  // zero, or far above the maximum (no overflow to worry about)
  }
  int limit = 0;
  for (char c : digits) {
    limit = limit * 10 + (c - '0');
  }
  if (limit > kMaxLimit) {
    return bad;
  }
  return limit;
}

std::string messageJson(const Message& m, std::string_view web_node, std::string_view db_node) {
  Json doc = rowJson(m);
  doc["web_node"] = web_node;
  doc["db_node"] = db_node;
  return dumpJson(doc);
}

std::string messagesJson(const std::vector<Message>& rows, std::string_view web_node,
                         std::string_view db_node) {
  Json list = Json::array();
  for (const Message& m : rows) {
    list.push_back(rowJson(m));
  }
  return dumpJson(Json{{"messages", std::move(list)}, {"web_node", web_node}, {"db_node", db_node}});
}

std::string errorJson(std::string_view message) {
  return dumpJson(Json{{"error", message}});
}

}  // namespace fulcrum::web::guestbook
