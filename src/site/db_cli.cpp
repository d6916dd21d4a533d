#include "site/db_cli.h"

#include <fmt/format.h>

#include <cstdio>
#include <thread>
#include <nlohmann/json.hpp>

#include "site/admin_client.h"
#include "site/probe.h"

namespace fulcrum::site {

namespace {

using json = nlohmann::json;
constexpr std::chrono::milliseconds kTimeout{2000};
// A switchover or failover answers once the new leader holds the key (the agent bounds it).
constexpr std::chrono::milliseconds kActionTimeout{40000};

std::string str(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

std::string stateOf(const json& j) {
  if (j.contains("operation") && j["operation"].is_object()) {
    const std::string what = str(j["operation"], "what");
    if (what.rfind("start", 0) == 0) {
      return "starting";
    }
    if (what.rfind("pg_basebackup", 0) == 0 || what.rfind("restore", 0) == 0) {
      return "cloning";
    }
    if (what.rfind("pg_rewind", 0) == 0) {
      return "rewinding";
    }
    if (what == "initdb") {
      return "initializing";
    }
    return what.empty() ? "busy" : what;
  }
  if (j.contains("pg_running") && j["pg_running"].is_boolean()) {
    return j["pg_running"].get<bool>() ? "running" : "stopped";
  }
  return "unknown";
}

// Control characters out of what an agent says, before it reaches the terminal.
std::string clean(std::string text, size_t width = 60) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      c = '?';
    }
  }
  if (text.size() > width) {
    text = text.substr(0, width - 3) + "...";
  }
  return text;
}

std::string errorOf(const ProbeResult& r) {
  json j = json::parse(r.body, nullptr, false);
  std::string e = str(j, "error");
  return clean(e.empty() ? (r.error.empty() ? r.body : r.error) : e, 400);
}

}  // namespace

DbClusterView readDbCluster(const config::Site& site, const std::vector<std::optional<std::string>>& answers,
                            const std::vector<std::string>& errors) {
  DbClusterView view;
  view.site = site.site.name;
  std::vector<json> parsed(site.db.nodes.size());
  for (size_t i = 0; i < site.db.nodes.size(); ++i) {
    const config::DbNode& n = site.db.nodes[i];
    DbMemberRow row;
    row.name = n.name;
    row.host = n.pg.toString();
    if (i >= answers.size() || !answers[i]) {
      row.state = "unreachable";
      row.error = i < errors.size() ? errors[i] : "";
      view.members.push_back(std::move(row));
      continue;
    }
    json j = json::parse(*answers[i], nullptr, false);
    if (!j.is_object()) {
      row.state = "unknown";
      row.error = "not a JSON object";
      view.members.push_back(std::move(row));
      continue;
    }
    row.answered = true;
    row.role = str(j, "role");
    bool holds = false;
    if (j.contains("lease") && j["lease"].is_object() && j["lease"].contains("held") && j["lease"]["held"].is_boolean()) {
      holds = j["lease"]["held"].get<bool>();
    }
    if (holds) {
      row.role = "leader";
    }
    row.state = stateOf(j);
    if (j.contains("timeline") && j["timeline"].is_number_integer()) {
      row.timeline = j["timeline"].get<int64_t>();
    }
    row.receiver = str(j, "receiver");
    if (j.contains("lag_bytes") && j["lag_bytes"].is_number_integer()) {
      row.lag_bytes = j["lag_bytes"].get<int64_t>();
    }
    if (j.contains("lag_seconds") && j["lag_seconds"].is_number()) {
      row.lag_seconds = j["lag_seconds"].get<double>();
    }
    row.pending_restart = j.contains("pending_restart") && j["pending_restart"].is_boolean() &&
                          j["pending_restart"].get<bool>();
    if (!view.leader && j.contains("leader") && j["leader"].is_string()) {
      view.leader = j["leader"].get<std::string>();
    }
    if (!view.scheduled && j.contains("scheduled_switchover") && j["scheduled_switchover"].is_object()) {
      const json& planned = j["scheduled_switchover"];
      const std::string target = str(planned, "to");
      view.scheduled = str(planned, "from") + " -> " + (target.empty() ? "the best replica" : target) + " at " +
                       str(planned, "at");
    }
    if (!view.paused && j.contains("paused") && j["paused"].is_object()) {
      view.paused = "by " + str(j["paused"], "by") + " since " + str(j["paused"], "since");
    }
    parsed[i] = std::move(j);
    view.members.push_back(std::move(row));
  }
  for (size_t i = 0; i < view.members.size(); ++i) {
    if (view.leader && view.members[i].name == *view.leader && view.members[i].answered) {
      view.timeline = view.members[i].timeline;
      const json& j = parsed[i];
      view.synchronous = j.contains("sync") && j["sync"].is_object() && str(j["sync"], "mode") == "synchronous";
    }
  }
  return view;
}

std::string formatDbCluster(const DbClusterView& v) {
  std::string out = fmt::format("Cluster: {}  leader: {}  timeline: {}  synchronous: {}  paused: {}\n", clean(v.site),
                                v.leader ? clean(*v.leader) : "none", v.timeline, v.synchronous ? "yes" : "no",
                                v.paused ? "YES (" + clean(*v.paused, 80) + "): no automatic failover" : "no");
  if (v.scheduled) {
    out += "Scheduled switchover: " + clean(*v.scheduled, 120) + " (`fulcrum db switchover --cancel` drops it)\n";
  }
  out += fmt::format("{:<12} {:<22} {:<8} {:<12} {:>3}  {:<10} {:>10} {:>8}  {:<7}\n", "MEMBER", "HOST", "ROLE",
                     "STATE", "TL", "RECEIVER", "LAG", "LAG(s)", "RESTART");
  for (const DbMemberRow& m : v.members) {
    const std::string lag = m.lag_bytes ? fmt::format("{} B", *m.lag_bytes) : "-";
    const std::string lag_s = m.lag_seconds ? fmt::format("{:.1f}", *m.lag_seconds) : "-";
    out += fmt::format("{:<12} {:<22} {:<8} {:<12} {:>3}  {:<10} {:>10} {:>8}", clean(m.name, 12), m.host,
                       m.role.empty() ? "-" : clean(m.role, 8), clean(m.state, 12), m.timeline,
                       m.receiver.empty() ? "-" : clean(m.receiver, 10), lag, lag_s);
    out += m.pending_restart ? "  pending" : "  -      ";
    out += m.error.empty() ? "\n" : "  " + clean(m.error, 80) + "\n";
  }
  return out;
}

std::string dbClusterJson(const DbClusterView& v) {
  json members = json::array();
  for (const DbMemberRow& m : v.members) {
    members.push_back({{"name", m.name},
                       {"host", m.host},
                       {"role", m.role.empty() ? json(nullptr) : json(m.role)},
                       {"state", m.state},
                       {"timeline", m.timeline},
                       {"receiver", m.receiver.empty() ? json(nullptr) : json(m.receiver)},
                       {"lag_bytes", m.lag_bytes ? json(*m.lag_bytes) : json(nullptr)},
                       {"lag_seconds", m.lag_seconds ? json(*m.lag_seconds) : json(nullptr)},
                       {"pending_restart", m.pending_restart},
                       {"error", m.error.empty() ? json(nullptr) : json(m.error)}});
  }
  return json{{"site", v.site},
              {"leader", v.leader ? json(*v.leader) : json(nullptr)},
              {"timeline", v.timeline},
              {"synchronous", v.synchronous},
              {"paused", v.paused.has_value()},
              {"scheduled_switchover", v.scheduled ? json(*v.scheduled) : json(nullptr)},
              {"members", std::move(members)}}
             .dump(2) +
         "\n";
}

int runDbList(const config::Site& site, bool as_json) {
  if (site.db.nodes.empty()) {
    std::fprintf(stderr, "fulcrum db list: the site has no [[db.node]]\n");
    return 1;
  }
  std::string error;
  std::shared_ptr<core::ClientTransportFactory> tls;
  if (site.security.internal_tls) {
    auto admin = adminClient(site, error);
    if (!admin) {
      std::fprintf(stderr, "fulcrum db list: %s\n", error.c_str());
      return 1;
    }
    tls = admin->tls;
  }
  std::vector<std::optional<std::string>> answers;
  std::vector<std::string> errors;
  for (const config::DbNode& n : site.db.nodes) {
    ProbeResult r = fetch(n.agent, "/status", kTimeout, {}, tls);
    answers.push_back(r.status == 200 ? std::optional<std::string>(r.body) : std::nullopt);
    errors.push_back(r.status == 200 ? "" : (r.error.empty() ? "HTTP " + std::to_string(r.status) : r.error));
  }
  DbClusterView view = readDbCluster(site, answers, errors);
  std::fputs((as_json ? dbClusterJson(view) : formatDbCluster(view)).c_str(), stdout);
  bool all = view.leader.has_value();
  for (const DbMemberRow& m : view.members) {
    all = all && m.answered;
  }
  return all ? 0 : 1;
}

namespace {

int adminPost(const config::Site& site, const char* command, const std::string& path, const std::string& body,
              const std::vector<const config::DbNode*>& agents, bool as_json) {
  std::string error;
  auto admin = adminClient(site, error);
  if (!admin) {
    std::fprintf(stderr, "fulcrum db %s: %s\n", command, error.c_str());
    return 1;
  }
  std::string reasons;
  for (const config::DbNode* n : agents) {
    ProbeResult r = fetch(n->agent, path, kActionTimeout, body, admin->tls, admin->headers);
    if (r.status == 0) {
      reasons += fmt::format("\n  {} ({}): {}", n->name, n->agent.toString(), clean(r.error, 200));
      continue;  // try the next agent: any of them forwards to the one that acts
    }
    json j = json::parse(r.body, nullptr, false);
    if (r.ok) {
      if (as_json) {
        std::printf("%s\n", (j.is_object() ? j : json{{"answer", clean(r.body, 400)}}).dump().c_str());
      } else {
        std::printf("%s: %s\n", command, clean(j.is_object() ? j.dump() : r.body, 400).c_str());
      }
      return 0;
    }
    std::fprintf(stderr, "fulcrum db %s: refused by %s (HTTP %d): %s\n", command, n->name.c_str(), r.status,
                 errorOf(r).c_str());
    return 1;
  }
  std::fprintf(stderr, "fulcrum db %s: no agent answered:%s\n", command, reasons.c_str());
  return 1;
}

}  // namespace

int runDbSwitchover(const config::Site& site, const std::string& to, const std::string& at, bool cancel,
                    bool as_json) {
  if (!to.empty() && site.findDbNode(to) == nullptr) {
    std::fprintf(stderr, "fulcrum db switchover: no [[db.node]] named '%s'\n", to.c_str());
    return 1;
  }
  std::vector<const config::DbNode*> agents;
  for (const config::DbNode& n : site.db.nodes) {
    agents.push_back(&n);
  }
  json body = json::object();
  if (cancel) {
    body["cancel"] = true;
  } else {
    if (!to.empty()) {
      body["to"] = to;
    }
    if (!at.empty()) {
      body["at"] = at;  // the agent parses it: one grammar for every client
    }
  }
  return adminPost(site, "switchover", "/switchover", body.dump(), agents, as_json);
}

int runDbFailover(const config::Site& site, const std::string& to, bool as_json) {
  const config::DbNode* node = site.findDbNode(to);
  if (node == nullptr) {
    std::fprintf(stderr, "fulcrum db failover: no [[db.node]] named '%s'\n", to.c_str());
    return 1;
  }
  return adminPost(site, "failover", "/failover", json{{"to", to}}.dump(), {node}, as_json);
}

}  // namespace fulcrum::site

namespace fulcrum::site {

int runDbPause(const config::Site& site, bool paused, bool as_json) {
  std::vector<const config::DbNode*> agents;
  for (const config::DbNode& n : site.db.nodes) {
    agents.push_back(&n);
  }
  return adminPost(site, paused ? "pause" : "resume", "/pause", json{{"paused", paused}}.dump(), agents, as_json);
}

}  // namespace fulcrum::site

namespace fulcrum::site {

namespace {

// POST to NODE's own agent; the answer's JSON object on success (printed by the caller).
std::optional<json> postToNode(const config::Site& site, const char* command, const config::DbNode& node,
                               const std::string& path) {
  std::string error;
  auto admin = adminClient(site, error);
  if (!admin) {
    std::fprintf(stderr, "fulcrum db %s: %s\n", command, error.c_str());
    return std::nullopt;
  }
  ProbeResult r = fetch(node.agent, path, kTimeout * 10, "{}", admin->tls, admin->headers);
  if (r.status == 0) {
    std::fprintf(stderr, "fulcrum db %s: %s's agent (%s) did not answer: %s\n", command, node.name.c_str(),
                 node.agent.toString().c_str(), clean(r.error, 200).c_str());
    return std::nullopt;
  }
  if (!r.ok) {
    std::fprintf(stderr, "fulcrum db %s: refused by %s (HTTP %d): %s\n", command, node.name.c_str(), r.status,
                 errorOf(r).c_str());
    return std::nullopt;
  }
  json j = json::parse(r.body, nullptr, false);
  return j.is_object() ? j : json::object();
}

// Polls NODE's /status until `done` says so (true) or `wait` passes; prints a line now and then.
bool waitForNode(const config::Site& site, const config::DbNode& node, std::chrono::seconds wait,
                 const std::function<bool(const json&)>& done, std::string& last) {
  std::shared_ptr<core::ClientTransportFactory> tls;
  if (site.security.internal_tls) {
    std::string error;
    if (auto admin = adminClient(site, error)) {
      tls = admin->tls;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  auto next_note = start + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() - start < wait) {
    ProbeResult r = fetch(node.agent, "/status", kTimeout, {}, tls);
    json j = r.status == 200 ? json::parse(r.body, nullptr, false) : json();
    if (j.is_object()) {
      last = stateOf(j) + (str(j, "role").empty() ? "" : " (" + str(j, "role") + ")");
      if (done(j)) {
        return true;
      }
    } else {
      last = r.error.empty() ? "HTTP " + std::to_string(r.status) : r.error;
    }
    if (std::chrono::steady_clock::now() >= next_note) {
      std::printf("  %s: %s\n", node.name.c_str(), clean(last, 120).c_str());
      std::fflush(stdout);
      next_note += std::chrono::seconds(10);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int runDbRestart(const config::Site& site, const std::string& name, bool as_json) {
  const config::DbNode* node = site.findDbNode(name);
  if (node == nullptr) {
    std::fprintf(stderr, "fulcrum db restart: no [[db.node]] named '%s'\n", name.c_str());
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  auto asked = postToNode(site, "restart", *node, "/restart");
  if (!asked) {
    return 1;
  }
  const std::string role = str(*asked, "role");
  if (!as_json) {
    std::printf("restart: %s: PostgreSQL (%s) stopping (fast)\n", name.c_str(), role.c_str());
    std::fflush(stdout);
  }
  // Started again (the agent counts its starts of PostgreSQL) and running, whatever the polls saw
  // in between.
  const int64_t starts = asked->contains("starts") && (*asked)["starts"].is_number_integer()
                             ? (*asked)["starts"].get<int64_t>()
                             : 0;
  std::string last;
  bool back = waitForNode(site, *node, std::chrono::seconds(120),
                          [&](const json& j) {
                            return j.contains("postgres_starts") && j["postgres_starts"].is_number_integer() &&
                                   j["postgres_starts"].get<int64_t>() > starts && stateOf(j) == "running";
                          },
                          last);
  if (!back) {
    std::fprintf(stderr, "fulcrum db restart: %s's PostgreSQL is not running again after 120 s (last: %s); see "
                 "its agent's log\n", name.c_str(), clean(last, 120).c_str());
    return 1;
  }
  if (as_json) {
    std::printf("%s\n", json{{"node", name}, {"role", role}, {"restarted", true}, {"seconds", secondsSince(start)}}
                            .dump()
                            .c_str());
  } else {
    std::printf("restart: %s: PostgreSQL running again (%s) after %.1f s\n", name.c_str(), clean(last, 60).c_str(),
                secondsSince(start));
  }
  return 0;
}

int runDbReinit(const config::Site& site, const std::string& name, std::chrono::seconds wait, bool as_json) {
  const config::DbNode* node = site.findDbNode(name);
  if (node == nullptr) {
    std::fprintf(stderr, "fulcrum db reinit: no [[db.node]] named '%s'\n", name.c_str());
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  auto asked = postToNode(site, "reinit", *node, "/reinit");
  if (!asked) {
    return 1;
  }
  if (!as_json) {
    std::printf("reinit: %s: cloning %s; its old data directory is kept at %s (delete it once the node is "
                "verified)\n",
                name.c_str(), clean(str(*asked, "from")).c_str(), clean(str(*asked, "old_data"), 200).c_str());
    std::fflush(stdout);
  }
  std::string last;
  bool streaming = waitForNode(site, *node, wait,
                               [](const json& j) {
                                 return str(j, "role") == "replica" && str(j, "receiver") == "streaming" &&
                                        stateOf(j) == "running";
                               },
                               last);
  if (!streaming) {
    std::fprintf(stderr, "fulcrum db reinit: %s does not stream from the leader after %lld s (last: %s); the "
                 "agent goes on trying: see `fulcrum db list` and its log\n",
                 name.c_str(), static_cast<long long>(wait.count()), clean(last, 120).c_str());
    return 1;
  }
  if (as_json) {
    std::printf("%s\n", json{{"node", name},
                             {"from", str(*asked, "from")},
                             {"old_data", str(*asked, "old_data")},
                             {"streaming", true},
                             {"seconds", secondsSince(start)}}
                            .dump()
                            .c_str());
  } else {
    std::printf("reinit: %s: cloned, streaming from the leader after %.1f s\n", name.c_str(), secondsSince(start));
  }
  return 0;
}

std::string formatDbHistory(const std::string& answer) {
  json j = json::parse(answer, nullptr, false);
  if (!j.is_object() || !j.contains("history") || !j["history"].is_array()) {
    return "";
  }
  std::string out = fmt::format("{:>3}  {:<14} {:<24} {:<12} {}\n", "TL", "BEGAN AT LSN", "WHEN (UTC)", "LEADER",
                                "WHY");
  for (const json& e : j["history"]) {
    if (!e.is_object() || !e.contains("timeline") || !e["timeline"].is_number_unsigned()) {
      continue;
    }
    auto text = [&](const char* key) {
      const std::string v = str(e, key);
      return v.empty() ? std::string("-") : clean(v, 80);
    };
    out += fmt::format("{:>3}  {:<14} {:<24} {:<12} {}\n", e["timeline"].get<uint64_t>(), text("lsn"), text("at"),
                       text("leader"), text("reason"));
  }
  return out;
}

int runDbHistory(const config::Site& site, bool as_json) {
  std::shared_ptr<core::ClientTransportFactory> tls;
  if (site.security.internal_tls) {
    std::string error;
    auto admin = adminClient(site, error);
    if (!admin) {
      std::fprintf(stderr, "fulcrum db history: %s\n", error.c_str());
      return 1;
    }
    tls = admin->tls;
  }
  std::string reasons;
  for (const config::DbNode& n : site.db.nodes) {
    ProbeResult r = fetch(n.agent, "/history", kTimeout, {}, tls);
    const std::string table = r.status == 200 ? formatDbHistory(r.body) : "";
    if (table.empty()) {
      reasons += fmt::format("\n  {} ({}): {}", n.name, n.agent.toString(),
                             clean(r.status == 200 ? "not a history answer" : errorOf(r), 200));
      continue;
    }
    if (as_json) {
      std::fputs((json::parse(r.body).dump(2) + "\n").c_str(), stdout);
    } else {
      std::printf("history as %s sees it:\n%s", n.name.c_str(), table.c_str());
    }
    return 0;
  }
  std::fprintf(stderr, "fulcrum db history: no agent answered:%s\n", reasons.c_str());
  return 1;
}

}  // namespace fulcrum::site
