#include "db/sync_state.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace fulcrum::db {

using pg::formatLsn;
using pg::lagBytes;
using pg::quoteIdent;

std::string syncKey(std::string_view site) {
  return sitePrefix(site) + "sync";
}

std::string encodeSync(const SyncState& state) {
  nlohmann::json j = {{"leader", state.leader}, {"sync", state.sync}};
  return j.dump();
}

std::optional<SyncState> decodeSync(std::string_view json) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object()) {
    return std::nullopt;
  }
  SyncState state;
  try {
    state.leader = j.at("leader").get<std::string>();
    state.sync = j.at("sync").get<std::set<std::string>>();
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
  return state;
}

std::string standbyNamesValue(const std::set<std::string>& names) {
  if (names.empty()) {
    return "";
  }
  std::string value = "ANY 1 (";
  bool first = true;
  for (const auto& name : names) {
    value += (first ? "" : ", ") + quoteIdent(name);
    first = false;
  }
  return value + ")";
}

std::set<std::string> healthySyncNames(const SyncInputs& in) {
  std::set<std::string> names;
  for (const auto& r : in.replicas) {
    if (r.streaming && r.name != in.me && in.nodes.count(r.name) != 0) {
      names.insert(r.name);
    }
  }
  return names;
}

SyncStep nextSyncStep(const SyncInputs& in) {
  SyncStep step;
  auto write_key = [&](std::set<std::string> sync, std::string why) {
    step.kind = SyncStep::Kind::WriteKey;
    step.key = SyncState{in.me, std::move(sync)};
    step.why = std::move(why);
    return step;
  };
  auto set_pg = [&](std::set<std::string> names, std::string why) {
    step.kind = SyncStep::Kind::SetPg;
    step.pg = std::move(names);
    step.why = std::move(why);
    return step;
  };
  if (!in.key || in.key->leader != in.me) {
    return write_key({}, "new leader: nobody may be promoted until a replica is synchronous");
  }
  const std::set<std::string>& listed = in.key->sync;
  const std::set<std::string> healthy = healthySyncNames(in);
  if (healthy.empty() && in.strict) {
    if (in.pg && !in.pg->empty() && std::includes(listed.begin(), listed.end(), in.pg->begin(), in.pg->end())) {
      return step;  // commits wait for one of the names they waited for
    }
    if (!listed.empty()) {
      return set_pg(listed, "strict: no healthy replica, commits wait for a listed one to return");
    }
    if (in.nodes.empty()) {
      return step;  // a one-node cluster: nothing could ever acknowledge
    }
    return write_key(in.nodes, "strict: no healthy replica, listing every node before commits wait for one");
  }
  if (healthy.empty()) {
    if (!listed.empty()) {
      return write_key({}, "no healthy replica: nobody may be promoted (before commits stop waiting)");
    }
    if (!in.pg || !in.pg->empty()) {
      return set_pg({}, "no healthy replica: commits no longer wait for one");
    }
    return step;
  }
  if (!std::includes(listed.begin(), listed.end(), healthy.begin(), healthy.end())) {
    std::set<std::string> wider = listed;
    wider.insert(healthy.begin(), healthy.end());
    return write_key(std::move(wider), "listing healthy replicas before they may acknowledge commits");
  }
  if (!in.pg || *in.pg != healthy) {
    return set_pg(healthy, "commits wait for one of the healthy replicas");
  }
  std::set<std::string> extra;
  std::set_difference(listed.begin(), listed.end(), in.pg->begin(), in.pg->end(),
                      std::inserter(extra, extra.end()));
  if (extra.empty()) {
    return step;
  }
  for (const auto& r : in.replicas) {
    if (extra.count(r.name) != 0 && r.counted) {
      step.kind = SyncStep::Kind::Wait;
      step.why = r.name + "'s walsender still counts for commits";
      return step;
    }
  }
  if (!in.narrow_lsn) {
    step.kind = SyncStep::Kind::RecordLsn;
    step.lsn = in.current_lsn;
    return step;
  }
  for (const auto& r : in.replicas) {
    if (in.pg->count(r.name) != 0 && r.flush_lsn >= *in.narrow_lsn) {
      return write_key(*in.pg, "unlisting replicas no longer synchronous");
    }
  }
  step.kind = SyncStep::Kind::Wait;
  step.why = "no synchronous replica has flushed " + formatLsn(*in.narrow_lsn) + " yet";
  return step;
}

PromoteVerdict maySyncPromote(const std::optional<SyncState>& key, const std::string& me, Lsn mine,
                              const std::vector<MemberRecord>& members) {
  auto no = [](std::string why) { return PromoteVerdict{false, std::move(why)}; };
  if (!key) {
    return no("no sync key: no replica is known to hold every acknowledged commit");
  }
  if (key->sync.count(me) == 0) {
    return no("not a synchronous replica of " + key->leader);
  }
  for (const auto& name : key->sync) {
    if (name == me || name == key->leader) {
      continue;
    }
    const MemberRecord* it = findMember(members, name);
    if (it == nullptr) {
      return no("synchronous replica " + name + " is not visible: it may hold the latest commit");
    }
    if (!it->seen_leader || !it->seen_leader->empty()) {
      return no("synchronous replica " + name + " has not reported since the leader left");
    }
    if (it->role != "replica") {
      return no("synchronous replica " + name + " is not running: it may hold the latest commit");
    }
    if (it->received > mine || (it->received == mine && name < me)) {
      return no("synchronous replica " + name + " is further ahead (" + formatLsn(it->received) + ")");
    }
  }
  return PromoteVerdict{true, ""};
}

PromoteVerdict mayAsyncPromote(const std::string& me, Lsn mine, std::optional<Lsn> last_leader_lsn,
                               uint64_t max_lag_bytes, const std::vector<MemberRecord>& members, bool yield_ties) {
  if (last_leader_lsn && lagBytes(*last_leader_lsn, mine) > max_lag_bytes) {
    return {false, me + " is " + std::to_string(lagBytes(*last_leader_lsn, mine)) +
                       " bytes behind the last leader position (max_lag_bytes " + std::to_string(max_lag_bytes) + ")"};
  }
  for (const auto& m : members) {
    if (m.name != me && m.role == "replica" && (m.lsn > mine || (yield_ties && m.lsn == mine && m.name < me))) {
      return {false, m.name + " has replayed " + (m.lsn > mine ? "further" : "as far and goes first") + " (" +
                         formatLsn(m.lsn) + ", " + me + " " + formatLsn(mine) + ")"};
    }
  }
  return {true, ""};
}

}  // namespace fulcrum::db
