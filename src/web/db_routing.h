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

#include "pg/pg_format.h"

namespace fulcrum::web {

// WAL positions ("16/B374D848") as the database agent reads and writes them.
using pg::formatLsn;
using pg::lagBytes;
using pg::Lsn;
using pg::parseLsn;

// The read-your-writes token travels in this cookie.
inline constexpr std::string_view kLsnCookie = "fulcrum_lsn";
// The token in a Cookie header ("a=1; fulcrum_lsn=0/16B3F00"); nullopt when absent or malformed
// (a malformed token is ignored, as if the client had none: reads never fail because of it).
std::optional<Lsn> lsnFromCookieHeader(std::string_view cookie_header);
// The Set-Cookie value for a token.
std::string lsnSetCookie(Lsn lsn);

// A [[db.node]] as the web node knows it: its name and its PostgreSQL address.
struct DbNodeConfig {
  std::string name;
  std::string host;  // numeric address
  uint16_t port = 5432;
};

// A replica's WAL receiver as pg_stat_wal_receiver shows it.
struct WalReceiver {
  // False when only its pid shows: the details need pg_read_all_stats, which the application
  // role may lack. Such a replica cannot be shown to follow the primary.
  bool visible = true;
  std::string status;  // "streaming", "waiting", "restarting", "starting", "stopping"
  uint32_t received_tli = 0;
  std::string sender_host;
  uint16_t sender_port = 0;
};

// What the last probe of a node found.
struct NodeStatus {
  bool reachable = false;
  bool in_recovery = false;
  bool read_only = false;  // default_transaction_read_only: a fenced primary
  bool fenced = false;     // fulcrum.fenced = 'on': its leader lease has expired, it refuses commits
  Lsn lsn = 0;             // primary: current WAL position; replica: last replayed
  // Primary: the timeline it writes. Replica: the newest it is known to be on (received, or its
  // last restartpoint's). Kept while the node is unreachable: "the highest timeline seen".
  uint32_t timeline = 0;
  std::optional<WalReceiver> receiver;  // replica: none while no WAL receiver runs
};

// A node out of recovery that may take writes: not fenced by the agent (read-only) nor by its
// lease (fulcrum.fenced; NULL, a node without the fence library, reads as 'off').
bool claimsPrimary(const NodeStatus& node);

// The node that takes writes: the one reachable claimant. Two claimants (a split brain seen from
// here, or a fence not yet observed) mean none: writes wait for the agents to settle it rather
// than risk going to a node that is about to be fenced.
std::optional<size_t> choosePrimary(const std::vector<NodeStatus>& nodes);

// The highest timeline any node was last seen on.
uint32_t highestTimeline(const std::vector<NodeStatus>& nodes);

// Whether a node may serve reads as a replica, or why not.
enum class ReadVerdict : uint8_t {
  Readable,
  Down,           // unreachable
  NotReplica,     // out of recovery (the primary, a fenced or a competing one)
  Hidden,         // WAL receiver details hidden from the application role (no pg_read_all_stats)
  NotStreaming,   // no WAL receiver, or one not streaming
  OtherSender,    // streams from a node other than the primary
  OtherTimeline,  // on another timeline than the primary (or, with none known, the highest seen)
  TooFarBehind,   // more than max_lag bytes behind the primary
};
std::string_view describe(ReadVerdict verdict);

// With a primary known, a replica reads only while it streams from that primary's configured
// address on the primary's timeline, within `max_lag` bytes: a replica left on an old timeline
// holds rows the primary never had. With none known (a failover), reads keep flowing from every
// replica on the highest timeline seen on any node, never from one on an older timeline.
// `config` gives each node's address, in the same order as `nodes`.
ReadVerdict readVerdict(const std::vector<NodeStatus>& nodes, const std::vector<DbNodeConfig>& config,
                        size_t node, std::optional<size_t> primary, uint64_t max_lag);

// The nodes whose verdict is Readable.
std::vector<size_t> eligibleReplicas(const std::vector<NodeStatus>& nodes,
                                     const std::vector<DbNodeConfig>& config, std::optional<size_t> primary,
                                     uint64_t max_lag);

// Among `eligible`, those already known to have replayed `token` (all of them when no token).
std::vector<size_t> replicasAtLeast(const std::vector<NodeStatus>& nodes, const std::vector<size_t>& eligible,
                                    std::optional<Lsn> token);

// The discovery probe, one round trip: role, WAL position, both fences, timeline, WAL receiver.
extern const std::string_view kProbeSql;
// Its row as a reachable node's status; nullopt when the row is malformed.
std::optional<NodeStatus> parseProbeRow(const std::vector<std::string>& row);

}  // namespace fulcrum::web
