#include "site/reload_command.h"

#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/exit_codes.h"
#include "run/node_files.h"

namespace fulcrum::site {

namespace {

struct Target {
  std::string role;
  std::string name;
};

std::vector<Target> siteNodes(const config::Site& site) {
  std::vector<Target> out;
  for (const auto& n : site.lb.nodes) {
    out.push_back({"lb", n.name});
  }
  for (const auto& n : site.web.nodes) {
    out.push_back({"web", n.name});
  }
  for (const auto& n : site.db.nodes) {
    out.push_back({"db", n.name});
  }
  return out;
}

}  // namespace

int runReloadCommand(const config::Site& site, const ReloadOptions& options) {
  std::vector<Target> targets;
  for (const Target& t : siteNodes(site)) {
    if (options.nodes.empty() || std::find(options.nodes.begin(), options.nodes.end(), t.name) != options.nodes.end()) {
      targets.push_back(t);
    }
  }
  for (const std::string& name : options.nodes) {
    if (std::none_of(targets.begin(), targets.end(), [&](const Target& t) { return t.name == name; })) {
      std::fprintf(stderr, "%s: no node named '%s'\n", site.display_path.c_str(), name.c_str());
      return core::kExitConfig;
    }
  }
  const std::filesystem::path& state_dir = site.site.state_dir;
  nlohmann::json out = nlohmann::json::array();
  bool all_ok = true;
  size_t running = 0;
  for (const Target& t : targets) {
    nlohmann::json row{{"role", t.role}, {"name", t.name}};
    std::optional<pid_t> pid = run::runningPid(state_dir, t.name);
    if (!pid) {
      row["state"] = "not running here";
      if (!options.json) {
        std::printf("%-4s %-12s not running here\n", t.role.c_str(), t.name.c_str());
      }
      out.push_back(std::move(row));
      continue;
    }
    ++running;
    row["pid"] = *pid;
    std::optional<run::ReloadReport> before = run::readReloadReport(state_dir, t.name);
    auto fresh = [&](const run::ReloadReport& r) {
      return r.pid == *pid && (!before || before->pid != *pid || r.sequence > before->sequence);
    };
    if (::kill(*pid, SIGHUP) != 0) {
      all_ok = false;
      row["state"] = "cannot signal";
      if (!options.json) {
        std::printf("%-4s %-12s cannot signal pid %d\n", t.role.c_str(), t.name.c_str(), *pid);
      }
      out.push_back(std::move(row));
      continue;
    }
    std::optional<run::ReloadReport> report;
    const auto deadline = std::chrono::steady_clock::now() + options.wait;
    while (std::chrono::steady_clock::now() < deadline) {
      report = run::readReloadReport(state_dir, t.name);
      if (report && fresh(*report)) {
        break;
      }
      report.reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!report) {
      all_ok = false;
      row["state"] = "no report";
      if (!options.json) {
        std::printf("%-4s %-12s signalled (pid %d) but no report within %lld ms: see its log\n", t.role.c_str(),
                    t.name.c_str(), *pid, static_cast<long long>(options.wait.count()));
      }
      out.push_back(std::move(row));
      continue;
    }
    all_ok = all_ok && report->ok;
    row["state"] = report->ok ? "reloaded" : "refused";
    row["report"] = nlohmann::json::parse(report->toJson());
    if (!options.json) {
      std::string text = report->summary();
      std::printf("%-4s %-12s %s\n", t.role.c_str(), t.name.c_str(), text.c_str());
    }
    out.push_back(std::move(row));
  }
  if (options.json) {
    std::printf("%s\n", out.dump(2).c_str());
  }
  if (running == 0) {
    std::fprintf(stderr, "no node of %s runs on this host (no live pid file in %s)\n", site.display_path.c_str(),
                 run::runDir(state_dir).c_str());
    return 1;
  }
  return all_ok ? core::kExitOk : 1;
}

int runUpgradeCommand(const config::Site& site, const ReloadOptions& options) {
  const std::filesystem::path& state_dir = site.site.state_dir;
  std::optional<pid_t> up = run::runningPid(state_dir, run::kUpPidName);
  if (!up) {
    std::fprintf(stderr,
                 "no `fulcrum up` runs %s on this host: for a node run by hand or by systemd, start the new binary "
                 "with `fulcrum lb --site FILE --node NAME --takeover`\n",
                 site.display_path.c_str());
    return 1;
  }
  std::vector<std::pair<std::string, pid_t>> waiting;
  for (const config::LbNode& n : site.lb.nodes) {
    if (!options.nodes.empty() && std::find(options.nodes.begin(), options.nodes.end(), n.name) == options.nodes.end()) {
      continue;
    }
    std::optional<pid_t> pid = run::runningPid(state_dir, n.name);
    if (!pid) {
      std::printf("lb   %-12s not running here\n", n.name.c_str());
    } else if (site.lb.vip || n.db_write || n.db_read) {
      std::printf("lb   %-12s has [lb.vip] or database frontends: not upgraded in place yet (restart it)\n",
                  n.name.c_str());
    } else {
      waiting.emplace_back(n.name, *pid);
    }
  }
  if (waiting.empty()) {
    std::fprintf(stderr, "no load balancer of %s to upgrade here\n", site.display_path.c_str());
    return 1;
  }
  if (::kill(*up, SIGUSR2) != 0) {
    std::fprintf(stderr, "cannot signal fulcrum up (pid %d): %s\n", *up, std::strerror(errno));
    return 1;
  }
  bool all = true;
  // The new process owns the pid file once the old one has drained (up to its 10 s grace).
  const auto deadline = std::chrono::steady_clock::now() + options.wait + std::chrono::seconds(20);
  for (const auto& [name, old] : waiting) {
    pid_t now = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      std::optional<pid_t> holder = run::runningPid(state_dir, name);
      if (holder && *holder != old) {
        now = *holder;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (now != 0) {
      std::printf("lb   %-12s upgraded (pid %d -> %d)\n", name.c_str(), old, now);
    } else {
      all = false;
      std::printf("lb   %-12s not upgraded in time: see fulcrum up's output and the node's log\n", name.c_str());
    }
    std::fflush(stdout);
  }
  return all ? core::kExitOk : 1;
}

}  // namespace fulcrum::site
