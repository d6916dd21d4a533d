#pragma once
// Reading an haproxy.cfg for `fulcrum import` (config/haproxy_import.h): its lines split into
// words as HAProxy splits them, grouped by section, and the value forms the import translates.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fulcrum::config::haproxy {

struct Line {
  uint32_t number = 0;
  std::string text;  // trimmed, comment and all, for messages
  std::vector<std::string> words;
};

enum class Kind { kGlobal, kDefaults, kFrontend, kBackend, kListen, kOther };

struct Section {
  Kind kind = Kind::kOther;
  std::string keyword;
  std::string name;
  Line header;
  std::vector<Line> lines;
  const Section* defaults = nullptr;  // what it inherits (proxies and named defaults)
};

// A bind or server address as the topology file takes it, or why it cannot be.
struct Address {
  std::string text;       // "IP:port" as the topology file takes it
  bool wildcard = false;  // 0.0.0.0 or ::
  bool implicit = false;  // the host was '*' or left out
  std::string why;        // when text is empty: why it cannot be translated
};

// The sections of `text` in order, each proxy's `defaults` resolved (the last defaults section
// above it, or "from NAME"). False with `error` = "SOURCE:LINE: message" on a line HAProxy would
// refuse too (an unterminated quote, a server without an address, a line outside any section).
// Line and Section pointers into `sections` stay valid while it is not modified.
bool parseConfig(std::string_view text, const std::string& source_name, std::vector<Section>& sections,
                 std::string& error);

// HAProxy times: a number with an optional unit (us, ms, s, m, h, d); bare numbers are ms.
std::optional<uint64_t> parseMillis(std::string_view text);
// A plain decimal count.
std::optional<uint64_t> parseCount(std::string_view text);
// Binds may leave the host out or give '*' (it becomes `wildcard_ip`); servers may not.
Address parseAddress(std::string_view raw, bool bind, const std::string& wildcard_ip);

}  // namespace fulcrum::config::haproxy
