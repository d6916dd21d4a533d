#include "http/message.h"

#include <array>

namespace fulcrum::http {

namespace {

constexpr std::array<char, 256> makeLower() {
  std::array<char, 256> table{};
  for (int c = 0; c < 256; ++c) {
    table[c] = static_cast<char>((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
  }
  return table;
}
constexpr std::array<char, 256> kLower = makeLower();

bool isOws(char c) {
  return c == ' ' || c == '\t';
}

template <typename Headers>
std::optional<std::string_view> findHeader(const Headers& headers, std::string_view name) {
  for (const Header& header : headers) {
    if (equalsIgnoreCase(header.name, name)) {
      return header.value;
    }
  }
  return std::nullopt;
}

}  // namespace

bool isIdempotent(Method method) {
  switch (method) {
    case Method::Get:
    case Method::Head:
    case Method::Put:
    case Method::Delete:
    case Method::Options:
    case Method::Trace:
      return true;
    case Method::Post:
    case Method::Patch:
    case Method::Connect:
    case Method::Other:
      return false;
  }
  return false;
}

std::string_view methodName(Method method) {
  switch (method) {
    case Method::Get:
      return "GET";
    case Method::Head:
      return "HEAD";
    case Method::Post:
      return "POST";
    case Method::Put:
      return "PUT";
    case Method::Delete:
      return "DELETE";
    case Method::Options:
      return "OPTIONS";
    case Method::Patch:
      return "PATCH";
    case Method::Trace:
      return "TRACE";
    case Method::Connect:
      return "CONNECT";
    case Method::Other:
      return "";
  }
  return "";
}

std::optional<std::string_view> RequestHead::find(std::string_view name) const {
  return findHeader(headers, name);
}

std::optional<std::string> RequestHead::findList(std::string_view name, std::string_view separator) const {
  std::optional<std::string> joined;
  for (const Header& header : headers) {
    if (!equalsIgnoreCase(header.name, name)) {
      continue;
    }
    if (!joined) {
      joined.emplace(header.value);
    } else {
      *joined += separator;
      *joined += header.value;
    }
  }
  return joined;
}

size_t RequestHead::count(std::string_view name) const {
  size_t n = 0;
  for (const Header& header : headers) {
    n += equalsIgnoreCase(header.name, name) ? 1 : 0;
  }
  return n;
}

void RequestHead::clear() {
  method = Method::Other;
  method_text = {};
  target = {};
  path = {};
  query = {};
  version_minor = 1;
  headers.clear();  // keeps capacity: no allocation on the next parse
  host = {};
  body_kind = BodyKind::None;
  content_length = 0;
  keep_alive = true;
  expect_continue = false;
  upgrade = false;
}

std::optional<std::string_view> ResponseHead::find(std::string_view name) const {
  return findHeader(headers, name);
}

void ResponseHead::clear() {
  version_minor = 1;
  status = 0;
  reason = {};
  headers.clear();
  body_kind = BodyKind::None;
  content_length = 0;
  keep_alive = true;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (kLower[static_cast<unsigned char>(a[i])] != kLower[static_cast<unsigned char>(b[i])]) {
      return false;
    }
  }
  return true;
}

bool hasToken(std::string_view list, std::string_view token) {
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string_view::npos) {
      comma = list.size();
    }
    size_t begin = pos;
    size_t end = comma;
    while (begin < end && isOws(list[begin])) {
      ++begin;
    }
    while (end > begin && isOws(list[end - 1])) {
      --end;
    }
    if (equalsIgnoreCase(list.substr(begin, end - begin), token)) {
      return true;
    }
    pos = comma + 1;
  }
  return false;
}

}  // namespace fulcrum::http
