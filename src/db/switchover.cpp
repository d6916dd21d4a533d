#include "db/switchover.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "db/backup_catalog.h"
#include "http/json_body.h"

namespace fulcrum::db {

std::string switchoverKey(std::string_view site) {
  return sitePrefix(site) + "switchover";
}

std::string encodeSwitchover(const SwitchoverIntent& intent) {
  return nlohmann::json{{"from", intent.from}, {"to", intent.to}}.dump();
}

std::optional<SwitchoverIntent> decodeSwitchover(std::string_view json) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object() || !j.contains("from") || !j.contains("to") || !j["from"].is_string() ||
      !j["to"].is_string()) {
    return std::nullopt;
  }
  return SwitchoverIntent{j["from"].get<std::string>(), j["to"].get<std::string>()};
}

Result<SwitchoverRequest> parseSwitchoverRequest(std::string_view body) {
  using R = Result<SwitchoverRequest>;
  if (body.size() > http::kMaxAdminBodyBytes) {
    return R::failure("the body is over " + std::to_string(http::kMaxAdminBodyBytes) + " bytes");
  }
  std::string error;
  std::optional<nlohmann::json> parsed = http::parseStrictJson(body, error);
  if (!parsed) {
    return R::failure(error + ": expected {\"to\":\"NODE\"} or {}");
  }
  const nlohmann::json& j = *parsed;
  if (!j.is_object()) {
    return R::failure("the body must be a JSON object: {\"to\":\"NODE\"} or {}");
  }
  SwitchoverRequest request;
  for (const auto& [name, value] : j.items()) {
    if (name == "to") {
      if (!value.is_string() || value.get<std::string>().empty()) {
        return R::failure("\"to\" must be a node name");
      }
      request.to = value.get<std::string>();
    } else if (name == "at") {
      request.at = value.is_string() ? parseTime(value.get<std::string>()) : std::nullopt;
      if (!request.at) {
        return R::failure("\"at\" must be a time such as \"2026-12-04 03:00:00\" (UTC), with an optional "
                          "+HH:MM offset, or \"@UNIXTIME\"");
      }
    } else if (name == "cancel") {
      if (!value.is_boolean() || !value.get<bool>()) {
        return R::failure("\"cancel\" must be true");
      }
      request.cancel = true;
    } else {
      return R::failure("unknown field '" + name + "' (only \"to\", \"at\" and \"cancel\")");
    }
  }
  if (request.cancel && (request.to || request.at)) {
    return R::failure("\"cancel\" goes alone");
  }
  return R::success(std::move(request));
}

SwitchoverChoice chooseSwitchoverTarget(const SwitchoverRequest& request, const SwitchoverInputs& in) {
  auto refuse = [](int status, std::string error) { return SwitchoverChoice{status, "", std::move(error)}; };
  if (request.to) {
    if (in.nodes.count(*request.to) == 0) {
      return refuse(400, "no [[db.node]] named '" + *request.to + "'");
    }
    if (*request.to == in.me) {
      return refuse(409, *request.to + " is already the leader");
    }
  }
  // Why a replica cannot take over; "" when it can.
  auto unfit = [&](const std::string& name) -> std::string {
    const MemberRecord* it = findMember(in.members, name);
    if (it == nullptr) {
      return name + " has not published its state (agent down?)";
    }
    if (it->role != "replica" || it->receiver != "streaming") {
      return name + " is not a streaming replica (role " + it->role + ")";
    }
    if (it->timeline != in.timeline) {
      return name + " is on timeline " + std::to_string(it->timeline) + ", the leader on " +
             std::to_string(in.timeline);
    }
    if (in.sync && in.sync->sync.count(name) == 0) {
      return name + " is not a synchronous replica yet";
    }
    return "";
  };
  if (request.to) {
    std::string why = unfit(*request.to);
    return why.empty() ? SwitchoverChoice{200, *request.to, ""} : refuse(409, why);
  }
  const MemberRecord* best = nullptr;
  for (const auto& m : in.members) {
    if (m.name != in.me && in.nodes.count(m.name) != 0 && unfit(m.name).empty() &&
        (best == nullptr || m.received > best->received ||
         (m.received == best->received && m.name < best->name))) {
      best = &m;
    }
  }
  if (best == nullptr) {
    return refuse(503, "no healthy streaming replica to hand over to");
  }
  return SwitchoverChoice{200, best->name, ""};
}

FailoverCheck checkManualFailover(const SwitchoverRequest& request, const FailoverInputs& in) {
  auto refuse = [](int status, std::string error) { return FailoverCheck{status, std::move(error)}; };
  if (request.to && in.nodes.count(*request.to) == 0) {
    return refuse(400, "no [[db.node]] named '" + *request.to + "'");
  }
  if (request.to && *request.to != in.me) {
    return refuse(409, "a failover is sent to the agent of the node that should lead: send it to " + *request.to +
                           "'s agent, not " + in.me + "'s");
  }
  if (in.leader) {
    if (*in.leader == in.me) {
      return refuse(409, in.me + " is already the leader");
    }
    return refuse(409, *in.leader + " holds the leader key" +
                           (in.leader_agent.empty() ? "" : " (agent " + in.leader_agent + ")") +
                           ": a failover is for a cluster without a leader; use POST /switchover on it");
  }
  if (!in.running_replica) {
    return refuse(503, in.me + " is not a running replica");
  }
  if (in.intent_for_other) {
    return refuse(409, "a switchover to another node is in progress");
  }
  if (in.sync_mode) {
    PromoteVerdict verdict = maySyncPromote(in.sync, in.me, in.mine, in.members);
    if (!verdict.allowed) {
      return refuse(409, "promoting " + in.me + " could lose acknowledged commits: " + verdict.why);
    }
    return {};
  }
  PromoteVerdict verdict =
      mayAsyncPromote(in.me, in.replayed, in.last_leader_lsn, in.max_lag_bytes, in.members, /*yield_ties=*/false);
  if (!verdict.allowed) {
    return refuse(409, verdict.why);
  }
  return {};
}

}  // namespace fulcrum::db
