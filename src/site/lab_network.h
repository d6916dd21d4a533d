#pragma once
// `fulcrum lab`'s network: namespaces, veth pairs and the bridge, built and removed with
// iproute2 (`ip`, `tc`), and the processes of a namespace. Root only.
#include <sys/types.h>

#include <string>
#include <vector>

#include "site/lab_plan.h"

namespace fulcrum::site {

// Runs `argv` (argv[0] looked up in PATH) and waits; its stdout and stderr go to `output`.
// Returns its exit code, or -1 when it could not run.
int runTool(const std::vector<std::string>& argv, std::string& output);

// Builds the bridge (with this machine's address), then one namespace per host: lo up, a veth
// pair whose inside end is named plan.inside_name and holds the host's addresses. False with
// `error` at the first step that fails (what was built stays for removeLabNetwork).
bool createLabNetwork(const LabPlan& plan, std::string& error);

// What a lab left on this machine, found by name: its namespaces, its veth ends and its bridge.
struct LabLeftovers {
  std::vector<std::string> netns;
  std::vector<std::string> links;  // veth ends and the bridge
  bool empty() const { return netns.empty() && links.empty(); }
};
LabLeftovers findLabLeftovers(const std::string& tag);

// Every process whose network namespace is /run/netns/NAME.
std::vector<pid_t> processesInNetns(const std::string& netns);

// Stops every process in the lab's namespaces (SIGTERM, then SIGKILL after `grace_ms`), deletes
// the namespaces, the links and the bridge. Returns one line per thing removed; `errors` gets the
// steps that failed.
std::vector<std::string> removeLabNetwork(const LabLeftovers& what, int grace_ms,
                                          std::vector<std::string>& errors);

// `pid` and every process below it (parents before children).
std::vector<pid_t> processTree(pid_t pid);

// One character of /proc/PID/stat (R, S, D, T, Z...), or 0 when there is no such process.
char processState(pid_t pid);

// The link state of a bridge-side veth end: administratively up or not.
bool linkUp(const std::string& link);

// Whether traffic into (`in`: the bridge-side end's egress) or out of (`out`: the inside end's
// egress) a host is dropped: a pfifo qdisc of limit 0 on that end.
bool oneWayCut(const LabHost& host, const std::string& inside_name, bool in);
bool setOneWayCut(const LabHost& host, const std::string& inside_name, bool in, bool cut, std::string& error);

}  // namespace fulcrum::site
