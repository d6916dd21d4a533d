#include "site/lab_command.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/exit_codes.h"
#include "core/log.h"
#include "site/firewall.h"
#include "site/lab_network.h"
#include "site/lab_plan.h"
#include "site/lock.h"
#include "site/probe.h"
#include "tls/client_context.h"

namespace fulcrum::site {

namespace {

namespace fs = std::filesystem;
using core::kExitConfig;
using core::kExitOk;
using core::kExitRuntime;
using nlohmann::json;

// How long `lab down` waits for a running `lab up` to stop its nodes (a database stops in seconds).
constexpr auto kDownWait = std::chrono::seconds(120);
// Then how long leftover processes get between SIGTERM and SIGKILL.
constexpr int kLeftoverGraceMs = 5000;

fs::path statePath(const config::Site& site) {
  return site.site.state_dir / "lab.json";
}

fs::path holdDir(const config::Site& site) {
  return site.site.state_dir / "lab-hold";
}

// Where `lab up` writes each host's nftables ruleset before it loads it (kept for `nft -c -f`).
fs::path firewallDir(const config::Site& site) {
  return site.site.state_dir / "lab-firewall";
}

// What `lab up` is running, for the other lab commands: the plan and each node's pid.
struct LabNode {
  pid_t pid = 0;
  std::string host;  // its namespace
  Probe probe;
};

struct LabState {
  pid_t pid = 0;  // the `lab up` process
  bool ready = false;
  LabPlan plan;
  std::map<std::string, LabNode> nodes;
};

json toJson(const LabState& s) {
  json hosts = json::array();
  for (const auto& h : s.plan.hosts) {
    json addresses = json::array();
    for (const auto& ip : h.addresses) {
      addresses.push_back(ip.toString());
    }
    hosts.push_back({{"netns", h.netns}, {"veth", h.veth}, {"addresses", addresses}, {"nodes", h.nodes}});
  }
  json nodes = json::object();
  for (const auto& [name, n] : s.nodes) {
    nodes[name] = {{"pid", n.pid},
                   {"host", n.host},
                   {"probe", n.probe.address.toString()},
                   {"path", n.probe.path},
                   {"tls", n.probe.tls}};
  }
  return {{"pid", s.pid},
          {"ready", s.ready},
          {"tag", s.plan.tag},
          {"bridge", s.plan.bridge},
          {"inside_name", s.plan.inside_name},
          {"prefix_len", s.plan.prefix_len},
          {"bridge_address", s.plan.bridge_address.toString()},
          {"vip", s.plan.vip ? s.plan.vip->toString() : ""},
          {"hosts", hosts},
          {"nodes", nodes}};
}

bool fromJson(const json& j, LabState& s) {
  try {
    s.pid = j.at("pid").get<pid_t>();
    s.ready = j.at("ready").get<bool>();
    s.plan.tag = j.at("tag").get<std::string>();
    s.plan.bridge = j.at("bridge").get<std::string>();
    s.plan.inside_name = j.at("inside_name").get<std::string>();
    s.plan.prefix_len = j.at("prefix_len").get<uint8_t>();
    s.plan.bridge_address = core::IpAddress::parse(j.at("bridge_address").get<std::string>()).value();
    if (auto vip = j.at("vip").get<std::string>(); !vip.empty()) {
      s.plan.vip = core::IpAddress::parse(vip).value();
    }
    for (const auto& h : j.at("hosts")) {
      LabHost host{h.at("netns").get<std::string>(),
                   h.at("veth").get<std::string>(),
                   {},
                   h.at("nodes").get<std::vector<std::string>>()};
      for (const auto& a : h.at("addresses")) {
        host.addresses.push_back(core::IpAddress::parse(a.get<std::string>()).value());
      }
      s.plan.hosts.push_back(std::move(host));
    }
    for (const auto& [name, n] : j.at("nodes").items()) {
      LabNode node{n.at("pid").get<pid_t>(), n.at("host").get<std::string>(),
                   Probe{core::SocketAddress::parse(n.at("probe").get<std::string>()).value(),
                         n.at("path").get<std::string>(), n.value("tls", false)}};
      s.nodes[name] = std::move(node);
    }
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

// Atomically (a reader never sees half a file).
bool writeState(const fs::path& path, const LabState& s) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << toJson(s).dump(2) << "\n";
    if (!out) {
      return false;
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  return !ec;
}

// False when there is no state file (no lab, or one that was cleaned up); `error` when unreadable.
bool readState(const fs::path& path, LabState& s, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    return false;
  }
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !fromJson(j, s)) {
    error = path.string() + " is not a lab state file (damaged?)";
    return false;
  }
  return true;
}

// The `lab up` of this state is still alive (a pid reused by another program does not count).
bool labUpRunning(const LabState& s) {
  if (s.pid <= 0 || processState(s.pid) == 0 || processState(s.pid) == 'Z') {
    return false;
  }
  std::ifstream in("/proc/" + std::to_string(s.pid) + "/cmdline");
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return cmdline.find(std::string("lab") + '\0') != std::string::npos;
}

void sayRaw(const std::string& text) {
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

// A line for the person at the terminal; with --log-format json, one JSON object per line as `up`
// prints, with `fields` when the line has data a script wants.
void say(const std::string& text, std::string_view event = "lab.message", json fields = json::object()) {
  if (log::format() != log::Format::Json) {
    sayRaw(text);
    return;
  }
  json line = {{"event", event}};
  line.update(fields);
  if (fields.empty()) {
    line["text"] = text;
  }
  sayRaw(line.dump(-1, ' ', false, json::error_handler_t::replace));
}

// `lab up` through `up`'s supervisor: builds the network in prepare() and removes it in finish().
class LabEnvironment : public UpEnvironment {
 public:
  LabEnvironment(const config::Site& site, bool firewall) : site_(site), firewall_(firewall) {}

  bool prepare(std::vector<ChildSpec>& children, std::string& error) override {
    if (!planLab(site_, children, state_.plan, error)) {
      return false;
    }
    // We hold the site lock, so no `lab up` of this site runs: whatever is there was left by one
    // that died (kill -9, power cut).
    LabLeftovers left = findLabLeftovers(state_.plan.tag);
    if (!left.empty()) {
      say("fulcrum lab: removing what an earlier `lab up` of this site left behind");
      std::vector<std::string> errors;
      for (const auto& line : removeLabNetwork(left, kLeftoverGraceMs, errors)) {
        say("  " + line);
      }
      if (!errors.empty()) {
        error = "cannot remove the earlier lab: " + errors.front();
        return false;
      }
    }
    std::error_code ec;
    fs::remove_all(holdDir(site_), ec);
    state_.pid = ::getpid();
    for (auto& child : children) {
      const LabHost* host = state_.plan.hostOf(child.name);
      if (host == nullptr) {
        error = "no lab host for " + child.name;  // planLab places every child: a bug
        return false;
      }
      child.netns = host->netns;
      state_.nodes[child.name] = LabNode{0, host->netns, child.probe};
    }
    // Written before the first link exists: `lab down` finds it all even if we die halfway.
    built_ = true;
    if (!writeState(statePath(site_), state_)) {
      error = "cannot write " + statePath(site_).string();
      return false;
    }
    if (!createLabNetwork(state_.plan, error)) {
      return false;
    }
    if (firewall_ && !applyFirewalls(error)) {
      return false;
    }
    json hosts = json::array();
    for (const auto& host : state_.plan.hosts) {
      json addresses = json::array();
      for (const auto& ip : host.addresses) {
        addresses.push_back(ip.toString());
      }
      hosts.push_back({{"netns", host.netns}, {"addresses", addresses}, {"nodes", host.nodes}});
    }
    say(fmt::format("fulcrum lab: {} hosts on bridge {} ({}), this machine {}", state_.plan.hosts.size(),
                    state_.plan.bridge, withPrefix(state_.plan.bridge_address, state_.plan.prefix_len),
                    state_.plan.bridge_address.toString()),
        "lab.network",
        {{"bridge", state_.plan.bridge},
         {"this_machine", withPrefix(state_.plan.bridge_address, state_.plan.prefix_len)},
         {"hosts", hosts}});
    if (log::format() == log::Format::Json) {
      return true;
    }
    for (const auto& host : state_.plan.hosts) {
      std::string addresses;
      for (const auto& ip : host.addresses) {
        addresses += (addresses.empty() ? "" : ",") + ip.toString();
      }
      std::string nodes;
      for (const auto& n : host.nodes) {
        nodes += (nodes.empty() ? "" : ", ") + n;
      }
      say(fmt::format("  {:<28} {:<16} {}", host.netns, addresses, nodes.empty() ? "(no node)" : nodes));
    }
    return true;
  }

  // `fulcrum firewall`'s ruleset for each host that runs a node, loaded inside its namespace
  // before any node starts. This machine (the bridge address) is the operator: `lab up` probes
  // every node from it, and `lab status`, curl or a browser here reach every port.
  bool applyFirewalls(std::string& error) {
    FirewallOptions options;
    const auto& bridge = state_.plan.bridge_address;
    options.admin.push_back(config::Cidr{bridge.toString(), bridge, static_cast<uint8_t>(bridge.length() * 8)});
    const fs::path dir = firewallDir(site_);
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::create_directories(dir, ec);
    size_t applied = 0;
    for (const auto& host : state_.plan.hosts) {
      if (host.nodes.empty()) {
        continue;  // an etcd endpoint `up` does not run: nothing listens there
      }
      std::string ruleset;
      if (!firewallRuleset(site_, host.nodes.front(), options, ruleset, error)) {
        return false;
      }
      const fs::path file = dir / (host.netns + ".nft");
      std::ofstream(file) << ruleset;
      std::string output;
      const int rc = runTool({"ip", "netns", "exec", host.netns, "nft", "-f", file.string()}, output);
      if (rc != 0) {
        error = fmt::format("cannot load the firewall of {} ({}): {}{}", host.netns, file.string(), output,
                            rc == 127 ? " (is nft installed? Debian nftables; or run with --no-firewall)" : "");
        return false;
      }
      ++applied;
    }
    say(fmt::format("fulcrum lab: firewall loaded on {} hosts (rulesets in {}; --no-firewall skips it)", applied,
                    dir.string()),
        "lab.firewall", {{"hosts", applied}, {"dir", dir.string()}});
    return true;
  }

  void started(const ChildSpec& child, pid_t pid) override {
    state_.nodes[child.name].pid = pid;
    writeState(statePath(site_), state_);
  }

  void ready() override {
    state_.ready = true;
    writeState(statePath(site_), state_);
    std::string text = fmt::format("lab: every host is reachable from this machine through {} ({})",
                                   state_.plan.bridge, state_.plan.bridge_address.toString());
    std::string vip_url;
    if (state_.plan.vip && !site_.lb.nodes.empty()) {
      vip_url = fmt::format("http://{}:{}/", state_.plan.vip->toString(), site_.lb.nodes.front().http.port());
      text += "\n  site (VIP)   " + vip_url;
    }
    text += fmt::format(
        "\n  faults       fulcrum lab kill|pause|resume|cut|heal {} NODE\n  lab status   fulcrum lab status "
        "{}",
        site_.display_path, site_.display_path);
    say(text, "lab.ready",
        {{"bridge", state_.plan.bridge}, {"this_machine", state_.plan.bridge_address.toString()}, {"vip", vip_url}});
  }

  // A paused node (`lab pause`) must act on the SIGTERM that comes next, PostgreSQL included.
  void stopping() override {
    for (const auto& host : state_.plan.hosts) {
      for (pid_t pid : processesInNetns(host.netns)) {
        ::kill(pid, SIGCONT);
      }
    }
  }

  void finish() override {
    if (!built_) {
      return;
    }
    LabLeftovers what = findLabLeftovers(state_.plan.tag);
    std::vector<std::string> errors;
    auto done = removeLabNetwork(what, kLeftoverGraceMs, errors);
    for (const auto& e : errors) {
      log::error("lab: {}", e);
    }
    if (errors.empty()) {
      std::error_code ec;
      fs::remove(statePath(site_), ec);
      fs::remove_all(holdDir(site_), ec);
    }
    say(fmt::format("fulcrum lab: removed {} namespaces and bridge {}", what.netns.size(),
                    state_.plan.bridge));
  }

  bool mayRestart(const ChildSpec& child) override {
    std::error_code ec;
    return !fs::exists(holdDir(site_) / child.name, ec);
  }

 private:
  const config::Site& site_;
  const bool firewall_;
  LabState state_;
  bool built_ = false;
};

int labDown(const config::Site& site) {
  LabState state;
  std::string error;
  const bool have_state = readState(statePath(site), state, error);
  if (!error.empty()) {
    log::warn("{}; looking for the lab's namespaces and links by name", error);
  }
  const bool asked = have_state && labUpRunning(state);
  if (asked) {
    say(fmt::format("fulcrum lab down: asking `lab up` (pid {}) to stop its nodes and remove its network",
                    state.pid));
    ::kill(state.pid, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + kDownWait;
    while (labUpRunning(state) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (labUpRunning(state)) {
      say(fmt::format("fulcrum lab down: `lab up` still runs after {} s: SIGKILL", kDownWait.count()));
      ::kill(state.pid, SIGKILL);
      while (processState(state.pid) != 0 && processState(state.pid) != 'Z') {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  const std::string tag = have_state ? state.plan.tag : labTag(site.site.state_dir);
  LabLeftovers left = findLabLeftovers(tag);
  std::error_code ec;
  const bool state_left = fs::exists(statePath(site), ec);
  if (left.empty() && !state_left) {
    say(asked ? "fulcrum lab down: `lab up` stopped every node and removed the lab of " + site.display_path
              : "fulcrum lab down: nothing to do (no lab of " + site.display_path +
                    " is running or left behind)");
    fs::remove_all(holdDir(site), ec);
    return kExitOk;
  }
  // Under the site lock: no `lab up` may build while we remove.
  SiteLock lock;
  if (!lock.acquire(site.site.state_dir / "up.lock", error)) {
    log::error("{}", error);
    return kExitRuntime;
  }
  std::vector<std::string> errors;
  for (const auto& line : removeLabNetwork(left, kLeftoverGraceMs, errors)) {
    say("  " + line);
  }
  for (const auto& e : errors) {
    log::error("{}", e);
  }
  if (!errors.empty()) {
    return kExitRuntime;
  }
  fs::remove(statePath(site), ec);
  fs::remove_all(holdDir(site), ec);
  say("fulcrum lab down: the lab of " + site.display_path + " is gone");
  return kExitOk;
}

std::string joinPids(const std::vector<pid_t>& pids) {
  std::string out;
  for (pid_t p : pids) {
    out += (out.empty() ? "" : " ") + std::to_string(p);
  }
  return out;
}

const LabHost* hostNamed(const LabState& state, const std::string& netns) {
  for (const auto& h : state.plan.hosts) {
    if (h.netns == netns) {
      return &h;
    }
  }
  return nullptr;
}

// kill, pause, resume, cut, heal: on a running lab only.
int labFault(const std::string& action, const config::Site& site, const std::string& name,
             const LabOptions& options) {
  LabState state;
  std::string error;
  if (!readState(statePath(site), state, error) || !labUpRunning(state)) {
    log::error("no lab of {} is running{}; start one with `fulcrum lab up {}`", site.display_path,
               error.empty() ? "" : " (" + error + ")", site.display_path);
    return kExitRuntime;
  }
  auto it = state.nodes.find(name);
  if (it == state.nodes.end()) {
    std::string known;
    for (const auto& [n, _] : state.nodes) {
      known += (known.empty() ? "" : ", ") + n;
    }
    log::error("no node {} in the lab of {} (nodes: {})", name, site.display_path, known);
    return kExitConfig;
  }
  const LabNode& node = it->second;
  const LabHost* host = hostNamed(state, node.host);
  if (host == nullptr) {
    log::error("{}: node {} has no host in the state file", statePath(site).string(), name);
    return kExitRuntime;
  }
  std::error_code ec;
  if (action == "kill") {
    if (options.hold) {
      fs::create_directories(holdDir(site), ec);
      std::ofstream(holdDir(site) / name) << "held by `fulcrum lab kill --hold`\n";
    }
    std::vector<pid_t> tree = processTree(node.pid);
    if (tree.empty()) {
      say(fmt::format("{} is not running now (being restarted?){}", name, options.hold ? "; held down" : ""));
      return options.hold ? kExitOk : kExitRuntime;
    }
    for (pid_t p : tree) {
      ::kill(p, SIGKILL);
    }
    say(fmt::format("killed {} (SIGKILL to pid {}); {}", name, joinPids(tree),
                    options.hold
                        ? "held down: `fulcrum lab resume` brings it back"
                        : "`lab up` restarts it as `up` does (after 0.5 s, backing off; `--hold` keeps "
                          "it down)"));
    return kExitOk;
  }
  if (action == "pause" || action == "resume") {
    const bool pause = action == "pause";
    bool was_held = false;
    if (!pause) {
      was_held = fs::remove(holdDir(site) / name, ec);
    }
    std::vector<pid_t> tree = processTree(node.pid);
    if (tree.empty()) {
      say(fmt::format("{} is not running now{}", name,
                      was_held ? "; no longer held: `lab up` starts it again within a second" : ""));
      return was_held ? kExitOk : kExitRuntime;
    }
    for (pid_t p : tree) {
      ::kill(p, pause ? SIGSTOP : SIGCONT);
    }
    say(fmt::format("{} {} (SIG{} to pid {})", pause ? "paused" : "resumed", name, pause ? "STOP" : "CONT",
                    joinPids(tree)));
    return kExitOk;
  }
  // cut / heal: the node's whole host.
  std::string nodes;
  for (const auto& n : host->nodes) {
    nodes += (nodes.empty() ? "" : ", ") + n;
  }
  bool ok = true;
  std::string output;
  if (action == "cut") {
    if (options.oneway.empty()) {
      ok = runTool({"ip", "link", "set", host->veth, "down"}, output) == 0;
    } else {
      ok = setOneWayCut(*host, state.plan.inside_name, options.oneway == "in", true, error);
    }
  } else {
    ok = runTool({"ip", "link", "set", host->veth, "up"}, output) == 0 &&
         setOneWayCut(*host, state.plan.inside_name, true, false, error) &&
         setOneWayCut(*host, state.plan.inside_name, false, false, error);
  }
  if (!ok) {
    log::error("{} {}: {}{}", action, host->netns, error, output);
    return kExitRuntime;
  }
  if (action == "heal") {
    say(fmt::format("healed host {} ({}): link up both ways", host->netns, nodes));
  } else if (options.oneway.empty()) {
    say(fmt::format("cut host {} ({}): link {} down, no traffic either way", host->netns, nodes, host->veth));
  } else {
    say(fmt::format("cut host {} ({}) one way: traffic {} it is dropped", host->netns, nodes,
                    options.oneway == "in" ? "into" : "out of"));
  }
  return kExitOk;
}

int labStatus(const config::Site& site, bool as_json) {
  LabState state;
  std::string error;
  const bool have = readState(statePath(site), state, error);
  const bool running = have && labUpRunning(state);
  LabLeftovers left = findLabLeftovers(have ? state.plan.tag : labTag(site.site.state_dir));
  json out = {{"site", site.site.name}, {"running", running}, {"ready", running && state.ready}};
  if (have) {
    out["pid"] = state.pid;
    out["bridge"] = state.plan.bridge;
    out["this_machine"] = withPrefix(state.plan.bridge_address, state.plan.prefix_len);
    out["vip"] = state.plan.vip ? state.plan.vip->toString() : "";
  }
  out["leftovers"] = running ? json::array() : json(left.netns);
  // The probes of nodes that speak only TLS present the operator's certificate; without it they
  // show as not answering, and the reason goes to the log.
  std::shared_ptr<core::ClientTransportFactory> probe_tls;
  if (running && site.security.internal_tls) {
    probe_tls = tls::ClientContext::forHolder(site, "operator", error);
    if (!probe_tls) {
      log::warn("internal_tls: the probes' certificate: {}", error);
    }
  }
  json hosts = json::array();
  json nodes = json::array();
  std::error_code ec;
  for (const auto& h : have ? state.plan.hosts : std::vector<LabHost>{}) {
    const bool exists = fs::exists("/run/netns/" + h.netns, ec);
    json addresses = json::array();
    for (const auto& ip : h.addresses) {
      addresses.push_back(ip.toString());
    }
    hosts.push_back({{"netns", h.netns},
                     {"exists", exists},
                     {"addresses", addresses},
                     {"nodes", h.nodes},
                     {"link_up", exists && linkUp(h.veth)},
                     {"cut_in", exists && oneWayCut(h, state.plan.inside_name, true)},
                     {"cut_out", exists && oneWayCut(h, state.plan.inside_name, false)}});
  }
  for (const auto& [name, n] : have ? state.nodes : std::map<std::string, LabNode>{}) {
    const char st = processState(n.pid);
    std::string what = st == 0 || st == 'Z' ? "down" : st == 'T' ? "paused" : "running";
    if (fs::exists(holdDir(site) / name, ec)) {
      what += ", held";
    }
    const bool answers =
        running && st != 0 && runProbe(n.probe, std::chrono::milliseconds(300), probe_tls).ok;
    nodes.push_back({{"name", name},
                     {"host", n.host},
                     {"pid", st == 0 || st == 'Z' ? 0 : n.pid},
                     {"state", what},
                     {"answers", answers},
                     {"probe", n.probe.url()}});
  }
  out["hosts"] = hosts;
  out["nodes"] = nodes;
  const int rc = running && state.ready ? kExitOk : kExitRuntime;
  if (as_json) {
    sayRaw(out.dump());
    return rc;
  }
  if (!have) {
    say(fmt::format("no lab of {} is running{}", site.display_path,
                    left.empty() ? "" : " (leftovers: run `fulcrum lab down " + site.display_path + "`)"));
    return rc;
  }
  say(fmt::format("lab of {}: {}; this machine {} on {}", site.display_path,
                  running ? (state.ready ? fmt::format("up (lab up pid {})", state.pid)
                                         : fmt::format("starting (lab up pid {})", state.pid))
                          : "not running, leftovers (run `fulcrum lab down`)",
                  out["this_machine"].get<std::string>(), state.plan.bridge));
  say(fmt::format("{:<28} {:<16} {:<10} {}", "HOST", "ADDRESSES", "LINK", "NODES"));
  for (const auto& h : hosts) {
    std::string link = !h["exists"].get<bool>()                              ? "missing"
                       : !h["link_up"].get<bool>()                           ? "cut"
                       : h["cut_in"].get<bool>() && h["cut_out"].get<bool>() ? "cut in+out"
                       : h["cut_in"].get<bool>()                             ? "cut in"
                       : h["cut_out"].get<bool>()                            ? "cut out"
                                                                             : "up";
    std::string addresses;
    for (const auto& a : h["addresses"]) {
      addresses += (addresses.empty() ? "" : ",") + a.get<std::string>();
    }
    std::string names;
    for (const auto& n : h["nodes"]) {
      names += (names.empty() ? "" : ", ") + n.get<std::string>();
    }
    say(fmt::format("{:<28} {:<16} {:<10} {}", h["netns"].get<std::string>(), addresses, link, names));
  }
  say(fmt::format("\n{:<14} {:<8} {:<14} {:<8} {}", "NODE", "PID", "STATE", "ANSWERS", "PROBE"));
  for (const auto& n : nodes) {
    say(fmt::format("{:<14} {:<8} {:<14} {:<8} {}", n["name"].get<std::string>(), n["pid"].get<pid_t>(),
                    n["state"].get<std::string>(), n["answers"].get<bool>() ? "yes" : "no",
                    n["probe"].get<std::string>()));
  }
  return rc;
}

}  // namespace

int runLabCommand(const std::string& action, const config::Site& site, const std::string& node,
                  const LabOptions& options) {
  if (::geteuid() != 0) {
    std::fprintf(
        stderr,
        "fulcrum lab: needs root: it creates network namespaces, veth pairs and a bridge (run it with "
        "sudo)\n");
    return kExitRuntime;
  }
  log::setComponent("lab");
  std::string version;
  if (action != "status" && (runTool({"ip", "-V"}, version) != 0 || runTool({"tc", "-V"}, version) != 0)) {
    log::error("the lab needs iproute2's `ip` and `tc` in PATH (Debian package iproute2: scripts/deps.sh installs it)");
    return kExitRuntime;
  }
  if (action == "up") {
    // Refused before anything is created (state_dir, monitoring files): the file cannot be a lab.
    LabPlan plan;
    std::string error;
    if (!planLab(site, planChildren(site, PlanOptions{}), plan, error)) {
      std::fprintf(stderr, "%s\nfulcrum lab: this file cannot run as a lab\n", error.c_str());
      return kExitConfig;
    }
    LabEnvironment env(site, options.firewall);
    return runUpCommand(site, options.up, &env);
  }
  if (action == "down") {
    return labDown(site);
  }
  if (action == "status") {
    return labStatus(site, options.json);
  }
  return labFault(action, site, node, options);
}

}  // namespace fulcrum::site
