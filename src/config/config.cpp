#include "config/config.h"

#include <algorithm>

namespace fulcrum::config {

namespace {

template <typename Node>
const Node* findByName(const std::vector<Node>& nodes, std::string_view name) {
  auto it = std::find_if(nodes.begin(), nodes.end(), [&](const Node& n) { return n.name == name; });
  return it == nodes.end() ? nullptr : &*it;
}

// "lb.node[0].http" -> "lb.node[0]" -> "lb.node" -> "lb" -> "".
std::string_view parentKey(std::string_view key) {
  if (!key.empty() && key.back() == ']') {
    auto open = key.rfind('[');
    return open == std::string_view::npos ? std::string_view() : key.substr(0, open);
  }
  auto dot = key.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : key.substr(0, dot);
}

}  // namespace

namespace {

// Values from the file (node names, paths) reach messages: a newline or escape sequence in one
// must not forge another `FILE:LINE:COL` line or move the terminal's cursor.
std::string escapeControls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 || u == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string ConfigError::toString() const {
  return escapeControls(file) + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " +
         escapeControls(key) + ": " + escapeControls(message);
}

const LbNode* Site::findLbNode(std::string_view name) const {
  return findByName(lb.nodes, name);
}
const WebNode* Site::findWebNode(std::string_view name) const {
  return findByName(web.nodes, name);
}
const DbNode* Site::findDbNode(std::string_view name) const {
  return findByName(db.nodes, name);
}

SourcePos Site::positionOf(std::string_view key) const {
  for (std::string_view k = key; !k.empty(); k = parentKey(k)) {
    if (auto it = positions.find(k); it != positions.end()) {
      return it->second;
    }
  }
  return {};
}

ConfigError Site::errorAt(std::string key, std::string message) const {
  SourcePos pos = positionOf(key);
  return ConfigError{display_path, pos.line, pos.column, std::move(key), std::move(message)};
}

}  // namespace fulcrum::config
