#include "web/web_command.h"

#include <signal.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <vector>

#include "config/loader.h"
#include "core/acceptor.h"
#include "core/event_loop.h"
#include "core/exit_codes.h"
#include "core/graceful_stop.h"
#include "core/log.h"
#include "core/signals.h"
#include "core/socket.h"
#include "core/workers.h"
#include "http/server.h"
#include "pg/pg_format.h"
#include "run/node_files.h"
#include "run/reload_diff.h"
#include "tls/node_tls_reloader.h"
#include "tls/server_context.h"
#include "tls/site_pki.h"
#include "web/db_router.h"
#include "web/guestbook_app.h"
#include "web/guestbook_model.h"
#include "web/web_app.h"
#include "web/web_reload.h"
#include "web/worker_db.h"

namespace fulcrum::web {

namespace {

using core::kExitConfig;
using core::kExitOk;
using core::kExitRuntime;
// In-flight requests get this long to finish after SIGTERM before the process exits anyway.
constexpr auto kDrainGrace = std::chrono::seconds(10);

http::ServerOptions serverOptions(const config::Site& site, const config::WebNode& node) {
  // HTTP limits and client timeouts are site-wide ([lb.limits], [lb.timeouts]); the web
  // server applies the same ones so a request the balancer accepts is one it accepts too.
  http::ServerOptions options;
  options.limits.max_header_bytes = site.lb.limits.max_header_bytes;
  options.limits.max_body_bytes = site.lb.limits.max_body_bytes;
  options.request_timeout = core::millis(site.lb.timeouts.http_request_ms);
  options.idle_timeout = core::millis(site.lb.timeouts.client_ms);
  options.max_connections = site.lb.limits.max_connections;
  core::fileLimitFits(uint64_t{options.max_connections} + 256, "web " + node.name);
  options.served_by = node.name;
  options.access_log = true;
  return options;
}

DbSettings dbSettings(const config::Site& site, const config::WebNode& node) {
  DbSettings db;
  for (const config::DbNode& n : site.db.nodes) {
    db.nodes.push_back({n.name, pg::hostText(n.pg), n.pg.port()});
  }
  db.user = site.db.user;
  db.database = site.db.database;
  // The application role's password: the agents generate it into state_dir unless the site names a file.
  db.password_file = site.db.password_file.empty() ? site.site.state_dir / "db.password" : site.db.password_file;
  if (site.security.internal_tls) {
    // The files nodeTls() checked at start (runWebCommand); libpq reads them at each connect, so
    // a renewed pair is used from the next connection on.
    const tls::SitePaths paths = tls::sitePaths(site);
    db.tls = pg::ClientTls{paths.ca_cert, paths.nodeCert(node.name), paths.nodeKey(node.name)};
  }
  db.application_name = "fulcrum-" + node.name;
  db.max_lag_bytes = site.db.max_lag_bytes;
  // A replica promotes within about 3 s of the old lease running out (measured: writes resumed
  // 6.4-7.8 s after the primary died under the default 5 s ttl).
  db.failover_time = std::chrono::milliseconds(site.db.leader_ttl_ms) + std::chrono::seconds(3);
  db.schema_sql = std::string(guestbook::kSchemaSql);
  return db;
}

std::vector<std::string> dbNodeNames(const DbSettings& db) {
  std::vector<std::string> names;
  for (const DbNodeConfig& n : db.nodes) {
    names.push_back(n.name);
  }
  return names;
}

// A new generation for `settings`, whose workers' routers start as ready as the one they replace
// (so /healthz does not flap) and know the schema exists when it did (the same database).
std::shared_ptr<DbGeneration> nextGeneration(const DbSettings& settings, unsigned workers,
                                             const DbGeneration& before) {
  auto generation = std::make_shared<DbGeneration>(dbNodeNames(settings), workers);
  if (before.shared.ready.load() >= before.shared.routers) {
    generation->shared.ready.store(workers);
  }
  generation->shared.schema_ready.store(before.shared.schema_ready.load());
  return generation;
}

// What SIGHUP needs of a running web node; everything here is the main thread's.
struct Reloader {
  config::Site running;  // the file at start, with reloads applied
  const std::string node_name;
  core::WorkerGroup& workers;
  std::vector<std::unique_ptr<WebApp>>& apps;
  std::vector<std::unique_ptr<WorkerDb>>& dbs;  // empty without the guestbook
  std::shared_ptr<DbGeneration> db_generation;  // the latest given to the workers

  // Re-reads the file and applies what changed for this node. Workers are reached only by a
  // message to their loop (WorkerGroup::postAll): each swaps its own pointer to the document root,
  // or its own router, between two events, so a request never sees half a change and no lock is
  // taken on the request path.
  void reload() {
    log::info("SIGHUP: reloading {}", running.file.string());
    config::LoadResult loaded = config::loadSiteFile(running.file);
    WebReloadPlan plan;
    for (const config::ConfigError& error : loaded.errors) {
      plan.report.errors.push_back(error.toString());
    }
    if (loaded.ok()) {
      plan = planWebReload(running, loaded.site, node_name);
    }
    std::shared_ptr<const StaticFiles> files;
    if (plan.docroot && plan.report.errors.empty()) {
      try {
        files = std::make_shared<const StaticFiles>(*plan.docroot);
      } catch (const std::exception& e) {
        plan.report.errors.push_back(loaded.site.errorAt("web.docroot", e.what()).toString());
      }
    }
    run::ReloadReport& report = plan.report;
    report.ok = report.errors.empty();
    run::logReloadReport(report);
    // The state_dir the report goes to is the running one (a new one needs a restart).
    const std::filesystem::path state_dir = running.site.state_dir;
    if (!report.ok) {
      report.changes.clear();
      report.needs_restart.clear();
      run::writeReloadReport(state_dir, node_name, report);
      return;
    }
    applyWebPlan(running, plan);
    if (files) {
      workers.postAll([&apps = apps, files](core::EventLoop&, unsigned i) { apps[i]->setFiles(files); });
    }
    if (plan.max_lag_bytes && !plan.db_nodes && !dbs.empty()) {
      const uint64_t max_lag = *plan.max_lag_bytes;
      workers.postAll(
          [&dbs = dbs, max_lag](core::EventLoop&, unsigned i) { dbs[i]->setMaxLagBytes(max_lag); });
    }
    if (plan.db_nodes && !dbs.empty()) {
      const DbSettings settings = dbSettings(running, *running.findWebNode(node_name));
      db_generation = nextGeneration(settings, static_cast<unsigned>(dbs.size()), *db_generation);
      workers.postAll([&dbs = dbs, settings, generation = db_generation](core::EventLoop&, unsigned i) {
        dbs[i]->replace(settings, generation);
      });
    }
    run::writeReloadReport(state_dir, node_name, report);
  }
};

}  // namespace

int runWebCommand(const config::Site& site, const std::string& node_name) {
  const config::WebNode* node = site.findWebNode(node_name);
  if (node == nullptr) {
    log::error("{}: no [[web.node]] named '{}'", site.file.string(), node_name);
    return kExitConfig;
  }
  const bool guestbook = site.web.app == "guestbook";
  if (guestbook && site.db.nodes.empty()) {
    log::error("{}", site.errorAt("web.app", "the guestbook needs its database: add [[db.node]] entries, or set "
                                             "app = \"none\"")
                         .toString());
    return kExitConfig;
  }
  log::setComponent(node->name);
  if (guestbook && site.security.internal_tls) {
    // Its database connections present this certificate: refuse to start without a valid one
    // rather than fail every connection later.
    auto own = tls::nodeTls(site, node->name);
    if (!own.ok) {
      log::error("internal_tls: the guestbook's database connections need {}'s certificate: {}", node->name,
                 own.error);
      return kExitRuntime;
    }
  }
  std::string pid_error;
  std::unique_ptr<run::PidFile> pid_file = run::PidFile::create(site.site.state_dir, node->name, pid_error);
  if (!pid_file) {
    log::error("{}", pid_error);
    return kExitRuntime;
  }
  core::blockSignals();

  unsigned threads = core::resolveThreadCount(node->threads);
  std::string listen_error;
  std::vector<core::Fd> listeners = core::listenTcpGroup(node->listen, threads, listen_error);
  if (listeners.empty()) {
    log::error("{}", listen_error);
    return kExitRuntime;
  }

  std::vector<std::unique_ptr<http::ServerStats>> stats;
  for (unsigned i = 0; i < threads; ++i) {
    stats.push_back(std::make_unique<http::ServerStats>());
  }
  std::shared_ptr<const StaticFiles> files;
  try {
    files = std::make_shared<const StaticFiles>(site.web.docroot);
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return kExitRuntime;
  }
  // One handler per worker, all serving the same files (swapped per worker on a reload).
  std::vector<std::unique_ptr<WebApp>> apps;
  for (unsigned i = 0; i < threads; ++i) {
    apps.push_back(std::make_unique<WebApp>(node->name, files, stats));
  }

  // The guestbook: per worker, a database router and the handler in front of the worker's app.
  const DbSettings db = guestbook ? dbSettings(site, *node) : DbSettings{};
  auto db_generation = std::make_shared<DbGeneration>(dbNodeNames(db), threads);
  std::vector<std::unique_ptr<WorkerDb>> dbs(guestbook ? threads : 0);
  std::vector<std::unique_ptr<GuestbookApp>> guestbooks(threads);

  // [security] internal_tls: the listener speaks TLS with this node's certificate, and lets in
  // only clients with a certificate from the site CA (the lbs).
  std::unique_ptr<tls::ServerContext> tls_context;
  if (site.security.internal_tls) {
    core::Result<tls::NodeTls> pki = tls::nodeTls(site, node->name);
    std::string error = pki.error;
    if (pki.ok) {
      tls_context = tls::ServerContext::create({tls::CertFiles{pki.value.cert, pki.value.key}}, error,
                                               pki.value.ca_cert);
    }
    if (!tls_context) {
      // As for the database connections above: `up` tries again, and the node starts once its
      // files are there.
      log::error("internal_tls: {}", error);
      return kExitRuntime;
    }
    for (auto& app : apps) {
      app->setTlsStats(&tls_context->stats());
    }
  }
  http::ServerOptions options = serverOptions(site, *node);
  options.tls = tls_context.get();
  core::EventLoop main_loop;
  std::vector<std::unique_ptr<http::HttpServer>> servers(threads);
  core::WorkerGroup workers;
  workers.start(threads, [&](core::EventLoop& loop, unsigned i) {
    http::Handler* handler = apps[i].get();
    if (guestbook) {
      dbs[i] = std::make_unique<WorkerDb>(loop, db, db_generation, i);
      guestbooks[i] = std::make_unique<GuestbookApp>(node->name, *apps[i], dbs[i]->router());
      dbs[i]->attach(*guestbooks[i], *apps[i]);
      handler = guestbooks[i].get();
    }
    servers[i] = std::make_unique<http::HttpServer>(loop, std::move(listeners[i]), *handler, options, *stats[i]);
    if (!node->send_proxy.empty()) {
      // The lb opens every connection with a PROXY header naming the client; `fulcrum status`,
      // `up`, `roll` and Prometheus reach this node directly without one. So the header is taken
      // when it comes (the spec would have a receiver insist): a web node listens for the site's
      // own machines only, so what it could be told falsely is just the address in its log.
      core::ProxyHeaderPolicy policy;
      policy.timeout = options.request_timeout;
      policy.max_waiting = options.max_connections;
      policy.optional = true;
      servers[i]->acceptor().expectProxyHeader(policy);
    }
  });
  log::info(
      "web node {} serving {} on {}://{} with {} worker(s){}{}", node->name, site.web.docroot.string(),
      tls_context ? "https" : "http", node->listen.toString(), threads,
      guestbook ? fmt::format(", guestbook on {} db node(s)", db.nodes.size()) : std::string(),
      node->send_proxy.empty() ? std::string() : ", taking the lb's PROXY " + node->send_proxy + " header");

  // Session ticket keys: one set for every worker, a new one each hour (tls/server_context.h).
  core::Timer ticket_rotation(main_loop, [&] {
    tls_context->rotateTicketKeys();
    ticket_rotation.armAfter(std::chrono::hours(1));
  });
  if (tls_context) {
    ticket_rotation.armAfter(std::chrono::hours(1));
  }

  // A renewed or reissued certificate is taken by new handshakes; open connections keep theirs.
  // The guestbook's libpq reads the files at each connect.
  std::optional<tls::NodeTlsReloader> tls_reloader;
  if (tls_context) {
    tls_reloader.emplace(main_loop, site, node->name, "its listener", [&](const tls::NodeTls& files, std::string& error) {
      return tls_context->reload({tls::CertFiles{files.cert, files.key}}, error);
    });
  }

  core::StopHooks hooks;
  hooks.drain_worker = [&](unsigned i, std::function<void()> idle) { servers[i]->drain(std::move(idle)); };
  Reloader reloader{site, node->name, workers, apps, dbs, db_generation};
  hooks.on_reload = [&] {
    reloader.reload();
    if (tls_reloader) {
      tls_reloader->check();
    }
  };
  hooks.grace = kDrainGrace;
  core::runUntilStopped(main_loop, workers, hooks);
  // Workers are joined: connections first (they may hold pending answers), then the routers.
  servers.clear();
  guestbooks.clear();
  dbs.clear();
  log::info("web node {} stopped", node->name);
  return kExitOk;
}

}  // namespace fulcrum::web
