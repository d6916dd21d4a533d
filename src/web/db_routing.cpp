#include "web/db_routing.h"

#include <fmt/format.h>

namespace fulcrum::web {

std::optional<Lsn> lsnFromCookieHeader(std::string_view header) {
  // RFC 6265 §5.4: "name=value" pairs separated by "; ". The last token wins, like a browser's
  // newest cookie would; any malformed one is skipped.
  std::optional<Lsn> found;
  while (!header.empty()) {
    size_t end = header.find(';');
    std::string_view pair = header.substr(0, end);
    header = end == std::string_view::npos ? std::string_view() : header.substr(end + 1);
    while (!pair.empty() && (pair.front() == ' ' || pair.front() == '\t')) {
      pair.remove_prefix(1);
    }
    while (!pair.empty() && (pair.back() == ' ' || pair.back() == '\t')) {
      pair.remove_suffix(1);
    }
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos || pair.substr(0, eq) != kLsnCookie) {
      continue;
    }
    if (auto lsn = parseLsn(pair.substr(eq + 1))) {
      found = lsn;
    }
  }
  return found;
}

std::string lsnSetCookie(Lsn lsn) {
  return fmt::format("{}={}; Path=/; HttpOnly; SameSite=Lax", kLsnCookie, formatLsn(lsn));
}

std::optional<size_t> choosePrimary(const std::vector<NodeStatus>& nodes) {
  std::optional<size_t> primary;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeStatus& n = nodes[i];
    if (n.reachable && !n.in_recovery && !n.read_only) {
      if (primary) {
        return std::nullopt;
      }
      primary = i;
    }
  }
  return primary;
}

std::vector<size_t> eligibleReplicas(const std::vector<NodeStatus>& nodes, std::optional<size_t> primary,
                                     uint64_t max_lag) {
  std::vector<size_t> out;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeStatus& n = nodes[i];
    if (!n.reachable || !n.in_recovery) {
      continue;
    }
    if (primary && lagBytes(nodes[*primary].lsn, n.lsn) > max_lag) {
      continue;
    }
    out.push_back(i);
  }
  return out;
}

std::vector<size_t> replicasAtLeast(const std::vector<NodeStatus>& nodes, const std::vector<size_t>& eligible,
                                    std::optional<Lsn> token) {
  if (!token) {
    return eligible;
  }
  std::vector<size_t> out;
  for (size_t i : eligible) {
    if (nodes[i].lsn >= *token) {
      out.push_back(i);
    }
  }
  return out;
}

}  // namespace fulcrum::web
