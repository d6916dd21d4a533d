#include "lb/site_history.h"

#include <fmt/format.h>

#include <algorithm>

namespace fulcrum::lb {

std::string_view nodeStatusName(NodeStatus status) {
  switch (status) {
    case NodeStatus::Ok:
      return "ok";
    case NodeStatus::Warn:
      return "warn";
    case NodeStatus::Down:
      return "down";
    case NodeStatus::Unknown:
      return "unknown";
  }
  return "unknown";
}

StateLog::StateLog(size_t capacity, size_t flap_changes, int64_t flap_window_ms)
    : log_(capacity), flap_changes_(std::max<size_t>(flap_changes, 1)), flap_window_ms_(flap_window_ms) {}

void StateLog::forget(Node& node, int64_t now_ms) const {
  while (!node.changes.empty() && node.changes.front() <= now_ms - flap_window_ms_) {
    node.changes.pop_front();
  }
}

bool StateLog::observe(std::string_view name, std::string_view state, NodeStatus status, std::string_view reason,
                       int64_t now_ms) {
  auto it = nodes_.find(name);
  if (it == nodes_.end()) {
    it = nodes_.emplace(std::string(name), Node{std::string(state), now_ms, {}}).first;
    if (status == NodeStatus::Ok || status == NodeStatus::Unknown) {
      return false;  // a healthy first sighting is no news
    }
    log_.push(StateChange{now_ms, std::string(name), "", std::string(state), std::string(reason), false});
    return true;
  }
  Node& node = it->second;
  if (node.state == state) {
    return false;
  }
  StateChange change{now_ms, std::string(name), node.state, std::string(state), std::string(reason), false};
  node.state = std::string(state);
  node.since_ms = now_ms;
  forget(node, now_ms);
  node.changes.push_back(now_ms);
  change.flapping = node.changes.size() >= flap_changes_;
  log_.push(std::move(change));
  return true;
}

size_t StateLog::recentChanges(std::string_view name, int64_t now_ms) const {
  auto it = nodes_.find(name);
  if (it == nodes_.end()) {
    return 0;
  }
  forget(it->second, now_ms);
  return it->second.changes.size();
}

bool StateLog::flapping(std::string_view name, int64_t now_ms) const {
  return recentChanges(name, now_ms) >= flap_changes_;
}

int64_t StateLog::since(std::string_view name) const {
  auto it = nodes_.find(name);
  return it == nodes_.end() ? 0 : it->second.since_ms;
}

std::string durationText(int64_t ms) {
  const int64_t s = std::max<int64_t>(ms, 0) / 1000;
  if (s < 120) {
    return fmt::format("{} s", s);
  }
  if (s < 7200) {
    return fmt::format("{} min", s / 60);
  }
  return fmt::format("{} h {} min", s / 3600, s / 60 % 60);
}

std::string summarize(const std::vector<NodeView>& nodes, int64_t now_ms) {
  std::vector<std::string> down, warn, flapping;
  for (const NodeView& n : nodes) {
    std::string detail = n.detail.empty() ? "" : " (" + n.detail + ")";
    if (n.status == NodeStatus::Down) {
      down.push_back(fmt::format("{} {} for {}{}", n.name, n.state, durationText(now_ms - n.since_ms), detail));
    } else if (n.status == NodeStatus::Warn) {
      warn.push_back(fmt::format("{} {}{}", n.name, n.state, detail));
    }
    if (n.flapping) {
      flapping.push_back(n.name + " flapping");
    }
  }
  std::vector<std::string> parts;
  parts.insert(parts.end(), down.begin(), down.end());
  parts.insert(parts.end(), flapping.begin(), flapping.end());
  parts.insert(parts.end(), warn.begin(), warn.end());
  if (parts.empty()) {
    const bool any_unknown = std::any_of(nodes.begin(), nodes.end(),
                                         [](const NodeView& n) { return n.status == NodeStatus::Unknown; });
    return any_unknown ? "no problem seen yet (some nodes not checked yet)" : "all healthy";
  }
  std::string out;
  for (const std::string& p : parts) {
    out += (out.empty() ? "" : "; ") + p;
  }
  return out;
}

}  // namespace fulcrum::lb
