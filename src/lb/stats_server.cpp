#include "lb/stats_server.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "core/secret_file.h"
#include "http/bearer.h"
#include "http/json_body.h"
#include "lb/balance/server_set.h"
#include "lb/check_metrics.h"
#include "metrics/process.h"
#include "metrics/prometheus.h"
#include "lb/dashboard_page.h"
#include "lb/h2_connection.h"
#include "lb/proxy_totals.h"
#include "lb/site_monitor.h"
#include "lb/vrrp/link.h"

namespace fulcrum::lb {

namespace {

nlohmann::json h2Json(const Totals& t) {
  nlohmann::json goaway = nlohmann::json::object();
  for (size_t r = 0; r < static_cast<size_t>(H2Abuse::kCount); ++r) {
    goaway[std::string(h2AbuseName(static_cast<H2Abuse>(r)))] = t.h2_goaway[r];
  }
  return {{"connections", t.h2_connections},
          {"streams", t.h2_streams},
          {"resets_received", t.h2_resets_received},
          {"goaway", goaway}};
}

// [lb.vip]: the VRRP router's state, for /api/state and the dashboard.
nlohmann::json vrrpJson(const vrrp::Node& node) {
  vrrp::NodeStatus s = node.status();
  const vrrp::NodeOptions& o = node.options();
  nlohmann::json invalid;
  uint64_t invalid_total = 0;
  for (size_t e = 1; e < vrrp::kDecodeErrorCount; ++e) {
    invalid[std::string(vrrp::decodeErrorName(static_cast<vrrp::DecodeError>(e)))] = s.invalid[e];
    invalid_total += s.invalid[e];
  }
  return {{"vrid", o.router.vrid},
          {"interface", o.interface},
          {"address", vrrp::ipv4Text(o.vip) + "/" + std::to_string(o.prefix_len)},
          {"state", vrrp::stateName(s.state)},
          {"holds_address", s.holds_vip},
          {"priority", s.priority},
          {"configured_priority", s.configured_priority},
          {"primary_ip", vrrp::ipv4Text(s.primary_ip)},
          {"master_ip", s.master_ip != 0 ? vrrp::ipv4Text(s.master_ip) : std::string()},
          {"advert_interval_ms",
           std::chrono::duration_cast<std::chrono::milliseconds>(o.router.advert_interval).count()},
          {"preempt", o.router.preempt},
          {"master_transitions", s.master_transitions},
          {"adverts_received", s.adverts_received},
          {"adverts_sent", s.adverts_sent},
          {"invalid_total", invalid_total},
          {"invalid", invalid},
          {"freezes", s.freezes},
          {"address_errors", s.address_errors}};
}

void writeVrrpMetrics(metrics::PrometheusWriter& w, std::string_view node, const vrrp::Node& vrrp_node) {
  vrrp::NodeStatus s = vrrp_node.status();
  std::string vrid = std::to_string(vrrp_node.options().router.vrid);
  w.family("fulcrum_lb_vrrp_state", "gauge", "VRRP state of this node, one-hot (initialize, backup, master).");
  for (vrrp::State state : {vrrp::State::Initialize, vrrp::State::Backup, vrrp::State::Master}) {
    w.sample("fulcrum_lb_vrrp_state", {{"node", node}, {"vrid", vrid}, {"state", vrrp::stateName(state)}},
             uint64_t{s.state == state});
  }
  w.family("fulcrum_lb_vrrp_priority", "gauge", "The VRRP priority this node advertises now (tracking its health).");
  w.sample("fulcrum_lb_vrrp_priority", {{"node", node}, {"vrid", vrid}}, uint64_t{s.priority});
  auto counter = [&](std::string_view name, std::string_view help, uint64_t value) {
    w.family(name, "counter", help);
    w.sample(name, {{"node", node}, {"vrid", vrid}}, value);
  };
  counter("fulcrum_lb_vrrp_master_transitions_total", "Times this node became VRRP master.", s.master_transitions);
  counter("fulcrum_lb_vrrp_adverts_received_total", "Valid VRRP advertisements received for this VRID.",
          s.adverts_received);
  counter("fulcrum_lb_vrrp_adverts_sent_total", "VRRP advertisements sent.", s.adverts_sent);
  counter("fulcrum_lb_vrrp_freezes_total", "Times this node found it had been frozen (stopped) for too long.",
          s.freezes);
  w.family("fulcrum_lb_vrrp_invalid_total", "counter", "VRRP packets discarded, by reason.");
  for (size_t e = 1; e < vrrp::kDecodeErrorCount; ++e) {
    w.sample("fulcrum_lb_vrrp_invalid_total",
             {{"node", node}, {"vrid", vrid}, {"reason", vrrp::decodeErrorName(static_cast<vrrp::DecodeError>(e))}},
             s.invalid[e]);
  }
}

constexpr std::string_view kClasses[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};

// Constant-time comparison: the token must not leak through timing.

void jsonError(http::Response& response, int status, std::string_view message) {
  nlohmann::json body = {{"error", message}};
  response.setBody(status, "application/json", body.dump() + "\n");
}

// [lb.outlier]: whether the server is ejected, for how much longer and why, and its count of
// recent ejections (the next one lasts base_ejection_ms times that plus one).
nlohmann::json outlierJson(const OutlierDetector& outlier, uint32_t id) {
  const OutlierEjector& e = outlier.ejector();
  nlohmann::json out = {{"ejected", e.ejected(id)}, {"ejections", e.ejections(id)}};
  if (e.ejected(id)) {
    out["remaining_ms"] = std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(e.ejectedUntil(id) - outlier.now()).count());
    out["reason"] = outlierReasonName(e.lastReason(id));
  }
  return out;
}

// An admin change (drain, maint, ready) is a change of state too: last_change_seconds counts
// from the later of it and the checks' last flip.
void sinceAdminChange(nlohmann::json& server, std::optional<std::chrono::steady_clock::time_point> changed) {
  if (!changed) {
    return;
  }
  const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - *changed).count();
  const double checks = server.value("last_change_seconds", since);
  server["last_change_seconds"] = std::min(checks, std::round(since * 1000) / 1000);
}

}  // namespace

std::string_view adminStateName(AdminState state) {
  switch (state) {
    case AdminState::Ready:
      return "ready";
    case AdminState::Drain:
      return "drain";
    case AdminState::Maint:
      return "maint";
  }
  return "ready";
}

StatsHandler::StatsHandler(StatsContext context)
    : ctx_(std::move(context)),
      admin_(ctx_.backends->size(), AdminState::Ready),
      weights_(ctx_.backends->size()),
      admin_changed_(ctx_.backends->size()),
      started_(std::chrono::steady_clock::now()) {}

namespace {

std::optional<AdminState> parseAdminState(std::string_view name) {
  if (name == "ready") {
    return AdminState::Ready;
  }
  if (name == "drain") {
    return AdminState::Drain;
  }
  if (name == "maint") {
    return AdminState::Maint;
  }
  return std::nullopt;
}

}  // namespace

void StatsHandler::serversChanged(const std::string& algorithm, const std::vector<std::string>& file_changed) {
  ctx_.algorithm = algorithm;
  const auto& backends = *ctx_.backends;
  admin_.resize(backends.size(), AdminState::Ready);
  admin_changed_.resize(backends.size());
  weights_.resize(backends.size());
  for (const Backend& b : backends) {
    if (!b.removed && weights_[b.id].weight != 0 &&
        std::find(file_changed.begin(), file_changed.end(), b.name) != file_changed.end()) {
      log::info("admin: server {} takes the file's weight {}; the weight {} set at runtime is dropped", b.name,
                b.weight, weights_[b.id].weight);
      weights_[b.id] = {};
    }
  }
  saveServerState();
}

void StatsHandler::saveServerState() const {
  if (ctx_.state_file.empty()) {
    return;
  }
  nlohmann::json servers = nlohmann::json::array();
  for (const Backend& b : *ctx_.backends) {
    if (b.removed || (admin_[b.id] == AdminState::Ready && weights_[b.id].weight == 0)) {
      continue;
    }
    nlohmann::json entry{{"name", b.name}, {"address", b.address_text}, {"admin", adminStateName(admin_[b.id])}};
    if (weights_[b.id].weight != 0) {
      entry["weight"] = weights_[b.id].weight;
      entry["file_weight"] = weights_[b.id].file_weight;
    }
    servers.push_back(std::move(entry));
  }
  nlohmann::json out{{"node", ctx_.node}, {"servers", std::move(servers)}};
  std::filesystem::path tmp = ctx_.state_file;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << out.dump(2) << "\n";
    if (!f) {
      log::warn("admin: cannot write {}: runtime server states will not survive a restart", tmp.string());
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, ctx_.state_file, ec);
  if (ec) {
    log::warn("admin: cannot write {}: {}", ctx_.state_file.string(), ec.message());
  }
}

void StatsHandler::restoreServerState() {
  if (ctx_.state_file.empty()) {
    return;
  }
  std::ifstream in(ctx_.state_file);
  if (!in) {
    return;
  }
  nlohmann::json state = nlohmann::json::parse(in, nullptr, false);
  if (!state.is_object() || !state.contains("servers") || !state["servers"].is_array()) {
    log::warn("admin: {} is not a server state file; ignored", ctx_.state_file.string());
    return;
  }
  const auto& backends = *ctx_.backends;
  for (const nlohmann::json& entry : state["servers"]) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string()) {
      continue;
    }
    const std::string name = entry["name"].get<std::string>();
    auto it = std::find_if(backends.begin(), backends.end(),
                           [&](const Backend& b) { return b.name == name && !b.removed; });
    if (it == backends.end()) {
      log::info("admin: saved state of server {} dropped: it is not in the file any more", name);
      continue;
    }
    if (entry.value("address", "") != it->address_text) {
      log::info("admin: saved state of server {} dropped: the file moved it to {}", name, it->address_text);
      continue;
    }
    std::optional<AdminState> admin = parseAdminState(entry.value("admin", "ready"));
    if (admin && *admin != AdminState::Ready) {
      admin_[it->id] = *admin;
      ctx_.apply_admin(it->id, *admin);
      if (ctx_.monitor != nullptr) {
        ctx_.monitor->adminChanged(it->id, adminStateName(*admin));
      }
      log::info("admin: server {} restored to {} (from {})", name, adminStateName(*admin), ctx_.state_file.string());
    }
    const uint32_t weight = entry.value("weight", 0u);
    const uint32_t file_weight = entry.value("file_weight", 0u);
    if (weight >= kMinWeight && weight <= kMaxWeight) {
      if (file_weight != it->weight) {
        log::info("admin: saved weight {} of server {} dropped: the file changed its weight to {}", weight, name,
                  it->weight);
      } else if (ctx_.apply_weight) {
        weights_[it->id] = {weight, file_weight};
        ctx_.apply_weight(it->id, weight);
        log::info("admin: server {} restored to weight {} (the file says {}; from {})", name, weight, file_weight,
                  ctx_.state_file.string());
      }
    }
  }
  saveServerState();
}

void StatsHandler::handle(const http::Request& request, http::Response& response) {
  std::string_view path = request.head.path;
  bool read = request.head.method == http::Method::Get || request.head.method == http::Method::Head;
  constexpr std::string_view kServers = "/api/servers/";
  constexpr std::string_view kStateSuffix = "/state";
  constexpr std::string_view kWeightSuffix = "/weight";
  if (path.size() > kServers.size() + kStateSuffix.size() && path.substr(0, kServers.size()) == kServers &&
      path.substr(path.size() - kStateSuffix.size()) == kStateSuffix) {
    handleAdmin(request, response,
                path.substr(kServers.size(), path.size() - kServers.size() - kStateSuffix.size()));
    return;
  }
  if (path.size() > kServers.size() + kWeightSuffix.size() && path.substr(0, kServers.size()) == kServers &&
      path.substr(path.size() - kWeightSuffix.size()) == kWeightSuffix) {
    handleWeight(request, response,
                 path.substr(kServers.size(), path.size() - kServers.size() - kWeightSuffix.size()));
    return;
  }
  if (path == "/api/reload") {
    handleReload(request, response);
    return;
  }
  if (!read) {
    response.setBody(405, "text/plain; charset=utf-8", "Method Not Allowed\n");
    response.addHeader("Allow", "GET, HEAD");
    return;
  }
  response.addHeader("Cache-Control", "no-store");
  if (path == "/") {
    response.setBody(200, "text/html; charset=utf-8", std::string(dashboardPage()));
  } else if (path == "/favicon.ico") {
    response.setBody(200, "image/svg+xml", std::string(dashboardIcon()));
  } else if (path == "/metrics") {
    response.setBody(200, metrics::kContentType, metricsText());
  } else if (path == "/api/state") {
    response.setBody(200, "application/json", stateJson() + "\n");
  } else if (path == "/healthz") {
    response.setBody(200, "text/plain; charset=utf-8", "ok\n");
  } else {
    response.setBody(404, "text/plain; charset=utf-8", "Not Found\n");
  }
}

bool StatsHandler::refuseBeforeBody(const http::RequestHead& head, std::string_view,
                                    http::Response& response) const {
  // Nothing this listener serves needs a body from a caller without the token.
  if (http::hasBearerToken(head, ctx_.token)) {
    return false;
  }
  jsonError(response, 401, "a valid 'Authorization: Bearer TOKEN' is required");
  response.addHeader("WWW-Authenticate", "Bearer");
  return true;
}

bool StatsHandler::adminCall(const http::Request& request, http::Response& response) const {
  if (request.head.method != http::Method::Post) {
    jsonError(response, 405, "use POST");
    response.addHeader("Allow", "POST");
    return false;
  }
  if (!http::hasBearerToken(request.head, ctx_.token)) {
    jsonError(response, 401, "a valid 'Authorization: Bearer TOKEN' is required");
    response.addHeader("WWW-Authenticate", "Bearer");
    return false;
  }
  if (ctx_.admin_needs_client_certificate && request.peer_certificate.empty()) {
    log::warn("admin: {} {} from {} refused: no client certificate from the site CA",
              request.head.method_text, request.head.path, request.peer.toString());
    jsonError(
        response, 403,
        "internal_tls: the admin API needs a client certificate from the site CA (the operator's) as well "
        "as the token");
    return false;
  }
  if (request.body.size() > http::kMaxAdminBodyBytes) {
    jsonError(response, 413, "the body is over " + std::to_string(http::kMaxAdminBodyBytes) + " bytes");
    return false;
  }
  return true;
}

void StatsHandler::handleReload(const http::Request& request, http::Response& response) {
  if (!adminCall(request, response)) {
    return;
  }
  if (!ctx_.reload) {
    jsonError(response, 503, "this node cannot reload");
    return;
  }
  log::info("admin: reload requested through the API by {}", request.peer.toString());
  run::ReloadReport report = ctx_.reload();
  nlohmann::json out = nlohmann::json::parse(report.toJson());
  response.setBody(report.ok ? 200 : 400, "application/json", out.dump() + "\n");
}

void StatsHandler::handleWeight(const http::Request& request, http::Response& response, std::string_view name) {
  if (!adminCall(request, response)) {
    return;
  }
  const auto& backends = *ctx_.backends;
  auto it = std::find_if(backends.begin(), backends.end(),
                         [&](const Backend& b) { return b.name == name && !b.removed; });
  if (it == backends.end()) {
    jsonError(response, 404, "no server named '" + std::string(name) + "'");
    return;
  }
  std::string json_error;
  std::optional<nlohmann::json> parsed = http::parseStrictJson(request.body, json_error);
  const std::string expected = fmt::format("expected a JSON object {{\"weight\": N}} with N in {}..{}", kMinWeight,
                                           kMaxWeight);
  if (!parsed || !parsed->is_object() || parsed->size() != 1 || !parsed->contains("weight") ||
      !(*parsed)["weight"].is_number_integer()) {
    jsonError(response, 400, (parsed ? "" : json_error + ": ") + expected);
    return;
  }
  const int64_t weight = (*parsed)["weight"].get<int64_t>();
  if (weight < kMinWeight || weight > kMaxWeight) {
    jsonError(response, 400, expected);
    return;
  }
  const uint32_t id = it->id;
  const uint32_t before = it->weight;
  RuntimeWeight& kept = weights_[id];
  if (kept.weight == 0) {
    kept.file_weight = before;  // what the file says: the weight a later file change replaces
  }
  kept.weight = static_cast<uint32_t>(weight);
  if (before != kept.weight) {
    log::info("admin: server {} weight set to {} (was {}) by {}", it->name, kept.weight, before,
              request.peer.toString());
    ctx_.apply_weight(id, kept.weight);
  }
  saveServerState();
  nlohmann::json out = {{"server", std::string(name)}, {"weight", kept.weight}, {"previous", before}};
  response.setBody(200, "application/json", out.dump() + "\n");
}

void StatsHandler::handleAdmin(const http::Request& request, http::Response& response,
                               std::string_view name) {
  if (!adminCall(request, response)) {
    return;
  }
  const auto& backends = *ctx_.backends;
  auto it = std::find_if(backends.begin(), backends.end(),
                         [&](const Backend& b) { return b.name == name && !b.removed; });
  const bool db_server = it == backends.end() && ctx_.db != nullptr && ctx_.db->hasServer(name);
  if (it == backends.end() && !db_server) {
    jsonError(response, 404, "no server named '" + std::string(name) + "'");
    return;
  }
  std::string json_error;
  std::optional<nlohmann::json> parsed = http::parseStrictJson(request.body, json_error);
  if (!parsed) {
    jsonError(response, 400, json_error + ": expected {\"state\": \"ready\" | \"drain\" | \"maint\"}");
    return;
  }
  const nlohmann::json& body = *parsed;
  if (!body.is_object() || !body.contains("state") || !body["state"].is_string() || body.size() != 1) {
    jsonError(response, 400, "expected a JSON object {\"state\": \"ready\" | \"drain\" | \"maint\"}");
    return;
  }
  std::optional<AdminState> parsed_state = parseAdminState(body["state"].get<std::string>());
  if (!parsed_state) {
    jsonError(response, 400, "state must be \"ready\", \"drain\" or \"maint\"");
    return;
  }
  const AdminState next = *parsed_state;
  const std::string server(name);
  AdminState& current =
      db_server ? db_admin_.try_emplace(server, AdminState::Ready).first->second : admin_[it->id];
  const AdminState before = current;
  current = next;
  if (before != next) {
    const auto now = std::chrono::steady_clock::now();
    if (db_server) {
      db_admin_changed_[server] = now;
    } else {
      admin_changed_[it->id] = now;
    }
    log::info("admin: {}server {} set to {} (was {}) by {}", db_server ? "database " : "", server,
              adminStateName(next), adminStateName(before), request.peer.toString());
    if (db_server) {
      ctx_.apply_db_admin(server, next);
    } else {
      ctx_.apply_admin(it->id, next);
      if (ctx_.monitor != nullptr) {
        ctx_.monitor->adminChanged(it->id, adminStateName(next));
      }
      saveServerState();
    }
  }
  nlohmann::json out = {
      {"server", server}, {"state", adminStateName(next)}, {"previous", adminStateName(before)}};
  response.setBody(200, "application/json", out.dump() + "\n");
}

std::string StatsHandler::stateJson() const {
  Totals t = sumTotals(*ctx_.workers);
  nlohmann::json servers = nlohmann::json::array();
  for (const Backend& b : *ctx_.backends) {
    if (b.removed) {
      continue;
    }
    ServerTotals s = sumServer(*ctx_.workers, b.id);
    nlohmann::json responses;
    for (size_t c = 1; c < 6; ++c) {
      responses[std::string(kClasses[c])] = s.by_class[c];
    }
    servers.push_back({{"name", b.name},
                       {"address", b.address_text},
                       {"weight", b.weight},
                       {"backup", b.backup},
                       {"health", ctx_.health->isUp(b.id) ? "up" : "down"},
                       {"admin", adminStateName(admin_[b.id])},
                       {"max_conn", b.max_conn},
                       {"slots_used", ctx_.slots != nullptr ? ctx_.slots->active(b.id) : 0},
                       {"inflight", s.inflight},
                       {"requests", s.requests},
                       {"failures", s.failures},
                       {"response_time_us_total", s.response_time.sum_us},
                       {"responses_total", s.responses},
                       {"responses", responses}});
    if (ctx_.outlier != nullptr) {
      servers.back()["outlier"] = outlierJson(*ctx_.outlier, b.id);
    }
    addCheckJson(servers.back(), ctx_.health->stats(b.id));
    sinceAdminChange(servers.back(), admin_changed_[b.id]);
  }
  nlohmann::json responses;
  for (size_t c = 1; c < 6; ++c) {
    responses[std::string(kClasses[c])] = t.by_class[c];
  }
  nlohmann::json out = {
      {"node", ctx_.node},
      {"algorithm", ctx_.algorithm},
      {"uptime_s",
       std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count()},
      {"totals",
       {{"connections_total", t.connections_total},
        {"connections_active", t.connections_active},
        {"requests", t.requests},
        {"responses", responses},
        {"retries", t.retries},
        {"retries_budget_exhausted", t.retries_budget_exhausted},
        {"no_server", t.no_server},
        {"bad_gateway", t.bad_gateway},
        {"gateway_timeout", t.gateway_timeout},
        {"bad_requests", t.bad_requests},
        {"proxy_protocol_errors", t.proxy_protocol_errors},
        {"slow_clients", {{"head", t.slow_head}, {"body", t.slow_body}, {"send", t.slow_send}}},
        {"h2", h2Json(t)},
        {"queue",
         {{"current", ctx_.slots != nullptr ? ctx_.slots->queued() : 0},
          {"queued", t.queued},
          {"full", t.queue_full},
          {"timeouts", t.queue_timeouts}}},
        {"bytes_in", t.bytes_in},
        {"bytes_out", t.bytes_out}}},
      {"servers", servers}};
  // Pending drains: servers a reload removed that still finish requests, and servers drained
  // through the admin API with requests in flight.
  nlohmann::json draining = nlohmann::json::array();
  for (const Backend& b : *ctx_.backends) {
    const bool drained = b.removed || admin_[b.id] != AdminState::Ready;
    const uint64_t inflight = drained ? sumServer(*ctx_.workers, b.id).inflight : 0;
    if (inflight != 0) {
      draining.push_back({{"name", b.name},
                          {"address", b.address_text},
                          {"why", b.removed ? "removed by a reload" : std::string(adminStateName(admin_[b.id]))},
                          {"inflight", inflight}});
    }
  }
  out["draining"] = std::move(draining);
  if (ctx_.db != nullptr) {
    nlohmann::json frontends = ctx_.db->stateJson();
    for (auto& f : frontends) {
      for (auto& server : f["servers"]) {
        const std::string name = server["name"].get<std::string>();
        auto admin = db_admin_.find(name);
        server["admin"] = adminStateName(admin == db_admin_.end() ? AdminState::Ready : admin->second);
        if (auto changed = db_admin_changed_.find(name); changed != db_admin_changed_.end()) {
          sinceAdminChange(server, changed->second);
        }
      }
    }
    out["db_frontends"] = std::move(frontends);
  }
  if (ctx_.vrrp != nullptr) {
    out["vrrp"] = vrrpJson(*ctx_.vrrp);
  }
  if (ctx_.monitor != nullptr) {
    ctx_.monitor->addTo(out);  // reads "servers" and "db_frontends"
  }
  return out.dump();
}

std::string StatsHandler::metricsText() const {
  Totals t = sumTotals(*ctx_.workers);
  metrics::PrometheusWriter w;
  std::string_view node = ctx_.node;
  auto counter = [&](std::string_view name, std::string_view help, uint64_t value) {
    w.family(name, "counter", help);
    w.sample(name, {{"node", node}}, value);
  };
  counter("fulcrum_lb_requests_total", "Client requests received.", t.requests);
  w.family("fulcrum_lb_responses_total", "counter", "Responses sent to clients, by status class.");
  for (size_t c = 1; c < 6; ++c) {
    w.sample("fulcrum_lb_responses_total", {{"node", node}, {"code", kClasses[c]}}, t.by_class[c]);
  }
  counter("fulcrum_lb_connections_total", "Client connections accepted.", t.connections_total);
  w.family("fulcrum_lb_connections_active", "gauge", "Client connections open now.");
  w.sample("fulcrum_lb_connections_active", {{"node", node}}, t.connections_active);
  counter("fulcrum_lb_retries_total", "Requests redispatched to another server.", t.retries);
  counter("fulcrum_lb_retries_budget_exhausted_total",
          "Retries not made because the retry budget (retry_budget_percent, retry_budget_min) was spent.",
          t.retries_budget_exhausted);
  counter("fulcrum_lb_no_server_total", "503 answers: no server available or reachable.", t.no_server);
  counter("fulcrum_lb_bad_gateway_total", "502 answers: a server failed before answering.", t.bad_gateway);
  counter("fulcrum_lb_gateway_timeout_total", "504 answers: a server did not answer in time.",
          t.gateway_timeout);
  counter("fulcrum_lb_bad_requests_total", "Requests refused as malformed.", t.bad_requests);
  counter("fulcrum_lb_proxy_protocol_errors_total",
          "Connections closed for a malformed or late PROXY header, or a sender not in accept_proxy_from.",
          t.proxy_protocol_errors);
  counter("fulcrum_lb_connections_evicted_total",
          "Idle keep-alive connections closed to make room for a new one at max_connections.", t.evicted);
  counter("fulcrum_lb_connections_refused_total",
          "Connections closed at accept: max_connections reached with no idle one to close.", t.refused);
  w.family("fulcrum_lb_slow_client_closes_total", "counter",
           "Client connections ended for being slow, by reason (head: request head not in within "
           "http_request_ms, a 408; body: request body under min_body_rate, a 408; send: a response "
           "not taken within client_ms).");
  w.sample("fulcrum_lb_slow_client_closes_total", {{"node", node}, {"reason", "head"}}, t.slow_head);
  w.sample("fulcrum_lb_slow_client_closes_total", {{"node", node}, {"reason", "body"}}, t.slow_body);
  w.sample("fulcrum_lb_slow_client_closes_total", {{"node", node}, {"reason", "send"}}, t.slow_send);
  counter("fulcrum_lb_h2_connections_total", "Client connections that spoke HTTP/2 (h2 by ALPN, or h2c).",
          t.h2_connections);
  counter("fulcrum_lb_h2_streams_total", "HTTP/2 streams (requests) opened by clients.", t.h2_streams);
  counter("fulcrum_lb_h2_resets_received_total", "RST_STREAM frames received from HTTP/2 clients.",
          t.h2_resets_received);
  w.family("fulcrum_lb_h2_goaway_total", "counter",
           "HTTP/2 connections the lb ended with an error GOAWAY, by reason (protocol_error: a frame the "
           "protocol forbids; rapid_reset: streams reset faster than the budget (CVE-2023-44487); "
           "continuation_flood: a header block of too many frames or bytes; control_flood: SETTINGS, PING, "
           "PRIORITY or empty DATA frames beyond the budget; stalled: a client that took no response byte "
           "within client_ms, or left a header block unfinished past http_request_ms).");
  for (size_t r = 0; r < static_cast<size_t>(H2Abuse::kCount); ++r) {
    w.sample("fulcrum_lb_h2_goaway_total",
             {{"node", node}, {"reason", h2AbuseName(static_cast<H2Abuse>(r))}}, t.h2_goaway[r]);
  }
  if (ctx_.firewall != nullptr) {
    w.family("fulcrum_lb_firewall_refused_total", "counter",
             "Connections closed at accept by [lb.firewall], by reason (deny: a deny entry; "
             "not_allowed: outside the allow list).");
    w.sample("fulcrum_lb_firewall_refused_total", {{"node", node}, {"reason", "deny"}},
             ctx_.firewall->denied());
    w.sample("fulcrum_lb_firewall_refused_total", {{"node", node}, {"reason", "not_allowed"}},
             ctx_.firewall->notAllowed());
  }
  if (ctx_.clients != nullptr) {
    const core::ClientTable& c = *ctx_.clients;
    w.family("fulcrum_lb_client_limited_total", "counter",
             "Refused by [lb.limits] per client address (rate: a 429 over rate_per_ip; conn: a "
             "connection closed at accept over conn_per_ip; table_full: no entry could be had, "
             "every one held by an address with open connections).");
    w.sample("fulcrum_lb_client_limited_total", {{"node", node}, {"reason", "rate"}}, c.refusedRequests());
    w.sample("fulcrum_lb_client_limited_total", {{"node", node}, {"reason", "conn"}}, c.refusedConnections());
    w.sample("fulcrum_lb_client_limited_total", {{"node", node}, {"reason", "table_full"}}, c.tableFull());
    w.family("fulcrum_lb_client_table_entries", "gauge", "Client addresses tracked for [lb.limits].");
    w.sample("fulcrum_lb_client_table_entries", {{"node", node}}, uint64_t{c.size()});
    counter("fulcrum_lb_client_table_evictions_total",
            "Client addresses forgotten to make room for new ones (least recently seen first).",
            c.evictions());
  }
  auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  // One family of handshakes by result: full, resumed, failed.
  auto handshakes = [&](std::string_view name, std::string_view help, const tls::TlsStats& s) {
    // `resumed` first: a handshake counts in `handshakes` before `resumed`, so full never goes below 0.
    uint64_t resumed = get(s.resumed);
    uint64_t all = get(s.handshakes);
    w.family(name, "counter", help);
    w.sample(name, {{"node", node}, {"result", "full"}}, all - resumed);
    w.sample(name, {{"node", node}, {"result", "resumed"}}, resumed);
    w.sample(name, {{"node", node}, {"result", "failed"}}, get(s.handshake_failures));
  };
  if (ctx_.tls != nullptr) {
    tls::TlsStats& s = ctx_.tls->stats();
    handshakes("fulcrum_lb_tls_handshakes_total",
               "TLS handshakes on the https listener, by result (full, resumed from a ticket, failed: "
               "plaintext, garbage, a refused version or suite, a client gone mid-handshake).",
               s);
    counter("fulcrum_lb_tls13_handshakes_total", "Completed TLS handshakes that chose TLS 1.3.",
            get(s.tls13));
    w.family("fulcrum_lb_tls_certificate_expiry_timestamp_seconds", "gauge",
             "When each certificate in force stops being valid (Unix time).");
    for (const tls::CertificateInfo& c : ctx_.tls->certificates()) {
      w.sample("fulcrum_lb_tls_certificate_expiry_timestamp_seconds",
               {{"node", node}, {"file", c.file}, {"key", c.key_type}}, static_cast<double>(c.not_after));
    }
  }
  if (ctx_.upstream_tls != nullptr) {
    tls::TlsStats& s = ctx_.upstream_tls->stats();
    handshakes("fulcrum_lb_upstream_tls_handshakes_total",
               "TLS handshakes with the web nodes ([security] internal_tls), by result (full, resumed "
               "from the server's ticket, failed).",
               s);
    counter("fulcrum_lb_upstream_tls_verify_failures_total",
            "Failed handshakes with web nodes whose certificate was refused (wrong CA, wrong address, expired).",
            get(s.verify_failures));
  }
  if (ctx_.stats_tls != nullptr) {
    tls::TlsStats& s = ctx_.stats_tls->stats();
    handshakes("fulcrum_lb_stats_tls_handshakes_total",
               "TLS handshakes on the stats listener ([security] internal_tls), by result (full, resumed, "
               "failed).",
               s);
    counter(
        "fulcrum_lb_stats_tls_verify_failures_total",
        "Failed handshakes on the stats listener whose client certificate was refused (another CA, expired).",
        get(s.verify_failures));
  }
  if (ctx_.acme != nullptr) {
    counter("fulcrum_lb_acme_certificates_issued_total", "Certificates this node obtained from the ACME CA.",
            ctx_.acme->issued());
    counter("fulcrum_lb_acme_failures_total",
            "Failed ACME orders (retried with backoff while the current certificate serves).",
            ctx_.acme->failures());
  }
  w.family("fulcrum_lb_queue_current", "gauge",
           "Requests waiting now for a server slot ([[web.node]] max_conn), across the workers.");
  w.sample("fulcrum_lb_queue_current", {{"node", node}}, uint64_t{ctx_.slots != nullptr ? ctx_.slots->queued() : 0});
  counter("fulcrum_lb_queued_total", "Requests that waited in the queue for a server slot.", t.queued);
  w.family("fulcrum_lb_queue_refused_total", "counter",
           "503 answers from the queue, by reason (full: every server at its max_conn and the queue full "
           "or off; timeout: no slot within queue_timeout_ms).");
  w.sample("fulcrum_lb_queue_refused_total", {{"node", node}, {"reason", "full"}}, t.queue_full);
  w.sample("fulcrum_lb_queue_refused_total", {{"node", node}, {"reason", "timeout"}}, t.queue_timeouts);
  w.family("fulcrum_lb_queue_seconds", "histogram", "Time the requests served from the queue waited for a slot.");
  w.histogram("fulcrum_lb_queue_seconds", {{"node", node}}, t.queue_time);
  w.family(
      "fulcrum_lb_request_duration_seconds", "histogram",
      "Time from a request's first byte to the last byte of its answer queued to the client, per frontend.");
  w.histogram("fulcrum_lb_request_duration_seconds", {{"node", node}, {"frontend", "http"}}, t.total_time[0]);
  if (ctx_.tls != nullptr) {
    w.histogram("fulcrum_lb_request_duration_seconds", {{"node", node}, {"frontend", "https"}},
                t.total_time[1]);
  }
  counter("fulcrum_lb_received_bytes_total", "Bytes read from clients.", t.bytes_in);
  counter("fulcrum_lb_sent_bytes_total", "Bytes written to clients.", t.bytes_out);

  // Servers a reload removed leave the metrics (their in-flight requests end unseen here).
  const auto& all = *ctx_.backends;
  std::vector<Backend> backends;
  std::copy_if(all.begin(), all.end(), std::back_inserter(backends), [](const Backend& b) { return !b.removed; });
  w.family("fulcrum_lb_server_up", "gauge", "1 when the server passes its health checks.");
  for (const Backend& b : backends) {
    w.sample("fulcrum_lb_server_up", {{"node", node}, {"server", b.name}},
             uint64_t{ctx_.health->isUp(b.id) ? 1u : 0u});
  }
  w.family("fulcrum_lb_server_in_rotation", "gauge", "1 when the server's admin state is ready.");
  for (const Backend& b : backends) {
    w.sample("fulcrum_lb_server_in_rotation", {{"node", node}, {"server", b.name}},
             uint64_t{admin_[b.id] == AdminState::Ready ? 1u : 0u});
  }
  w.family("fulcrum_lb_server_admin_state", "gauge",
           "1 for each server's admin state (ready, drain, maint), 0 for the others.");
  for (const Backend& b : backends) {
    for (AdminState state : {AdminState::Ready, AdminState::Drain, AdminState::Maint}) {
      w.sample("fulcrum_lb_server_admin_state",
               {{"node", node}, {"server", b.name}, {"state", adminStateName(state)}},
               uint64_t{admin_[b.id] == state ? 1u : 0u});
    }
  }
  if (ctx_.outlier != nullptr) {
    const OutlierEjector& e = ctx_.outlier->ejector();
    w.family("fulcrum_lb_server_ejected", "gauge",
             "1 while outlier ejection keeps the server out of rotation ([lb.outlier]).");
    for (const Backend& b : backends) {
      w.sample("fulcrum_lb_server_ejected", {{"node", node}, {"server", b.name}},
               uint64_t{e.ejected(b.id) ? 1u : 0u});
    }
    w.family("fulcrum_lb_outlier_ejections_total", "counter",
             "Outlier ejections, by reason (consecutive_5xx, consecutive_failures, slow).");
    for (const Backend& b : backends) {
      for (OutlierReason reason : kOutlierReasons) {
        w.sample("fulcrum_lb_outlier_ejections_total",
                 {{"node", node}, {"server", b.name}, {"reason", outlierReasonName(reason)}},
                 e.ejectionsTotal(b.id, reason));
      }
    }
  }
  {
    std::vector<CheckSeries> checks;
    for (const Backend& b : backends) {
      checks.push_back(CheckSeries{{{"node", node}, {"server", b.name}}, ctx_.health->stats(b.id)});
    }
    writeCheckMetrics(w, "fulcrum_lb_server", checks);
  }
  std::vector<ServerTotals> per(all.size());
  for (const Backend& b : backends) {
    per[b.id] = sumServer(*ctx_.workers, b.id);
  }
  w.family("fulcrum_lb_server_requests_total", "counter", "Requests sent to each server (attempts).");
  for (const Backend& b : backends) {
    w.sample("fulcrum_lb_server_requests_total", {{"node", node}, {"server", b.name}}, per[b.id].requests);
  }
  w.family("fulcrum_lb_server_failures_total", "counter",
           "Connect failures, resets and timeouts per server.");
  for (const Backend& b : backends) {
    w.sample("fulcrum_lb_server_failures_total", {{"node", node}, {"server", b.name}}, per[b.id].failures);
  }
  w.family("fulcrum_lb_server_inflight", "gauge", "Requests waiting for each server's answer.");
  for (const Backend& b : backends) {
    w.sample("fulcrum_lb_server_inflight", {{"node", node}, {"server", b.name}}, per[b.id].inflight);
  }
  if (ctx_.pools != nullptr) {
    std::vector<uint64_t> idle(all.size()), reused(all.size());
    for (const auto& p : *ctx_.pools) {
      for (const Backend& b : backends) {
        idle[b.id] += p->idle[b.id].get();
        reused[b.id] += p->reused[b.id].get();
      }
    }
    w.family("fulcrum_lb_server_connections_open", "gauge",
             "Connections to each server open now: one per request in flight, plus idle keep-alive ones.");
    for (const Backend& b : backends) {
      w.sample("fulcrum_lb_server_connections_open", {{"node", node}, {"server", b.name}},
               per[b.id].inflight + idle[b.id]);
    }
    w.family("fulcrum_lb_server_connections_idle", "gauge",
             "Idle keep-alive connections parked for each server.");
    for (const Backend& b : backends) {
      w.sample("fulcrum_lb_server_connections_idle", {{"node", node}, {"server", b.name}}, idle[b.id]);
    }
    w.family("fulcrum_lb_server_connections_total", "counter",
             "Connections opened to each server (connect attempts that got a socket; reuses not counted).");
    for (const Backend& b : backends) {
      w.sample("fulcrum_lb_server_connections_total", {{"node", node}, {"server", b.name}}, per[b.id].connects);
    }
    w.family("fulcrum_lb_server_connections_reused_total", "counter",
             "Requests sent to each server on an idle keep-alive connection.");
    for (const Backend& b : backends) {
      w.sample("fulcrum_lb_server_connections_reused_total", {{"node", node}, {"server", b.name}},
               reused[b.id]);
    }
  }
  w.family("fulcrum_lb_server_max_conn", "gauge", "Each server's max_conn (0: no limit).");
  for (const Backend& b : backends) {
    w.sample("fulcrum_lb_server_max_conn", {{"node", node}, {"server", b.name}}, uint64_t{b.max_conn});
  }
  if (ctx_.slots != nullptr) {
    w.family("fulcrum_lb_server_slots_used", "gauge",
             "Requests holding one of a server's max_conn slots now (counted only while it has a limit).");
    for (const Backend& b : backends) {
      w.sample("fulcrum_lb_server_slots_used", {{"node", node}, {"server", b.name}},
               uint64_t{ctx_.slots->active(b.id)});
    }
  }
  w.family("fulcrum_lb_server_response_seconds", "histogram",
           "Time from sending a request to the server's response head.");
  for (const Backend& b : backends) {
    w.histogram("fulcrum_lb_server_response_seconds", {{"node", node}, {"server", b.name}},
                per[b.id].response_time);
  }
  w.family("fulcrum_lb_server_responses_total", "counter", "Responses from each server, by status class.");
  for (const Backend& b : backends) {
    for (size_t c = 1; c < 6; ++c) {
      w.sample("fulcrum_lb_server_responses_total",
               {{"node", node}, {"server", b.name}, {"code", kClasses[c]}}, per[b.id].by_class[c]);
    }
  }
  if (ctx_.db != nullptr) {
    ctx_.db->writeMetrics(w, node);
  }
  if (ctx_.vrrp != nullptr) {
    writeVrrpMetrics(w, node, *ctx_.vrrp);
  }
  metrics::writeProcessMetrics(w);
  return w.take();
}

std::string loadOrCreateToken(const std::string& path, std::string& error) {
  auto make = [] {
    unsigned char raw[32];
    if (getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw)) {
      return std::string();  // refused below: no token is better than a guessable one
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string token;
    for (unsigned char c : raw) {
      token += kHex[c >> 4];
      token += kHex[c & 15];
    }
    return token;
  };
  // Shared with the db agents of the same state_dir, which may be creating it at this moment.
  std::string token;
  if (!core::loadOrCreateSecretFile(path, make, token, error)) {
    return "";
  }
  if (token.size() < 16) {
    error = path + ": token too short (16 characters at least)";
    return "";
  }
  return token;
}

}  // namespace fulcrum::lb
