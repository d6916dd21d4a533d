#pragma once
// The pure decisions of database routing: WAL positions (LSNs) as text and as cookie, which
// node is the primary, which replicas may serve reads, and which node serves a read that
// carries a read-your-writes token. No I/O here: DbRouter feeds these what its probes saw.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/pg_format.h"

namespace fulcrum::web {

// WAL positions ("16/B374D848") as the database agent reads and writes them.
using db::formatLsn;
using db::lagBytes;
using db::Lsn;
using db::parseLsn;

// The read-your-writes token travels in this cookie.
inline constexpr std::string_view kLsnCookie = "fulcrum_lsn";
// The token in a Cookie header ("a=1; fulcrum_lsn=0/16B3F00"); nullopt when absent or malformed
// (a malformed token is ignored, as if the client had none: reads never fail because of it).
std::optional<Lsn> lsnFromCookieHeader(std::string_view cookie_header);
// The Set-Cookie value for a token.
std::string lsnSetCookie(Lsn lsn);

// What the last probe of a node found.
struct NodeStatus {
  bool reachable = false;
  bool in_recovery = false;
  bool read_only = false;  // default_transaction_read_only: a fenced primary
  Lsn lsn = 0;             // primary: current WAL position; replica: last replayed
};

// The node that takes writes: the one reachable node out of recovery and not fenced. Two such
// nodes (a split brain seen from here, or a fence not yet observed) mean none: writes wait for
// the agents to settle it rather than risk going to a node that is about to be fenced.
std::optional<size_t> choosePrimary(const std::vector<NodeStatus>& nodes);

// Replicas that may serve plain reads: reachable, in recovery, and within `max_lag` of the
// primary (when no primary is known, every reachable replica: reads keep flowing in a failover).
std::vector<size_t> eligibleReplicas(const std::vector<NodeStatus>& nodes, std::optional<size_t> primary,
                                     uint64_t max_lag);

// Among `eligible`, those already known to have replayed `token` (all of them when no token).
std::vector<size_t> replicasAtLeast(const std::vector<NodeStatus>& nodes, const std::vector<size_t>& eligible,
                                    std::optional<Lsn> token);

}  // namespace fulcrum::web
