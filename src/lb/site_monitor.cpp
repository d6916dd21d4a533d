#include "lb/site_monitor.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "lb/proxy_totals.h"

namespace fulcrum::lb {

namespace {

constexpr size_t kEvents = 200;            // state changes kept
constexpr size_t kFlapChanges = 4;         // this many changes ...
constexpr int64_t kFlapWindowMs = 120000;  // ... within two minutes is flapping
constexpr uint64_t kMaxPeerBody = 64 * 1024;

double ms(uint64_t us) {
  return static_cast<double>(us) / 1000.0;
}

// Rates over `seconds` from two cumulative counts and a histogram difference.
WindowRates rates(uint64_t requests, uint64_t errors, const core::HistogramSnapshot& time, double seconds) {
  WindowRates r;
  if (seconds <= 0) {
    return r;
  }
  r.rps = static_cast<double>(requests) / seconds;
  r.errors_per_s = static_cast<double>(errors) / seconds;
  r.p50_ms = ms(time.quantileUs(0.5));
  r.p90_ms = ms(time.quantileUs(0.9));
  r.p99_ms = ms(time.quantileUs(0.99));
  return r;
}

nlohmann::json ratesJson(const WindowRates& r) {
  auto round = [](double v) { return static_cast<double>(static_cast<int64_t>(v * 100 + 0.5)) / 100; };
  return {{"rps", round(r.rps)},
          {"errors_per_s", round(r.errors_per_s)},
          {"p50_ms", round(r.p50_ms)},
          {"p90_ms", round(r.p90_ms)},
          {"p99_ms", round(r.p99_ms)}};
}

std::string bytesText(int64_t bytes) {
  if (bytes < 10 * 1024) {
    return fmt::format("{} B", bytes);
  }
  if (bytes < 10 * 1024 * 1024) {
    return fmt::format("{} kB", bytes / 1024);
  }
  return fmt::format("{} MB", bytes / (1024 * 1024));
}

}  // namespace

// A node this load balancer asks about itself: another load balancer, a database agent, etcd.
struct SiteMonitor::Peer {
  enum class Kind : uint8_t { Lb, Db, Etcd };
  Kind kind;
  std::string role;  // "lb", "db", "etcd"
  std::string name;
  std::string address;
  bool checked = false;
  std::string state = "checking";
  NodeStatus status = NodeStatus::Unknown;
  std::string detail;
  // Database members, from the agent's /status.
  std::optional<int64_t> timeline, lag_bytes;
  std::string leader;
  bool paused = false;  // the cluster is in maintenance mode (`fulcrum db pause`)
};

SiteMonitor::SiteMonitor(core::EventLoop& loop, SiteMonitorInputs inputs)
    : loop_(loop),
      in_(std::move(inputs)),
      web_reason_(in_.backends->size()),
      web_admin_(in_.backends->size(), "ready"),
      log_(kEvents, kFlapChanges, kFlapWindowMs),
      server_rates_(in_.backends->size()),
      sampler_(loop, [this] {
        sample();
        sampler_.armAfter(kSampleEvery);
      }),
      started_ms_(nowMs()) {
  const config::Site& site = *in_.site;
  std::vector<HealthTarget> targets;
  auto add = [&](Peer::Kind kind, std::string role, std::string name, const core::SocketAddress& address,
                 std::string path, std::string shown) {
    auto id = static_cast<uint32_t>(peers_.size());
    // Under internal_tls the etcd members, the db agents and the lbs' stats listeners speak TLS
    // (the lb's client certificate goes with it); an lb's http listener (no stats listener: a
    // connect check) is plain.
    const bool plain = kind == Peer::Kind::Lb && path.empty();
    // An http listener behind another balancer ([lb] accept_proxy) expects a PROXY header first.
    const uint8_t send_proxy = plain && site.lb.accept_proxy ? 2 : 0;
    targets.push_back(HealthTarget{id, name, address, std::move(path), plain, send_proxy});
    peers_.push_back(Peer{kind, std::move(role), std::move(name), std::move(shown)});
  };
  for (const config::LbNode& lb : site.lb.nodes) {
    if (lb.name == in_.self) {
      continue;
    }
    // Its stats listener's /healthz when it has one; else all we can tell is that it accepts.
    if (lb.stats) {
      add(Peer::Kind::Lb, "lb", lb.name, *lb.stats, "/healthz", lb.http.toString());
    } else {
      add(Peer::Kind::Lb, "lb", lb.name, lb.http, "", lb.http.toString());
    }
  }
  for (const config::DbNode& db : site.db.nodes) {
    add(Peer::Kind::Db, "db", db.name, db.agent, "/status", db.pg.toString());
  }
  const auto& endpoints = site.etcd.endpoints;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    // The names `fulcrum status` gives them.
    std::string name = endpoints.size() == 1 ? "etcd" : "etcd-" + std::to_string(i + 1);
    add(Peer::Kind::Etcd, "etcd", std::move(name), endpoints[i], "/health", endpoints[i].toString());
  }
  if (!targets.empty()) {
    HealthOptions options;
    options.interval = kPeerInterval;
    options.timeout = std::chrono::seconds(1);
    options.rise = 1;  // the dashboard shows the last answer; the events log keeps the history
    options.fall = 1;
    options.max_body_bytes = kMaxPeerBody;
    options.tls = in_.tls;
    peer_checker_ = std::make_unique<HealthChecker>(loop_, std::move(targets), options, nullptr);
    peer_checker_->setOnResult([this](uint32_t id, bool ok, std::string_view reason, int, std::string_view body) {
      onPeerResult(id, ok, reason, body);
    });
  }
}

SiteMonitor::~SiteMonitor() = default;

int64_t SiteMonitor::nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void SiteMonitor::start() {
  const int64_t now = nowMs();
  for (size_t id = 0; id < in_.backends->size(); ++id) {
    if (!(*in_.backends)[id].removed) {
      NodeView v = webView(id, now);
      log_.observe(v.name, v.state, v.status, "", now);
    }
  }
  snapshots_.push(take());
  sampler_.armAfter(kSampleEvery);
  if (peer_checker_) {
    peer_checker_->start();
  }
}

void SiteMonitor::serverChanged(uint32_t id, bool up, std::string_view reason) {
  if (id >= web_reason_.size()) {
    return;
  }
  web_reason_[id] = std::string(reason);
  const int64_t now = nowMs();
  NodeView v = webView(id, now);
  (void)up;  // read back from the checker, which has already flipped
  log_.observe(v.name, v.state, v.status, reason, now);
}

void SiteMonitor::serversChanged() {
  const size_t n = in_.backends->size();
  const int64_t now = nowMs();
  for (size_t id = web_reason_.size(); id < n; ++id) {
    web_reason_.emplace_back("added by a reload");
    web_admin_.emplace_back("ready");
    server_rates_.emplace_back();
    NodeView v = webView(id, now);
    log_.observe(v.name, v.state, v.status, "added by a reload", now);
  }
}

void SiteMonitor::adminChanged(uint32_t id, std::string_view admin) {
  if (id >= web_admin_.size()) {
    return;
  }
  web_admin_[id] = std::string(admin);
  const int64_t now = nowMs();
  NodeView v = webView(id, now);
  log_.observe(v.name, v.state, v.status, "admin API", now);
}

NodeView SiteMonitor::webView(size_t id, int64_t now_ms) const {
  const Backend& b = (*in_.backends)[id];
  NodeView v;
  v.name = b.name;
  const bool up = in_.health->isUp(b.id);
  if (!up) {
    v.state = "down";
    v.status = NodeStatus::Down;
    v.detail = web_reason_[id];
  } else if (web_admin_[id] != "ready") {
    v.state = web_admin_[id];  // taken out of rotation on purpose: not a failure
    v.status = NodeStatus::Warn;
    v.detail = "admin";
  } else {
    v.state = "up";
    v.status = NodeStatus::Ok;
  }
  v.since_ms = log_.since(v.name);
  if (v.since_ms == 0) {
    v.since_ms = started_ms_;
  }
  v.flapping = log_.flapping(v.name, now_ms);
  return v;
}

void SiteMonitor::onPeerResult(uint32_t id, bool ok, std::string_view reason, std::string_view body) {
  if (id >= peers_.size()) {
    return;
  }
  Peer& p = peers_[id];
  p.checked = true;
  p.detail.clear();
  if (!ok) {
    p.state = "down";
    p.status = NodeStatus::Down;
    p.detail = std::string(reason);
  } else if (p.kind == Peer::Kind::Lb) {
    p.state = "up";
    p.status = NodeStatus::Ok;
  } else if (p.kind == Peer::Kind::Etcd) {
    auto j = nlohmann::json::parse(body, nullptr, false);
    const bool healthy = j.is_object() && j.value("health", "") == "true";
    p.state = healthy ? "up" : "unhealthy";
    p.status = healthy ? NodeStatus::Ok : NodeStatus::Down;
    if (!healthy) {
      p.detail = j.is_object() ? j.value("reason", "") : "bad /health answer";
    }
  } else {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object()) {
      p.state = "unknown";
      p.status = NodeStatus::Down;
      p.detail = "bad /status answer";
    } else {
      const std::string role = j.value("role", "");
      const bool pg_running = j.value("pg_running", false);
      p.timeline = j.contains("timeline") && j["timeline"].is_number_integer()
                       ? std::optional<int64_t>(j["timeline"].get<int64_t>())
                       : std::nullopt;
      p.lag_bytes = j.contains("lag_bytes") && j["lag_bytes"].is_number_integer()
                        ? std::optional<int64_t>(j["lag_bytes"].get<int64_t>())
                        : std::nullopt;
      p.leader = j.contains("leader") && j["leader"].is_string() ? j["leader"].get<std::string>() : "";
      bool writable = false;
      if (auto lease = j.find("lease"); lease != j.end() && lease->is_object()) {
        writable = lease->value("held", false) && lease->value("may_write", false);
      }
      p.state = role.empty() ? "unknown" : role;
      if (role == "primary") {
        p.status = writable ? NodeStatus::Ok : NodeStatus::Warn;
        p.detail = writable ? "" : "fenced: no leader lease";
      } else if (role == "replica") {
        const bool lagging = p.lag_bytes && *p.lag_bytes > static_cast<int64_t>(in_.site->db.max_lag_bytes);
        p.status = lagging ? NodeStatus::Warn : NodeStatus::Ok;
        p.detail = lagging ? "lag " + bytesText(*p.lag_bytes) : "";
      } else {
        // Starting, stopped, rewinding: the agent answers but PostgreSQL does not serve.
        p.status = pg_running ? NodeStatus::Warn : NodeStatus::Down;
        p.detail = pg_running ? "" : "PostgreSQL not running";
      }
      // Maintenance mode is the operator's choice, but while it lasts nobody replaces a dead
      // primary: a warning on every member, so the summary line says it too.
      p.paused = j.contains("paused") && j["paused"].is_object();
      if (p.paused) {
        p.status = p.status == NodeStatus::Ok ? NodeStatus::Warn : p.status;
        p.detail += std::string(p.detail.empty() ? "" : "; ") + "paused: no automatic failover";
      }
    }
  }
  log_.observe(p.name, p.state, p.status, p.detail.empty() ? reason : std::string_view(p.detail), nowMs());
}

SiteMonitor::Snapshot SiteMonitor::take() const {
  Snapshot s;
  s.at = loop_.clock().now();
  Totals t = sumTotals(*in_.workers);
  s.requests = t.requests;
  s.errors = t.by_class[5];
  s.total_time = t.total_time[0];
  s.total_time += t.total_time[1];
  for (const Backend& b : *in_.backends) {
    ServerTotals st = sumServer(*in_.workers, b.id);
    s.server_requests.push_back(st.requests);
    s.server_errors.push_back(st.by_class[5] + st.failures);
    s.server_time.push_back(st.response_time);
  }
  return s;
}

void SiteMonitor::sample() {
  Snapshot now = take();
  if (!snapshots_.empty()) {
    const Snapshot& last = snapshots_.back();
    const double dt = std::chrono::duration<double>(now.at - last.at).count();
    WindowRates r = rates(now.requests - last.requests, now.errors - last.errors,
                          now.total_time.since(last.total_time), dt);
    history_.push(SitePoint{nowMs(), r.rps, r.errors_per_s, r.p99_ms});
  }
  snapshots_.push(std::move(now));
  // The window: from the oldest snapshot kept to this one.
  const Snapshot& first = snapshots_[0];
  const Snapshot& last = snapshots_.back();
  const double window = std::chrono::duration<double>(last.at - first.at).count();
  site_rates_ = rates(last.requests - first.requests, last.errors - first.errors,
                      last.total_time.since(first.total_time), window);
  for (size_t i = 0; i < server_rates_.size(); ++i) {
    if (i >= first.server_requests.size() || i >= last.server_requests.size()) {
      server_rates_[i] = WindowRates{};  // added by a reload: no window yet
      continue;
    }
    server_rates_[i] = rates(last.server_requests[i] - first.server_requests[i],
                             last.server_errors[i] - first.server_errors[i],
                             last.server_time[i].since(first.server_time[i]), window);
  }
}

WindowRates SiteMonitor::serverRates(uint32_t id) const {
  return id < server_rates_.size() ? server_rates_[id] : WindowRates{};
}

void SiteMonitor::addTo(nlohmann::json& state) const {
  const int64_t now = nowMs();
  std::vector<NodeView> views;
  nlohmann::json nodes = nlohmann::json::array();
  auto node = [&](std::string role, const NodeView& v, std::string address) {
    nlohmann::json n = {{"role", std::move(role)},
                        {"name", v.name},
                        {"address", std::move(address)},
                        {"state", v.state},
                        {"status", nodeStatusName(v.status)},
                        {"detail", v.detail},
                        {"since_ms", v.since_ms},
                        {"flapping", v.flapping},
                        {"changes", log_.recentChanges(v.name, now)}};
    views.push_back(v);
    nodes.push_back(std::move(n));
    return &nodes.back();
  };
  NodeView self{in_.self, "up", NodeStatus::Ok, "this node", started_ms_, false};
  std::string self_address;
  for (const config::LbNode& lb : in_.site->lb.nodes) {
    if (lb.name == in_.self) {
      self_address = lb.http.toString();
    }
  }
  node("lb", self, self_address);
  auto peerView = [&](const Peer& p) {
    NodeView v{p.name, p.state, p.status, p.detail, log_.since(p.name), log_.flapping(p.name, now)};
    if (v.since_ms == 0) {
      v.since_ms = started_ms_;
    }
    return v;
  };
  for (const Peer& p : peers_) {
    if (p.kind == Peer::Kind::Lb) {
      node("lb", peerView(p), p.address);
    }
  }
  for (size_t id = 0; id < in_.backends->size(); ++id) {
    if ((*in_.backends)[id].removed) {
      continue;
    }
    nlohmann::json* n = node("web", webView(id, now), (*in_.backends)[id].address_text);
    (*n)["rates"] = ratesJson(server_rates_[id]);
  }
  // Which database frontends of this node route to each member now (from their checks).
  auto routes = [&](const std::string& name) {
    nlohmann::json out = nlohmann::json::array();
    if (!state.contains("db_frontends")) {
      return out;
    }
    for (const auto& f : state["db_frontends"]) {
      for (const auto& s : f["servers"]) {
        if (s["name"] == name && s["health"] == "up") {
          std::string route = f["name"].get<std::string>() + (s.value("backup", false) ? " fallback" : "");
          if (std::find(out.begin(), out.end(), route) == out.end()) {
            out.push_back(route);
          }
        }
      }
    }
    return out;
  };
  for (const Peer& p : peers_) {
    if (p.kind == Peer::Kind::Db) {
      nlohmann::json* n = node("db", peerView(p), p.address);
      (*n)["timeline"] = p.timeline ? nlohmann::json(*p.timeline) : nlohmann::json();
      (*n)["lag_bytes"] = p.lag_bytes ? nlohmann::json(*p.lag_bytes) : nlohmann::json();
      (*n)["leader"] = p.leader;
      (*n)["paused"] = p.paused;
      (*n)["routes"] = routes(p.name);
    }
  }
  for (const Peer& p : peers_) {
    if (p.kind == Peer::Kind::Etcd) {
      node("etcd", peerView(p), p.address);
    }
  }
  NodeStatus worst = NodeStatus::Ok;
  for (const NodeView& v : views) {
    if (v.status == NodeStatus::Down || (v.status == NodeStatus::Warn && worst != NodeStatus::Down) ||
        (v.flapping && worst == NodeStatus::Ok)) {
      worst = v.status == NodeStatus::Down ? NodeStatus::Down : NodeStatus::Warn;
    }
  }
  state["now_ms"] = now;
  state["summary"] = {{"text", summarize(views, now)}, {"status", nodeStatusName(worst)}};
  state["nodes"] = std::move(nodes);
  for (size_t id = 0; id < server_rates_.size() && id < state["servers"].size(); ++id) {
    state["servers"][id]["rates"] = ratesJson(server_rates_[id]);
  }
  state["rates"] = ratesJson(site_rates_);
  state["rates_window_s"] = kWindowSamples * std::chrono::seconds(kSampleEvery).count();
  nlohmann::json events = nlohmann::json::array();
  const auto& changes = log_.changes();
  for (size_t i = changes.size(); i-- > 0;) {  // newest first
    const StateChange& c = changes[i];
    events.push_back({{"t_ms", c.t_ms},
                      {"node", c.node},
                      {"from", c.from},
                      {"to", c.to},
                      {"reason", c.reason},
                      {"flapping", c.flapping}});
  }
  state["events"] = std::move(events);
  state["flapping_rule"] = {{"changes", log_.flapChanges()}, {"window_s", log_.flapWindowMs() / 1000}};
  nlohmann::json points = nlohmann::json::array();
  for (size_t i = 0; i < history_.size(); ++i) {
    const SitePoint& p = history_[i];
    auto r2 = [](double v) { return static_cast<double>(static_cast<int64_t>(v * 100 + 0.5)) / 100; };
    points.push_back({p.t_ms, r2(p.rps), r2(p.errors_per_s), r2(p.p99_ms)});
  }
  state["history"] = {{"source", "lb"},
                      {"interval_ms", std::chrono::milliseconds(kSampleEvery).count()},
                      {"columns", {"t_ms", "rps", "errors_per_s", "p99_ms"}},
                      {"points", std::move(points)}};
  state["monitoring"] = {
      {"prometheus_url", prometheus_url_.empty() ? nlohmann::json() : nlohmann::json(prometheus_url_)}};
}

}  // namespace fulcrum::lb
