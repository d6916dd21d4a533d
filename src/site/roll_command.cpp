#include "site/roll_command.h"

#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/exit_codes.h"
#include "http/client.h"
#include "run/node_files.h"
#include "tls/client_context.h"

namespace fulcrum::site {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kCallTimeout = std::chrono::seconds(3);
constexpr auto kPoll = std::chrono::milliseconds(100);

struct Lb {
  std::string name;
  core::SocketAddress stats;
  // [security] internal_tls: the stats listener speaks HTTPS, and its admin API needs the
  // operator's client certificate.
  std::shared_ptr<core::ClientTransportFactory> tls;
};

// One call to an lb's stats listener; the body, or nullopt with `error`.
std::optional<std::string> call(const Lb& lb, http::Method method, const std::string& path, const std::string& token,
                                const std::string& body, std::string& error) {
  const std::string auth = token.empty() ? std::string() : "Authorization: Bearer " + token + "\r\n";
  http::ClientRequest request;
  request.method = method;
  request.path = path;
  request.body = body;
  request.headers = auth;
  request.replay = http::Replay::Safe;
  http::ClientOptions options;
  options.tls = lb.tls;
  http::ClientOutcome out = http::fetchOnce(lb.stats, request, Clock::now() + kCallTimeout, options);
  if (!out.response.ok) {
    error = fmt::format("{} ({}): {}", lb.name, lb.stats.toString(), out.response.error);
    return std::nullopt;
  }
  if (out.response.value.status != 200) {
    error = fmt::format("{} ({}): {} {}: HTTP {}: {}", lb.name, lb.stats.toString(), method == http::Method::Post ? "POST" : "GET",
                        path, out.response.value.status, out.response.value.body);
    return std::nullopt;
  }
  return out.response.value.body;
}

// The server named `name` in an lb's /api/state, or null.
std::optional<nlohmann::json> serverState(const Lb& lb, const std::string& name, std::string& error) {
  auto body = call(lb, http::Method::Get, "/api/state", "", "", error);
  if (!body) {
    return std::nullopt;
  }
  nlohmann::json state = nlohmann::json::parse(*body, nullptr, false);
  if (state.is_object() && state.contains("servers") && state["servers"].is_array()) {
    for (const nlohmann::json& s : state["servers"]) {
      if (s.is_object() && s.value("name", "") == name) {
        return s;
      }
    }
  }
  error = fmt::format("{}: no server {} in /api/state", lb.name, name);
  return std::nullopt;
}

// Polls `done` until it holds or `timeout` passes; `what` names the wait in the error.
bool waitFor(const std::function<bool(std::string&)>& done, std::chrono::seconds timeout, std::string& error) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    std::string why;
    if (done(why)) {
      return true;
    }
    if (Clock::now() >= deadline) {
      error = why;
      return false;
    }
    std::this_thread::sleep_for(kPoll);
  }
}

bool setState(const std::vector<Lb>& lbs, const std::string& name, const char* state, const std::string& token,
              std::string& error) {
  for (const Lb& lb : lbs) {
    if (!call(lb, http::Method::Post, "/api/servers/" + name + "/state", token,
              fmt::format("{{\"state\":\"{}\"}}", state), error)) {
      return false;
    }
  }
  return true;
}

}  // namespace

int runRollCommand(const config::Site& site, const RollOptions& options) {
  if (options.role != "web") {
    std::fprintf(stderr, "fulcrum roll --role %s: not built yet (web only; an lb takes `fulcrum lb --takeover`, a "
                 "database node `POST /switchover` first)\n", options.role.c_str());
    return core::kExitConfig;
  }
  std::shared_ptr<core::ClientTransportFactory> operator_tls;
  if (site.security.internal_tls) {
    std::string error;
    operator_tls = tls::ClientContext::forHolder(site, "operator", error);
    if (!operator_tls) {
      std::fprintf(stderr, "internal_tls: no client certificate for the admin API: %s\n", error.c_str());
      return 1;
    }
  }
  std::vector<Lb> lbs;
  for (const config::LbNode& n : site.lb.nodes) {
    if (n.stats) {
      lbs.push_back({n.name, *n.stats, operator_tls});
    }
  }
  if (lbs.empty() || lbs.size() != site.lb.nodes.size()) {
    std::fprintf(stderr, "%s: every [[lb.node]] needs a `stats` address for a rolling restart (that is where a "
                 "server is drained)\n", site.display_path.c_str());
    return core::kExitConfig;
  }
  std::string token;
  {
    std::ifstream in(site.site.state_dir / "admin.token");
    std::getline(in, token);
    if (token.empty()) {
      std::fprintf(stderr, "%s: no admin token (is the site running?)\n",
                   (site.site.state_dir / "admin.token").c_str());
      return 1;
    }
  }
  std::vector<const config::WebNode*> nodes;
  for (const config::WebNode& w : site.web.nodes) {
    if (options.nodes.empty() || std::find(options.nodes.begin(), options.nodes.end(), w.name) != options.nodes.end()) {
      nodes.push_back(&w);
    }
  }
  for (const std::string& name : options.nodes) {
    if (site.findWebNode(name) == nullptr) {
      std::fprintf(stderr, "%s: no [[web.node]] named '%s'\n", site.display_path.c_str(), name.c_str());
      return core::kExitConfig;
    }
  }
  const auto& state_dir = site.site.state_dir;
  size_t rolled = 0;
  for (const config::WebNode* node : nodes) {
    const std::string& name = node->name;
    std::optional<pid_t> pid = run::runningPid(state_dir, name);
    if (!pid) {
      std::printf("%-12s not running here: skipped\n", name.c_str());
      continue;
    }
    const auto started = Clock::now();
    std::string error;
    auto failed = [&](const std::string& step) {
      std::fprintf(stderr, "%s: %s: %s\n%s is left drained at the load balancers: once it is fine, POST "
                   "{\"state\":\"ready\"} to /api/servers/%s/state (or run fulcrum roll --node %s again)\n",
                   name.c_str(), step.c_str(), error.c_str(), name.c_str(), name.c_str(), name.c_str());
      return 1;
    };
    // 1. Out of rotation everywhere, and its requests done.
    if (!setState(lbs, name, "drain", token, error)) {
      return failed("drain");
    }
    if (!waitFor(
            [&](std::string& why) {
              for (const Lb& lb : lbs) {
                auto s = serverState(lb, name, why);
                if (!s) {
                  return false;
                }
                if (s->value("inflight", uint64_t{1}) != 0) {
                  why = fmt::format("{} still has {} request(s) in flight at {}", name, s->value("inflight", 0), lb.name);
                  return false;
                }
              }
              return true;
            },
            options.step_timeout, error)) {
      return failed("waiting for its requests");
    }
    // 2. Stopped (gracefully); its supervisor starts it again.
    if (::kill(*pid, SIGTERM) != 0) {
      error = fmt::format("kill {}: {}", *pid, std::strerror(errno));
      return failed("stop");
    }
    pid_t next = 0;
    if (!waitFor(
            [&](std::string& why) {
              std::optional<pid_t> now = run::runningPid(state_dir, name);
              if (now && *now != *pid) {
                next = *now;
                return true;
              }
              why = now ? fmt::format("pid {} has not exited", *pid)
                        : "not started again (is it supervised by fulcrum up or systemd?)";
              return false;
            },
            options.step_timeout, error)) {
      return failed("restart");
    }
    // 3. Answering, and up at every lb; then back in rotation.
    if (!waitFor(
            [&](std::string& why) {
              http::ClientRequest health;
              health.path = "/healthz";
              health.replay = http::Replay::Safe;
              http::ClientOptions own_options;
              own_options.tls = operator_tls;  // under internal_tls a web node answers site certificates only
              auto own = http::fetchOnce(node->listen, health, Clock::now() + kCallTimeout, own_options);
              if (!own.response.ok || own.response.value.status != 200) {
                why = fmt::format("{} does not answer /healthz yet", name);
                return false;
              }
              for (const Lb& lb : lbs) {
                auto s = serverState(lb, name, why);
                if (!s) {
                  return false;
                }
                if (s->value("health", "") != "up") {
                  why = fmt::format("{} is not up at {} yet", name, lb.name);
                  return false;
                }
              }
              return true;
            },
            options.step_timeout, error)) {
      return failed("waiting for it to be healthy");
    }
    if (!setState(lbs, name, "ready", token, error)) {
      return failed("ready");
    }
    ++rolled;
    std::printf("%-12s restarted (pid %d -> %d) in %.1f s\n", name.c_str(), *pid, next,
                std::chrono::duration<double>(Clock::now() - started).count());
    std::fflush(stdout);
  }
  std::printf("%zu of %zu %s node(s) restarted\n", rolled, nodes.size(), options.role.c_str());
  return 0;
}

}  // namespace fulcrum::site
