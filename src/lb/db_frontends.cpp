#include "lb/db_frontends.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "core/socket.h"
#include "lb/check_metrics.h"

namespace fulcrum::lb {

namespace {

// A failover is over in seconds: the frontends must notice within a second or two.
constexpr auto kMaxDbCheckInterval = std::chrono::milliseconds(1000);
// The agent's answer to /primary and /replica is its /status JSON, role included. A larger one
// still passes or fails by its status, with the role unknown.
constexpr uint64_t kMaxAgentAnswer = 64 * 1024;
// Patroni's HAProxy example uses `timeout client 30m` / `timeout server 30m`: pooled database
// connections stay idle far longer than an HTTP keep-alive (client_ms is for those).
constexpr auto kDbIdleTimeout = std::chrono::minutes(30);

}  // namespace

std::function<void()> afterAll(size_t count, std::function<void()> done) {
  auto remaining = std::make_shared<size_t>(count);
  return [remaining, done = std::move(done)] {
    if (--*remaining == 0) {
      done();
    }
  };
}

HealthOptions dbHealthOptions(const config::LbHealth& health) {
  HealthOptions options;
  options.interval = std::min<core::Duration>(core::millis(health.interval_ms), kMaxDbCheckInterval);
  options.timeout = core::millis(health.timeout_ms);  // a slow check is followed by the next at once
  options.rise = health.rise;
  options.fall = health.fall;
  options.expect_status = 200;
  options.start_down = true;
  return options;
}

// One frontend: its servers, which health check decides each one, and per-worker state.
struct DbFrontends::Frontend {
  std::string name;  // "db_write" | "db_read"
  core::SocketAddress address;
  std::vector<Backend> servers;
  std::vector<uint32_t> check_of;   // by server id: the health check deciding it
  std::vector<core::Fd> listeners;  // by worker, handed over when the worker starts
  std::vector<std::unique_ptr<TcpProxyStats>> stats;
  std::vector<std::unique_ptr<TcpProxyWorker>> workers;
  TcpProxyOptions options;
};

DbFrontends::DbFrontends(core::EventLoop& main_loop, core::WorkerGroup& workers)
    : main_loop_(main_loop), workers_(workers) {}

DbFrontends::~DbFrontends() = default;

std::unique_ptr<DbFrontends> DbFrontends::create(const config::Site& site, const config::LbNode& node,
                                                 unsigned threads, core::EventLoop& main_loop,
                                                 core::WorkerGroup& workers, tls::ClientContext* tls,
                                                 std::string& error) {
  std::unique_ptr<DbFrontends> self(new DbFrontends(main_loop, workers));
  const auto& nodes = site.db.nodes;
  const auto n = static_cast<uint32_t>(nodes.size());
  // Checks: ids 0..n-1 ask each agent GET /primary; n..2n-1 GET /replica?lag=N (db_read only).
  std::vector<HealthTarget> checks;
  for (uint32_t i = 0; i < n; ++i) {
    checks.push_back(HealthTarget{i, nodes[i].name + " (primary)", nodes[i].agent, "/primary"});
    self->checks_.push_back(CheckName{i, nodes[i].name, "primary", i});
  }
  if (node.db_read) {
    std::string replica = fmt::format("/replica?lag={}", site.db.max_lag_bytes);
    for (uint32_t i = 0; i < n; ++i) {
      checks.push_back(HealthTarget{n + i, nodes[i].name + " (replica)", nodes[i].agent, replica});
      self->checks_.push_back(CheckName{n + i, nodes[i].name, "replica", i});
    }
  }

  TcpProxyOptions options;
  options.connect_timeout = core::millis(site.lb.timeouts.connect_ms);
  options.idle_timeout = kDbIdleTimeout;
  options.retries = site.lb.retries;
  options.max_connections = std::max<uint32_t>(1, site.lb.limits.max_connections / threads);

  auto add = [&](std::string name, const core::SocketAddress& address, bool with_replicas) {
    auto f = std::make_unique<Frontend>();
    f->name = std::move(name);
    f->address = address;
    f->options = options;
    f->options.name = f->name;
    auto addServer = [&](const config::DbNode& db, bool backup, uint32_t check) {
      Backend b;
      b.id = static_cast<uint32_t>(f->servers.size());
      b.name = db.name;
      b.address = db.pg;
      b.address_text = db.pg.toString();
      b.backup = backup;
      f->servers.push_back(std::move(b));
      f->check_of.push_back(check);
    };
    for (uint32_t i = 0; i < n; ++i) {
      if (with_replicas) {
        addServer(nodes[i], false, n + i);  // a replica within max_lag_bytes
      }
      // db_write's only server; db_read's last resort (a backup: used while no replica is up).
      addServer(nodes[i], with_replicas, i);
    }
    // On the virtual IP, as the http listeners: bound before this node holds it (IP_FREEBIND).
    const bool on_vip = site.lb.vip && address.ip() == site.lb.vip->ip;
    f->listeners = core::listenTcpGroup(address, threads, error, on_vip);
    if (f->listeners.empty()) {
      return false;
    }
    for (unsigned w = 0; w < threads; ++w) {
      f->stats.push_back(std::make_unique<TcpProxyStats>(f->servers.size()));
    }
    f->workers.resize(threads);
    self->frontends_.push_back(std::move(f));
    return true;
  };
  if (node.db_write && !add("db_write", *node.db_write, false)) {
    return nullptr;
  }
  if (node.db_read && !add("db_read", *node.db_read, true)) {
    return nullptr;
  }
  DbFrontends* raw = self.get();
  HealthOptions health = dbHealthOptions(site.lb.health);
  health.tls = tls;
  health.max_body_bytes = kMaxAgentAnswer;
  self->roles_.assign(n, "unknown");
  self->checker_ = std::make_unique<HealthChecker>(
      main_loop, std::move(checks), health,
      [raw](uint32_t check, bool up, std::string_view) { raw->onHealthChange(check, up); });
  self->checker_->setOnResult([raw](uint32_t check, bool, std::string_view, int, std::string_view body) {
    raw->onAnswer(check, body);
  });
  return self;
}

void DbFrontends::onAnswer(uint32_t check, std::string_view body) {
  // Both checks of a member (/primary, /replica) carry its role: the latest answer wins.
  auto j = nlohmann::json::parse(body, nullptr, false);
  auto role = j.is_object() ? j.find("role") : j.end();
  roles_[checks_[check].node] =
      j.is_object() && role != j.end() && role->is_string() && !role->get<std::string>().empty()
          ? role->get<std::string>()
          : "unknown";
}

void DbFrontends::onHealthChange(uint32_t check, bool up) {
  workers_.postAll([this, check, up](core::EventLoop&, unsigned i) {
    for (auto& f : frontends_) {
      for (const Backend& b : f->servers) {
        if (f->check_of[b.id] == check && f->workers[i] != nullptr) {
          f->workers[i]->setUp(b.id, up);
        }
      }
    }
  });
}

bool DbFrontends::hasServer(std::string_view name) const {
  for (const auto& f : frontends_) {
    for (const Backend& b : f->servers) {
      if (b.name == name) {
        return true;
      }
    }
  }
  return false;
}

void DbFrontends::setInRotation(const std::string& name, bool in_rotation) {
  workers_.postAll([this, name, in_rotation](core::EventLoop&, unsigned i) {
    for (auto& f : frontends_) {
      for (const Backend& b : f->servers) {  // db_read lists a node twice: replica and fallback
        if (b.name == name && f->workers[i] != nullptr) {
          f->workers[i]->pool().setInRotation(b.id, in_rotation);
        }
      }
    }
  });
}

void DbFrontends::replaceFilter(core::IpFilter* filter) {
  filter_ = filter;
  workers_.postAll([this, filter](core::EventLoop&, unsigned i) {
    for (auto& f : frontends_) {
      if (f->workers[i]) {
        f->workers[i]->acceptor().setFilter(filter);
      }
    }
  });
}

void DbFrontends::startWorker(core::EventLoop& loop, unsigned index) {
  for (auto& f : frontends_) {
    Frontend* frontend = f.get();
    auto report = [this, frontend](uint32_t server, const std::string& reason) {
      uint32_t check = frontend->check_of[server];
      main_loop_.post([this, check, reason] { checker_->reportFailure(check, reason); });
    };
    f->workers[index] = std::make_unique<TcpProxyWorker>(loop, std::move(f->listeners[index]), f->servers,
                                                         "leastconn", f->options, *f->stats[index], report);
    f->workers[index]->acceptor().setFilter(filter_);
    // Every server starts down, as in the checker (start_down), until its agent vouches for it;
    // the checker's flips reach this worker as posted messages, after this runs.
    for (const Backend& b : f->servers) {
      f->workers[index]->setUp(b.id, false);
    }
  }
}

void DbFrontends::startChecks() {
  checker_->start();
}

void DbFrontends::drainWorker(unsigned index, std::function<void()> on_idle) {
  // The last frontend to go idle reports the worker idle.
  auto done = afterAll(frontends_.size(), std::move(on_idle));
  for (auto& f : frontends_) {
    f->workers[index]->drain(done);
  }
}

void DbFrontends::stopWorkers() {
  for (auto& f : frontends_) {
    f->workers.clear();
  }
}

std::string DbFrontends::summary() const {
  std::string out;
  for (const auto& f : frontends_) {
    out += fmt::format("{}{} on {}", out.empty() ? "" : ", ", f->name, f->address.toString());
  }
  return out;
}

namespace {

struct ServerSums {
  uint64_t sessions = 0, active = 0, connect_failures = 0, cut = 0;
};

}  // namespace

nlohmann::json DbFrontends::stateJson() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& f : frontends_) {
    uint64_t total = 0, active = 0, no_server = 0, refused = 0, bytes_in = 0, bytes_out = 0;
    for (const auto& s : f->stats) {
      total += s->connections_total.get();
      active += s->connections_active.get();
      no_server += s->no_server.get();
      refused += s->refused.get();
      bytes_in += s->bytes_in.get();
      bytes_out += s->bytes_out.get();
    }
    nlohmann::json servers = nlohmann::json::array();
    for (const Backend& b : f->servers) {
      ServerSums sums;
      for (const auto& s : f->stats) {
        sums.sessions += s->servers[b.id].sessions.get();
        sums.active += s->servers[b.id].active.get();
        sums.connect_failures += s->servers[b.id].connect_failures.get();
        sums.cut += s->servers[b.id].cut.get();
      }
      servers.push_back({{"name", b.name},
                         {"address", b.address_text},
                         {"role", roles_[checks_[f->check_of[b.id]].node]},
                         {"serves", checks_[f->check_of[b.id]].kind},
                         {"backup", b.backup},
                         {"health", checker_->isUp(f->check_of[b.id]) ? "up" : "down"},
                         {"sessions", sums.sessions},
                         {"active", sums.active},
                         {"connect_failures", sums.connect_failures},
                         {"cut", sums.cut}});
      addCheckJson(servers.back(), checker_->stats(f->check_of[b.id]));
    }
    out.push_back({{"name", f->name},
                   {"address", f->address.toString()},
                   {"connections_total", total},
                   {"connections_active", active},
                   {"no_server", no_server},
                   {"refused", refused},
                   {"bytes_in", bytes_in},
                   {"bytes_out", bytes_out},
                   {"servers", servers}});
  }
  return out;
}

void DbFrontends::writeMetrics(metrics::PrometheusWriter& w, std::string_view node) const {
  // Built from the JSON state: one place sums the per-worker counters.
  nlohmann::json state = stateJson();
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    const char* key;
  };
  static constexpr Family kFrontend[] = {
      {"fulcrum_lb_db_connections_total", "counter", "Client connections accepted by a database frontend.",
       "connections_total"},
      {"fulcrum_lb_db_connections_active", "gauge", "Client connections open now on a database frontend.",
       "connections_active"},
      {"fulcrum_lb_db_no_server_total", "counter",
       "Client connections closed without a server: none up, or every connect failed.", "no_server"},
      {"fulcrum_lb_db_refused_total", "counter", "Client connections refused over max_connections.",
       "refused"},
      {"fulcrum_lb_db_received_bytes_total", "counter", "Bytes read from database clients.", "bytes_in"},
      {"fulcrum_lb_db_sent_bytes_total", "counter", "Bytes written to database clients.", "bytes_out"},
  };
  static constexpr Family kServer[] = {
      {"fulcrum_lb_db_server_sessions_total", "counter", "Sessions connected to each database server.",
       "sessions"},
      {"fulcrum_lb_db_server_sessions_active", "gauge", "Sessions open now on each database server.",
       "active"},
      {"fulcrum_lb_db_server_connect_failures_total", "counter",
       "Connects to each database server refused, unreachable or timed out.", "connect_failures"},
      {"fulcrum_lb_db_server_cut_total", "counter", "Sessions cut because their server was marked down.",
       "cut"},
  };
  for (const Family& fam : kFrontend) {
    w.family(fam.name, fam.type, fam.help);
    for (const auto& f : state) {
      std::string name = f["name"];
      w.sample(fam.name, {{"node", node}, {"frontend", name}}, f[fam.key].get<uint64_t>());
    }
  }
  auto eachServer = [&](auto&& fn) {
    for (const auto& f : state) {
      std::string frontend = f["name"];
      for (const auto& s : f["servers"]) {
        std::string server = s["name"];
        // The label is what the server is there for (stable), not its role of the moment.
        std::string role = s["serves"];
        fn(frontend, server, role, s);
      }
    }
  };
  w.family("fulcrum_lb_db_server_up", "gauge", "1 when the database server passes its agent's check.");
  eachServer([&](const std::string& frontend, const std::string& server, const std::string& role,
                 const nlohmann::json& s) {
    w.sample("fulcrum_lb_db_server_up",
             {{"node", node}, {"frontend", frontend}, {"server", server}, {"role", role}},
             uint64_t{s["health"] == "up" ? 1u : 0u});
  });
  for (const Family& fam : kServer) {
    w.family(fam.name, fam.type, fam.help);
    eachServer([&](const std::string& frontend, const std::string& server, const std::string& role,
                   const nlohmann::json& s) {
      w.sample(fam.name, {{"node", node}, {"frontend", frontend}, {"server", server}, {"role", role}},
               s[fam.key].get<uint64_t>());
    });
  }
  // Each agent is asked /primary (and /replica for db_read); per member and question.
  std::vector<CheckSeries> series;
  for (const CheckName& c : checks_) {
    series.push_back(
        CheckSeries{{{"node", node}, {"server", c.server}, {"check", c.kind}}, checker_->stats(c.id)});
  }
  writeCheckMetrics(w, "fulcrum_lb_db_server", series);
}

}  // namespace fulcrum::lb
