#include "db/agent_state.h"

#include <cctype>
#include <charconv>
#include <nlohmann/json.hpp>

namespace fulcrum::db {

using pg::formatLsn;
using pg::parseLsn;
using pg::parseSysid;

std::string sitePrefix(std::string_view site) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "/fulcrum/";
  for (unsigned char c : site) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out + "/";
}

std::string membersPrefix(std::string_view site) {
  return sitePrefix(site) + "members/";
}

std::string memberKey(std::string_view site, std::string_view node) {
  return membersPrefix(site) + std::string(node);
}

std::string initializeKey(std::string_view site) {
  return sitePrefix(site) + "initialize";
}

std::string encodeMember(const MemberRecord& member) {
  nlohmann::json j = {{"name", member.name},
                      {"role", member.role},
                      {"pg", member.pg},
                      {"agent", member.agent},
                      {"timeline", member.timeline},
                      {"lsn", formatLsn(member.lsn)},
                      {"receiver", member.receiver},
                      {"received", formatLsn(member.received)}};
  if (member.seen_leader) {
    j["leader"] = *member.seen_leader;
  }
  if (member.sysid) {
    j["sysid"] = std::to_string(*member.sysid);  // a string: JSON numbers lose uint64 precision
  }
  if (!member.history.empty()) {
    nlohmann::json history = nlohmann::json::array();
    const size_t from = member.history.size() > kMaxHistory ? member.history.size() - kMaxHistory : 0;
    for (size_t i = from; i < member.history.size(); ++i) {
      history.push_back({member.history[i].tli, formatLsn(member.history[i].switchpoint)});
    }
    j["history"] = std::move(history);
  }
  return j.dump();
}

const MemberRecord* findMember(const std::vector<MemberRecord>& members, std::string_view name) {
  for (const auto& m : members) {
    if (m.name == name) {
      return &m;
    }
  }
  return nullptr;
}

std::optional<MemberRecord> decodeMember(std::string_view json) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object()) {
    return std::nullopt;
  }
  MemberRecord m;
  try {
    m.name = j.at("name").get<std::string>();
    m.role = j.at("role").get<std::string>();
    m.pg = j.at("pg").get<std::string>();
    m.agent = j.value("agent", std::string());
    m.timeline = j.value("timeline", uint32_t{0});
    m.receiver = j.value("receiver", std::string());
    auto lsn = parseLsn(j.at("lsn").get<std::string>());
    if (!lsn) {
      return std::nullopt;
    }
    m.lsn = *lsn;
    auto received = parseLsn(j.value("received", formatLsn(m.lsn)));
    if (!received) {
      return std::nullopt;
    }
    m.received = *received;
    if (j.contains("leader")) {
      m.seen_leader = j.at("leader").get<std::string>();
    }
    if (j.contains("sysid")) {
      m.sysid = parseSysid(j.at("sysid").get<std::string>());
      if (!m.sysid) {
        return std::nullopt;
      }
    }
    if (j.contains("history")) {
      const auto& history = j.at("history");
      if (!history.is_array() || history.size() > kMaxHistory) {
        return std::nullopt;
      }
      for (const auto& entry : history) {
        if (!entry.is_array() || entry.size() != 2) {
          return std::nullopt;
        }
        auto lsn = parseLsn(entry[1].get<std::string>());
        if (!lsn) {
          return std::nullopt;
        }
        m.history.push_back({entry[0].get<uint32_t>(), *lsn});
      }
    }
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
  return m;
}

Divergence divergence(uint32_t tli, Lsn position, uint32_t leader_tli,
                      const std::vector<TimelineSwitch>& leader_history) {
  if (tli == leader_tli) {
    return Divergence::No;  // one timeline is one line of WAL
  }
  if (tli > leader_tli) {
    return Divergence::Yes;  // a timeline the leader never had
  }
  for (const TimelineSwitch& entry : leader_history) {
    if (entry.tli == tli) {
      return position > entry.switchpoint ? Divergence::Yes : Divergence::No;
    }
  }
  // Not among the ancestors the leader published: a sibling branch, unless the list was cut.
  const bool complete = !leader_history.empty() && leader_history.front().tli == 1;
  return complete ? Divergence::Yes : Divergence::Unknown;
}

std::optional<uint64_t> NodeView::lagBytes() const {
  if (!pg_running || !status_ok) {
    return std::nullopt;
  }
  if (!pg.in_recovery) {
    return 0;
  }
  if (!leader_lsn) {
    return std::nullopt;
  }
  return pg::lagBytes(*leader_lsn, pg.replay_lsn);
}

std::string NodeView::role() const {
  if (!pg_running || !status_ok) {
    return "stopped";
  }
  return pg.in_recovery ? "replica" : "primary";
}

int healthStatus(const NodeView& view) {
  return view.pg_running && view.status_ok ? 200 : 503;
}

int primaryStatus(const NodeView& view) {
  bool accepts_writes = view.isPrimary() && !view.pg.read_only;
  return accepts_writes && view.leader && view.may_write ? 200 : 503;
}

int replicaStatus(const NodeView& view, std::optional<uint64_t> max_lag) {
  if (!view.isStreamingReplica()) {
    return 503;
  }
  if (max_lag) {
    auto lag = view.lagBytes();
    if (!lag || *lag > *max_lag) {
      return 503;
    }
  }
  return 200;
}

int readOnlyStatus(const NodeView& view, std::optional<uint64_t> max_lag) {
  return primaryStatus(view) == 200 ? 200 : replicaStatus(view, max_lag);
}

int syncStatus(const NodeView& view, std::optional<uint64_t> max_lag) {
  return view.sync_standby ? replicaStatus(view, max_lag) : 503;
}

int asyncStatus(const NodeView& view, std::optional<uint64_t> max_lag) {
  return view.sync_standby ? 503 : replicaStatus(view, max_lag);
}

std::optional<uint64_t> lagParameter(std::string_view query, bool& ok) {
  ok = true;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) != "lag") {
      continue;
    }
    std::string_view text = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
      ok = false;
      return std::nullopt;
    }
    return value;
  }
  return std::nullopt;
}

}  // namespace fulcrum::db
