#pragma once
// `fulcrum import`: an haproxy.cfg read into the nearest topology file. Pure text in, text out:
// the caller reads and writes files. Every source line the topology cannot express is named
// with the reason, so nothing a user relied on in HAProxy is dropped silently.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fulcrum::config {

struct HaproxyImportOptions {
  std::string source_name = "haproxy.cfg";  // the FILE of every message
  std::string site_name = "haproxy";        // [site] name (already checked by the caller)
  // What a wildcard bind ("*:80", ":80", "0.0.0.0:80") becomes: the topology needs an address a
  // peer can reach, and a wildcard clashes with a server on the same port.
  std::string wildcard_ip = "0.0.0.0";
};

struct UntranslatedLine {
  uint32_t line = 0;      // 1-based
  std::string directive;  // the source line, trimmed
  std::string why;
};

struct HaproxyImport {
  bool ok = false;
  std::string source_name;  // HaproxyImportOptions::source_name
  std::string error;        // when !ok: "FILE:LINE: message" (LINE omitted when the whole file is at fault)
  std::string toml;         // the topology file, the untranslated lines listed in comments at its top
  std::vector<UntranslatedLine> untranslated;  // by line number
  // "FILE:LINE: DIRECTIVE: not translated: WHY", one per entry of `untranslated`.
  std::vector<std::string> messages() const;
};

HaproxyImport importHaproxy(std::string_view text, const HaproxyImportOptions& options);

// A [site] name from a file name: "haproxy.cfg" -> "haproxy"; characters the loader refuses
// become '-'. Never empty.
std::string siteNameFromPath(std::string_view path);

}  // namespace fulcrum::config
