#include "db/site_keys.h"

#include <nlohmann/json.hpp>

#include "core/address.h"
#include "db/elector.h"

namespace fulcrum::db {

using pg::parseSysid;

namespace {

// initialize, leader, sync, switchover, restore, pause, scheduled; then the members
constexpr size_t kFixedKeys = 7;

bool isRole(std::string_view role) {
  return role == "primary" || role == "replica" || role == "stopped" || role == "promoting";
}

std::string tooLarge(size_t size, size_t limit) {
  return "value of " + std::to_string(size) + " bytes (at most " + std::to_string(limit) + ")";
}

}  // namespace

std::string encodeInit(const InitRecord& record) {
  nlohmann::json j = {{"node", record.node}};
  if (record.state == InitRecord::State::Initializing) {
    j["initializing"] = true;
  }
  if (record.sysid) {
    j["sysid"] = std::to_string(*record.sysid);
  }
  return j.dump();
}

InitRecord decodeInit(std::string_view value) {
  InitRecord out;
  if (value.size() > kMaxSmallValueBytes) {
    return out;
  }
  nlohmann::json j = nlohmann::json::parse(value, nullptr, false);
  if (!j.is_object()) {
    // Older builds stored the bare name of the node that ran initdb.
    if (!value.empty() && value.front() != '{') {
      out.node = std::string(value);
    }
    return out;
  }
  auto node = j.find("node");
  if (node != j.end() && node->is_string()) {
    out.node = node->get<std::string>();
  }
  auto sysid = j.find("sysid");
  if (sysid != j.end()) {
    if (sysid->is_string()) {
      out.sysid = parseSysid(sysid->get<std::string>());
    }
    if (out.sysid) {
      out.state = InitRecord::State::Initialized;
    }
    return out;  // a malformed identifier stays Unknown: never a reason to initialize again
  }
  auto initializing = j.find("initializing");
  if (initializing != j.end() && initializing->is_boolean() && initializing->get<bool>() &&
      !out.node.empty()) {
    out.state = InitRecord::State::Initializing;
  }
  return out;
}

std::string restoreKey(std::string_view site) {
  return sitePrefix(site) + "restore";
}

std::string encodeRestoreHold(const RestoreHold& hold) {
  const char* state = hold.state == RestoreHold::State::Switching ? "switching"
                      : hold.state == RestoreHold::State::Done    ? "done"
                                                                  : "failed";
  return nlohmann::json{{"id", hold.id}, {"node", hold.node}, {"state", state}, {"timeline", hold.timeline}}.dump();
}

std::optional<RestoreHold> decodeRestoreHold(std::string_view value) {
  nlohmann::json j = nlohmann::json::parse(value, nullptr, false);
  if (!j.is_object() || !j.contains("id") || !j["id"].is_string() || !j.contains("node") || !j["node"].is_string() ||
      !j.contains("state") || !j["state"].is_string()) {
    return std::nullopt;
  }
  RestoreHold hold;
  hold.id = j["id"].get<std::string>();
  hold.node = j["node"].get<std::string>();
  const std::string state = j["state"].get<std::string>();
  if (state == "switching") {
    hold.state = RestoreHold::State::Switching;
  } else if (state == "done") {
    hold.state = RestoreHold::State::Done;
  } else if (state == "failed") {
    hold.state = RestoreHold::State::Failed;
  } else {
    return std::nullopt;
  }
  if (j.contains("timeline")) {
    if (!j["timeline"].is_number_unsigned() || j["timeline"].get<uint64_t>() > UINT32_MAX) {
      return std::nullopt;
    }
    hold.timeline = j["timeline"].get<uint32_t>();
  }
  if (hold.id.empty() || hold.id.size() > 64) {
    return std::nullopt;
  }
  return hold;
}

std::string pauseKey(std::string_view site) {
  return sitePrefix(site) + "pause";
}

std::string encodePause(const PauseRecord& record) {
  return nlohmann::json{{"by", record.by}, {"since", record.since}}.dump();
}

std::optional<PauseRecord> decodePause(std::string_view value) {
  nlohmann::json j = nlohmann::json::parse(value, nullptr, false);
  if (!j.is_object() || !j.contains("by") || !j["by"].is_string() || !j.contains("since") ||
      !j["since"].is_number_integer()) {
    return std::nullopt;
  }
  PauseRecord record{j["by"].get<std::string>(), j["since"].get<int64_t>()};
  if (record.by.size() > 128) {
    return std::nullopt;
  }
  return record;
}

std::string scheduledKey(std::string_view site) {
  return sitePrefix(site) + "scheduled";
}

std::string encodeScheduled(const ScheduledSwitchover& scheduled) {
  return nlohmann::json{{"from", scheduled.from}, {"to", scheduled.to}, {"at", scheduled.at}}.dump();
}

std::optional<ScheduledSwitchover> decodeScheduled(std::string_view value) {
  nlohmann::json j = nlohmann::json::parse(value, nullptr, false);
  if (!j.is_object() || !j.contains("from") || !j["from"].is_string() || !j.contains("to") || !j["to"].is_string() ||
      !j.contains("at") || !j["at"].is_number_integer()) {
    return std::nullopt;
  }
  ScheduledSwitchover s{j["from"].get<std::string>(), j["to"].get<std::string>(), j["at"].get<int64_t>()};
  if (s.at <= 0) {
    return std::nullopt;
  }
  return s;
}

std::vector<std::string> siteKeys(std::string_view site, const std::set<std::string>& nodes) {
  std::vector<std::string> keys = {initializeKey(site), leaderKey(site),  syncKey(site),     switchoverKey(site),
                                   restoreKey(site),    pauseKey(site),   scheduledKey(site)};
  for (const std::string& node : nodes) {
    keys.push_back(memberKey(site, node));
  }
  return keys;
}

std::optional<MemberRecord> checkedMember(std::string_view site, const std::set<std::string>& nodes,
                                          std::string_view key, std::string_view value, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<MemberRecord> {
    if (why != nullptr) {
      *why = std::move(reason);
    }
    return std::nullopt;
  };
  const std::string prefix = membersPrefix(site);
  if (key.substr(0, prefix.size()) != prefix) {
    return fail("not a member key");
  }
  const std::string name(key.substr(prefix.size()));
  if (nodes.count(name) == 0) {
    return fail("no [[db.node]] is named '" + name + "'");
  }
  if (value.size() > kMaxMemberBytes) {
    return fail(tooLarge(value.size(), kMaxMemberBytes));
  }
  auto member = decodeMember(value);
  if (!member) {
    return fail("not a member record");
  }
  if (member->name != name) {
    return fail("the record names '" + member->name + "', not the node of its key");
  }
  if (!isRole(member->role)) {
    return fail("unknown role '" + member->role + "'");
  }
  if (!core::SocketAddress::parse(member->pg)) {
    return fail("bad PostgreSQL address '" + member->pg + "'");
  }
  return member;
}

SiteView readSite(std::string_view site, const std::set<std::string>& nodes,
                  const std::vector<std::optional<etcd::KeyValue>>& values) {
  SiteView view;
  const std::vector<std::string> keys = siteKeys(site, nodes);
  auto ignore = [&](const std::string& key, std::string why) {
    view.ignored.push_back({key, std::move(why)});
  };
  auto at = [&](size_t i) -> const etcd::KeyValue* {
    return i < values.size() && values[i] ? &*values[i] : nullptr;
  };

  if (const auto* kv = at(0)) {
    view.init = decodeInit(kv->value);
    view.init_mod_revision = kv->mod_revision;
    view.init_value = kv->value;
    if (view.init->state == InitRecord::State::Unknown && kv->value.front() == '{') {
      ignore(keys[0], "unreadable cluster identity (treated as: the cluster exists, identifier unknown)");
    }
  }

  if (const auto* kv = at(1)) {
    LeaderKey& leader = view.leader;
    leader.name = kv->value;
    leader.lease = kv->lease;
    leader.mod_revision = kv->mod_revision;
    if (kv->lease == 0) {
      leader.state = LeaderKey::State::Unleased;
      ignore(keys[1], "leader key '" + kv->value.substr(0, 64) + "' is bound to no lease");
    } else if (kv->value.size() > kMaxSmallValueBytes || nodes.count(kv->value) == 0) {
      leader.state = LeaderKey::State::Foreign;
      ignore(keys[1], "leader key names no [[db.node]] ('" + kv->value.substr(0, 64) + "')");
    } else {
      leader.state = LeaderKey::State::Held;
    }
  }

  if (const auto* kv = at(2)) {
    std::optional<SyncState> sync;
    if (kv->value.size() > kMaxSyncBytes) {
      ignore(keys[2], tooLarge(kv->value.size(), kMaxSyncBytes));
    } else if (!(sync = decodeSync(kv->value))) {
      ignore(keys[2], "not a sync record");
    } else if (nodes.count(sync->leader) == 0) {
      ignore(keys[2], "the sync record's leader '" + sync->leader + "' is no [[db.node]]");
    } else {
      bool ok = true;
      for (const std::string& name : sync->sync) {
        if (nodes.count(name) == 0 || name == sync->leader) {
          ignore(keys[2], "the sync record lists '" + name + "', which is no [[db.node]] or its leader");
          ok = false;
          break;
        }
      }
      if (ok) {
        view.sync = std::move(sync);
      }
    }
  }

  if (const auto* kv = at(3)) {
    std::optional<SwitchoverIntent> intent;
    if (kv->value.size() > kMaxSmallValueBytes) {
      ignore(keys[3], tooLarge(kv->value.size(), kMaxSmallValueBytes));
    } else if (kv->lease == 0) {
      // An intent outlives nobody: bound to the old leader's member lease, it goes with it.
      ignore(keys[3], "switchover intent bound to no lease");
    } else if (!(intent = decodeSwitchover(kv->value))) {
      ignore(keys[3], "not a switchover intent");
    } else if (nodes.count(intent->from) == 0 || nodes.count(intent->to) == 0 || intent->from == intent->to) {
      ignore(keys[3], "the switchover intent names no pair of distinct [[db.node]]s");
    } else {
      view.intent = std::move(intent);
    }
  }

  if (const auto* kv = at(4)) {
    std::optional<RestoreHold> hold;
    if (kv->value.size() > kMaxSmallValueBytes) {
      ignore(keys[4], tooLarge(kv->value.size(), kMaxSmallValueBytes));
    } else if (kv->lease == 0) {
      // A hold that outlives its restorer would stop the cluster for good.
      ignore(keys[4], "restore record bound to no lease");
    } else if (!(hold = decodeRestoreHold(kv->value))) {
      ignore(keys[4], "not a restore record");
    } else if (nodes.count(hold->node) == 0) {
      ignore(keys[4], "the restore record names no [[db.node]]");
    } else {
      view.restore = std::move(hold);
    }
  }

  if (const auto* kv = at(5)) {
    std::optional<PauseRecord> pause;
    if (kv->value.size() > kMaxSmallValueBytes) {
      ignore(keys[5], tooLarge(kv->value.size(), kMaxSmallValueBytes));
    } else if (!(pause = decodePause(kv->value))) {
      // Garbage under the key pauses nothing: automatic failover is the safe default.
      ignore(keys[5], "not a pause record");
    } else {
      view.pause = std::move(pause);
    }
  }

  if (const auto* kv = at(6)) {
    std::optional<ScheduledSwitchover> scheduled;
    if (kv->value.size() > kMaxSmallValueBytes) {
      ignore(keys[6], tooLarge(kv->value.size(), kMaxSmallValueBytes));
    } else if (!(scheduled = decodeScheduled(kv->value))) {
      ignore(keys[6], "not a scheduled switchover");
    } else if (nodes.count(scheduled->from) == 0 || (!scheduled->to.empty() && nodes.count(scheduled->to) == 0)) {
      ignore(keys[6], "the scheduled switchover names a node that is no [[db.node]]");
    } else {
      view.scheduled = std::move(scheduled);
      view.scheduled_value = kv->value;
    }
  }

  for (size_t i = kFixedKeys; i < keys.size(); ++i) {
    const auto* kv = at(i);
    if (kv == nullptr) {
      continue;
    }
    if (kv->lease == 0) {
      ignore(keys[i], "member record bound to no lease");
      continue;
    }
    std::string why;
    if (auto member = checkedMember(site, nodes, keys[i], kv->value, &why)) {
      view.members.push_back(std::move(*member));
    } else {
      ignore(keys[i], why);
    }
  }
  return view;
}

}  // namespace fulcrum::db
