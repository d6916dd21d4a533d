#include "config/reader.h"

#include <algorithm>
#include <limits>
#include <tuple>

#include "config/values.h"

namespace fulcrum::config::detail {

void Diagnostics::record(const std::string& key, const toml::source_region& where) {
  site_.positions[key] =
      SourcePos{static_cast<uint32_t>(where.begin.line), static_cast<uint32_t>(where.begin.column)};
}

void Diagnostics::error(std::string key, std::string message) {
  errors_.push_back(site_.errorAt(std::move(key), std::move(message)));
}

bool Diagnostics::hasErrorFor(std::string_view key) const {
  return std::any_of(errors_.begin(), errors_.end(), [&](const ConfigError& e) { return e.key == key; });
}

std::vector<ConfigError> Diagnostics::take() {
  std::stable_sort(errors_.begin(), errors_.end(), [](const ConfigError& a, const ConfigError& b) {
    return std::tie(a.line, a.column) < std::tie(b.line, b.column);
  });
  return std::move(errors_);
}

std::string_view describe(toml::node_type type) {
  switch (type) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

TableReader::TableReader(Diagnostics& diag, const toml::table& table, std::string path,
                         std::initializer_list<std::string_view> known)
    : diag_(diag), table_(table), path_(std::move(path)) {
  std::vector<std::string_view> names(known);
  for (auto&& [key, node] : table_) {
    std::string full = keyOf(key.str());
    diag_.record(full, key.source());
    if (std::find(names.begin(), names.end(), key.str()) != names.end()) {
      continue;
    }
    std::string message = "unknown key '" + std::string(key.str()) + "'";
    if (auto guess = closestMatch(key.str(), names); !guess.empty()) {
      message += "; did you mean '" + std::string(guess) + "'?";
    } else {
      message += "; expected one of: ";
      for (size_t i = 0; i < names.size(); ++i) {
        message += (i ? ", " : "") + std::string(names[i]);
      }
    }
    diag_.error(full, message);
  }
}

std::string TableReader::keyOf(std::string_view name) const {
  return path_.empty() ? std::string(name) : path_ + "." + std::string(name);
}

bool TableReader::require(std::string_view name) {
  if (has(name)) {
    return true;
  }
  error(name, "required key is missing");
  return false;
}

const toml::node* TableReader::typed(std::string_view name, toml::node_type type, std::string_view expected) {
  const toml::node* node = table_.get(name);
  if (node == nullptr) {
    return nullptr;
  }
  if (node->type() != type) {
    error(name, "expected " + std::string(expected.empty() ? describe(type) : expected) + ", got " +
                    std::string(describe(node->type())));
    return nullptr;
  }
  return node;
}

bool TableReader::read(std::string_view name, std::string& out) {
  const toml::node* node = typed(name, toml::node_type::string);
  if (node == nullptr) {
    return false;
  }
  out = node->as_string()->get();
  return true;
}

bool TableReader::read(std::string_view name, bool& out) {
  const toml::node* node = typed(name, toml::node_type::boolean);
  if (node == nullptr) {
    return false;
  }
  out = node->as_boolean()->get();
  return true;
}

bool TableReader::readInteger(std::string_view name, int64_t& out, IntRange range) {
  const toml::node* node = typed(name, toml::node_type::integer);
  if (node == nullptr) {
    return false;
  }
  int64_t value = node->as_integer()->get();
  if (value < 0 && range.min >= 0) {
    error(name, "must not be negative, got " + std::to_string(value));
    return false;
  }
  if (value < range.min || value > range.max) {
    error(name, "must be between " + std::to_string(range.min) + " and " + std::to_string(range.max) +
                    ", got " + std::to_string(value));
    return false;
  }
  out = value;
  return true;
}

bool TableReader::read(std::string_view name, uint32_t& out, IntRange range) {
  range.max = std::min<int64_t>(range.max, std::numeric_limits<uint32_t>::max());
  int64_t value = 0;
  if (!readInteger(name, value, range)) {
    return false;
  }
  out = static_cast<uint32_t>(value);
  return true;
}

bool TableReader::read(std::string_view name, uint64_t& out, IntRange range) {
  int64_t value = 0;
  if (!readInteger(name, value, range)) {
    return false;
  }
  out = static_cast<uint64_t>(value);
  return true;
}

bool TableReader::readChoice(std::string_view name, std::string& out,
                             std::span<const std::string_view> choices, std::string_view noun) {
  std::string value;
  if (!read(name, value)) {
    return false;
  }
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) {
    out = value;
    return true;
  }
  std::string message = "unknown " + std::string(noun) + " '" + value + "'";
  if (auto guess = closestMatch(value, choices); !guess.empty()) {
    message += "; did you mean '" + std::string(guess) + "'?";
  } else {
    message += "; expected one of: ";
    for (size_t i = 0; i < choices.size(); ++i) {
      message += (i ? ", " : "") + std::string(choices[i]);
    }
  }
  error(name, message);
  return false;
}

bool TableReader::readPath(std::string_view name, std::filesystem::path& out,
                           const std::filesystem::path& base, bool allow_empty) {
  std::string value;
  if (!read(name, value)) {
    return false;
  }
  if (value.empty()) {
    if (!allow_empty) {
      error(name, "must not be empty");
      return false;
    }
    out.clear();
    return true;
  }
  out = (base / value).lexically_normal();
  return true;
}

bool TableReader::readAddress(std::string_view name, core::SocketAddress& out) {
  if (!require(name)) {
    return false;
  }
  std::optional<core::SocketAddress> address;
  if (!readAddress(name, address)) {
    return false;
  }
  out = *address;
  return true;
}

bool TableReader::readAddress(std::string_view name, std::optional<core::SocketAddress>& out) {
  std::string text;
  if (!read(name, text)) {
    return false;
  }
  std::string problem;
  auto address = parseSiteAddress(text, problem);
  if (!address) {
    error(name, problem);
    return false;
  }
  out = *address;
  return true;
}

const toml::table* TableReader::table(std::string_view name) {
  const toml::node* node = typed(name, toml::node_type::table);
  return node == nullptr ? nullptr : node->as_table();
}

std::vector<std::pair<std::string, const toml::table*>> TableReader::tables(std::string_view name) {
  std::vector<std::pair<std::string, const toml::table*>> out;
  std::string expected = "an array of tables ([[" + keyOf(name) + "]])";
  const toml::node* node = typed(name, toml::node_type::array, expected);
  if (node == nullptr) {
    return out;
  }
  const toml::array& array = *node->as_array();
  for (size_t i = 0; i < array.size(); ++i) {
    std::string key = keyOf(name) + "[" + std::to_string(i) + "]";
    diag_.record(key, array[i].source());
    const toml::table* element = array[i].as_table();
    if (element == nullptr) {
      diag_.error(key, "expected a table, got " + std::string(describe(array[i].type())));
    }
    out.emplace_back(std::move(key), element);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> TableReader::strings(std::string_view name) {
  std::vector<std::pair<std::string, std::string>> out;
  const toml::node* node = typed(name, toml::node_type::array);
  if (node == nullptr) {
    return out;
  }
  const toml::array& array = *node->as_array();
  for (size_t i = 0; i < array.size(); ++i) {
    std::string key = keyOf(name) + "[" + std::to_string(i) + "]";
    diag_.record(key, array[i].source());
    if (const auto* text = array[i].as_string()) {
      out.emplace_back(std::move(key), text->get());
    } else {
      diag_.error(key, "expected a string, got " + std::string(describe(array[i].type())));
    }
  }
  return out;
}

}  // namespace fulcrum::config::detail
