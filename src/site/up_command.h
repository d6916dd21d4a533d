#pragma once
// `fulcrum up [SITE]`: every node of the site as supervised child processes of this one.
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "site/plan.h"

namespace fulcrum::site {

struct UpOptions {
  bool restart = true;  // false: --no-restart
  std::string log_format = "text";
  std::string log_level = "info";
};

// What `fulcrum lab` changes in `up`: the network every child runs in. With an environment, `up`
// does not test the site's ports on this machine (the addresses live in namespaces it creates).
class UpEnvironment {
 public:
  virtual ~UpEnvironment() = default;
  // Under the site lock, before any child starts: builds the network and places each child in it
  // (ChildSpec::netns). False (with `error`) stops `up` before it starts anything.
  virtual bool prepare(std::vector<ChildSpec>& children, std::string& error) = 0;
  // A child was started or restarted.
  virtual void started(const ChildSpec& child, pid_t pid) = 0;
  // Every child answered its probe and the URLs are printed.
  virtual void ready() = 0;
  // Before `up` stops its children (Ctrl-C, SIGTERM, a failed start).
  virtual void stopping() = 0;
  // After every child has stopped, also after a failed start: removes what prepare() built.
  virtual void finish() = 0;
  // False while `child` must stay down after it exited: `up` asks again a second later.
  virtual bool mayRestart(const ChildSpec& child) = 0;
};

// Returns the process exit code: 0 after a clean stop (Ctrl-C, SIGTERM), 1 when the site could
// not be started or every child exited under --no-restart, 2 for settings this build refuses.
int runUpCommand(const config::Site& site, const UpOptions& options, UpEnvironment* env = nullptr);

// The first executable `name` in PATH.
std::optional<std::filesystem::path> findInPath(const std::string& name);

// `fulcrum etcd --site FILE --node NAME`: runs (execs) the managed etcd member NAME ("etcd",
// "etcd-1"..) with the flags `fulcrum up` gives it — for a host that runs only that member
// (systemd's fulcrum-etcd@.service). `print`: writes the command line instead. Exit code.
int runEtcdCommand(const config::Site& site, const std::string& node, bool print);

}  // namespace fulcrum::site
