#include "pg/pg_bin.h"

#include <unistd.h>

#include <charconv>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace fulcrum::pg {

namespace {

std::optional<std::vector<int>> parseVersion(const std::string& text) {
  std::vector<int> parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, '.')) {
    int value = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (part.empty() || ec != std::errc() || end != part.data() + part.size()) {
      return std::nullopt;
    }
    parts.push_back(value);
  }
  return parts.empty() ? std::nullopt : std::optional(parts);
}

}  // namespace

core::Result<std::filesystem::path> findPgBin(const std::filesystem::path& configured,
                                              const std::filesystem::path& root) {
  using R = core::Result<std::filesystem::path>;
  auto usable = [](const std::filesystem::path& dir) {
    return ::access((dir / "postgres").c_str(), X_OK) == 0;
  };
  if (!configured.empty()) {
    return usable(configured) ? R::success(configured)
                              : R::failure("pg_bin " + configured.string() + " has no executable 'postgres'");
  }
  std::error_code ec;
  std::optional<std::vector<int>> best_version;
  std::filesystem::path best;
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
    auto version = parseVersion(entry.path().filename().string());
    if (version && usable(entry.path() / "bin") && (!best_version || *version > *best_version)) {
      best_version = version;
      best = entry.path() / "bin";
    }
  }
  if (!best_version) {
    return R::failure("no PostgreSQL found under " + root.string() +
                      " (install the postgresql package or set [db] pg_bin)");
  }
  return R::success(best);
}

}  // namespace fulcrum::pg
