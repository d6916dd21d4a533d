#include "web/web_command.h"

#include <signal.h>

#include <atomic>
#include <memory>
#include <vector>

#include "core/event_loop.h"
#include "core/exit_codes.h"
#include "core/graceful_stop.h"
#include "core/log.h"
#include "core/signals.h"
#include "core/socket.h"
#include "core/workers.h"
#include "http/server.h"
#include "web/web_app.h"

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
  options.served_by = node.name;
  return options;
}

}  // namespace

int runWebCommand(const config::Site& site, const std::string& node_name) {
  const config::WebNode* node = site.findWebNode(node_name);
  if (node == nullptr) {
    log::error("{}: no [[web.node]] named '{}'", site.file.string(), node_name);
    return kExitConfig;
  }
  if (site.web.app == "guestbook") {
    // The guestbook application is not built yet: refuse rather than pretend it runs.
    log::error("{}",
               site.errorAt("web.app", "\"guestbook\" is not supported yet by this build; set app = \"none\"")
                   .toString());
    return kExitConfig;
  }
  log::setComponent(node->name);
  core::blockSignals();

  unsigned threads = core::resolveThreadCount(node->threads);
  std::vector<core::Fd> listeners;
  for (unsigned i = 0; i < threads; ++i) {
    std::string error;
    core::Fd fd = core::listenTcp(node->listen, core::ListenOptions{}, error);
    if (!fd) {
      log::error("{}", error);
      return kExitRuntime;
    }
    listeners.push_back(std::move(fd));
  }

  std::vector<std::unique_ptr<http::ServerStats>> stats;
  for (unsigned i = 0; i < threads; ++i) {
    stats.push_back(std::make_unique<http::ServerStats>());
  }
  std::unique_ptr<WebApp> app;
  try {
    app = std::make_unique<WebApp>(node->name, site.web.docroot, stats);
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return kExitRuntime;
  }

  const http::ServerOptions options = serverOptions(site, *node);
  core::EventLoop main_loop;
  std::vector<std::unique_ptr<http::HttpServer>> servers(threads);
  core::WorkerGroup workers;
  workers.start(threads, [&](core::EventLoop& loop, unsigned i) {
    servers[i] = std::make_unique<http::HttpServer>(loop, std::move(listeners[i]), *app, options, *stats[i]);
  });
  log::info("web node {} serving {} on http://{} with {} worker(s)", node->name, site.web.docroot.string(),
            node->listen.toString(), threads);

  core::StopHooks hooks;
  hooks.drain_worker = [&](unsigned i, std::function<void()> idle) { servers[i]->drain(std::move(idle)); };
  hooks.on_reload = [] {
    log::info("SIGHUP: a web node has no settings to reload; restart it to apply changes");
  };
  hooks.grace = kDrainGrace;
  core::runUntilStopped(main_loop, workers, hooks);
  servers.clear();
  log::info("web node {} stopped", node->name);
  return kExitOk;
}

}  // namespace fulcrum::web
