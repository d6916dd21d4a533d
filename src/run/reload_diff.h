#pragma once
// Shared by the roles' reload planners (web_reload.h, db_reload.h): a key whose new value the
// running node cannot take is named with both values, and a reload's outcome is logged one line
// per change, per key left for a restart, or per error.
#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/address.h"
#include "run/node_files.h"

namespace fulcrum::run {

// A setting's value as a report shows it ("" for an empty path).
std::string valueText(const std::string& value);
std::string valueText(const std::filesystem::path& value);
std::string valueText(const core::SocketAddress& value);
std::string valueText(bool value);
std::string valueText(uint64_t value);
inline std::string valueText(uint32_t value) {
  return valueText(uint64_t{value});
}

// "key: before -> after"
template <typename T>
std::string changeText(std::string_view key, const T& before, const T& after) {
  return fmt::format("{}: {} -> {}", key, valueText(before), valueText(after));
}

// Adds `key` to report.needs_restart when its value differs.
template <typename T>
void restartIfChanged(ReloadReport& report, std::string_view key, const T& before, const T& after) {
  if (!(before == after)) {
    report.needs_restart.push_back(changeText(key, before, after));
  }
}

// Logs `report`: a refused file's errors, else what changed and what needs a restart.
void logReloadReport(const ReloadReport& report);

}  // namespace fulcrum::run
