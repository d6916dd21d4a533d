#include "lb/lb_command.h"

#include <signal.h>

#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include "config/features.h"
#include "config/loader.h"
#include "core/acceptor.h"
#include "core/client_table.h"
#include "core/ip_filter.h"
#include "core/event_loop.h"
#include "core/exit_codes.h"
#include "core/graceful_stop.h"
#include "core/log.h"
#include "core/random.h"
#include "core/signals.h"
#include "core/socket.h"
#include "core/workers.h"
#include "http/json_body.h"
#include "lb/db_frontends.h"
#include "lb/health/health_checker.h"
#include "lb/outlier.h"
#include "lb/pool.h"
#include "lb/proxy.h"
#include "lb/proxy_totals.h"
#include "lb/reload_plan.h"
#include "lb/server_slots.h"
#include "lb/retry_budget.h"
#include "lb/takeover.h"
#include "lb/stats_server.h"
#include "lb/vrrp_tracking.h"
#include "run/node_files.h"
#include "run/reload_diff.h"
#include "tls/server_context.h"
#include "tls/node_tls_reloader.h"
#include "tls/site_pki.h"

namespace fulcrum::lb {

namespace {

using core::kExitConfig;
using core::kExitOk;
using core::kExitRuntime;
// Handing over to a successor: how long an idle keep-alive connection is kept, so that a client
// sending its next request meanwhile gets an answer (with `Connection: close`), not a reset.
constexpr auto kHandoverLinger = std::chrono::seconds(2);
constexpr uint32_t kStatsMaxConnections = 256;
constexpr auto kCertificateCheck = std::chrono::seconds(2);  // how often certificate files are looked at

// The node's certificates: [lb.tls] cert/key then certs, or a self-signed certificate made once in
// state_dir/tls for the site's name and the node's listen addresses. Empty with `error` on failure.
std::vector<tls::CertFiles> tlsPairs(const config::Site& site, const config::LbNode& node, std::string& error) {
  std::vector<tls::CertFiles> pairs;
  if (site.lb.acme) {
    // The ACME certificate, once there is one, is the default (the self-signed one serves until then).
    std::filesystem::path dir = site.site.state_dir / "acme";
    std::error_code ec;
    if (std::filesystem::is_regular_file(dir / "cert.pem", ec) && std::filesystem::is_regular_file(dir / "key.pem", ec)) {
      pairs.push_back({dir / "cert.pem", dir / "key.pem"});
    }
  }
  if (!site.lb.tls.cert.empty()) {
    pairs.push_back({site.lb.tls.cert, site.lb.tls.key});
  }
  for (const config::CertKey& c : site.lb.tls.certs) {
    pairs.push_back({c.cert, c.key});
  }
  if (pairs.empty()) {
    std::vector<std::string> names{"localhost"};
    if (site.site.name != "localhost") {
      names.insert(names.begin(), site.site.name);
    }
    std::vector<std::string> ips;
    for (const core::SocketAddress& a : {node.http, *node.https}) {
      std::string ip = a.ip().toString();
      if (ip != "0.0.0.0" && ip != "::" && std::find(ips.begin(), ips.end(), ip) == ips.end()) {
        ips.push_back(ip);
      }
    }
    for (const std::string& domain : site.lb.acme ? site.lb.acme->domains : std::vector<std::string>{}) {
      names.push_back(domain);
    }
    tls::CertFiles made = tls::ensureSelfSigned(site.site.state_dir / "tls", names, ips, error);
    if (made.cert.empty()) {
      return {};
    }
    pairs.push_back(made);
  }
  return pairs;
}

// What the certificate files look like now (modification times and sizes): a change means new
// files to load.
std::string fileStamp(const std::vector<tls::CertFiles>& pairs) {
  std::string stamp;
  for (const tls::CertFiles& p : pairs) {
    for (const auto& path : {p.cert, p.key}) {
      std::error_code ec;
      auto time = std::filesystem::last_write_time(path, ec).time_since_epoch().count();
      auto size = std::filesystem::file_size(path, ec);
      stamp += fmt::format("{}:{}:{};", path.string(), time, ec ? 0 : size);
    }
  }
  return stamp;
}

// The request path's limits and timeouts from the file (those a reload may change).
void setTunables(const config::Site& site, ProxyOptions& options) {
  options.limits.max_header_bytes = site.lb.limits.max_header_bytes;
  options.limits.max_body_bytes = site.lb.limits.max_body_bytes;
  options.connect_timeout = core::millis(site.lb.timeouts.connect_ms);
  options.server_timeout = core::millis(site.lb.timeouts.server_ms);
  options.client_timeout = core::millis(site.lb.timeouts.client_ms);
  options.request_timeout = core::millis(site.lb.timeouts.http_request_ms);
  options.min_body_rate = site.lb.limits.min_body_rate;
  options.retries = site.lb.retries;
  options.queue_timeout = core::millis(site.lb.queue_timeout_ms);
  options.sticky_cookie = site.lb.sticky == "cookie" ? site.lb.sticky_cookie : std::string();
  options.retry_budget_percent = site.lb.retry_budget_percent;
  options.retry_budget_min = site.lb.retry_budget_min;
  options.h2_max_streams = site.lb.limits.h2_max_streams;
}

HealthOptions healthOptions(const config::Site& site) {
  HealthOptions health;
  health.path = site.lb.health.path;
  health.interval = core::millis(site.lb.health.interval_ms);
  health.timeout = core::millis(site.lb.health.timeout_ms);
  health.rise = site.lb.health.rise;
  health.fall = site.lb.health.fall;
  return health;
}

OutlierOptions outlierOptions(const config::LbOutlier& o) {
  OutlierOptions out;
  out.consecutive_5xx = o.consecutive_5xx;
  out.consecutive_failures = o.consecutive_failures;
  out.slow_factor = o.slow_factor;
  out.interval = core::millis(o.interval_ms);
  out.min_requests = o.min_requests;
  out.base_ejection = core::millis(o.base_ejection_ms);
  out.max_ejection = core::millis(o.max_ejection_ms);
  out.max_ejection_percent = o.max_ejection_percent;
  return out;
}

Backend makeBackend(uint32_t id, const config::WebNode& web) {
  Backend b;
  b.id = id;
  b.name = web.name;
  b.address = web.listen;
  b.address_text = web.listen.toString();
  b.weight = web.weight;
  b.backup = web.backup;
  b.max_conn = web.max_conn;
  b.send_proxy = web.send_proxy == "v1" ? 1 : web.send_proxy == "v2" ? 2 : 0;
  return b;
}

std::vector<SlotLimits> slotLimits(const std::vector<Backend>& backends) {
  std::vector<SlotLimits> limits;
  limits.reserve(backends.size());
  for (const Backend& b : backends) {
    limits.push_back(SlotLimits{b.max_conn, b.backup, b.removed});
  }
  return limits;
}

}  // namespace

int runLbCommand(const config::Site& site, const std::string& node_name, bool takeover) {
  const config::LbNode* node = site.findLbNode(node_name);
  if (node == nullptr) {
    log::error("{}: no [[lb.node]] named '{}'", site.file.string(), node_name);
    return kExitConfig;
  }
  auto refused = config::lbNotBuiltYet(site, node);
  if (!refused.empty()) {
    for (const auto& error : refused) {
      log::error("{}", error.toString());
    }
    return kExitConfig;
  }
  const bool has_db_frontend = node->db_write || node->db_read;
  if (site.web.nodes.empty() && !has_db_frontend) {
    log::error("{}",
               site.errorAt("web.node", "a load balancer needs at least one [[web.node]] to send traffic to")
                   .toString());
    return kExitConfig;
  }
  if (has_db_frontend && site.db.nodes.empty()) {
    const char* key = node->db_write ? "db_write" : "db_read";
    log::error("{}", site.errorAt(fmt::format("lb.node[{}].{}", node - site.lb.nodes.data(), key),
                                  "a database frontend needs at least one [[db.node]] to send traffic to")
                         .toString());
    return kExitConfig;
  }
  log::setComponent(node->name);
  core::blockSignals();

  // A takeover (binary upgrade): the running process's listening sockets, by kind and address.
  const std::filesystem::path takeover_path = run::runDir(site.site.state_dir) / (node->name + ".sock");
  std::vector<TakenListener> taken;
  core::Fd takeover_channel;
  if (takeover) {
    if (site.lb.vip || has_db_frontend) {
      log::error("--takeover: not built yet for a node with [lb.vip] or db_write/db_read; restart it instead "
                 "(the VIP's peer or the database clients reconnect)");
      return kExitConfig;
    }
    std::string error;
    if (!receiveListeners(takeover_path, taken, takeover_channel, std::chrono::seconds(10), error)) {
      log::error("--takeover: {}", error);
      return kExitRuntime;
    }
    log::info("--takeover: received {} listening sockets from the running process", taken.size());
  }
  // Takes the received sockets of `kind` on `address`; empty when there are none.
  auto takeListeners = [&](std::string_view kind, const core::SocketAddress& address) {
    std::vector<core::Fd> out;
    for (TakenListener& t : taken) {
      if (t.kind == kind && t.address == address.toString() && t.fd) {
        out.push_back(std::move(t.fd));
      }
    }
    return out;
  };
  // The pid file: held by the process being taken over until it has drained; this one takes it
  // then (polled below).
  std::string pid_error;
  std::unique_ptr<run::PidFile> pid_file = run::PidFile::create(site.site.state_dir, node->name, pid_error);
  if (!pid_file && !takeover) {
    log::error("{}", pid_error);
    return kExitRuntime;
  }

  // The server table, by id: the main thread's copy (reloads edit it, then post it to the
  // workers); ids are never reused.
  std::vector<Backend> backends;
  for (const auto& web : site.web.nodes) {
    backends.push_back(makeBackend(static_cast<uint32_t>(backends.size()), web));
  }
  // The file in force: what the next reload is compared with.
  config::Site current = site;

  ProxyOptions options;
  setTunables(site, options);
  unsigned threads = core::resolveThreadCount(node->threads);
  options.max_connections = std::max<uint32_t>(1, site.lb.limits.max_connections / threads);
  // A client and a server descriptor per connection, and some for listeners, logs and health.
  core::fileLimitFits(uint64_t{site.lb.limits.max_connections} * 2 + 256, "lb " + node->name);

  std::string listen_error;
  // A listener on the virtual IP binds it before this node holds it (IP_FREEBIND): a standby
  // is ready the moment it takes the address over.
  auto onVip = [&](const core::SocketAddress& a) { return site.lb.vip && a.ip() == site.lb.vip->ip; };
  std::vector<core::Fd> listeners = takeover ? takeListeners("http", node->http)
                                             : core::listenTcpGroup(node->http, threads, listen_error, onVip(node->http));
  if (takeover && listeners.size() != threads) {
    log::error("--takeover: the running process has {} http listeners on {}, this one needs {} (threads); "
               "restart the node to change them",
               listeners.size(), node->http.toString(), threads);
    return kExitConfig;
  }
  if (listeners.empty()) {
    log::error("{}", listen_error);
    return kExitRuntime;
  }
  // Their descriptors, for a later takeover by a successor (the Fds move into the workers).
  std::vector<HandedListener> handed;
  for (const core::Fd& fd : listeners) {
    handed.push_back(HandedListener{"http", node->http.toString(), fd.get()});
  }
  // HTTPS: the same proxy over a TLS transport, on a listener group of its own.
  std::unique_ptr<tls::ServerContext> tls_context;
  std::vector<core::Fd> https_listeners;
  if (node->https) {
    std::string error;
    std::vector<tls::CertFiles> pairs = tlsPairs(site, *node, error);
    if (!pairs.empty()) {
      tls_context = tls::ServerContext::create(pairs, error);
    }
    if (!tls_context) {
      log::error("https: {}", error);
      return kExitConfig;
    }
    if (site.lb.tls.cert.empty() && site.lb.tls.certs.empty()) {
      log::warn("https: no certificate configured ([lb.tls] cert/key): serving the self-signed {}",
                pairs.front().cert.string());
    }
    https_listeners = takeover ? takeListeners("https", *node->https)
                               : core::listenTcpGroup(*node->https, threads, listen_error, onVip(*node->https));
    if (takeover && https_listeners.size() != threads) {
      log::error("--takeover: the running process has {} https listeners on {}, this one needs {}; restart the "
                 "node to change them",
                 https_listeners.size(), node->https->toString(), threads);
      return kExitConfig;
    }
    if (https_listeners.empty()) {
      log::error("{}", listen_error);
      return kExitRuntime;
    }
    for (const core::Fd& fd : https_listeners) {
      handed.push_back(HandedListener{"https", node->https->toString(), fd.get()});
    }
    for (const std::string& cert : tls_context->describe()) {
      log::info("https certificate: {}", cert);
    }
  }

  // [security] internal_tls: the web nodes and the db agents are reached over mutual TLS, as this
  // node (made before the db frontends, whose checks use it, and destroyed after them).
  std::unique_ptr<tls::ClientContext> upstream_tls;
  tls::NodeTls node_tls;  // and the stats listener speaks TLS with the same files
  if (site.security.internal_tls) {
    core::Result<tls::NodeTls> files = tls::nodeTls(site, node->name);
    std::string error = files.error;
    if (files.ok) {
      node_tls = files.value;
      upstream_tls = tls::ClientContext::create(files.value.ca_cert, {files.value.cert, files.value.key}, error);
    }
    if (!upstream_tls) {
      log::error("internal_tls: {}", error);  // a runtime failure: the node starts once its files are there
      return kExitRuntime;
    }
  }
  core::EventLoop main_loop;
  core::WorkerGroup workers;
  std::unique_ptr<DbFrontends> db;
  if (has_db_frontend) {
    std::string error;
    db = DbFrontends::create(site, *node, threads, main_loop, workers, upstream_tls.get(), error);
    if (!db) {
      log::error("{}", error);
      return kExitRuntime;
    }
  }
  // [lb.firewall]: one filter judges every listener's peers (http, db frontends, stats).
  std::unique_ptr<core::IpFilter> firewall;
  // Filters a reload replaced: a worker may still be using one until its post arrives (kept for
  // the process's life; a few hundred bytes each).
  std::vector<std::unique_ptr<core::IpFilter>> retired_firewalls;
  auto makeFirewall = [](const config::LbFirewall& f) -> std::unique_ptr<core::IpFilter> {
    if (f.allow.empty() && f.deny.empty()) {
      return nullptr;
    }
    auto prefixes = [](const std::vector<config::Cidr>& cidrs) {
      std::vector<core::IpPrefix> out;
      for (const config::Cidr& c : cidrs) {
        out.push_back(core::IpPrefix{c.network, c.prefix_len});
      }
      return out;
    };
    return std::make_unique<core::IpFilter>(prefixes(f.allow), prefixes(f.deny));
  };
  if (!site.lb.firewall.allow.empty() || !site.lb.firewall.deny.empty()) {
    firewall = makeFirewall(site.lb.firewall);
    if (db) {
      db->setFilter(firewall.get());
    }
    log::info("firewall: {} allow and {} deny entries, checked at accept", site.lb.firewall.allow.size(),
              site.lb.firewall.deny.size());
  }
  // [lb.limits] rate_per_ip / conn_per_ip: one table of client addresses for every worker (one
  // client's connections land on several), fixed in size; it outlives the workers.
  std::unique_ptr<core::ClientTable> clients;
  const config::LbLimits& limits = site.lb.limits;
  if (limits.rate_per_ip != 0 || limits.conn_per_ip != 0) {
    // Every open connection pins its address's entry: leave room for as many others.
    size_t capacity = std::max<size_t>(limits.client_table, size_t{limits.max_connections} * 2);
    clients = std::make_unique<core::ClientTable>(
        capacity, core::ClientLimits{limits.rate_per_ip, limits.rate_burst, limits.conn_per_ip}, 16,
        core::Random::fromOs().next());
    options.clients = clients.get();
    log::info("client limits: rate_per_ip {} (burst {}), conn_per_ip {}, {} addresses tracked ({} KiB)",
              limits.rate_per_ip, limits.rate_burst != 0 ? limits.rate_burst : limits.rate_per_ip,
              limits.conn_per_ip, clients->capacity(), clients->memoryBytes() / 1024);
  }
  // [lb] accept_proxy_from: the balancers in front that may name clients in a PROXY header.
  std::unique_ptr<core::IpFilter> proxy_senders;
  options.accept_proxy = site.lb.accept_proxy;
  if (!site.lb.accept_proxy_from.empty()) {
    proxy_senders = makeFirewall(config::LbFirewall{site.lb.accept_proxy_from, {}});
    options.accept_proxy_from = proxy_senders.get();
  }
  if (site.lb.accept_proxy) {
    log::info("accept_proxy: every http and https connection starts with a PROXY header{}",
              site.lb.accept_proxy_from.empty()
                  ? std::string{}
                  : fmt::format(", sent from {} networks", site.lb.accept_proxy_from.size()));
  }
  std::vector<std::unique_ptr<ProxyStats>> stats;
  std::vector<std::unique_ptr<PoolStats>> pool_stats;  // outlives the pools that write it
  std::vector<std::unique_ptr<WorkerPool>> pools(threads);
  std::vector<std::unique_ptr<ProxyWorker>> proxies(threads);
  std::vector<std::unique_ptr<ProxyWorker>> https_proxies(threads);
  options.upstream_tls = upstream_tls.get();
  ProxyOptions https_options = options;
  options.h2c = site.lb.h2c;
  if (tls_context) {
    tls_context->offerHttp2(site.lb.tls.http2);
    https_options.h2c = false;  // ALPN decides on https
    https_options.proto = "https";
    https_options.tls = tls_context.get();
    https_options.hsts = site.lb.tls.hsts;
    if (site.lb.tls.redirect_http) {
      options.redirect_https_port = node->https->port();
    }
  }
  // [lb.acme]: this node answers HTTP-01 on its http listener (TLS-ALPN-01 on its https one) and,
  // holding the state_dir's lock, obtains and renews the certificate on a thread of its own.
  tls::ChallengeStore acme_challenges;
  std::unique_ptr<tls::AcmeRenewer> acme;
  if (site.lb.acme && tls_context) {
    options.acme_challenges = &acme_challenges;
    tls::AcmeSettings settings{site.lb.acme->directory, site.lb.acme->email, site.lb.acme->domains,
                               site.lb.acme->ca_file, site.site.state_dir / "acme"};
    if (site.lb.acme->challenge == "tls-alpn-01") {
      settings.challenge = tls::AcmeChallenge::TlsAlpn01;
      tls_context->answerTlsAlpn(&acme_challenges);
    }
    acme = std::make_unique<tls::AcmeRenewer>(std::move(settings), acme_challenges);
  }
  for (unsigned i = 0; i < threads; ++i) {
    stats.push_back(std::make_unique<ProxyStats>(backends.size()));
    pool_stats.push_back(std::make_unique<PoolStats>(backends.size()));
  }

  // Health checks run on the main thread; state changes are posted to every worker.
  std::vector<HealthTarget> targets;
  for (const Backend& b : backends) {
    targets.push_back(HealthTarget{b.id, b.name, b.address, std::nullopt, false, b.send_proxy});
  }
  HealthOptions health = healthOptions(site);
  health.tls = upstream_tls.get();
  // The dashboard's view of the site (with a stats listener only); told of every change.
  std::unique_ptr<SiteMonitor> monitor;
  // [[web.node]] max_conn: the slots and the queue every worker shares. Always made (a reload
  // may set a limit); the request path skips it while no server has one.
  ServerSlots slots(slotLimits(backends), site.lb.max_queue,
                    [&pools, &workers](uint32_t worker, uint64_t ticket, uint32_t server) {
                      workers.loop(worker).post([&pools, worker, ticket, server] {
                        pools[worker]->deliverSlot(ticket, server);
                      });
                    });
  HealthChecker checker(main_loop, targets, health, [&](uint32_t id, bool up, std::string_view reason) {
    slots.setUp(id, up);
    workers.postAll([&pools, id, up](core::EventLoop&, unsigned i) { pools[i]->setUp(id, up); });
    if (monitor) {
      monitor->serverChanged(id, up, reason);
    }
  });

  // Every worker's requests in flight are the retry budget's base (the vector is fixed from here on).
  RetryBudget retry_budget(stats);
  options.retry_budget = &retry_budget;
  https_options.retry_budget = &retry_budget;
  // [lb.outlier]: the workers count each server's runs of 5xx and failures; the main thread
  // decides and tells every worker's pool.
  std::unique_ptr<OutlierDetector> outlier;
  if (site.lb.outlier.enabled) {
    OutlierDetector::Hooks hooks;
    hooks.apply = [&workers, &pools, &slots](uint32_t id, bool ejected) {
      slots.setEjected(id, ejected);
      workers.postAll(
          [&pools, id, ejected](core::EventLoop&, unsigned i) { pools[i]->setEjected(id, ejected); });
    };
    hooks.healthy = [&checker, &backends](uint32_t id) { return !backends[id].removed && checker.isUp(id); };
    hooks.totals = [&stats](uint32_t id) {
      ServerTotals t = sumServer(stats, id);
      return ServerWindow{t.responses, t.response_time.sum_us};
    };
    outlier = std::make_unique<OutlierDetector>(main_loop, outlierOptions(site.lb.outlier), backends,
                                                std::move(hooks));
    options.outlier = &outlier->signals();
    https_options.outlier = &outlier->signals();
  }

  PoolOptions pool_options;
  pool_options.idle_timeout = std::min<core::Duration>(std::chrono::seconds(10), options.server_timeout);
  pool_options.balance.hash_balance_factor = site.lb.hash_balance_factor;
  pool_options.slow_start = core::millis(site.lb.slow_start_ms);
  workers.start(threads, [&](core::EventLoop& loop, unsigned i) {
    PoolOptions worker_pool_options = pool_options;
    worker_pool_options.stats = pool_stats[i].get();
    worker_pool_options.slots = &slots;
    worker_pool_options.worker = i;
    pools[i] = std::make_unique<WorkerPool>(loop, backends, site.lb.algorithm, worker_pool_options);
    auto report = [&main_loop, &checker](uint32_t server, const std::string& reason) {
      main_loop.post([&checker, server, reason] { checker.reportFailure(server, reason); });
    };
    proxies[i] =
        std::make_unique<ProxyWorker>(loop, std::move(listeners[i]), *pools[i], options, *stats[i], report);
    proxies[i]->acceptor().setFilter(firewall.get());
    if (tls_context) {
      // The same pool and counters as the http listener: one thread, one view of the servers.
      https_proxies[i] = std::make_unique<ProxyWorker>(loop, std::move(https_listeners[i]), *pools[i], https_options,
                                                       *stats[i], report);
      https_proxies[i]->acceptor().setFilter(firewall.get());
    }
    if (db) {
      db->startWorker(loop, i);
    }
  });
  checker.start();
  if (outlier) {
    outlier->start();
  }
  if (db) {
    db->startChecks();
  }
  if (acme) {
    acme->start();  // after the http listener serves: the CA checks it
  }

  // [lb.vip]: the VRRP router on this main thread, its priority tracking the node's health.
  std::unique_ptr<VrrpTracking> vrrp;
  if (site.lb.vip) {
    std::string error;
    vrrp = VrrpTracking::create(site, *node, main_loop, workers, checker, backends, error);
    if (!vrrp) {
      log::error("vrrp: {}", error);
      workers.stopAll();
      return kExitRuntime;
    }
  }

  // A reload (SIGHUP, POST /api/reload, `fulcrum reload`): re-read and validate the file, then
  // apply the difference on this main thread; defined below, once everything it touches exists.
  std::function<run::ReloadReport(std::string_view)> reload;
  // The main thread's server table and `algorithm` to every worker (a reload, a runtime weight).
  auto publishServers = [&](const std::string& algorithm) {
    slots.setServers(slotLimits(backends));
    workers.postAll([&pools, table = backends, algorithm](core::EventLoop&, unsigned i) {
      pools[i]->applyServers(table, algorithm);
    });
  };

  // The stats listener (dashboard, /metrics, admin API) runs on this main thread.
  std::unique_ptr<tls::ServerContext> stats_tls;  // outlives the server's connections
  std::unique_ptr<StatsHandler> stats_handler;
  std::unique_ptr<http::HttpServer> stats_server;
  http::ServerStats stats_server_stats;
  if (node->stats) {
    std::string error;
    if (site.security.internal_tls) {
      // HTTPS with this node's certificate. A client certificate from the site CA is asked for,
      // not required: a browser reads the dashboard without one; the admin API needs it.
      stats_tls = tls::ServerContext::create({tls::CertFiles{node_tls.cert, node_tls.key}}, error,
                                             node_tls.ca_cert, tls::ClientCertificates::VerifiedIfPresented);
      if (!stats_tls) {
        log::error("stats listener: internal_tls: {}", error);
        workers.stopAll();
        return kExitRuntime;
      }
    }
    std::string token_path = (site.site.state_dir / "admin.token").string();
    std::string token = loadOrCreateToken(token_path, error);
    std::vector<core::Fd> taken_stats = takeListeners("stats", *node->stats);
    core::Fd fd = token.empty()          ? core::Fd()
                  : !taken_stats.empty() ? std::move(taken_stats.front())
                                         : core::listenTcp(*node->stats, core::ListenOptions{false}, error);
    if (fd) {
      handed.push_back(HandedListener{"stats", node->stats->toString(), fd.get()});
    }
    if (!fd) {
      log::error("stats listener: {}", error);
      workers.stopAll();
      return kExitRuntime;
    }
    monitor = std::make_unique<SiteMonitor>(main_loop, SiteMonitorInputs{&site, node->name, &backends, &stats, &checker, upstream_tls.get()});
    if (site.monitoring.present) {
      // The page draws its charts from Prometheus (it answers any origin by default) when it can.
      monitor->setPrometheusUrl("http://" + site.monitoring.prometheus.toString());
    }
    monitor->start();
    StatsContext ctx;
    ctx.monitor = monitor.get();
    ctx.node = node->name;
    ctx.algorithm = site.lb.algorithm;
    ctx.backends = &backends;
    ctx.workers = &stats;
    ctx.pools = &pool_stats;
    ctx.health = &checker;
    ctx.slots = &slots;
    ctx.db = db.get();
    ctx.firewall = firewall.get();
    ctx.clients = clients.get();
    ctx.tls = tls_context.get();
    ctx.upstream_tls = upstream_tls.get();
    ctx.acme = acme.get();
    ctx.vrrp = vrrp ? &vrrp->node() : nullptr;
    ctx.token = token;
    ctx.stats_tls = stats_tls.get();
    ctx.admin_needs_client_certificate = stats_tls != nullptr;
    ctx.outlier = outlier.get();
    ctx.apply_admin = [&workers, &pools, &slots, &outlier](uint32_t id, AdminState state) {
      bool in_rotation = state == AdminState::Ready;
      slots.setInRotation(id, in_rotation);
      if (outlier) {
        outlier->setInRotation(id, in_rotation);
      }
      workers.postAll([&pools, id, in_rotation](core::EventLoop&, unsigned i) {
        pools[i]->setInRotation(id, in_rotation);
      });
    };
    ctx.apply_db_admin = [&db](const std::string& name, AdminState state) {
      db->setInRotation(name, state == AdminState::Ready);
    };
    ctx.apply_weight = [&](uint32_t id, uint32_t weight) {
      backends[id].weight = weight;
      publishServers(current.lb.algorithm);
    };
    ctx.reload = [&] { return reload("the admin API"); };
    ctx.state_file = site.site.state_dir / (node->name + ".server-state.json");
    stats_handler = std::make_unique<StatsHandler>(std::move(ctx));
    stats_handler->restoreServerState();
    http::ServerOptions server_options;
    server_options.served_by = node->name;
    // Operators and scrapers: a small cap, so a flood here cannot take the descriptors the
    // traffic listeners need.
    server_options.max_connections = kStatsMaxConnections;
    server_options.max_connections_per_ip = kStatsMaxConnections / 4;
    server_options.first_byte_timeout = std::chrono::seconds(5);
    server_options.limits.max_body_bytes = http::kMaxAdminBodyBytes;  // the admin API takes small JSON only
    server_options.tls = stats_tls.get();
    stats_server = std::make_unique<http::HttpServer>(main_loop, std::move(fd), *stats_handler,
                                                      server_options, stats_server_stats);
    stats_server->acceptor().setFilter(firewall.get());
    log::info("stats on {}://{} (dashboard /, /metrics, /api/state; admin token in {}{})",
              stats_tls ? "https" : "http", node->stats->toString(), token_path,
              stats_tls ? "; the admin API needs a client certificate from " + node_tls.ca_cert.string()
                        : std::string());
  }
  log::info("load balancer {} on http://{}{} with {} worker(s), {} server(s), algorithm {}", node->name,
            node->http.toString(), node->https ? " and https://" + node->https->toString() : std::string(), threads,
            backends.size(), site.lb.algorithm);
  // Session ticket keys: one set for every worker, a new one each hour (tls/server_context.h).
  core::Timer ticket_rotation(main_loop, [&] {
    for (tls::ServerContext* context : {tls_context.get(), stats_tls.get()}) {
      if (context != nullptr) {
        context->rotateTicketKeys();
      }
    }
    ticket_rotation.armAfter(std::chrono::hours(1));
  });
  if (tls_context || stats_tls) {
    ticket_rotation.armAfter(std::chrono::hours(1));
  }
  // New certificate files (renewed in place, or SIGHUP) are taken by new handshakes; open
  // connections keep theirs. A file that does not load leaves the old certificates serving.
  std::string cert_stamp;
  auto reloadCertificates = [&](std::string_view why) {
    std::string error;
    std::vector<tls::CertFiles> pairs = tlsPairs(current, *node, error);
    cert_stamp = fileStamp(pairs);
    if (pairs.empty() || !tls_context->reload(pairs, error)) {
      log::error("https: certificates not reloaded ({}): {}; the previous ones keep serving", why, error);
      return;
    }
    for (const std::string& cert : tls_context->describe()) {
      log::info("https certificate reloaded ({}): {}", why, cert);
    }
    if (acme) {
      acme->wake();  // the ACME certificate may have changed under it: its renewal date too
    }
  };
  core::Timer cert_watch(main_loop, [&] {
    std::string error;
    std::vector<tls::CertFiles> pairs = tlsPairs(current, *node, error);
    if (!pairs.empty() && fileStamp(pairs) != cert_stamp) {
      reloadCertificates("the files changed");
    }
    cert_watch.armAfter(kCertificateCheck);
  });
  if (tls_context) {
    std::string error;
    cert_stamp = fileStamp(tlsPairs(site, *node, error));
    cert_watch.armAfter(kCertificateCheck);
  }
  if (db) {
    log::info("database frontends: {} ({} [[db.node]], checked through their agents)", db->summary(),
              site.db.nodes.size());
  }

  core::StopHooks hooks;
  bool handing_over = false;  // drained for a successor: idle keep-alive connections linger
  hooks.drain_worker = [&](unsigned i, std::function<void()> idle) {
    // Idle once the http and https proxies and the database frontends of this worker are.
    auto done = afterAll(1 + (https_proxies[i] ? 1 : 0) + (db ? 1 : 0), std::move(idle));
    const core::Duration linger = handing_over ? kHandoverLinger : core::Duration::zero();
    proxies[i]->drain(done, linger);
    if (https_proxies[i]) {
      https_proxies[i]->drain(done, linger);
    }
    if (db) {
      db->drainWorker(i, done);
    }
  };
  reload = [&](std::string_view why) {
    log::info("reload ({}): reading {}", why, site.display_path);
    run::ReloadReport report;
    // Every outcome is logged and written to state_dir/run as the other roles do it.
    auto finish = [&] {
      run::logReloadReport(report);
      run::writeReloadReport(site.site.state_dir, node->name, report);
      return report;
    };
    config::LoadResult loaded = config::loadSiteFile(site.file);
    if (!loaded.ok()) {
      report.ok = false;
      for (const config::ConfigError& e : loaded.errors) {
        report.errors.push_back(e.toString());
      }
      return finish();
    }
    ReloadPlan plan = planReload(current, loaded.site, node->name);
    size_t live = backends.size() + plan.added.size();
    if (live > stats.front()->backends.maxSize()) {
      report.ok = false;
      report.errors.push_back(fmt::format("{}: [[web.node]]: this node has had {} servers since it started, "
                                          "at most {}: restart it to add more",
                                          site.display_path, live, stats.front()->backends.maxSize()));
      return finish();
    }
    // Servers: removed ones drain (no new requests, in-flight ones end), updated ones take the
    // file's weight and role, added ones get new ids and start down until checked.
    std::vector<std::string> file_changed;
    for (const std::string& name : plan.removed) {
      for (Backend& b : backends) {
        if (b.name == name && !b.removed) {
          b.removed = true;
          checker.remove(b.id);
        }
      }
      file_changed.push_back(name);
    }
    for (const config::WebNode& w : plan.updated) {
      for (Backend& b : backends) {
        if (b.name == w.name && !b.removed) {
          b.weight = w.weight;
          b.backup = w.backup;
          b.max_conn = w.max_conn;
        }
      }
      file_changed.push_back(w.name);
    }
    std::vector<HealthTarget> added;
    for (const config::WebNode& w : plan.added) {
      Backend b = makeBackend(static_cast<uint32_t>(backends.size()), w);
      added.push_back(HealthTarget{b.id, b.name, b.address, std::nullopt, false, b.send_proxy});
      backends.push_back(std::move(b));
    }
    for (size_t i = 0; i < stats.size(); ++i) {
      stats[i]->backends.grow(backends.size());
      pool_stats[i]->grow(backends.size());
    }
    if (outlier) {
      outlier->serversChanged();
    }
    // The workers take the table before the checker can tell them about a new id.
    if (!plan.removed.empty() || !plan.updated.empty() || !plan.added.empty() || plan.algorithm) {
      publishServers(plan.effective.lb.algorithm);
    }
    for (HealthTarget& t : added) {
      checker.add(std::move(t));
    }
    if (plan.health) {
      checker.setOptions(healthOptions(plan.effective));
    }
    hooks.grace = core::millis(plan.effective.lb.timeouts.drain_ms);
    if (plan.tunables) {
      slots.setMaxQueue(plan.effective.lb.max_queue);
      setTunables(plan.effective, options);
      setTunables(plan.effective, https_options);
      https_options.hsts = plan.effective.lb.tls.hsts;
      if (node->https) {
        options.redirect_https_port = plan.effective.lb.tls.redirect_http ? node->https->port() : 0;
      }
      workers.postAll([&proxies, &https_proxies, options, https_options](core::EventLoop&, unsigned i) {
        proxies[i]->retune(options);
        if (https_proxies[i]) {
          https_proxies[i]->retune(https_options);
        }
      });
    }
    current = plan.effective;
    if (monitor) {
      monitor->serversChanged();
    }
    if (stats_handler) {
      stats_handler->serversChanged(current.lb.algorithm, file_changed);
    }
    if (tls_context) {
      reloadCertificates(why);  // new paths, or the same files renewed in place
    }
    if (plan.firewall) {
      if (firewall) {
        retired_firewalls.push_back(std::move(firewall));
      }
      firewall = makeFirewall(current.lb.firewall);
      core::IpFilter* filter = firewall.get();
      workers.postAll([&proxies, &https_proxies, filter](core::EventLoop&, unsigned i) {
        proxies[i]->acceptor().setFilter(filter);
        if (https_proxies[i]) {
          https_proxies[i]->acceptor().setFilter(filter);
        }
      });
      if (stats_server) {
        stats_server->acceptor().setFilter(filter);
      }
      if (db) {
        db->replaceFilter(filter);
      }
      if (stats_handler) {
        stats_handler->setFirewall(filter);
      }
    }
    report.changes = plan.changes;
    report.needs_restart = plan.needs_restart;
    return finish();
  };
  // A renewed or reissued internal_tls certificate: new connections to the web nodes and the
  // agents, new health checks and the stats listener's new handshakes use it; open connections
  // keep theirs.
  std::optional<tls::NodeTlsReloader> tls_reloader;
  if (upstream_tls) {
    tls_reloader.emplace(main_loop, site, node->name, "its client and stats listener",
                         [&](const tls::NodeTls& files, std::string& error) {
                           return upstream_tls->reload(files.ca_cert, {files.cert, files.key}, error) &&
                                  (!stats_tls || stats_tls->reload({tls::CertFiles{files.cert, files.key}}, error));
                         });
  }
  hooks.on_reload = [&] {
    reload("SIGHUP");
    if (tls_reloader) {
      tls_reloader->check();
    }
  };
  hooks.on_stop = [&] {
    if (vrrp) {
      vrrp->stop();  // the backup takes the address after its Skew_Time while this node drains
    }
  };
  hooks.grace = core::millis(site.lb.timeouts.drain_ms);
  // A binary upgrade: a successor may take these listeners over (lb/takeover.h); then this
  // process stops accepting (its stats listener too) and drains as on SIGTERM, keeping idle
  // keep-alive connections a moment so their next request is answered with `Connection: close`
  // instead of meeting a closed socket.
  std::function<void(std::string_view)> drain_now;
  hooks.drain_now = &drain_now;
  std::unique_ptr<TakeoverServer> takeover_server;
  if (!site.lb.vip && !has_db_frontend) {
    std::string error;
    takeover_server = TakeoverServer::create(
        main_loop, takeover_path, handed,
        [&](pid_t pid) {
          if (stats_server) {
            stats_server->acceptor().close();
          }
          handing_over = true;
          drain_now(fmt::format("taken over by pid {}", pid));
        },
        error);
    if (!takeover_server) {
      log::warn("{}; a binary upgrade of this node will need a restart", error);
    }
  }
  if (takeover) {
    std::string error;
    if (!confirmServing(takeover_channel, error)) {
      log::warn("--takeover: telling the previous process: {}", error);
    }
    log::info("--takeover: serving; the previous process drains and exits");
  }
  // Taken over from a running process: its pid file is ours once it has exited.
  core::Timer pid_retry(main_loop, [&] {
    std::string error;
    pid_file = run::PidFile::create(site.site.state_dir, node->name, error);
    if (pid_file) {
      log::info("pid file {} is this process's now", run::pidPath(site.site.state_dir, node->name).string());
    } else {
      pid_retry.armAfter(std::chrono::milliseconds(200));
    }
  });
  if (!pid_file) {
    pid_retry.armAfter(std::chrono::milliseconds(200));
  }
  core::runUntilStopped(main_loop, workers, hooks);
  https_proxies.clear();
  proxies.clear();
  pools.clear();
  if (db) {
    db->stopWorkers();
  }
  log::info("load balancer {} stopped", node->name);
  return kExitOk;
}

}  // namespace fulcrum::lb
