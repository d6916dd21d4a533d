#include "site/status.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/exit_codes.h"
#include "site/probe.h"
#include "site/up_control.h"
#include "tls/client_context.h"

namespace fulcrum::site {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kTimeout{1000};
// Requests/s is the counter's growth over this window.
constexpr std::chrono::milliseconds kRateWindow{1000};

// One node to ask: where, and how to read its answer into a row (returning its request
// counter, when it has one).
struct Target {
  NodeStatus row;
  core::SocketAddress address;
  std::string path;
  std::function<std::optional<double>(const ProbeResult&, NodeStatus&)> read;
  // Requests a reading itself adds to the counter (a web node counts our GET /metrics).
  double own_requests = 0;
  // A node that speaks only TLS ([security] internal_tls): the operator's client TLS.
  std::shared_ptr<core::ClientTransportFactory> tls;
  std::string tls_error;  // why there is none when one is needed
};

std::optional<double> sample(Target& t) {
  if (!t.tls_error.empty()) {
    t.row.up = false;
    t.row.healthy = false;
    t.row.health = t.tls_error;
    return std::nullopt;
  }
  ProbeResult r = fetch(t.address, t.path, kTimeout, {}, t.tls);
  if (r.status == 0) {
    t.row.up = false;
    t.row.healthy = false;
    t.row.health = r.error;
    return std::nullopt;
  }
  t.row.up = true;
  // Whatever a node answers (a field of the wrong type, say) costs its own row, never the report.
  try {
    return t.read(r, t.row);
  } catch (const std::exception& e) {
    t.row.healthy = false;
    t.row.health = std::string("bad answer: ") + e.what();
    return std::nullopt;
  }
}

std::vector<Target> targetsOf(const config::Site& site) {
  std::vector<Target> out;
  // Loaded only when a node needs it: `status` of a site without internal_tls reads no key.
  std::shared_ptr<core::ClientTransportFactory> operator_tls;
  std::string tls_error;
  if (site.security.internal_tls) {
    operator_tls = tls::ClientContext::forHolder(site, "operator", tls_error);
    if (!operator_tls) {
      tls_error = "no client certificate: " + tls_error;
    }
  }
  const auto& endpoints = site.etcd.endpoints;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    std::string name = etcdMemberName(site, i);
    Target t{NodeStatus{"etcd", name, endpoints[i].toString()}, endpoints[i], "/health"};
    t.tls = operator_tls;
    t.tls_error = tls_error;
    const bool cluster = endpoints.size() > 1;
    t.read = [cluster, endpoint = endpoints[i], tls = operator_tls](
                 const ProbeResult& r, NodeStatus& row) -> std::optional<double> {
      auto j = nlohmann::json::parse(r.body, nullptr, false);
      row.healthy = r.ok && j.is_object() && j.contains("health") && j["health"] == "true";
      row.health = row.healthy ? "ok" : "unhealthy (HTTP " + std::to_string(r.status) + ")";
      // Which member leads (one more round trip, only for a cluster): the JSON gateway's
      // Maintenance.Status, a POST.
      if (cluster && row.healthy &&
          etcdIsLeader(fetch(endpoint, "/v3/maintenance/status", kTimeout, "{}", tls).body)) {
        row.health += ", leader";
      }
      return std::nullopt;
    };
    out.push_back(std::move(t));
  }
  for (const auto& node : site.db.nodes) {
    Target t{NodeStatus{"db", node.name, node.pg.toString()}, node.agent, "/status"};
    t.tls = operator_tls;  // under internal_tls its API speaks TLS only
    t.tls_error = tls_error;
    t.read = [](const ProbeResult& r, NodeStatus& row) -> std::optional<double> {
      readAgentStatus(r.body, row);
      return std::nullopt;
    };
    out.push_back(std::move(t));
  }
  for (const auto& node : site.web.nodes) {
    Target t{NodeStatus{"web", node.name, node.listen.toString()}, node.listen, "/metrics"};
    t.tls = operator_tls;  // under internal_tls it answers site certificates only
    t.tls_error = tls_error;
    t.read = [](const ProbeResult& r, NodeStatus& row) -> std::optional<double> {
      row.healthy = r.ok;
      row.health = r.ok ? "ok" : "HTTP " + std::to_string(r.status);
      return prometheusCounter(r.body, "fulcrum_web_requests_total");
    };
    t.own_requests = 1;
    out.push_back(std::move(t));
  }
  for (const auto& node : site.lb.nodes) {
    if (node.stats) {
      Target t{NodeStatus{"lb", node.name, node.http.toString()}, *node.stats, "/api/state"};
      t.tls = operator_tls;  // under internal_tls the stats listener speaks HTTPS only
      t.tls_error = tls_error;
      t.read = [](const ProbeResult& r, NodeStatus& row) { return readLbState(r.body, row); };
      out.push_back(std::move(t));
    } else {
      // No stats listener: all we can tell is whether it accepts connections.
      Target t{NodeStatus{"lb", node.name, node.http.toString()}, node.http, ""};
      out.push_back(std::move(t));
    }
  }
  if (site.monitoring.present) {
    const config::MonitoringSection& mon = site.monitoring;
    Target prom{NodeStatus{"monitoring", "prometheus", mon.prometheus.toString()}, mon.prometheus,
                "/api/v1/targets?state=active"};
    prom.read = [](const ProbeResult& r, NodeStatus& row) -> std::optional<double> {
      readPrometheusTargets(r.body, row);
      return std::nullopt;
    };
    out.push_back(std::move(prom));
    if (mon.alertmanager) {
      Target am{NodeStatus{"monitoring", "alertmanager", mon.alertmanager->toString()}, *mon.alertmanager,
                "/api/v2/alerts?active=true&silenced=false&inhibited=false"};
      am.read = [](const ProbeResult& r, NodeStatus& row) -> std::optional<double> {
        readAlertmanagerAlerts(r.body, row);
        return std::nullopt;
      };
      out.push_back(std::move(am));
    }
  }
  return out;
}

std::string lagText(const NodeStatus& n) {
  if (!n.lag_bytes) {
    return "-";
  }
  std::string text = std::to_string(*n.lag_bytes) + " B";
  if (n.lag_seconds) {
    text += fmt::format(" {:.1f}s", *n.lag_seconds);
  }
  return text;
}

std::string stateText(const NodeStatus& n) {
  return n.stopped_at ? "stopped" : n.up ? "up" : "down";
}

// "14:03:07" (local time) of a Unix time.
std::string clockTime(double unix_time) {
  const auto t = static_cast<std::time_t>(unix_time);
  std::tm local{};
  ::localtime_r(&t, &local);
  char text[16];
  std::strftime(text, sizeof text, "%H:%M:%S", &local);
  return text;
}

std::string rateText(const NodeStatus& n) {
  return n.requests_per_s ? fmt::format("{:.1f}", *n.requests_per_s) : "-";
}

}  // namespace

bool etcdIsLeader(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object() || !j.contains("header") || !j["header"].is_object()) {
    return false;
  }
  // uint64 ids, as decimal strings in the gateway's JSON.
  const auto& member = j["header"].value("member_id", nlohmann::json());
  const auto& leader = j.value("leader", nlohmann::json());
  return member.is_string() && leader.is_string() && !member.get<std::string>().empty() &&
         member.get<std::string>() != "0" && member == leader;
}

std::optional<double> prometheusCounter(std::string_view text, std::string_view name) {
  std::optional<double> sum;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    std::string_view line = text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    pos = end == std::string_view::npos ? text.size() : end + 1;
    if (line.substr(0, name.size()) != name || line.size() == name.size()) {
      continue;
    }
    char next = line[name.size()];
    if (next != ' ' && next != '{') {
      continue;  // another metric whose name starts with `name`
    }
    size_t space = line.rfind(' ');
    try {
      sum = sum.value_or(0) + std::stod(std::string(line.substr(space + 1)));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return sum;
}

void readAgentStatus(std::string_view json, NodeStatus& out) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object()) {
    out.healthy = false;
    out.health = "bad /status answer";
    return;
  }
  const std::string role = j.contains("role") && j["role"].is_string() ? j["role"].get<std::string>() : "";
  const int64_t timeline =
      j.contains("timeline") && j["timeline"].is_number_integer() ? j["timeline"].get<int64_t>() : 0;
  bool writable = false;
  if (auto lease = j.find("lease"); lease != j.end() && lease->is_object()) {
    auto flag = [&](const char* key) { return lease->contains(key) && (*lease)[key].is_boolean() && (*lease)[key].get<bool>(); };
    writable = flag("held") && flag("may_write");
  }
  if (auto lag = j.find("lag_bytes"); lag != j.end() && lag->is_number_integer()) {
    out.lag_bytes = lag->get<int64_t>();
  }
  if (auto backup = j.find("backup"); backup != j.end() && backup->is_object()) {
    if (auto archive = backup->find("archive"); archive != backup->end() && archive->is_object()) {
      auto ready = archive->find("ready_segments");
      auto ok = archive->find("ok");
      const uint64_t waiting = ready != archive->end() && ready->is_number_unsigned() ? ready->get<uint64_t>() : 0;
      out.archive = ok != archive->end() && ok->is_boolean() ? (ok->get<bool>() ? "ok" : "FAILING") : "unknown";
      if (waiting > 1) {
        out.archive += fmt::format(" ({} waiting)", waiting);
      }
    }
  }
  if (auto lag = j.find("lag_seconds"); lag != j.end() && lag->is_number()) {
    out.lag_seconds = lag->get<double>();
  }
  out.db_timeline = timeline;
  if (auto leader = j.find("leader"); leader != j.end() && (leader->is_string() || leader->is_null())) {
    out.db_leader = leader->is_string() ? leader->get<std::string>() : "";  // null: nobody leads
  }
  out.db_paused = j.contains("paused") && j["paused"].is_object();
  if (auto sync = j.find("sync"); sync != j.end() && sync->is_object()) {
    out.db_synchronous = sync->contains("mode") && (*sync)["mode"].is_string() &&
                         (*sync)["mode"].get<std::string>() == "synchronous";
  }
  const std::string receiver =
      j.contains("receiver") && j["receiver"].is_string() ? j["receiver"].get<std::string>() : "";
  if (role == "primary") {
    out.healthy = writable;
    out.health = writable ? fmt::format("primary tl {}", timeline) : fmt::format("primary tl {}, fenced", timeline);
  } else if (role == "replica") {
    // A replica is healthy when it replicates: one that streams from nobody serves stale reads.
    out.healthy = receiver == "streaming";
    out.health = fmt::format("replica tl {}, {}", timeline,
                             receiver.empty() ? std::string("not streaming") : receiver);
  } else {
    out.healthy = false;
    out.health = role.empty() ? "unknown" : "postgres " + role;
  }
}

std::optional<double> readLbState(std::string_view json, NodeStatus& out) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object()) {
    out.healthy = false;
    out.health = "bad /api/state answer";
    return std::nullopt;
  }
  size_t total = 0;
  size_t up = 0;
  if (auto servers = j.find("servers"); servers != j.end() && servers->is_array()) {
    for (const auto& s : *servers) {
      ++total;
      up += s.is_object() && s.contains("health") && s["health"] == "up" ? 1 : 0;
    }
  }
  out.healthy = total == 0 || up > 0;
  out.health = fmt::format("{}/{} servers up", up, total);
  if (auto totals = j.find("totals"); totals != j.end() && totals->is_object()) {
    if (auto requests = totals->find("requests"); requests != totals->end() && requests->is_number()) {
      return requests->get<double>();
    }
  }
  return std::nullopt;
}

void readPrometheusTargets(std::string_view json, NodeStatus& out) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  const nlohmann::json* targets = nullptr;
  if (j.is_object() && j.contains("status") && j["status"] == "success") {
    if (auto data = j.find("data"); data != j.end() && data->is_object()) {
      if (auto active = data->find("activeTargets"); active != data->end() && active->is_array()) {
        targets = &*active;
      }
    }
  }
  if (targets == nullptr) {
    out.healthy = false;
    out.health = "bad /api/v1/targets answer";
    return;
  }
  size_t up = 0;
  for (const auto& t : *targets) {
    up += t.is_object() && t.contains("health") && t["health"] == "up" ? 1 : 0;
  }
  out.healthy = true;  // Prometheus itself works; down targets are its alerts' business
  out.health = fmt::format("{}/{} targets up", up, targets->size());
}

void readAlertmanagerAlerts(std::string_view json, NodeStatus& out) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_array()) {
    out.healthy = false;
    out.health = "bad /api/v2/alerts answer";
    return;
  }
  out.healthy = true;
  out.health = fmt::format("{} alert{} firing", j.size(), j.size() == 1 ? "" : "s");
}

namespace {

// A node's text for the terminal: control characters (escape sequences, newlines) shown as '?',
// and at most `width` characters, so no answer can break the table or drive the terminal.
std::string cell(std::string_view text, size_t width) {
  std::string out;
  for (unsigned char c : text) {
    out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  }
  if (out.size() > width) {
    out.resize(width - 3);
    out += "...";
  }
  return out;
}

}  // namespace

std::string formatDbHeader(const std::vector<NodeStatus>& nodes) {
  const NodeStatus* seen = nullptr;  // the first agent that answered
  bool any_db = false;
  for (const auto& n : nodes) {
    any_db = any_db || n.role == "db";
    if (n.role == "db" && n.up && n.db_leader && seen == nullptr) {
      seen = &n;
    }
  }
  if (!any_db) {
    return "";
  }
  if (seen == nullptr) {
    return "database: no agent answered with the cluster's state\n";
  }
  std::string leader = seen->db_leader->empty() ? std::string("NONE") : cell(*seen->db_leader, 40);
  std::string timeline;
  for (const auto& n : nodes) {
    if (n.role == "db" && n.name == *seen->db_leader && n.db_timeline) {
      timeline = fmt::format("  timeline {}", *n.db_timeline);
    }
  }
  return fmt::format("database: leader {}{}  synchronous {}  paused {}\n", leader, timeline,
                     seen->db_synchronous ? "yes" : "no",
                     seen->db_paused ? "YES (no automatic failover: `fulcrum db resume`)" : "no");
}

std::string formatTable(const std::vector<NodeStatus>& nodes) {
  // HEALTH is free text (an error, a node's own words): last, so it never pushes the columns.
  // The ARCHIVE column ([db.backup]) only when a node reports one.
  bool archive = false;
  for (const auto& n : nodes) {
    archive = archive || !n.archive.empty();
  }
  std::string out = formatDbHeader(nodes);
  out += fmt::format("{:<10} {:<12} {:<22} {:<7} {:>8} {:>16}", "ROLE", "NAME", "ADDRESS", "STATE", "REQ/S", "LAG");
  out += archive ? fmt::format("  {:<20}", "ARCHIVE") : "";
  out += "  HEALTH\n";
  for (const auto& n : nodes) {
    out += fmt::format("{:<10} {:<12} {:<22} {:<7} {:>8} {:>16}", cell(n.role, 10), cell(n.name, 40),
                       cell(n.address, 60), stateText(n), rateText(n), lagText(n));
    out += archive ? fmt::format("  {:<20}", cell(n.archive.empty() ? std::string("-") : n.archive, 20)) : "";
    out += "  " + cell(n.health, 100) + "\n";
  }
  return out;
}

std::string formatJson(const std::vector<NodeStatus>& nodes) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& n : nodes) {
    out.push_back(
        {{"role", n.role},
         {"name", n.name},
         {"address", n.address},
         {"state", stateText(n)},
         {"healthy", n.healthy},
         {"health", n.health},
         {"requests_per_s", n.requests_per_s ? nlohmann::json(*n.requests_per_s) : nlohmann::json()},
         {"lag_bytes", n.lag_bytes ? nlohmann::json(*n.lag_bytes) : nlohmann::json()},
         {"lag_seconds", n.lag_seconds ? nlohmann::json(*n.lag_seconds) : nlohmann::json()},
         {"archive", n.archive.empty() ? nlohmann::json() : nlohmann::json(n.archive)},
         {"stopped_at", n.stopped_at ? nlohmann::json(*n.stopped_at) : nlohmann::json()}});
  }
  return out.dump(2) + "\n";
}

std::vector<NodeStatus> collectStatus(const config::Site& site) {
  std::vector<Target> targets = targetsOf(site);
  for (auto& t : targets) {
    if (!t.read) {  // a load balancer without a stats listener
      ProbeResult r = runProbe(Probe{t.address, ""}, kTimeout);
      t.row.up = t.row.healthy = r.ok;
      t.row.health = r.ok ? "accepts connections" : r.error;
    }
  }
  struct Reading {
    std::optional<double> count;
    Clock::time_point at;
  };
  std::vector<Reading> first(targets.size());
  bool any_counter = false;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (targets[i].read) {
      first[i] = {sample(targets[i]), Clock::now()};
      any_counter = any_counter || first[i].count.has_value();
    }
  }
  if (any_counter) {
    // A rate needs two readings; this window is the measurement itself, not a wait for a state.
    std::this_thread::sleep_for(kRateWindow);
    for (size_t i = 0; i < targets.size(); ++i) {
      if (!first[i].count) {
        continue;
      }
      std::optional<double> second = sample(targets[i]);
      double seconds = std::chrono::duration<double>(Clock::now() - first[i].at).count();
      if (second && seconds > 0) {
        double delta = std::max(0.0, *second - *first[i].count - targets[i].own_requests);
        targets[i].row.requests_per_s = delta / seconds;
      }
    }
  }
  std::vector<NodeStatus> out;
  for (auto& t : targets) {
    out.push_back(std::move(t.row));
  }
  return out;
}

void applyUpList(const nlohmann::json& list, std::vector<NodeStatus>& rows) {
  const auto nodes = list.find("nodes");
  if (nodes == list.end() || !nodes->is_array()) {
    return;
  }
  for (const auto& child : *nodes) {
    if (!child.is_object()) {
      continue;
    }
    const std::string name = child.value("name", "");
    const std::string role = child.value("role", "");
    const std::string state = child.value("state", "");
    auto row = std::find_if(rows.begin(), rows.end(),
                            [&](const NodeStatus& r) { return r.name == name && r.role == role; });
    if (row == rows.end()) {
      continue;
    }
    const auto at = child.find("stopped_at");
    if ((state == "stopped" || state == "stopping") && at != child.end() && at->is_number()) {
      row->stopped_at = at->get<double>();
      row->up = false;
      row->healthy = false;
      row->health = state == "stopping" ? "stopping: asked by an operator (fulcrum stop)"
                                        : "stopped by operator at " + clockTime(*row->stopped_at) +
                                              " (fulcrum start " + name + " brings it back)";
      row->requests_per_s.reset();
      row->lag_bytes.reset();
      row->lag_seconds.reset();
    } else if (!row->up && state == "restarting") {
      row->health += fmt::format("; fulcrum up restarts it (crashes: {})", child.value("crashes", 0));
    } else if (!row->up && state == "gave_up") {
      row->health += "; fulcrum up gave up restarting it (" + child.value("last_error", std::string()) + ")";
    }
  }
}

int runStatusCommand(const config::Site& site, bool json, int watch_seconds) {
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  for (;;) {
    std::vector<NodeStatus> nodes = collectStatus(site);
    nlohmann::json list;
    std::string error;
    bool refused = false;
    if (askUp(controlSocketPath(site.site.state_dir), {{"op", "list"}}, kTimeout, list, error, refused)) {
      try {
        applyUpList(list, nodes);
      } catch (const std::exception& e) {  // a field of the wrong type: the nodes' own answers stand
        std::fprintf(stderr, "fulcrum status: fulcrum up's list: %s\n", e.what());
      }
    } else if (!refused) {
      std::fprintf(stderr, "fulcrum status: fulcrum up did not list its nodes: %s\n", error.c_str());
    }
    std::string text = json ? formatJson(nodes) : formatTable(nodes);
    // A node stopped on purpose is in maintenance, not failing (HAProxy's MAINT).
    bool all_ok = std::all_of(nodes.begin(), nodes.end(),
                              [](const NodeStatus& n) { return n.stopped_at || (n.up && n.healthy); });
    if (watch_seconds > 0 && !json) {
      // In place on a terminal (cursor home, clear), one report after another elsewhere; JSON
      // stays one document per report, for a program reading them.
      const std::string stamp = fmt::format("{:%Y-%m-%d %H:%M:%S} UTC, every {} s (Ctrl-C to stop)\n",
                                            std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()),
                                            watch_seconds);
      text = (tty ? "\x1b[H\x1b[2J" : "\n") + stamp + text;
    }
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    if (watch_seconds <= 0) {
      return all_ok ? core::kExitOk : core::kExitRuntime;
    }
    std::this_thread::sleep_for(std::chrono::seconds(watch_seconds));
  }
}

}  // namespace fulcrum::site
