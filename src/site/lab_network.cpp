#include "site/lab_network.h"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <fmt/format.h>

#include "core/fd.h"

namespace fulcrum::site {

namespace {

namespace fs = std::filesystem;

constexpr const char* kNetnsDir = "/run/netns";

bool run(const std::vector<std::string>& argv, std::string& error) {
  std::string output;
  int rc = runTool(argv, output);
  if (rc == 0) {
    return true;
  }
  std::string command;
  for (const auto& a : argv) {
    command += (command.empty() ? "" : " ") + a;
  }
  while (!output.empty() && output.back() == '\n') {
    output.pop_back();
  }
  error = command + ": " +
          (rc < 0           ? "cannot run it"
           : output.empty() ? "exit code " + std::to_string(rc)
                            : output);
  return false;
}

std::vector<std::string> entriesWithPrefix(const fs::path& dir, const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0) {
      out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Every pid in /proc.
std::vector<pid_t> allPids() {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit)) {
      out.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return out;
}

// Field 4 of /proc/PID/stat (after the parenthesised command, which may hold spaces).
pid_t parentOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 4 >= stat.size()) {
    return 0;
  }
  return static_cast<pid_t>(std::atol(stat.c_str() + close + 4));
}

}  // namespace

int runTool(const std::vector<std::string>& argv, std::string& output) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return -1;
  }
  core::Fd read_end(fds[0]);
  core::Fd write_end(fds[1]);
  std::vector<char*> args;
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    return -1;
  }
  if (pid == 0) {
    ::dup2(write_end.get(), STDOUT_FILENO);
    ::dup2(write_end.get(), STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  write_end.reset();
  char buf[4096];
  ssize_t n;
  while ((n = ::read(read_end.get(), buf, sizeof buf)) != 0) {
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      break;
    }
    output.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return -1;
    }
  }
  if (!WIFEXITED(status)) {
    return -1;
  }
  return WEXITSTATUS(status) == 127 && output.empty() ? -1 : WEXITSTATUS(status);
}

bool createLabNetwork(const LabPlan& plan, std::string& error) {
  const std::string bridge_cidr = withPrefix(plan.bridge_address, plan.prefix_len);
  // nf_call_iptables 0: a host firewall's FORWARD rules (Docker's DROP) must not see bridged traffic.
  if (!run({"ip", "link", "add", plan.bridge, "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables",
            "0", "nf_call_arptables", "0"},
           error) ||
      !run({"ip", "addr", "add", bridge_cidr, "dev", plan.bridge}, error) ||
      !run({"ip", "link", "set", plan.bridge, "up"}, error)) {
    return false;
  }
  for (const auto& host : plan.hosts) {
    if (!run({"ip", "netns", "add", host.netns}, error) ||
        !run({"ip", "-n", host.netns, "link", "set", "lo", "up"}, error) ||
        // The inside end is created in the namespace with its final name: no clash with this machine's.
        !run({"ip", "link", "add", host.veth, "type", "veth", "peer", "name", plan.inside_name, "netns",
              host.netns},
             error) ||
        !run({"ip", "link", "set", host.veth, "master", plan.bridge, "up"}, error)) {
      return false;
    }
    for (const auto& ip : host.addresses) {
      if (!run({"ip", "-n", host.netns, "addr", "add", withPrefix(ip, plan.prefix_len), "dev",
                plan.inside_name},
               error)) {
        return false;
      }
    }
    if (!run({"ip", "-n", host.netns, "link", "set", plan.inside_name, "up"}, error)) {
      return false;
    }
  }
  return true;
}

LabLeftovers findLabLeftovers(const std::string& tag) {
  LabLeftovers out;
  out.netns = entriesWithPrefix(kNetnsDir, labNetnsPrefix(tag));
  out.links = entriesWithPrefix("/sys/class/net", labVethPrefix(tag));
  for (const auto& bridge : entriesWithPrefix("/sys/class/net", labBridgeName(tag))) {
    if (bridge == labBridgeName(tag)) {
      out.links.push_back(bridge);
    }
  }
  return out;
}

std::vector<pid_t> processesInNetns(const std::string& netns) {
  struct stat ns {};
  if (::stat((std::string(kNetnsDir) + "/" + netns).c_str(), &ns) != 0) {
    return {};
  }
  std::vector<pid_t> out;
  for (pid_t pid : allPids()) {
    struct stat st {};
    if (::stat(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), &st) == 0 && st.st_ino == ns.st_ino &&
        st.st_dev == ns.st_dev) {
      out.push_back(pid);
    }
  }
  return out;
}

std::vector<std::string> removeLabNetwork(const LabLeftovers& what, int grace_ms,
                                          std::vector<std::string>& errors) {
  std::vector<std::string> done;
  std::vector<pid_t> pids;
  for (const auto& ns : what.netns) {
    for (pid_t pid : processesInNetns(ns)) {
      pids.push_back(pid);
    }
  }
  if (!pids.empty()) {
    for (pid_t pid : pids) {
      ::kill(pid, SIGCONT);  // a paused node must be able to act on SIGTERM
      ::kill(pid, SIGTERM);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
    auto alive = [&] {
      return std::count_if(pids.begin(), pids.end(), [](pid_t p) {
        char s = processState(p);
        return s != 0 && s != 'Z';
      });
    };
    while (alive() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (pid_t pid : pids) {
      ::kill(pid, SIGKILL);
    }
    done.push_back(fmt::format("stopped {} process{} in the lab's namespaces", pids.size(),
                               pids.size() == 1 ? "" : "es"));
  }
  std::string error;
  for (const auto& ns : what.netns) {
    if (run({"ip", "netns", "del", ns}, error)) {
      done.push_back("deleted namespace " + ns);
    } else {
      errors.push_back(error);
    }
  }
  for (const auto& link : what.links) {
    if (!fs::exists("/sys/class/net/" + link)) {
      continue;  // a veth pair goes with its namespace
    }
    if (run({"ip", "link", "del", link}, error)) {
      done.push_back("deleted link " + link);
    } else if (fs::exists("/sys/class/net/" + link)) {
      errors.push_back(error);
    }
  }
  return done;
}

std::vector<pid_t> processTree(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  for (pid_t pid : allPids()) {
    children.emplace(parentOf(pid), pid);
  }
  std::vector<pid_t> out;
  if (processState(root) == 0) {
    return out;
  }
  out.push_back(root);
  for (size_t i = 0; i < out.size(); ++i) {
    auto [begin, end] = children.equal_range(out[i]);
    for (auto it = begin; it != end; ++it) {
      out.push_back(it->second);
    }
  }
  return out;
}

char processState(pid_t pid) {
  if (pid <= 0) {
    return 0;
  }
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) {
    return 0;
  }
  return stat[close + 2];
}

bool linkUp(const std::string& link) {
  std::ifstream in("/sys/class/net/" + link + "/flags");
  unsigned long flags = 0;
  in >> std::hex >> flags;
  return in && (flags & IFF_UP) != 0;
}

namespace {

std::vector<std::string> tcOn(const LabHost& host, const std::string& inside_name, bool in) {
  // Into the host: the bridge-side end sends to it. Out of it: its own end sends.
  if (in) {
    return {"tc", "qdisc", "%", "dev", host.veth, "root"};
  }
  return {"tc", "-n", host.netns, "qdisc", "%", "dev", inside_name, "root"};
}

std::vector<std::string> withVerb(std::vector<std::string> argv, const std::string& verb) {
  std::replace(argv.begin(), argv.end(), std::string("%"), verb);
  return argv;
}

}  // namespace

bool oneWayCut(const LabHost& host, const std::string& inside_name, bool in) {
  std::string output;
  if (runTool(withVerb(tcOn(host, inside_name, in), "show"), output) != 0) {
    return false;
  }
  return output.find("pfifo") != std::string::npos && output.find("limit 0p") != std::string::npos;
}

bool setOneWayCut(const LabHost& host, const std::string& inside_name, bool in, bool cut,
                  std::string& error) {
  if (cut) {
    // A queue that holds nothing drops every packet: no tc module beyond the default pfifo.
    auto argv = withVerb(tcOn(host, inside_name, in), "replace");
    argv.insert(argv.end(), {"pfifo", "limit", "0"});
    return run(argv, error);
  }
  if (!oneWayCut(host, inside_name, in)) {
    return true;
  }
  return run(withVerb(tcOn(host, inside_name, in), "del"), error);
}

}  // namespace fulcrum::site
