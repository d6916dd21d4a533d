#include "db/cluster_history.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "db/agent_state.h"
#include "pg/pg_format.h"

namespace fulcrum::db {

std::string historyKey(std::string_view site) {
  return sitePrefix(site) + "history";
}

std::string encodeHistory(const std::vector<HistoryEntry>& entries) {
  nlohmann::json out = nlohmann::json::array();
  for (const HistoryEntry& e : entries) {
    out.push_back({{"timeline", e.timeline},
                   {"lsn", pg::formatLsn(e.lsn)},
                   {"at", e.at},
                   {"leader", e.leader},
                   {"reason", e.reason}});
  }
  return out.dump();
}

std::optional<std::vector<HistoryEntry>> decodeHistory(std::string_view value) {
  if (value.size() > kMaxHistoryBytes) {
    return std::nullopt;
  }
  nlohmann::json j = nlohmann::json::parse(value, nullptr, false);
  if (!j.is_array()) {
    return std::nullopt;
  }
  std::vector<HistoryEntry> out;
  for (const auto& item : j) {
    if (!item.is_object() || !item.contains("timeline") || !item["timeline"].is_number_unsigned() ||
        item["timeline"].get<uint64_t>() == 0 || item["timeline"].get<uint64_t>() > UINT32_MAX) {
      continue;
    }
    HistoryEntry e;
    e.timeline = item["timeline"].get<uint32_t>();
    if (item.contains("lsn") && item["lsn"].is_string()) {
      e.lsn = pg::parseLsn(item["lsn"].get<std::string>()).value_or(0);
    }
    if (item.contains("at") && item["at"].is_number_integer()) {
      e.at = std::max<int64_t>(0, item["at"].get<int64_t>());
    }
    auto text = [&](const char* key) {
      return item.contains(key) && item[key].is_string() ? item[key].get<std::string>().substr(0, 256) : "";
    };
    e.leader = text("leader");
    e.reason = text("reason");
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<HistoryEntry> appendHistory(std::vector<HistoryEntry> entries, HistoryEntry entry) {
  std::erase_if(entries, [&](const HistoryEntry& e) { return e.timeline == entry.timeline; });
  entries.push_back(std::move(entry));
  std::stable_sort(entries.begin(), entries.end(),
                   [](const HistoryEntry& a, const HistoryEntry& b) { return a.timeline < b.timeline; });
  if (entries.size() > kMaxHistoryEntries) {
    entries.erase(entries.begin(), entries.end() - kMaxHistoryEntries);
  }
  return entries;
}

std::vector<HistoryEntry> mergeHistory(const std::vector<HistoryEntry>& recorded,
                                       const std::vector<TimelineSwitch>& switches, uint32_t current_timeline) {
  std::map<uint32_t, HistoryEntry> by_timeline;
  for (const HistoryEntry& e : recorded) {
    by_timeline[e.timeline] = e;
  }
  // Timeline 1 began with initdb; each switch line says where its child began.
  if (current_timeline >= 1) {
    by_timeline.try_emplace(1, HistoryEntry{1, 0, 0, "", "initdb"});
  }
  for (const TimelineSwitch& s : switches) {
    if (s.tli == UINT32_MAX) {
      continue;
    }
    // The history file's switchpoint is exact; the key adds when and why.
    auto [it, inserted] = by_timeline.try_emplace(s.tli + 1, HistoryEntry{s.tli + 1, 0, 0, "", ""});
    it->second.lsn = s.switchpoint;
  }
  if (current_timeline >= 1) {
    by_timeline.try_emplace(current_timeline, HistoryEntry{current_timeline, 0, 0, "", ""});
  }
  std::vector<HistoryEntry> out;
  for (auto& [tli, e] : by_timeline) {
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace fulcrum::db
