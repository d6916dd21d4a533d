#pragma once
// Where a node's logs go, from its topology keys and the command line (which wins): the event
// log on stderr or in --log-file, the access log (lb and web) off, on stdout or in a file.
#include <filesystem>
#include <string>
#include <string_view>

#include "core/log_file.h"

namespace fulcrum::run {

struct LogFlags {
  std::string log_file;           // --log-file: "" = stderr
  std::string access_log;         // --access-log FILE: "" = the topology's, "-" = stdout
  std::string access_log_format;  // --access-log-format off|text|json: "" = the topology's
};

// "{node}" in `path` replaced by `node` (several nodes of a role sharing one topology line).
std::filesystem::path nodeLogPath(const std::filesystem::path& path, std::string_view node);

// Opens the event log file (when asked) and the access stream (`access_format` and `access_file`
// from the topology, the flags over them; pass format "off" for a role without access lines).
bool openLogs(const LogFlags& flags, std::string_view access_format, const std::filesystem::path& access_file,
              std::string_view node, core::LogRotation rotation, std::string& error);

}  // namespace fulcrum::run
