#pragma once
// What the database agent publishes about itself in etcd and answers on its REST API, kept pure
// (no etcd, no PostgreSQL) so the semantics are unit-tested: member records, and the status
// codes of /health, /primary and /replica (Patroni's meanings) from one observed snapshot.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/postgres.h"
#include "pg/pg_format.h"

namespace fulcrum::db {

using pg::Lsn;

// "/fulcrum/<site>/": every key of one site. The site name is percent-encoded (every byte but
// letters, digits, '.', '_' and '-'), so no site's keys lie under another site's prefix ("a" and
// "a/members/x" would otherwise share keys).
std::string sitePrefix(std::string_view site);
// "/fulcrum/<site>/members/" and "/fulcrum/<site>/members/<node>".
std::string membersPrefix(std::string_view site);
std::string memberKey(std::string_view site, std::string_view node);
// "/fulcrum/<site>/initialize": the cluster's identity (see InitRecord in site_keys.h).
// Permanent (no lease): once it exists, no node ever runs initdb for this site again.
std::string initializeKey(std::string_view site);

// One node as published under memberKey(), bound to that node's own lease.
struct MemberRecord {
  std::string name;
  std::string role;  // "primary", "replica", or "stopped" (PostgreSQL not running)
  std::string pg;    // PostgreSQL's address, "127.0.0.1:15432"
  std::string agent;
  uint32_t timeline = 0;
  Lsn lsn = 0;           // written (primary) or replayed (replica)
  std::string receiver;  // a replica's WAL receiver state ("streaming"), else ""
  // WAL this node holds: written (primary), or the further of flushed by the WAL receiver and
  // replayed (replica): what a promotion would end up with.
  Lsn received = 0;
  // The leader key's holder when this node last read it ("" none); nullopt until it has read
  // it once. A record saying "" was published after its node saw the leader gone.
  std::optional<std::string> seen_leader;
  // PostgreSQL's database system identifier of this node's data (pg_controldata), when known:
  // nodes of different clusters must never follow, rewind onto or clone each other.
  std::optional<uint64_t> sysid;
  // A primary's timeline ancestry (its history file, the last kMaxHistory switches), for replicas
  // to tell whether they can follow its timeline.
  std::vector<TimelineSwitch> history;
};
inline constexpr size_t kMaxHistory = 16;

std::string encodeMember(const MemberRecord& member);
// The record of `name` in `members`, or nullptr.
const MemberRecord* findMember(const std::vector<MemberRecord>& members, std::string_view name);
// Nullopt when `json` is not a member record.
std::optional<MemberRecord> decodeMember(std::string_view json);

// Whether a node whose WAL reaches `position` on timeline `tli` can follow a primary on
// `leader_tli` with ancestry `leader_history` (pg_rewind's question, asked early): Yes when its
// timeline is not among the leader's ancestors, or it went past the point where the leader's
// history left it. Unknown when the history needed is missing (an older leader).
enum class Divergence { No, Yes, Unknown };
Divergence divergence(uint32_t tli, Lsn position, uint32_t leader_tli,
                      const std::vector<TimelineSwitch>& leader_history);

// What the agent last saw, plus the lease as of now.
struct NodeView {
  bool pg_running = false;        // our postmaster is alive
  bool status_ok = false;         // the last status query answered
  PgStatus pg;                    // meaningful when status_ok
  bool leader = false;            // this node holds the leader key
  bool may_write = false;         // ... and its lease is not past the fence deadline
  std::optional<Lsn> leader_lsn;  // from the leader's member record
  bool sync_standby = false;      // synchronous mode, and the sync key lists this node
  // The current leader as last published ("" / 0 unknown): a replica is healthy only while it
  // streams from that very node on that timeline.
  std::string leader_pg;
  uint32_t leader_timeline = 0;

  bool isPrimary() const { return pg_running && status_ok && !pg.in_recovery; }
  // Streaming from the current leader, on the leader's timeline: never a replica that streams
  // from a former primary, or whose history forked off.
  bool isStreamingReplica() const {
    return pg_running && status_ok && pg.in_recovery && pg.receiver == "streaming" && !leader_pg.empty() &&
           pg.sender == leader_pg && pg.timeline == leader_timeline;
  }
  // A replica's lag behind the leader's last published position; nullopt when unknown.
  std::optional<uint64_t> lagBytes() const;
  // "primary", "replica", "stopped" (as in member records).
  std::string role() const;
};

// GET /health: 200 when PostgreSQL is up, else 503.
int healthStatus(const NodeView& view);
// GET /primary: 200 only on the leader while it accepts writes (not in recovery, lease valid,
// not fenced, not read-only), else 503.
int primaryStatus(const NodeView& view);
// GET /replica[?lag=BYTES]: 200 on a streaming replica (within max_lag when given, which needs
// the leader's position), else 503.
int replicaStatus(const NodeView& view, std::optional<uint64_t> max_lag);
// Patroni's other health checks, for load balancer configs written for Patroni:
// GET /read-only[?lag]: 200 on the writable leader or on a replica as /replica would answer.
int readOnlyStatus(const NodeView& view, std::optional<uint64_t> max_lag);
// GET /sync[?lag] (/synchronous): 200 on a streaming replica that may be promoted in
// synchronous mode (listed in the sync key); GET /async[?lag] (/asynchronous): 200 on any
// other streaming replica (every one in asynchronous mode).
int syncStatus(const NodeView& view, std::optional<uint64_t> max_lag);
int asyncStatus(const NodeView& view, std::optional<uint64_t> max_lag);

// The `lag` parameter of a query string: nullopt when absent; false in `ok` when malformed.
std::optional<uint64_t> lagParameter(std::string_view query, bool& ok);

}  // namespace fulcrum::db
