#pragma once
// `fulcrum import haproxy.cfg`: the file read, translated (config/haproxy_import.h), and the
// topology printed or written, each line that could not be translated named on stderr.
#include <string>

namespace fulcrum::site {

struct ImportOptions {
  std::string input;    // the haproxy.cfg
  std::string out;      // "" = stdout
  bool force = false;   // overwrite `out`
  std::string name;     // [site] name; "" = from the input's file name
  std::string bind_ip;  // what '*' and empty bind hosts become; "" = 0.0.0.0
};

// Exit code: 0 when a topology was produced (lines left untranslated or not), 2 when the input
// is unreadable, malformed or has nothing to translate, or `out` exists without `force`.
int runImportCommand(const ImportOptions& options);

}  // namespace fulcrum::site
