#include "web/db_routing.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "core/address.h"

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

bool claimsPrimary(const NodeStatus& n) {
  return n.reachable && !n.in_recovery && !n.read_only && !n.fenced;
}

std::optional<size_t> choosePrimary(const std::vector<NodeStatus>& nodes) {
  std::optional<size_t> primary;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (claimsPrimary(nodes[i])) {
      if (primary) {
        return std::nullopt;
      }
      primary = i;
    }
  }
  return primary;
}

uint32_t highestTimeline(const std::vector<NodeStatus>& nodes) {
  uint32_t highest = 0;
  for (const NodeStatus& n : nodes) {
    highest = std::max(highest, n.timeline);
  }
  return highest;
}

std::string_view describe(ReadVerdict verdict) {
  switch (verdict) {
    case ReadVerdict::Readable:
      return "may serve reads";
    case ReadVerdict::Down:
      return "unreachable";
    case ReadVerdict::NotReplica:
      return "not in recovery";
    case ReadVerdict::Hidden:
      return "its WAL receiver is hidden from the application role (grant it pg_read_all_stats)";
    case ReadVerdict::NotStreaming:
      return "its WAL receiver is not streaming";
    case ReadVerdict::OtherSender:
      return "it streams from another node than the primary";
    case ReadVerdict::OtherTimeline:
      return "it is on an older or other timeline";
    case ReadVerdict::TooFarBehind:
      return "it is more than max_lag_bytes behind";
  }
  return "?";
}

namespace {

// Same host (compared as addresses where both parse: "::1" and "0:0::1" are one) and port.
bool sameAddress(std::string_view host_a, uint16_t port_a, std::string_view host_b, uint16_t port_b) {
  if (port_a != port_b) {
    return false;
  }
  auto a = core::IpAddress::parse(host_a);
  auto b = core::IpAddress::parse(host_b);
  return a && b ? *a == *b : host_a == host_b;
}

}  // namespace

ReadVerdict readVerdict(const std::vector<NodeStatus>& nodes, const std::vector<DbNodeConfig>& config,
                        size_t i, std::optional<size_t> primary, uint64_t max_lag) {
  const NodeStatus& n = nodes[i];
  if (!n.reachable) {
    return ReadVerdict::Down;
  }
  if (!n.in_recovery) {
    return ReadVerdict::NotReplica;
  }
  if (!primary) {
    // A failover: nobody to compare with but the other nodes. Availability first, but never a
    // node behind the newest timeline: that one may hold writes the new history dropped.
    return n.timeline == highestTimeline(nodes) ? ReadVerdict::Readable : ReadVerdict::OtherTimeline;
  }
  const NodeStatus& p = nodes[*primary];
  if (!n.receiver) {
    return ReadVerdict::NotStreaming;
  }
  const WalReceiver& w = *n.receiver;
  if (!w.visible) {
    return ReadVerdict::Hidden;
  }
  if (w.status != "streaming") {
    return ReadVerdict::NotStreaming;
  }
  const DbNodeConfig& upstream = config[*primary];
  if (!sameAddress(w.sender_host, w.sender_port, upstream.host, upstream.port)) {
    return ReadVerdict::OtherSender;
  }
  if (w.received_tli != p.timeline) {
    return ReadVerdict::OtherTimeline;
  }
  if (lagBytes(p.lsn, n.lsn) > max_lag) {
    return ReadVerdict::TooFarBehind;
  }
  return ReadVerdict::Readable;
}

std::vector<size_t> eligibleReplicas(const std::vector<NodeStatus>& nodes,
                                     const std::vector<DbNodeConfig>& config, std::optional<size_t> primary,
                                     uint64_t max_lag) {
  std::vector<size_t> out;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (readVerdict(nodes, config, i, primary, max_lag) == ReadVerdict::Readable) {
      out.push_back(i);
    }
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

// Both roles in one statement. The timeline: a primary's from the name of the WAL file it writes
// (pg_control_checkpoint() may still name the old one until the first checkpoint after a
// promotion); a replica's from its last restartpoint (never ahead of what it replayed), raised to
// the WAL receiver's below. The receiver's details are NULL to a role without pg_read_all_stats
// (its pid still shows). fulcrum.fenced is NULL where the fence library is not loaded.
const std::string_view kProbeSql =
    "SELECT r.rec, CASE WHEN r.rec THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, "
    "current_setting('default_transaction_read_only'), current_setting('fulcrum.fenced', true), "
    "CASE WHEN r.rec THEN (SELECT timeline_id FROM pg_control_checkpoint()) "
    "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, "
    "w.pid, w.status, w.received_tli, w.sender_host, w.sender_port "
    "FROM (SELECT pg_is_in_recovery() AS rec) r LEFT JOIN pg_stat_wal_receiver w ON true";

namespace {

template <typename T>
bool parseNumber(std::string_view text, T& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::optional<NodeStatus> parseProbeRow(const std::vector<std::string>& row) {
  if (row.size() < 10 || (row[0] != "t" && row[0] != "f")) {
    return std::nullopt;
  }
  NodeStatus s;
  s.reachable = true;
  s.in_recovery = row[0] == "t";
  s.lsn = parseLsn(row[1]).value_or(0);  // NULL (empty) before a replica replayed anything
  s.read_only = row[2] == "on";
  s.fenced = row[3] == "on";
  if (!parseNumber(row[4], s.timeline)) {
    return std::nullopt;
  }
  if (s.in_recovery && !row[5].empty()) {
    WalReceiver w;
    w.visible = !row[6].empty();
    w.status = row[6];
    // Each may be NULL while the receiver starts or connects: 0 and "" match no primary.
    if (!parseNumber(row[7], w.received_tli)) {
      w.received_tli = 0;
    }
    w.sender_host = row[8];
    if (!parseNumber(row[9], w.sender_port)) {
      w.sender_port = 0;
    }
    s.timeline = std::max(s.timeline, w.received_tli);
    s.receiver = std::move(w);
  }
  return s;
}

}  // namespace fulcrum::web
