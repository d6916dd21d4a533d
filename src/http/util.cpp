#include "http/util.h"

#include <array>
#include <cstring>

namespace fulcrum::http {

namespace {

constexpr std::array<const char*, 7> kDays = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<const char*, 7> kLongDays = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                                  "Thursday", "Friday", "Saturday"};
constexpr std::array<const char*, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void putDigits(char* out, int value, int width) {
  for (int i = width - 1; i >= 0; --i) {
    out[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
}

// Reads exactly `width` digits at text[pos]; advances pos.
bool readDigits(std::string_view text, size_t& pos, int width, int& out) {
  if (pos + static_cast<size_t>(width) > text.size()) {
    return false;
  }
  int value = 0;
  for (int i = 0; i < width; ++i) {
    char c = text[pos + static_cast<size_t>(i)];
    if (c < '0' || c > '9') {
      return false;
    }
    value = value * 10 + (c - '0');
  }
  pos += static_cast<size_t>(width);
  out = value;
  return true;
}

bool expect(std::string_view text, size_t& pos, std::string_view literal) {
  if (text.substr(pos, literal.size()) != literal) {
    return false;
  }
  pos += literal.size();
  return true;
}

// Matches one of `names` (case-sensitive, as the grammar requires); returns its index or -1.
template <size_t N>
int readName(std::string_view text, size_t& pos, const std::array<const char*, N>& names) {
  for (size_t i = 0; i < N; ++i) {
    if (expect(text, pos, names[i])) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

// hour ":" minute ":" second
bool readTime(std::string_view text, size_t& pos, std::tm& tm) {
  return readDigits(text, pos, 2, tm.tm_hour) && expect(text, pos, ":") &&
         readDigits(text, pos, 2, tm.tm_min) && expect(text, pos, ":") && readDigits(text, pos, 2, tm.tm_sec);
}

bool isLeapYear(int year) {
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

// Range-checks the fields (Feb 30 is not a date; a leap second is) and converts as UTC.
std::optional<std::time_t> toTime(std::tm tm) {
  static constexpr std::array<int, 12> kMonthDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const int year = tm.tm_year + 1900;
  const int month_days =
      kMonthDays[static_cast<size_t>(tm.tm_mon)] + (tm.tm_mon == 1 && isLeapYear(year) ? 1 : 0);
  if (tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 || tm.tm_mday < 1 || tm.tm_mday > month_days) {
    return std::nullopt;
  }
  return timegm(&tm);
}

// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
std::optional<std::time_t> parseImfFixdate(std::string_view text) {
  size_t pos = 0;
  std::tm tm{};
  if (readName(text, pos, kDays) < 0 || !expect(text, pos, ", ") || !readDigits(text, pos, 2, tm.tm_mday) ||
      !expect(text, pos, " ")) {
    return std::nullopt;
  }
  tm.tm_mon = readName(text, pos, kMonths);
  if (tm.tm_mon < 0 || !expect(text, pos, " ") || !readDigits(text, pos, 4, tm.tm_year) ||
      !expect(text, pos, " ") || !readTime(text, pos, tm) || !expect(text, pos, " GMT") ||
      pos != text.size()) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  return toTime(tm);
}

// RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT". Two-digit years 69-99 are 19xx, 00-68 are 20xx.
std::optional<std::time_t> parseRfc850(std::string_view text) {
  size_t pos = 0;
  std::tm tm{};
  if (readName(text, pos, kLongDays) < 0 || !expect(text, pos, ", ") ||
      !readDigits(text, pos, 2, tm.tm_mday) || !expect(text, pos, "-")) {
    return std::nullopt;
  }
  tm.tm_mon = readName(text, pos, kMonths);
  if (tm.tm_mon < 0 || !expect(text, pos, "-") || !readDigits(text, pos, 2, tm.tm_year) ||
      !expect(text, pos, " ") || !readTime(text, pos, tm) || !expect(text, pos, " GMT") ||
      pos != text.size()) {
    return std::nullopt;
  }
  tm.tm_year += tm.tm_year < 69 ? 100 : 0;
  return toTime(tm);
}

// asctime: "Sun Nov  6 08:49:37 1994"
std::optional<std::time_t> parseAsctime(std::string_view text) {
  size_t pos = 0;
  std::tm tm{};
  if (readName(text, pos, kDays) < 0 || !expect(text, pos, " ")) {
    return std::nullopt;
  }
  tm.tm_mon = readName(text, pos, kMonths);
  if (tm.tm_mon < 0 || !expect(text, pos, " ")) {
    return std::nullopt;
  }
  if (pos < text.size() && text[pos] == ' ') {
    ++pos;
    if (!readDigits(text, pos, 1, tm.tm_mday)) {
      return std::nullopt;
    }
  } else if (!readDigits(text, pos, 2, tm.tm_mday)) {
    return std::nullopt;
  }
  if (!expect(text, pos, " ") || !readTime(text, pos, tm) || !expect(text, pos, " ") ||
      !readDigits(text, pos, 4, tm.tm_year) || pos != text.size()) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  return toTime(tm);
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

}  // namespace

std::string_view reasonPhrase(int status) {
  // clang-format off
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
  // clang-format on
}

std::string formatHttpDate(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::string out(29, ' ');
  char* p = out.data();
  std::memcpy(p, kDays[static_cast<size_t>(tm.tm_wday)], 3);
  p[3] = ',';
  putDigits(p + 5, tm.tm_mday, 2);
  std::memcpy(p + 8, kMonths[static_cast<size_t>(tm.tm_mon)], 3);
  putDigits(p + 12, tm.tm_year + 1900, 4);
  putDigits(p + 17, tm.tm_hour, 2);
  p[19] = ':';
  putDigits(p + 20, tm.tm_min, 2);
  p[22] = ':';
  putDigits(p + 23, tm.tm_sec, 2);
  std::memcpy(p + 26, "GMT", 3);
  return out;
}

std::optional<std::time_t> parseHttpDate(std::string_view text) {
  if (auto t = parseImfFixdate(text)) {
    return t;
  }
  if (auto t = parseRfc850(text)) {
    return t;
  }
  return parseAsctime(text);
}

std::optional<std::string> percentDecodePath(std::string_view path) {
  std::string out;
  size_t percent = path.find('%');
  if (percent == std::string_view::npos) {
    out.assign(path);
    return out;
  }
  out.reserve(path.size());
  out.append(path.substr(0, percent));
  for (size_t i = percent; i < path.size(); ++i) {
    char c = path[i];
    if (c != '%') {
      out.push_back(c);
      continue;
    }
    if (i + 2 >= path.size()) {
      return std::nullopt;
    }
    int hi = hexValue(path[i + 1]);
    int lo = hexValue(path[i + 2]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

void appendStatusLine(std::string& out, int status) {
  out.append("HTTP/1.1 ");
  if (status >= 100 && status <= 999) {
    char digits[3];
    putDigits(digits, status, 3);
    out.append(digits, 3);
  } else {
    out.append(std::to_string(status));
  }
  out.push_back(' ');
  out.append(reasonPhrase(status));
  out.append("\r\n");
}

void appendHeader(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

}  // namespace fulcrum::http
