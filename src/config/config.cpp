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

std::string ConfigError::toString() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + key + ": " + message;
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
