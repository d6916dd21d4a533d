#include "run/reload_diff.h"

#include "core/log.h"

namespace fulcrum::run {

std::string valueText(const std::string& value) {
  return value.empty() ? "\"\"" : value;
}
std::string valueText(const std::filesystem::path& value) {
  return valueText(value.string());
}
std::string valueText(const core::SocketAddress& value) {
  return value.toString();
}
std::string valueText(bool value) {
  return value ? "true" : "false";
}
std::string valueText(uint64_t value) {
  return std::to_string(value);
}

void logReloadReport(const ReloadReport& report) {
  if (!report.ok) {
    for (const std::string& error : report.errors) {
      log::error("reload refused: {}", error);
    }
    log::warn("reload refused: the running configuration is kept");
    return;
  }
  for (const std::string& change : report.changes) {
    log::info("reload: {}", change);
  }
  for (const std::string& key : report.needs_restart) {
    log::warn("reload: needs a restart, not applied: {}", key);
  }
  if (report.changes.empty() && report.needs_restart.empty()) {
    log::info("reload: nothing changed for this node");
  }
}

}  // namespace fulcrum::run
