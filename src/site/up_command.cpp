#include "site/up_command.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "config/features.h"
#include "config/loader.h"
#include "core/event_loop.h"
#include "core/exit_codes.h"
#include "core/log.h"
#include "core/signals.h"
#include "core/socket.h"
#include "pg/pg_bin.h"
#include "run/node_files.h"
#include "site/backoff.h"
#include "site/certs_command.h"
#include "site/child.h"
#include "site/child_logs.h"
#include "site/lock.h"
#include "site/monitoring.h"
#include "site/plan.h"
#include "site/probe.h"
#include "site/status.h"
#include "site/up_control.h"
#include "tls/client_context.h"
#include "tls/site_pki.h"

namespace fulcrum::site {

namespace {

namespace fs = std::filesystem;
using core::kExitConfig;
using core::kExitOk;
using core::kExitRuntime;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// up's progress on stdout: the lines a person reads, or with --log-format json one JSON object
// per line ("event" first) for a script or a log collector.
void progress(std::string_view event, nlohmann::json fields, const std::string& text) {
  if (log::format() == log::Format::Json) {
    nlohmann::json line = {{"event", event}};
    line.update(fields);
    std::printf("%s\n", line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("%s\n", text.c_str());
  }
  std::fflush(stdout);
}

// The lb, web and db nodes one file has and the other not ("web web-3 added"): `up` starts and
// stops children only at its own start and stop.
template <typename Node>
void diffNodes(std::string_view role, const std::vector<Node>& before, const std::vector<Node>& after,
               std::vector<std::string>& out) {
  auto has = [](const std::vector<Node>& nodes, const std::string& name) {
    return std::any_of(nodes.begin(), nodes.end(), [&](const Node& n) { return n.name == name; });
  };
  for (const Node& n : after) {
    if (!has(before, n.name)) {
      out.push_back(fmt::format("{} {} added", role, n.name));
    }
  }
  for (const Node& n : before) {
    if (!has(after, n.name)) {
      out.push_back(fmt::format("{} {} removed", role, n.name));
    }
  }
}

std::string seconds1(double s) {
  return fmt::format("{:.1f}", s);
}

// "14:03:07", local time: when an operator stopped a node.
std::string clockTime(std::chrono::system_clock::time_point at) {
  const std::time_t t = std::chrono::system_clock::to_time_t(at);
  std::tm local{};
  ::localtime_r(&t, &local);
  char text[16];
  std::strftime(text, sizeof text, "%H:%M:%S", &local);
  return text;
}

// Readiness: each check may take this long, and checks of a group repeat this often until its
// deadline (ChildSpec::start_timeout).
constexpr milliseconds kProbeTimeout{500};
constexpr milliseconds kProbeInterval{100};
constexpr size_t kLogTailLines = 15;
// internal_tls: how often a running `up` renews the certificates that are due (tls/site_pki.h:
// a node's lives 90 days and is renewed with less than 30 left).
constexpr std::chrono::hours kCertificateRenewal{12};

double secondsOf(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string tailOf(const fs::path& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> last;
  for (std::string line; std::getline(in, line);) {
    last.push_back(std::move(line));
    if (last.size() > lines) {
      last.erase(last.begin());
    }
  }
  std::string out;
  for (const auto& line : last) {
    out += "    " + line + "\n";
  }
  return out;
}


bool portFree(const core::SocketAddress& address) {
  std::string error;
  return core::listenTcp(address, core::ListenOptions{false, 1}, error).valid();
}

// Creates `dir` (0755, so the PostgreSQL OS user can traverse it) unless it exists.
bool makeDir(const fs::path& dir, std::string& error) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) {
    return true;
  }
  fs::create_directories(dir, ec);
  if (ec) {
    error = "cannot create " + dir.string() + ": " + ec.message();
    return false;
  }
  ::chmod(dir.c_str(), 0755);
  return true;
}

// An operator's `fulcrum stop|start|restart` waiting for its answer; `done`: what was done
// before (a restart's stop).
struct PendingReply {
  ControlReply reply;
  std::string done;
};

nlohmann::json failed(const std::string& error) {
  return {{"ok", false}, {"error", error}};
}

struct Child {
  ChildSpec spec;
  pid_t pid = 0;  // 0: not running
  Clock::time_point started{};
  RestartBackoff backoff;
  std::unique_ptr<core::Timer> restart;
  std::unique_ptr<core::Timer> watch;  // probes a restarted child until it answers
  bool ready = false;    // answered its probe since its last start
  bool gave_up = false;  // exited and will not be restarted
  pid_t successor = 0;   // an lb started with --takeover to replace this one (SIGUSR2)
  std::string last_error;
  int crashes = 0;  // exits `up` did not ask for
  // `fulcrum stop`: kept down until `fulcrum start`; neither restarted nor a failure.
  bool held = false;
  std::chrono::system_clock::time_point held_since{};
  bool start_after_stop = false;  // `fulcrum restart`
  pid_t stopping_pid = 0;
  Clock::time_point stop_began{};
  std::unique_ptr<core::Timer> kill;   // SIGKILL when an operator's stop outlasts stop_timeout
  std::vector<PendingReply> on_exit;   // stops waiting for the exit
  std::vector<PendingReply> on_ready;  // starts waiting for the probe's answer
};

class Up {
 public:
  // `probe_tls`: the operator's client TLS for the probes of nodes that speak only TLS.
  Up(const config::Site& site, const UpOptions& options, std::vector<ChildSpec> specs, UpEnvironment* env,
     std::shared_ptr<core::ClientTransportFactory> probe_tls)
      : site_(site), options_(options), env_(env), probe_tls_(std::move(probe_tls)), begin_(Clock::now()) {
    for (auto& spec : specs) {
      auto child = std::make_unique<Child>();
      child->spec = std::move(spec);
      Child* raw = child.get();
      child->restart = std::make_unique<core::Timer>(loop_, [this, raw] { restartChild(*raw); });
      child->watch = std::make_unique<core::Timer>(loop_, [this, raw] { watchRestarted(*raw); });
      child->kill = std::make_unique<core::Timer>(loop_, [this, raw] { killStopping(*raw); });
      children_.push_back(std::move(child));
    }
  }

  int run() {
    core::SignalWatcher signals(loop_, {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2},
                                [this](int sig) { onSignal(sig); });
    // `fulcrum reload --upgrade` finds this process by its pid file.
    std::string pid_error;
    std::unique_ptr<run::PidFile> pid_file = run::PidFile::create(site_.site.state_dir, run::kUpPidName, pid_error);
    if (!pid_file) {
      log::warn("{}: `fulcrum reload --upgrade` will not find this process", pid_error);
    }
    // Before the first child: `fulcrum status` lists them while they start.
    std::string control_error;
    if (!control_.listen(controlSocketPath(site_.site.state_dir), control_error)) {
      log::warn("control socket: {}: `fulcrum stop|start|restart` cannot reach this `up`", control_error);
    }
    progress("up.start",
             {{"site", site_.site.name}, {"file", site_.display_path}, {"state_dir", site_.site.state_dir.string()}},
             fmt::format("fulcrum up: {} ({}), state in {}", site_.site.name, site_.display_path,
                         site_.site.state_dir.string()));
    bool started = true;
    for (Role role : kStartOrder) {
      if (!startRole(role)) {
        started = false;
        break;
      }
    }
    starting_ = false;
    core::Timer renewal(loop_, [&] {
      renewCertificates();
      renewal.armAfter(kCertificateRenewal);
    });
    if (started && site_.security.internal_tls) {
      renewal.armAfter(kCertificateRenewal);
    }
    if (started) {
      printUrls();
      if (env_ != nullptr) {
        env_->ready();
      }
      while (!stop_requested_) {
        loop_.runOnce(std::chrono::seconds(60));
      }
    }
    if (!failure_.empty()) {
      if (log::format() == log::Format::Json) {
        progress("up.failed", {{"error", failure_}}, "");
      } else {
        std::fprintf(stderr, "fulcrum up: %s\nstopping what was started\n", failure_.c_str());
      }
    }
    stopAll();
    if (!failure_.empty()) {
      return kExitRuntime;
    }
    double took = secondsOf(Clock::now() - begin_);
    progress("up.stopped", {{"t_s", took}}, fmt::format("fulcrum up: stopped ({} s)", seconds1(took)));
    return kExitOk;
  }

 private:
  std::vector<Child*> ofRole(Role role) {
    std::vector<Child*> out;
    for (auto& c : children_) {
      if (c->spec.role == role) {
        out.push_back(c.get());
      }
    }
    return out;
  }

  void onSignal(int sig) {
    if (sig == SIGCHLD) {
      reap();
      return;
    }
    if (sig == SIGHUP) {
      if (!stop_requested_) {
        reloadChildren();
      }
      return;
    }
    if (sig == SIGUSR2) {
      if (!stop_requested_) {
        upgradeLbs();
      }
      return;
    }
    if (sig == SIGUSR1) {
      reopenLogs();
      return;
    }
    if (stop_requested_) {
      if (!kill_now_) {
        kill_now_ = true;
        progress("up.killing", nlohmann::json::object(), "fulcrum up: second signal: killing what is left");
      }
      return;
    }
    stop_requested_ = true;
    const char* name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    progress("up.stopping", {{"signal", name}},
             fmt::format("fulcrum up: {}: stopping (monitoring, load balancers, web, databases, etcd; again to "
                         "kill at once)",
                         name));
  }

  // SIGUSR1 (logrotate's postrotate): `up` reopens the per-node files it writes, and each running
  // lb, web and db node its own (access log, --log-file). etcd and Prometheus would end on it.
  void reopenLogs() {
    log::reopen();
    logs_.reopenAll();
    for (auto& c : children_) {
      const bool ours = c->spec.role == Role::Lb || c->spec.role == Role::Web || c->spec.role == Role::Db;
      if (ours && c->pid > 0 && c->ready) {  // one still starting has not blocked SIGUSR1 yet
        ::kill(c->pid, SIGUSR1);
      }
    }
  }

  // Forks `spec` with its output through its log pipe.
  pid_t spawnLogged(const ChildSpec& spec, std::string& error) {
    const int output = logs_.writerFor(spec.log, error);
    if (output < 0) {
      return -1;
    }
    const pid_t pid = spawnChild(spec, error, output);
    if (pid > 0) {
      logs_.note(spec.log, startedBanner(spec, pid));
    }
    return pid;
  }

  // SIGHUP: every running lb, web and db node re-reads the file itself (and writes its report in
  // state_dir/run); `up` forwards the signal and names the nodes the file adds or removes, which
  // it does not start or stop while running. etcd (SIGHUP would end it) and Prometheus and
  // Alertmanager (their files are written by `up` at start) are not signalled.
  void reloadChildren() {
    if (site_.security.internal_tls) {
      renewCertificates();  // a reissued pair is taken by its node on this SIGHUP
    }
    std::vector<std::string> signalled;
    for (auto& c : children_) {
      const bool reloads = c->spec.role == Role::Lb || c->spec.role == Role::Web || c->spec.role == Role::Db;
      // Only a child that answered its probe has its signals blocked: SIGHUP would end one
      // still starting.
      if (reloads && c->pid > 0 && c->ready && ::kill(c->pid, SIGHUP) == 0) {
        signalled.push_back(c->spec.name);
      }
    }
    progress("up.reload", {{"signalled", signalled}},
             fmt::format("fulcrum up: SIGHUP: forwarded to {} node(s): {}", signalled.size(),
                         fmt::join(signalled, ", ")));
    config::LoadResult loaded = config::loadSiteFile(site_.file);
    if (!loaded.ok()) {
      for (const config::ConfigError& error : loaded.errors) {
        log::error("reload: {}", error.toString());
      }
      return;  // each node refuses the file too, and keeps running as it is
    }
    std::vector<std::string> restart;
    diffNodes("lb", site_.lb.nodes, loaded.site.lb.nodes, restart);
    diffNodes("web", site_.web.nodes, loaded.site.web.nodes, restart);
    diffNodes("db", site_.db.nodes, loaded.site.db.nodes, restart);
    for (const std::string& what : restart) {
      log::warn("reload: {}: restart `fulcrum up` to apply", what);
    }
  }

  // internal_tls: certificates due are renewed in place while the site runs (every
  // kCertificateRenewal and on SIGHUP); each node notices its new files and takes them without a
  // restart (tls::NodeTlsWatch), etcd reads them at each handshake, Prometheus at each scrape.
  void renewCertificates() {
    std::string error;
    if (!ensureCertificates(site_, error)) {
      log::error("internal_tls: certificates not renewed: {}; trying again in {} h", error,
                 std::chrono::duration_cast<std::chrono::hours>(kCertificateRenewal).count());
    }
  }

  // SIGUSR2 (`fulcrum reload --upgrade`): each running lb that can be taken over is replaced by a
  // new process of the binary now at its path, started with --takeover: it takes the listening
  // sockets, the old one drains and exits, and the new one is the node from then on (reap()).
  void upgradeLbs() {
    std::vector<std::string> started;
    for (auto& c : children_) {
      if (c->spec.role != Role::Lb || c->pid == 0 || !c->ready || c->successor != 0) {
        continue;
      }
      const config::LbNode* node = site_.findLbNode(c->spec.name);
      if (node == nullptr || site_.lb.vip || node->db_write || node->db_read) {
        log::warn("upgrade: {} has [lb.vip] or database frontends: not taken over in place yet; restart it",
                  c->spec.name);
        continue;
      }
      ChildSpec spec = c->spec;
      spec.argv.push_back("--takeover");
      std::string error;
      pid_t pid = spawnLogged(spec, error);
      if (pid < 0) {
        log::error("upgrade: {}: {}", c->spec.name, error);
        continue;
      }
      c->successor = pid;
      started.push_back(fmt::format("{} (pid {} takes over from {})", c->spec.name, pid, c->pid));
    }
    progress("up.upgrade", {{"started", started}},
             fmt::format("fulcrum up: SIGUSR2: upgrading {} load balancer(s): {}", started.size(),
                         fmt::join(started, ", ")));
  }

  bool spawn(Child& c) {
    std::string error;
    pid_t pid = spawnLogged(c.spec, error);
    if (pid < 0) {
      c.last_error = error;
      return false;
    }
    c.pid = pid;
    c.started = Clock::now();
    c.ready = false;
    if (env_ != nullptr) {
      env_->started(c.spec, pid);
    }
    return true;
  }

  void reap() {
    logs_.drainAll();  // an exited child's last lines, before its exit is reported
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (auto& c : children_) {
        if (c->successor == pid) {
          // The new process gave up before the old one left: the old one serves on.
          log::error("upgrade: {}: the new process (pid {}) exited ({}); pid {} keeps serving; see {}", c->spec.name,
                     pid, describeWaitStatus(status), c->pid, c->spec.log.string());
          c->successor = 0;
          break;
        }
        if (c->pid == pid && c->successor != 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
          // Handed over and drained: the successor is the node now.
          log::info("upgrade: {}: pid {} drained and exited; pid {} is the node now", c->spec.name, pid,
                    c->successor);
          c->pid = std::exchange(c->successor, 0);
          c->started = Clock::now();
          if (env_ != nullptr) {
            env_->started(c->spec, c->pid);
          }
          break;
        }
        if (c->pid == pid) {
          if (c->successor != 0) {
            // Died during the handover: the successor (serving, or about to) is the node.
            log::warn("upgrade: {}: pid {} exited ({}) during the handover; pid {} is the node now", c->spec.name,
                      pid, describeWaitStatus(status), c->successor);
            c->pid = std::exchange(c->successor, 0);
            c->started = Clock::now();
            if (env_ != nullptr) {
              env_->started(c->spec, c->pid);
            }
            break;
          }
          onExit(*c, status);
          break;
        }
      }
    }
  }

  void onExit(Child& c, int status) {
    const auto ran = Clock::now() - c.started;
    c.pid = 0;
    c.ready = false;
    if (stop_requested_) {
      return;  // stopAll() reports it
    }
    if (c.held) {
      onOperatorStopped(c, status);
      return;
    }
    const std::string how = describeWaitStatus(status);
    c.last_error = how;
    ++c.crashes;
    for (PendingReply& p : std::exchange(c.on_ready, {})) {
      p.reply(failed(fmt::format("{}{} exited ({}) before it answered {}; see {}", p.done, c.spec.name, how,
                                 c.spec.probe.url(), c.spec.log.string())));
    }
    // Before a restart or giving up: e.g. the virtual IP a killed lb left on its interface.
    runAfterExit(c);
    const bool refused = WIFEXITED(status) && WEXITSTATUS(status) == kExitConfig;
    const bool exec_failed = WIFEXITED(status) && WEXITSTATUS(status) == kExecFailed;
    if (refused || exec_failed || !options_.restart) {
      c.gave_up = true;
      std::string why = refused       ? "it refused its configuration"
                        : exec_failed ? "its program could not be executed"
                                      : "--no-restart";
      log::error("{} exited ({}) after {:.1f} s; not restarting: {}; see {}", c.spec.name, how, secondsOf(ran), why,
                 c.spec.log.string());
      if (starting_) {
        failure_ = c.spec.name + " exited (" + how + "): " + why + "; last lines of " + c.spec.log.string() +
                   ":\n" + tailOf(c.spec.log, kLogTailLines);
      } else if (std::none_of(children_.begin(), children_.end(),
                              [](const auto& x) { return x->pid != 0 || x->held; })) {
        failure_ = "every process of the site has exited";
        stop_requested_ = true;
      }
      return;
    }
    auto delay = c.backoff.onExit(ran);
    log::warn("{} exited ({}) after {:.1f} s; restarting in {:.1f} s (log: {})", c.spec.name, how, secondsOf(ran),
              std::chrono::duration<double>(delay).count(), c.spec.log.string());
    c.restart->armAfter(delay);
  }

  void runAfterExit(Child& c) {
    if (c.spec.after_exit.empty()) {
      return;
    }
    std::string error;
    const int after = runToCompletion(c.spec, c.spec.after_exit, std::chrono::seconds(3), error);
    if (after != 0) {
      log::warn("{}: after its exit, `{}` failed: {}", c.spec.name, c.spec.after_exit.back(),
                after < 0 ? error : describeWaitStatus(after));
    }
  }

  void restartChild(Child& c) {
    if (stop_requested_ || c.pid != 0 || c.held) {
      return;
    }
    if (env_ != nullptr && !env_->mayRestart(c.spec)) {
      c.restart->armAfter(std::chrono::seconds(1));
      return;
    }
    if (!spawn(c)) {
      auto delay = c.backoff.onExit(Clock::duration::zero());
      log::error("cannot restart {}: {}; trying again in {:.1f} s", c.spec.name, c.last_error,
                 std::chrono::duration<double>(delay).count());
      c.restart->armAfter(delay);
      return;
    }
    log::info("restarted {} (pid {})", c.spec.name, c.pid);
    if (!starting_) {
      c.watch->armAfter(kProbeInterval);  // while starting, startRole() probes it
    }
  }

  void watchRestarted(Child& c) {
    if (stop_requested_ || c.pid == 0) {
      return;
    }
    const auto since = Clock::now() - c.started;
    ProbeResult r = runProbe(c.spec.probe, kProbeTimeout, probe_tls_);
    if (r.ok) {
      c.ready = true;
      log::info("{} answers {} again ({:.1f} s after its restart)", c.spec.name, c.spec.probe.url(), secondsOf(since));
      for (PendingReply& p : std::exchange(c.on_ready, {})) {
        p.reply({{"ok", true},
                 {"message",
                  fmt::format("{}started {} (pid {}): answers {} after {} s", p.done, c.spec.name, c.pid,
                              c.spec.probe.url(), seconds1(secondsOf(Clock::now() - c.started)))}});
      }
    } else if (since > c.spec.start_timeout) {
      log::warn("{} has not answered {} within {:.0f} s of its restart ({}); see {}", c.spec.name,
                c.spec.probe.url(), secondsOf(since), r.error, c.spec.log.string());
      for (PendingReply& p : std::exchange(c.on_ready, {})) {
        p.reply(failed(fmt::format(
            "{}{} (pid {}) has not answered {} within {:.0f} s ({}); it keeps running; see {}", p.done,
            c.spec.name, c.pid, c.spec.probe.url(), secondsOf(since), r.error, c.spec.log.string())));
      }
    } else {
      c.watch->armAfter(kProbeInterval);
    }
  }

  // `fulcrum stop|start|restart NODE` and `fulcrum status` (the control socket, up_control.h).
  void onControl(const ControlRequest& request, ControlReply reply) {
    if (request.op == ControlOp::List) {
      reply(listChildren());
      return;
    }
    auto found = std::find_if(children_.begin(), children_.end(),
                              [&](const auto& c) { return c->spec.name == request.node; });
    if (found == children_.end()) {
      std::vector<std::string> names;
      for (const auto& c : children_) {
        names.push_back(c->spec.name);
      }
      nlohmann::json answer = failed(fmt::format("no node named '{}' under this `fulcrum up` (nodes: {})",
                                                 request.node, fmt::join(names, ", ")));
      answer["unknown_node"] = true;
      reply(answer);
      return;
    }
    Child& c = **found;
    if (starting_ || stop_requested_) {
      reply(failed(starting_ ? "the site is still starting: try again once `fulcrum up` has printed its URLs"
                             : "fulcrum up is stopping the whole site"));
      return;
    }
    if (c.successor != 0) {
      reply(
          failed(c.spec.name + " is being upgraded (fulcrum reload --upgrade): try again when that is done"));
      return;
    }
    if (!c.on_exit.empty() || !c.on_ready.empty()) {
      reply(failed("another stop, start or restart of " + c.spec.name + " is under way"));
      return;
    }
    PendingReply pending{std::move(reply), ""};
    if (request.op == ControlOp::Stop || (request.op == ControlOp::Restart && c.pid != 0)) {
      stopByOperator(c, std::move(pending), request.op == ControlOp::Restart);
    } else {
      startByOperator(c, std::move(pending));
    }
  }

  // Each child's state for `fulcrum status`: running, starting, stopping, stopped (by an
  // operator), restarting (after a crash) or gave_up.
  nlohmann::json listChildren() const {
    nlohmann::json nodes = nlohmann::json::array();
    for (const auto& c : children_) {
      const char* state = c->held       ? (c->pid != 0 ? "stopping" : "stopped")
                          : c->pid != 0 ? (c->ready ? "running" : "starting")
                          : c->gave_up  ? "gave_up"
                                        : "restarting";
      nlohmann::json node = {
          {"name", c->spec.name},  {"role", roleName(c->spec.role)},
          {"state", state},        {"pid", c->pid != 0 ? nlohmann::json(c->pid) : nlohmann::json()},
          {"crashes", c->crashes}, {"last_error", c->last_error}};
      if (c->held) {
        node["stopped_at"] =
            std::chrono::duration<double>(c->held_since.time_since_epoch()).count();  // Unix time
      }
      nodes.push_back(std::move(node));
    }
    return {{"ok", true}, {"site", site_.site.name}, {"pid", ::getpid()}, {"nodes", nodes}};
  }

  // SIGTERM, then SIGKILL after the child's stop_timeout, as at up's own stop; answered at its exit.
  void stopByOperator(Child& c, PendingReply pending, bool then_start) {
    const char* command = then_start ? "fulcrum restart" : "fulcrum stop";
    if (c.pid == 0) {
      if (c.held) {
        pending.reply({{"ok", true},
                       {"message", fmt::format("{} is already stopped (by an operator at {})", c.spec.name,
                                               clockTime(c.held_since))}});
        return;
      }
      // Waiting for its restart after a crash, or given up: kept down from now on.
      const std::string was =
          c.gave_up ? "it had exited and was not restarted" : "it was restarting after a crash";
      c.held = true;
      c.held_since = std::chrono::system_clock::now();
      c.restart->disarm();
      log::info("{} stopped by operator ({}): {}", c.spec.name, command, was);
      pending.reply({{"ok", true},
                     {"message", fmt::format("{} was not running ({}); kept down until `fulcrum start {}`",
                                             c.spec.name, was, c.spec.name)}});
      return;
    }
    c.held = true;
    c.held_since = std::chrono::system_clock::now();
    c.start_after_stop = then_start;
    c.ready = false;  // no SIGHUP or upgrade for it now
    c.restart->disarm();
    c.watch->disarm();
    c.stopping_pid = c.pid;
    c.stop_began = Clock::now();
    log::info("{} stopping: asked by operator ({}); SIGTERM to pid {}", c.spec.name, command, c.pid);
    ::kill(c.pid, SIGTERM);
    c.kill->armAfter(c.spec.stop_timeout);
    c.on_exit.push_back(std::move(pending));
  }

  void killStopping(Child& c) {
    if (c.pid == 0 || !c.held) {
      return;
    }
    log::warn("{} did not stop within {} s: SIGKILL", c.spec.name,
              std::chrono::duration_cast<std::chrono::seconds>(c.spec.stop_timeout).count());
    ::kill(-c.pid, SIGKILL);  // its process group: whatever it forked too
    ::kill(c.pid, SIGKILL);
  }

  void onOperatorStopped(Child& c, int status) {
    c.kill->disarm();
    const std::string how = describeWaitStatus(status);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
      runAfterExit(c);  // it had no chance to clean up (an lb's virtual IP)
    }
    const double took = secondsOf(Clock::now() - c.stop_began);
    log::info("{} stopped by operator ({}) in {:.1f} s ({})", c.spec.name,
              c.start_after_stop ? "fulcrum restart" : "fulcrum stop", took, how);
    const std::string done =
        fmt::format("stopped {} (pid {}, {}) in {} s", c.spec.name, c.stopping_pid, how, seconds1(took));
    std::vector<PendingReply> waiting = std::exchange(c.on_exit, {});
    if (c.start_after_stop) {
      c.start_after_stop = false;
      for (PendingReply& p : waiting) {
        p.done = done + "; ";
        startByOperator(c, std::move(p));
      }
      return;
    }
    for (PendingReply& p : waiting) {
      p.reply({{"ok", true},
               {"message", fmt::format("{}; kept down until `fulcrum start {}`", done, c.spec.name)}});
    }
  }

  // Spawns it now (also one waiting for its restart, or given up); answered once it answers its
  // probe, or at its start_timeout.
  void startByOperator(Child& c, PendingReply pending) {
    if (c.pid != 0) {
      pending.reply({{"ok", true},
                     {"message", fmt::format("{}{} is already running (pid {}{})", pending.done, c.spec.name,
                                             c.pid, c.ready ? "" : ", not answering its probe yet")}});
      return;
    }
    if (env_ != nullptr && !env_->mayRestart(c.spec)) {
      pending.reply(
          failed(fmt::format("{}{} is held down by `fulcrum lab kill --hold`: `fulcrum lab resume {}` "
                             "lifts that",
                             pending.done, c.spec.name, c.spec.name)));
      return;
    }
    const bool was_held = std::exchange(c.held, false);
    const bool had_given_up = std::exchange(c.gave_up, false);
    c.restart->disarm();
    c.backoff = RestartBackoff();
    if (!spawn(c)) {
      c.held = was_held;
      c.gave_up = had_given_up;
      pending.reply(failed(fmt::format("{}cannot start {}: {}", pending.done, c.spec.name, c.last_error)));
      return;
    }
    log::info("{} started by operator (fulcrum {}), pid {}", c.spec.name,
              pending.done.empty() ? "start" : "restart", c.pid);
    c.on_ready.push_back(std::move(pending));
    c.watch->armAfter(kProbeInterval);
  }

  // Starts every child of `role` and waits until each answers its probe. False when stopped
  // by a signal or when a child cannot start (failure_ set).
  bool startRole(Role role) {
    std::vector<Child*> group = ofRole(role);
    for (Child* c : group) {
      if (!spawn(*c)) {
        failure_ = "cannot start " + c->spec.name + ": " + c->last_error;
        return false;
      }
    }
    const auto role_start = Clock::now();
    for (;;) {
      if (stop_requested_ || !failure_.empty()) {
        return false;
      }
      bool all_ready = true;
      for (Child* c : group) {
        if (c->ready) {
          continue;
        }
        all_ready = false;
        if (c->pid != 0) {
          ProbeResult r = runProbe(c->spec.probe, kProbeTimeout, probe_tls_);
          if (r.ok) {
            c->ready = true;
            double at = secondsOf(Clock::now() - begin_);
            std::string_view role_name = roleName(role);
            progress("up.node_up",
                     {{"t_s", at}, {"role", role_name}, {"node", c->spec.name}, {"url", c->spec.probe.url()}},
                     fmt::format("  {:6.1f} s  {:<10} {:<12} up    {}", at, role_name, c->spec.name,
                                 c->spec.probe.url()));
            continue;
          }
          c->last_error = r.error;
        }
        if (Clock::now() - role_start > c->spec.start_timeout) {
          logs_.drainAll();
          failure_ = c->spec.name + " did not answer " + c->spec.probe.url() + " within " +
                     std::to_string(std::chrono::duration_cast<std::chrono::seconds>(c->spec.start_timeout).count()) +
                     " s (" + c->last_error + "); last lines of " + c->spec.log.string() + ":\n" +
                     tailOf(c->spec.log, kLogTailLines);
          return false;
        }
      }
      if (all_ready) {
        return true;
      }
      loop_.runOnce(kProbeInterval);  // signals (a child's exit, Ctrl-C) end the wait early
    }
  }

  void stopAll() {
    control_.close("fulcrum up is stopping the whole site");
    for (auto& c : children_) {
      c->restart->disarm();
      c->watch->disarm();
      c->kill->disarm();
      c->on_exit.clear();
      c->on_ready.clear();
    }
    stop_requested_ = true;
    if (env_ != nullptr) {
      env_->stopping();
    }
    for (auto it = std::rbegin(kStartOrder); it != std::rend(kStartOrder); ++it) {
      stopRole(*it);
    }
  }

  bool anyRunning(const std::vector<Child*>& group) {
    return std::any_of(group.begin(), group.end(), [](const Child* c) { return c->pid != 0; });
  }

  // SIGTERM to every running child of `role`, then SIGKILL to whatever is left at the deadline.
  void stopRole(Role role) {
    std::vector<Child*> group = ofRole(role);
    if (role == Role::Etcd && group.size() > 1 && !kill_now_) {
      // An etcd leader that stops while its followers run hands its leadership to one of them and
      // waits for it, up to etcd's request timeout (5 s and more) when they are stopping too: the
      // followers go first, then the leader, which finds nobody to hand over to.
      auto leader = std::find_if(group.begin(), group.end(), [this](const Child* c) {
        return c->pid != 0 &&
               etcdIsLeader(fetch(c->spec.probe.address, "/v3/maintenance/status", kProbeTimeout, "{}",
                                  c->spec.probe.tls ? probe_tls_ : nullptr)
                                .body);
      });
      if (leader != group.end()) {
        Child* last = *leader;
        group.erase(leader);
        stopGroup(role, group);
        stopGroup(role, {last});
        return;
      }
    }
    stopGroup(role, group);
  }

  void stopGroup(Role role, const std::vector<Child*>& group) {
    if (!anyRunning(group)) {
      return;
    }
    const auto start = Clock::now();
    milliseconds timeout{0};
    for (Child* c : group) {
      if (c->pid != 0) {
        ::kill(c->pid, SIGTERM);
        timeout = std::max(timeout, c->spec.stop_timeout);
      }
      if (c->successor != 0) {
        ::kill(c->successor, SIGTERM);  // an upgrade under way stops too
      }
    }
    const auto deadline = start + timeout;
    std::vector<pid_t> pids;
    for (Child* c : group) {
      pids.push_back(c->pid);
    }
    while (anyRunning(group) && !kill_now_ && Clock::now() < deadline) {
      loop_.runOnce(std::chrono::duration_cast<core::Duration>(deadline - Clock::now()));
    }
    for (Child* c : group) {
      if (c->successor != 0) {
        ::kill(-c->successor, SIGKILL);
        ::kill(c->successor, SIGKILL);
        int status = 0;
        while (::waitpid(c->successor, &status, 0) < 0 && errno == EINTR) {
        }
        c->successor = 0;
      }
      if (c->pid == 0) {
        continue;
      }
      log::warn("{} did not stop{}: SIGKILL", c->spec.name,
                kill_now_ ? "" : " within " + std::to_string(timeout.count() / 1000) + " s");
      ::kill(-c->pid, SIGKILL);  // its process group: whatever it forked too
      ::kill(c->pid, SIGKILL);
      int status = 0;
      while (::waitpid(c->pid, &status, 0) < 0 && errno == EINTR) {
      }
      c->pid = 0;
    }
    for (size_t i = 0; i < group.size(); ++i) {
      if (pids[i] != 0) {
        double took = secondsOf(Clock::now() - start);
        progress("up.node_stopped", {{"role", roleName(role)}, {"node", group[i]->spec.name}, {"t_s", took}},
                 fmt::format("  stopped {:<10} {:<12} ({} s)", roleName(role), group[i]->spec.name,
                             seconds1(took)));
      }
    }
  }

  // What the site offers now, one row each: what it is, where, and a note.
  struct Entry {
    std::string what, where, note;
  };
  std::vector<Entry> entries() const {
    std::vector<Entry> out;
    for (const auto& node : site_.lb.nodes) {
      out.push_back({"site", "http://" + node.http.toString() + "/", node.name});
      if (node.https) {
        out.push_back({"site", "https://" + node.https->toString() + "/",
                       node.name + (site_.lb.tls.cert.empty() && site_.lb.tls.certs.empty() && !site_.lb.acme
                                        ? ", self-signed certificate"
                                        : "")});
      }
      if (node.stats) {
        if (site_.security.internal_tls) {
          // Signed by the site CA: a browser that trusts it reads the page; the admin API also
          // wants the operator's certificate.
          out.push_back({"dashboard", "https://" + node.stats->toString() + "/",
                         "/metrics, /api/state; trust the CA " + tls::sitePaths(site_).ca_cert.string()});
        } else {
          out.push_back({"dashboard", "http://" + node.stats->toString() + "/", "/metrics, /api/state"});
        }
      }
      if (node.db_write) {
        out.push_back({"db write", node.db_write->toString(),
                       "PostgreSQL primary: database " + site_.db.database + ", user " + site_.db.user});
      }
      if (node.db_read) {
        out.push_back({"db read", node.db_read->toString(), "replicas"});
      }
    }
    if (site_.lb.nodes.empty()) {
      for (const auto& node : site_.web.nodes) {
        out.push_back({"web", "http://" + node.listen.toString() + "/", node.name});
      }
    }
    if (!site_.db.nodes.empty()) {
      const fs::path password =
          site_.db.password_file.empty() ? site_.site.state_dir / "db.password" : site_.db.password_file;
      out.push_back({"db password", password.string(), ""});
    }
    if (hasManagedMonitoring(site_)) {
      out.push_back({"prometheus", "http://" + site_.monitoring.prometheus.toString() + "/",
                     "alerts: /alerts, targets: /targets"});
      if (site_.monitoring.alertmanager) {
        out.push_back({"alertmanager", "http://" + site_.monitoring.alertmanager->toString() + "/",
                       "API: /api/v2/alerts"});
      }
    }
    out.push_back({"logs", (site_.site.state_dir / "logs").string() + "/", ""});
    out.push_back({"status", "fulcrum status --site " + site_.display_path, ""});
    return out;
  }

  void printUrls() {
    double took = secondsOf(Clock::now() - begin_);
    std::vector<Entry> rows = entries();
    nlohmann::json list = nlohmann::json::array();
    std::string text = fmt::format("\nsite {} is up ({} s)", site_.site.name, seconds1(took));
    for (const Entry& e : rows) {
      list.push_back({{"what", e.what}, {"where", e.where}, {"note", e.note}});
      text += fmt::format("\n  {:<12} {}{}", e.what, e.where, e.note.empty() ? "" : "    (" + e.note + ")");
    }
    text += "\nCtrl-C stops everything.";
    progress("up.ready", {{"site", site_.site.name}, {"t_s", took}, {"offers", list}}, text);
  }

  const config::Site& site_;
  const UpOptions& options_;
  UpEnvironment* env_;
  const std::shared_ptr<core::ClientTransportFactory> probe_tls_;
  const Clock::time_point begin_;
  core::EventLoop loop_;
  ChildLogs logs_{loop_, {site_.site.log_max_bytes, static_cast<int>(site_.site.log_keep)}};
  std::vector<std::unique_ptr<Child>> children_;
  ControlServer control_{loop_, [this](const ControlRequest& request, ControlReply reply) {
                           onControl(request, std::move(reply));
                         }};
  bool starting_ = true;
  bool stop_requested_ = false;
  bool kill_now_ = false;
  std::string failure_;
};

// Said after a state_dir error when not root: what the user can do about it.
std::string accessHint() {
  if (::geteuid() == 0) {
    return "";
  }
  return "; run as root (sudo; PostgreSQL then runs as the `postgres` user), or set [site] state_dir to a "
         "directory you own (PostgreSQL then runs as you)";
}

// What `up` needs beyond a valid file: the programs, a writable state_dir, free ports.
int preflight(const config::Site& site, PlanOptions& plan) {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    log::error("cannot find this program (/proc/self/exe): {}", std::strerror(errno));
    return kExitRuntime;
  }
  plan.self_exe.assign(self, static_cast<size_t>(n));
  if (hasManagedEtcd(site)) {
    auto etcd = findInPath("etcd");
    if (!etcd) {
      log::error("[etcd] managed = true needs the `etcd` program in PATH (Debian package etcd-server: "
                 "scripts/deps.sh installs it, as root or with sudo)");
      return kExitRuntime;
    }
    plan.etcd_exe = etcd->string();
  }
  if (hasManagedMonitoring(site)) {
    auto prometheus = findInPath("prometheus");
    if (!prometheus) {
      log::error(
          "[monitoring] managed = true needs the `prometheus` program in PATH (Debian package "
          "prometheus: scripts/deps.sh installs it, as root or with sudo)");
      return kExitRuntime;
    }
    plan.prometheus_exe = prometheus->string();
    if (site.monitoring.alertmanager) {
      // Debian names Alertmanager's program prometheus-alertmanager; upstream, alertmanager.
      auto alertmanager = findInPath("prometheus-alertmanager");
      if (!alertmanager) {
        alertmanager = findInPath("alertmanager");
      }
      if (!alertmanager) {
        log::error(
            "[monitoring] alertmanager needs the `prometheus-alertmanager` program in PATH (Debian "
            "package prometheus-alertmanager: scripts/deps.sh installs it), or set alertmanager = \"\"");
        return kExitRuntime;
      }
      plan.alertmanager_exe = alertmanager->string();
    }
  }
  if (!site.db.nodes.empty()) {
    auto bin = pg::findPgBin(site.db.pg_bin);
    if (!bin.ok) {
      log::error("the database nodes need PostgreSQL: {} (Debian package postgresql: scripts/deps.sh installs it)",
                 bin.error);
      return kExitRuntime;
    }
  }
  std::string error;
  if (!makeDir(site.site.state_dir, error) || !makeDir(site.site.state_dir / "logs", error)) {
    log::error("{}{}", error, accessHint());
    return kExitRuntime;
  }
  // Written at every start: generated from this topology, with the rules of this build.
  if (hasManagedMonitoring(site) && !writeMonitoringFiles(site, monitoringDir(site), error)) {
    log::error("{}{}", error, accessHint());
    return kExitRuntime;
  }
  // Before any node starts: each loads its pair at start. A certificate close to its end is
  // renewed here, at each start of the site.
  if (site.security.internal_tls && !ensureCertificates(site, error)) {
    log::error("internal_tls: {}{}", error, accessHint());
    return kExitRuntime;
  }
  return kExitOk;
}

}  // namespace

int runUpCommand(const config::Site& site, const UpOptions& options, UpEnvironment* env) {
  auto refused = config::notBuiltYet(site);
  if (!refused.empty()) {
    for (const auto& error : refused) {
      std::fprintf(stderr, "%s\n", error.toString().c_str());
    }
    std::fprintf(stderr, "fulcrum up: this build cannot run these settings; change them and try again\n");
    return kExitConfig;
  }
  log::setComponent("up");
  PlanOptions plan{.log_format = options.log_format, .log_level = options.log_level};
  if (int rc = preflight(site, plan); rc != kExitOk) {
    return rc;
  }
  SiteLock lock;
  std::string error;
  if (!lock.acquire(site.site.state_dir / "up.lock", error)) {
    log::error("{}{}", error, error.find("already running") == std::string::npos ? accessHint() : "");
    return kExitRuntime;
  }
  // Under the lock: a port in use now belongs to something else (a node started by hand?).
  plan.etcd_peer_ports = chooseEtcdPeerPorts(
      site, [&](const core::SocketAddress& address) { return env != nullptr || portFree(address); });
  if (hasManagedEtcd(site) && plan.etcd_peer_ports.empty()) {
    std::string endpoints;
    for (const auto& endpoint : site.etcd.endpoints) {
      endpoints += (endpoints.empty() ? "" : ", ") + endpoint.toString();
    }
    log::error("no free port for a managed etcd member's peer URL within 100 ports after its endpoint ({})",
               endpoints);
    return kExitRuntime;
  }
  for (const auto& listener : siteListeners(site, {})) {
    if (env == nullptr && !portFree(listener.address)) {
      log::error("{} ({}) is in use: is this site already running (started by hand?) or another program on it?",
                 listener.address.toString(), listener.what);
      return kExitRuntime;
    }
  }
  core::blockSignals();  // a Ctrl-C from here on reaches Up::run (prepare() may take a moment)
  std::vector<ChildSpec> children = planChildren(site, plan);
  if (env != nullptr && !env->prepare(children, error)) {
    log::error("{}", error);
    env->finish();
    return kExitRuntime;
  }
  std::shared_ptr<core::ClientTransportFactory> probe_tls;
  if (site.security.internal_tls) {
    probe_tls = tls::ClientContext::forHolder(site, "operator", error);
    if (!probe_tls) {
      log::error("internal_tls: the probes' certificate: {}", error);
      if (env != nullptr) {
        env->finish();
      }
      return kExitRuntime;
    }
  }
  Up up(site, options, std::move(children), env, std::move(probe_tls));
  int rc = up.run();
  if (env != nullptr) {
    env->finish();
  }
  return rc;
}

// The first executable `name` in PATH.
std::optional<std::filesystem::path> findInPath(const std::string& name) {
  const char* path = ::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (!rest.empty()) {
    size_t colon = rest.find(':');
    std::string_view dir = rest.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    std::filesystem::path candidate = std::filesystem::path(dir.empty() ? "." : std::string(dir)) / name;
    if (::access(candidate.c_str(), X_OK) == 0) {
      return std::filesystem::absolute(candidate);
    }
  }
  return std::nullopt;
}

int runEtcdCommand(const config::Site& site, const std::string& node, bool print) {
  if (!hasManagedEtcd(site)) {
    log::error("{}: [etcd] has no managed members (managed = false, or no endpoints)", site.display_path);
    return kExitConfig;
  }
  PlanOptions plan;
  auto etcd = findInPath("etcd");
  plan.etcd_exe = etcd ? etcd->string() : "/usr/bin/etcd";
  // Every host must compute the same peer URLs for --initial-cluster: no local port test here
  // (one member per address: each gets its client port + 1 unless that is another listener).
  plan.etcd_peer_ports = chooseEtcdPeerPorts(site, [](const core::SocketAddress&) { return true; });
  std::vector<std::string> names;
  for (const ChildSpec& child : planChildren(site, plan)) {
    if (child.role != Role::Etcd) {
      continue;
    }
    names.push_back(child.name);
    if (child.name != node) {
      continue;
    }
    if (print) {
      std::string line;
      for (const auto& arg : child.argv) {
        line += (line.empty() ? "" : " ") + arg;
      }
      std::printf("%s\n", line.c_str());
      return kExitOk;
    }
    if (!etcd) {
      log::error("the `etcd` program is not in PATH (Debian package etcd-server)");
      return kExitRuntime;
    }
    std::vector<char*> argv;
    for (const auto& arg : child.argv) {
      argv.push_back(const_cast<char*>(arg.c_str()));
    }
    argv.push_back(nullptr);
    log::info("etcd member {}: exec {}", node, child.argv.front());
    ::execv(argv[0], argv.data());
    log::error("cannot execute {}: {}", argv[0], std::strerror(errno));
    return kExitRuntime;
  }
  std::string known;
  for (const auto& name : names) {
    known += (known.empty() ? "" : ", ") + name;
  }
  log::error("{}: no etcd member named '{}' (members: {})", site.display_path, node, known);
  return kExitConfig;
}

}  // namespace fulcrum::site
