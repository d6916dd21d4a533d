#pragma once
// The cluster's timeline history with when and why each timeline began (`fulcrum db history`,
// Patroni's `history` key). PostgreSQL's own history files (pg_wal/0000000N.history) say where
// each timeline forked but not when or why; the agent that promotes adds one entry to the
// `history` key in etcd once its new timeline is on disk. Read only on request, never per tick,
// and validated like every key (site_keys.h): garbage reads as no entries, never as an error.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/postgres.h"

namespace fulcrum::db {

struct HistoryEntry {
  uint32_t timeline = 0;  // the timeline that began
  Lsn lsn = 0;            // where it forked from its parent
  int64_t at = 0;         // unix seconds (0: unknown, e.g. a timeline older than the key)
  std::string leader;     // the node that promoted
  std::string reason;     // "failover: ...", "switchover from db-1", "manual failover", "restore ..."
  bool operator==(const HistoryEntry&) const = default;
};

// The newest entries kept in the key (Patroni keeps its whole history; a bound keeps the value
// small whatever the cluster lives through).
inline constexpr size_t kMaxHistoryEntries = 100;
inline constexpr size_t kMaxHistoryBytes = 64 * 1024;

std::string historyKey(std::string_view site);
std::string encodeHistory(const std::vector<HistoryEntry>& entries);
// Entries that are not well formed are skipped; nullopt when the value is not a JSON array (or
// too large), so the writer knows it replaces garbage.
std::optional<std::vector<HistoryEntry>> decodeHistory(std::string_view value);
// `entries` plus `entry` (one per timeline: a later write for the same timeline replaces the
// earlier), oldest first, at most kMaxHistoryEntries.
std::vector<HistoryEntry> appendHistory(std::vector<HistoryEntry> entries, HistoryEntry entry);
// What `db history` shows: every timeline in the leader's ancestry (`switches`, from its history
// file: timeline N ended at switchpoint, where N+1 ... began) and the current one, each with the
// key's when and why where the key has them; entries of the key for timelines not in the
// ancestry (a restore forked elsewhere) are kept too. Sorted by timeline.
std::vector<HistoryEntry> mergeHistory(const std::vector<HistoryEntry>& recorded,
                                       const std::vector<TimelineSwitch>& switches, uint32_t current_timeline);

}  // namespace fulcrum::db
