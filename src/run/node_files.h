#pragma once
// Files a running node keeps in STATE_DIR/run so commands on the same host find it without a
// network call (HAProxy's pidfile and `-sf`; systemd's MAINPID):
//   NAME.pid          its pid, with a POSIX write lock held for the process's life: a pid file
//                     whose lock nobody holds is stale (the node was killed), never trusted;
//   NAME.reload.json  the outcome of its last reload (SIGHUP or an API call): what changed, what
//                     needs a restart, or the errors that made it refuse the file.
// `fulcrum reload` signals each running node and waits for a new NAME.reload.json.
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fulcrum::run {

// `fulcrum up`'s own pid file name (SIGUSR2 to it: `fulcrum reload --upgrade`).
inline constexpr const char* kUpPidName = "fulcrum-up";

// The directory (STATE_DIR/run) and a node's files in it.
std::filesystem::path runDir(const std::filesystem::path& state_dir);
std::filesystem::path pidPath(const std::filesystem::path& state_dir, const std::string& node);
std::filesystem::path reloadPath(const std::filesystem::path& state_dir, const std::string& node);

// This process's pid file: written and locked by create(), removed by the destructor. The lock
// is a POSIX record lock on a close-on-exec descriptor: children the node forks (PostgreSQL,
// etcd) neither inherit nor release it, and the kernel drops it when the process dies.
class PidFile {
 public:
  // Null with `error` when the directory cannot be made, or another live process holds the lock
  // (two nodes of one name on one host: the second refuses to start).
  static std::unique_ptr<PidFile> create(const std::filesystem::path& state_dir, const std::string& node,
                                         std::string& error);
  ~PidFile();
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;

 private:
  PidFile(std::filesystem::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::filesystem::path path_;
  int fd_;
};

// The pid of the process that holds node NAME's pid-file lock now; nullopt when none does.
std::optional<pid_t> runningPid(const std::filesystem::path& state_dir, const std::string& node);

// What a reload did. `ok` false: the file was refused (errors as FILE:LINE:COL: key: message)
// and nothing changed.
struct ReloadReport {
  bool ok = true;
  std::vector<std::string> changes;        // applied, one line each ("server web-4 added")
  std::vector<std::string> needs_restart;  // read but not applied: the node must be restarted
  std::vector<std::string> errors;
  // Set by writeReloadReport (and read back): who wrote it and its rank among this process's
  // reloads, so a reader can tell a new report from an old one.
  pid_t pid = 0;
  uint64_t sequence = 0;
  std::string node;

  std::string toJson() const;
  static std::optional<ReloadReport> fromJson(const std::string& text);
  // A few lines for a terminal or a log.
  std::string summary() const;
};

// Writes `report` (pid, sequence and node filled in) as NAME.reload.json, whole or not at all
// (a temporary file renamed into place). Failures are logged, never fatal.
void writeReloadReport(const std::filesystem::path& state_dir, const std::string& node, ReloadReport report);
std::optional<ReloadReport> readReloadReport(const std::filesystem::path& state_dir, const std::string& node);

}  // namespace fulcrum::run
