#pragma once
// Internal to the loader: reads one TOML table against the keys it may hold, converting and
// range-checking values, and collecting every error instead of stopping at the first.
#include <toml++/toml.h>

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"

namespace fulcrum::config::detail {

// The errors of one load, placed through the Site's key positions.
class Diagnostics {
 public:
  explicit Diagnostics(Site& site) : site_(site) {}

  Site& site() { return site_; }
  void record(const std::string& key, const toml::source_region& where);
  void error(std::string key, std::string message);
  bool hasErrorFor(std::string_view key) const;
  // Every error, sorted by position (stable, so one key's errors keep their order).
  std::vector<ConfigError> take();

 private:
  Site& site_;
  std::vector<ConfigError> errors_;
};

struct IntRange {
  int64_t min;
  int64_t max;
};

// "a string", "an integer", ... for messages.
std::string_view describe(toml::node_type type);

class TableReader {
 public:
  // Records the position of every key of `table` under `path` and reports the unknown ones,
  // with the closest known key as a suggestion.
  TableReader(Diagnostics& diag, const toml::table& table, std::string path,
              std::initializer_list<std::string_view> known);

  std::string keyOf(std::string_view name) const;
  bool has(std::string_view name) const { return table_.contains(name); }
  void error(std::string_view name, std::string message) { diag_.error(keyOf(name), std::move(message)); }
  // Reports `name` as missing when it is absent; returns whether it is present.
  bool require(std::string_view name);

  // Each read leaves `out` untouched when the key is absent or wrong, and returns true only when
  // it stored a value.
  bool read(std::string_view name, std::string& out);
  bool read(std::string_view name, bool& out);
  bool read(std::string_view name, uint32_t& out, IntRange range);
  bool read(std::string_view name, uint64_t& out, IntRange range);
  // One of `choices`; `noun` names the setting in messages ("unknown algorithm 'x'").
  bool readChoice(std::string_view name, std::string& out, std::span<const std::string_view> choices,
                  std::string_view noun);
  // A file-system path; relative ones are resolved against `base`. An empty string is kept
  // empty ("use the default") when `allow_empty`, else refused.
  bool readPath(std::string_view name, std::filesystem::path& out, const std::filesystem::path& base,
                bool allow_empty);
  // IP:port (see parseSiteAddress). The first form reports a missing key; the second is optional.
  bool readAddress(std::string_view name, core::SocketAddress& out);
  bool readAddress(std::string_view name, std::optional<core::SocketAddress>& out);

  // A sub-table, or nullptr when absent or not a table (reported).
  const toml::table* table(std::string_view name);
  // [[name]]: one entry per element with its key "path.name[i]"; the table is nullptr for an
  // element that is not a table (reported), so indices stay those of the file.
  std::vector<std::pair<std::string, const toml::table*>> tables(std::string_view name);
  // An array of strings: one (key, value) per good element; bad elements are reported.
  std::vector<std::pair<std::string, std::string>> strings(std::string_view name);

 private:
  // The node for `name` if present and of type `type`, else nullptr (a type error is reported).
  const toml::node* typed(std::string_view name, toml::node_type type, std::string_view expected = {});
  bool readInteger(std::string_view name, int64_t& out, IntRange range);

  Diagnostics& diag_;
  const toml::table& table_;
  std::string path_;
};

}  // namespace fulcrum::config::detail
