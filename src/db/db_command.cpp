#include "db/db_command.h"

#include <signal.h>

#include <memory>
#include <optional>

#include "config/features.h"
#include "core/event_loop.h"
#include "core/exit_codes.h"
#include "core/log.h"
#include "core/signals.h"
#include "core/socket.h"
#include "db/agent.h"
#include "http/json_body.h"
#include "http/server.h"
#include "run/node_files.h"
#include "tls/client_context.h"
#include "tls/server_context.h"
#include "tls/node_tls_reloader.h"
#include "tls/site_pki.h"

namespace fulcrum::db {

namespace {

using core::kExitConfig;
using core::kExitOk;
using core::kExitRuntime;
// API requests in flight get this long to finish after SIGTERM.
constexpr auto kDrainGrace = std::chrono::seconds(2);

}  // namespace

int runDbCommand(const config::Site& site, const std::string& node_name) {
  const config::DbNode* node = site.findDbNode(node_name);
  if (node == nullptr) {
    log::error("{}: no [[db.node]] named '{}'", site.file.string(), node_name);
    return kExitConfig;
  }
  auto refused = config::dbNotBuiltYet(site);
  if (!refused.empty()) {
    for (const auto& error : refused) {
      log::error("{}", error.toString());
    }
    return kExitConfig;
  }
  if (site.etcd.endpoints.empty()) {
    log::error(
        "{}",
        site.errorAt("etcd.endpoints", "the database agent needs at least one etcd endpoint").toString());
    return kExitConfig;
  }
  log::setComponent(node->name);
  // Before the listener: a second agent of this node on this host must not touch its data.
  std::string error;
  std::unique_ptr<run::PidFile> pid_file = run::PidFile::create(site.site.state_dir, node->name, error);
  if (!pid_file) {
    log::error("{}", error);
    return kExitRuntime;
  }
  core::blockSignals();

  core::Fd listener = core::listenTcp(node->agent, core::ListenOptions{false}, error);
  if (!listener) {
    log::error("agent listener: {}", error);
    return kExitRuntime;
  }
  // [security] internal_tls: the agent's etcd calls and watch (and the admin calls it forwards)
  // present this node's certificate, and its API speaks TLS only, with the same certificate.
  // Anyone may read the health endpoints (an outside balancer may use them); a certificate that
  // is presented must come from the site CA, and the admin calls want one (DbAgent).
  std::shared_ptr<tls::ClientContext> client_tls;
  std::unique_ptr<tls::ServerContext> api_tls;
  if (site.security.internal_tls) {
    client_tls = tls::ClientContext::forHolder(site, node->name, error);
    if (client_tls) {
      core::Result<tls::NodeTls> pki = tls::nodeTls(site, node->name);
      error = pki.error;
      if (pki.ok) {
        api_tls = tls::ServerContext::create({tls::CertFiles{pki.value.cert, pki.value.key}}, error,
                                             pki.value.ca_cert, tls::ClientCertificates::VerifiedIfPresented);
      }
    }
    if (!client_tls || !api_tls) {
      // A runtime failure, as the same refusal for PostgreSQL's files: `up` tries again, and the
      // node starts once the files are there.
      log::error("internal_tls: {} needs its certificate (etcd, PostgreSQL, its API): {}", node->name, error);
      return kExitRuntime;
    }
  }
  core::EventLoop loop;
  DbAgent agent(site, *node, loop, client_tls);  // shared: renewals reload it below
  if (Status prepared = agent.prepare(); !prepared.ok) {
    log::error("{}", prepared.error);
    return kExitRuntime;
  }
  http::ServerOptions options;
  options.served_by = node->name;
  options.max_connections = 1000;
  // Health checks (lbs, peers, `fulcrum status`) must get through a flood from one address: it
  // may hold a few slots, never all; a new connection that sends nothing is closed after 2 s.
  options.max_connections_per_ip = 64;
  options.first_byte_timeout = std::chrono::seconds(2);
  options.limits.max_body_bytes = http::kMaxAdminBodyBytes;  // the agent API takes small JSON only
  options.tls = api_tls.get();
  http::ServerStats stats;
  agent.setApiStats(&stats);
  if (api_tls) {
    agent.setApiTlsStats(&api_tls->stats());
  }
  auto server = std::make_unique<http::HttpServer>(loop, std::move(listener), agent, options, stats);

  int exit_code = kExitOk;
  agent.start([&](const std::string& message) {
    log::error("{}", message);
    exit_code = kExitRuntime;
    loop.stop();
  });
  log::info("database agent {} (PostgreSQL on {}) API on {}://{}", node->name, node->pg.toString(),
            api_tls ? "https" : "http", node->agent.toString());

  // A renewed or reissued internal_tls certificate: the etcd client's and the API's next
  // connections use it, and PostgreSQL reloads it (the agent logs that part).
  std::optional<tls::NodeTlsReloader> tls_reloader;
  if (client_tls) {
    tls_reloader.emplace(loop, site, node->name, "etcd client and API", [&](const tls::NodeTls& files, std::string& error) {
      const bool taken = client_tls->reload(files.ca_cert, {files.cert, files.key}, error) &&
                         api_tls->reload({tls::CertFiles{files.cert, files.key}}, error);
      agent.refreshTls();
      return taken;
    });
  }

  bool stopping = false;
  core::Timer grace(loop, [&] { loop.stop(); });
  core::SignalWatcher signals(loop, {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1}, [&](int sig) {
    if (sig == SIGCHLD) {
      agent.onChildSignal();
      return;
    }
    if (sig == SIGUSR1) {
      log::reopen();  // logrotate's postrotate (PostgreSQL's own log: copytruncate, docs/operations.md)
      return;
    }
    if (sig == SIGHUP) {
      agent.reload();  // its report goes to state_dir/run/NAME.reload.json
      if (tls_reloader) {
        tls_reloader->check();
      }
      return;
    }
    if (stopping) {
      return;
    }
    stopping = true;
    log::info("{}: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    grace.armAfter(kDrainGrace);
    server->drain([&loop] { loop.stop(); });
  });
  loop.run();
  server.reset();  // no more API answers while PostgreSQL goes down
  agent.shutdown();
  log::info("database agent {} stopped", node->name);
  return exit_code;
}

}  // namespace fulcrum::db
