#include "run/logs.h"

#include "core/log.h"

namespace fulcrum::run {

std::filesystem::path nodeLogPath(const std::filesystem::path& path, std::string_view node) {
  std::string text = path.string();
  constexpr std::string_view kNode = "{node}";
  for (size_t at = text.find(kNode); at != std::string::npos; at = text.find(kNode, at + node.size())) {
    text.replace(at, kNode.size(), node);
  }
  return text;
}

bool openLogs(const LogFlags& flags, std::string_view access_format, const std::filesystem::path& access_file,
              std::string_view node, core::LogRotation rotation, std::string& error) {
  log::setRotation(rotation);
  if (!flags.log_file.empty() && !log::setEventFile(nodeLogPath(flags.log_file, node), error)) {
    return false;  // opened again with the topology's rotation
  }
  std::string_view format_text = flags.access_log_format.empty() ? access_format : flags.access_log_format;
  log::AccessFormat format{};
  if (!log::parseAccessFormat(format_text, format)) {
    error = "access log format must be off, text or json, not '" + std::string(format_text) + "'";
    return false;
  }
  std::filesystem::path file = access_file;
  if (!flags.access_log.empty()) {
    file = flags.access_log == "-" ? std::filesystem::path() : std::filesystem::path(flags.access_log);
  }
  return log::setAccessLog(format, nodeLogPath(file, node), error);
}

}  // namespace fulcrum::run
