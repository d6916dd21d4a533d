#pragma once
// A scratch directory holding a topology file and its default docroot (www/), so tests can load
// text as if it were a file on disk and compare full `FILE:LINE:COL: key: message` lines.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "config/loader.h"

namespace fulcrum::config::testing {

class SiteDir {
 public:
  SiteDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "fulcrum-config-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    dir_ = templ;
    std::filesystem::create_directory(dir_ / "www");
  }
  ~SiteDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  SiteDir(const SiteDir&) = delete;
  SiteDir& operator=(const SiteDir&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path file() const { return dir_ / "site.toml"; }
  LoadResult load(std::string_view text) const { return loadSiteString(text, file()); }
  // An empty file at `relative` (a certificate the topology names must exist).
  void touch(const std::filesystem::path& relative) const {
    std::filesystem::create_directories((dir_ / relative).parent_path());
    std::ofstream(dir_ / relative).put('\n');
  }
  // "FILE:LINE:COL: key: message" as this site's file would print it.
  std::string line(uint32_t line, uint32_t column, std::string_view key, std::string_view message) const {
    return file().string() + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " +
           std::string(key) + ": " + std::string(message);
  }

 private:
  std::filesystem::path dir_;
};

inline std::vector<std::string> lines(const LoadResult& result) {
  std::vector<std::string> out;
  for (const auto& e : result.errors) {
    out.push_back(e.toString());
  }
  return out;
}

}  // namespace fulcrum::config::testing
