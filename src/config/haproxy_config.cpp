#include "config/haproxy_config.h"

#include <algorithm>
#include <cctype>

#include "config/values.h"

namespace fulcrum::config::haproxy {

namespace {

// clang-format off
constexpr std::string_view kSectionKeywords[] = {
    "global", "defaults", "frontend", "backend", "listen", "userlist", "peers", "resolvers", "mailers",
    "program", "http-errors", "ring", "cache", "log-forward", "fcgi-app", "crt-store", "traces"};
// clang-format on

template <size_t N>
bool oneOf(std::string_view word, const std::string_view (&list)[N]) {
  return std::find(std::begin(list), std::end(list), word) != std::end(list);
}

std::string trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) {
    return "";
  }
  size_t e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// HAProxy's word splitting: blanks separate, '#' starts a comment, "..." keeps blanks (with
// backslash escapes inside), '...' is literal, and a backslash outside quotes escapes one
// character (or \xHH).
bool splitWords(std::string_view raw, std::vector<std::string>& words, std::string& error) {
  std::string word;
  bool in_word = false;
  size_t i = 0;
  auto escape = [&](size_t at) -> bool {
    if (at + 1 >= raw.size()) {
      error = "a backslash ends the line (HAProxy has no line continuation)";
      return false;
    }
    char next = raw[at + 1];
    if (next == 'x' && at + 3 < raw.size() && hexValue(raw[at + 2]) >= 0 && hexValue(raw[at + 3]) >= 0) {
      word += static_cast<char>(hexValue(raw[at + 2]) * 16 + hexValue(raw[at + 3]));
      i = at + 4;
    } else {
      word += next == 'n' ? '\n' : next == 't' ? '\t' : next == 'r' ? '\r' : next;
      i = at + 2;
    }
    return true;
  };
  while (i < raw.size()) {
    char c = raw[i];
    if (c == ' ' || c == '\t' || c == '\r') {
      if (in_word) {
        words.push_back(std::move(word));
        word.clear();
        in_word = false;
      }
      ++i;
      continue;
    }
    if (c == '#') {
      break;
    }
    in_word = true;
    if (c == '\\') {
      if (!escape(i)) {
        return false;
      }
    } else if (c == '"' || c == '\'') {
      size_t j = i + 1;
      i = raw.size() + 1;  // unterminated unless the closing quote is found
      while (j < raw.size()) {
        if (raw[j] == c) {
          i = j + 1;
          break;
        }
        if (c == '"' && raw[j] == '\\') {
          if (!escape(j)) {
            return false;
          }
          j = i;
          i = raw.size() + 1;
          continue;
        }
        word += raw[j++];
      }
      if (i > raw.size()) {
        error = std::string("unterminated ") + (c == '"' ? "double" : "single") + " quote";
        return false;
      }
    } else {
      word += c;
      ++i;
    }
  }
  if (in_word) {
    words.push_back(std::move(word));
  }
  return true;
}

bool parseSections(std::string_view text, const std::string& source_name, std::vector<Section>& sections,
                   std::string& error) {
  auto where = [&](uint32_t line) { return source_name + ":" + std::to_string(line) + ": "; };
  uint32_t number = 0;
  size_t pos = 0;
  Section* current = nullptr;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    std::string_view raw = text.substr(pos, end - pos);
    pos = end + 1;
    ++number;
    Line line{number, trim(raw), {}};
    std::string why;
    if (!splitWords(raw, line.words, why)) {
      error = where(number) + why + ": " + line.text;
      return false;
    }
    if (line.words.empty()) {
      continue;
    }
    const std::string& keyword = line.words[0];
    if (oneOf(keyword, kSectionKeywords)) {
      Section& s = sections.emplace_back();
      s.keyword = keyword;
      s.kind = keyword == "global"     ? Kind::kGlobal
               : keyword == "defaults" ? Kind::kDefaults
               : keyword == "frontend" ? Kind::kFrontend
               : keyword == "backend"  ? Kind::kBackend
               : keyword == "listen"   ? Kind::kListen
                                       : Kind::kOther;
      bool proxy = s.kind == Kind::kFrontend || s.kind == Kind::kBackend || s.kind == Kind::kListen;
      if (proxy && (line.words.size() < 2 || line.words[1] == "from")) {
        error = where(number) + keyword + " needs a name: " + line.text;
        return false;
      }
      if (line.words.size() >= 2 && line.words[1] != "from") {
        s.name = line.words[1];
      }
      s.header = std::move(line);
      current = &s;
      continue;
    }
    if (current == nullptr) {
      error = where(number) + "'" + keyword +
              "' is outside any section (global, defaults, frontend, backend, listen...)";
      return false;
    }
    // Other sections (peers, rings) have servers of their own forms: only proxies are checked.
    const bool proxy = current->kind == Kind::kFrontend || current->kind == Kind::kBackend ||
                       current->kind == Kind::kListen || current->kind == Kind::kDefaults;
    if (proxy && keyword == "server" && line.words.size() < 3) {
      error = where(number) + "server needs a name and an address: " + line.text;
      return false;
    }
    if (proxy && keyword == "bind" && line.words.size() < 2) {
      error = where(number) + "bind needs an address: " + line.text;
      return false;
    }
    current->lines.push_back(std::move(line));
  }
  return true;
}

// Each proxy inherits the last defaults section above it, or the one named by "from NAME".
bool resolveDefaults(std::vector<Section>& sections, const std::string& source_name, std::string& error) {
  auto where = [&](uint32_t line) { return source_name + ":" + std::to_string(line) + ": "; };
  const Section* last = nullptr;
  for (Section& s : sections) {
    const auto& w = s.header.words;
    auto from = std::find(w.begin(), w.end(), "from");
    if (from != w.end()) {
      if (from + 1 == w.end()) {
        error = where(s.header.number) + "'from' needs a defaults section's name: " + s.header.text;
        return false;
      }
      const Section* named = nullptr;
      for (const Section& d : sections) {
        if (&d == &s) {
          break;
        }
        if (d.kind == Kind::kDefaults && d.name == *(from + 1)) {
          named = &d;
        }
      }
      if (named == nullptr) {
        error = where(s.header.number) + "no defaults section named '" + *(from + 1) + "' above this line";
        return false;
      }
      s.defaults = named;
    } else if (s.kind != Kind::kDefaults) {
      s.defaults = last;
    }
    if (s.kind == Kind::kDefaults) {
      last = &s;
    }
  }
  return true;
}

}  // namespace

bool parseConfig(std::string_view text, const std::string& source_name, std::vector<Section>& sections,
                 std::string& error) {
  return parseSections(text, source_name, sections, error) && resolveDefaults(sections, source_name, error);
}

std::optional<uint64_t> parseMillis(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  if (digits == 0 || digits > 12) {
    return std::nullopt;
  }
  uint64_t n = std::stoull(std::string(text.substr(0, digits)));
  std::string_view unit = text.substr(digits);
  if (unit.empty() || unit == "ms") {
    return n;
  }
  if (unit == "us") {
    return (n + 999) / 1000;
  }
  if (unit == "s") {
    return n * 1000;
  }
  if (unit == "m") {
    return n * 60'000;
  }
  if (unit == "h") {
    return n * 3'600'000;
  }
  if (unit == "d") {
    return n * 86'400'000;
  }
  return std::nullopt;
}

std::optional<uint64_t> parseCount(std::string_view text) {
  if (text.empty() || text.size() > 12 ||
      !std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return std::nullopt;
  }
  return std::stoull(std::string(text));
}

Address parseAddress(std::string_view raw, bool bind, const std::string& wildcard_ip) {
  Address out;
  std::string_view s = raw;
  bool v6_prefix = false;
  if (s.starts_with("ipv4@") || s.starts_with("tcp4@") || s.starts_with("tcp@")) {
    s.remove_prefix(s.find('@') + 1);
  } else if (s.starts_with("ipv6@") || s.starts_with("tcp6@")) {
    s.remove_prefix(5);
    v6_prefix = true;
  } else if (s.find('@') != std::string_view::npos || s.starts_with("/")) {
    out.why = "'" + std::string(raw) +
              "' is not an IP:port (UNIX sockets, file descriptors and QUIC are not supported)";
    return out;
  }
  if (s.find("${") != std::string_view::npos || s.starts_with("$")) {
    out.why = "environment variables are not expanded: write the address itself";
    return out;
  }
  std::string host;
  std::string_view port;
  if (s.starts_with("[")) {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      out.why = "'" + std::string(raw) + "' is not [IPv6]:port";
      return out;
    }
    host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) {
      out.why = "'" + std::string(raw) + "' has no port" +
                (bind ? "" : " (HAProxy then uses the client's port; Fulcrum needs one)");
      return out;
    }
    host = std::string(s.substr(0, colon));
    port = s.substr(colon + 1);
  }
  if (port.empty()) {
    out.why = "'" + std::string(raw) + "' has no port";
    return out;
  }
  if (port.find('-') != std::string_view::npos || port.find(',') != std::string_view::npos ||
      port.starts_with("+")) {
    out.why = "port '" + std::string(port) + "': port ranges and offsets are not supported";
    return out;
  }
  if (host.empty() || host == "*") {
    if (!bind) {
      out.why = "'" + std::string(raw) + "' has no server address";
      return out;
    }
    out.wildcard = true;
    out.implicit = true;
    host = v6_prefix ? "::" : wildcard_ip;
  }
  std::string candidate = host.find(':') != std::string::npos ? "[" + host + "]:" + std::string(port)
                                                              : host + ":" + std::string(port);
  std::string error;
  auto parsed = parseSiteAddress(candidate, error);
  if (!parsed) {
    out.why = error;
    return out;
  }
  out.wildcard = out.wildcard || isZeroAddress(parsed->ip());
  out.text = parsed->toString();
  return out;
}

}  // namespace fulcrum::config::haproxy
