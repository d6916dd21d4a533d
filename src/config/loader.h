#pragma once
// Loading and validating the topology file. Errors are collected, never thrown past here:
// each is a ConfigError (config.h), printed as `FILE:LINE:COL: key: message`.
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace fulcrum::config {

struct LoadResult {
  Site site;
  std::vector<ConfigError> errors;  // every error found, sorted by position in the file
  bool ok() const { return errors.empty(); }
};

// Reads and validates `path`. On any error `errors` is non-empty and `site` must not be used.
LoadResult loadSiteFile(const std::filesystem::path& path);
// Same, from text already in memory; `path` names the file in messages and anchors relative paths.
LoadResult loadSiteString(std::string_view text, const std::filesystem::path& path);

// A [site] name: 1-64 letters, digits, '-', '_' and '.', not starting with '.' or '-' (it becomes
// an etcd key prefix, a PostgreSQL cluster label and part of paths).
bool isSiteName(std::string_view name);

}  // namespace fulcrum::config
