#pragma once
// Running PostgreSQL's programs: short-lived tools (initdb, pg_basebackup, pg_rewind, pg_controldata) whose
// output we capture, and the postmaster itself, which stays our child so that its death is seen
// (and reaped) at once. PostgreSQL refuses to run as root: when we are root, every program runs
// as the PostgreSQL OS user (normally `postgres`), switched to between fork and exec.
//
// No shell is involved: arguments go to execve as they are. The child gets a clean environment
// (PATH, HOME, LC_ALL=C and what the caller adds), so PG* variables of whoever started Fulcrum
// cannot redirect a tool, and messages stay in English for the errors we report.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/fd.h"
#include "db/result.h"

namespace fulcrum::db {

// Who PostgreSQL's programs run as.
struct OsUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (computed up front: initgroups is not
                              // async-signal-safe, so the child only calls setgroups)
  std::string home;
  bool switch_user = false;  // true when we are root and must drop to this user
};

// When running as root: the user named `name` (which must exist and must not be root). Otherwise
// the current user, whatever `name` says (an unprivileged process cannot switch).
Result<OsUser> resolveOsUser(const std::string& name);

// Whether `user` may traverse every directory from / down to `dir`'s parent; else a message
// naming the first directory that blocks it ("/root (mode 0700, owner root) ..."). PostgreSQL
// tools fail far less clearly when a parent of the data directory is not searchable.
Status checkTraversable(const OsUser& user, const std::filesystem::path& dir);

// Creates `dir` (and missing parents, root-owned, 0755) unless it exists, then makes it owned by
// `user` with mode 0700: what initdb, pg_basebackup and the postmaster demand of their dirs.
Status preparePrivateDir(const OsUser& user, const std::filesystem::path& dir);

// Writes `content` to `path` atomically (temp file + rename), owned by `user`, with `mode`.
Status writeFileAs(const OsUser& user, const std::filesystem::path& path, const std::string& content,
                   mode_t mode);

struct ToolRun {
  std::vector<std::string> argv;  // argv[0] is the absolute path of the program
  std::vector<std::string> env;   // "NAME=value", added to the clean environment
  std::string input;              // written to the tool's stdin (then closed)
  std::filesystem::path cwd = "/";
  std::chrono::milliseconds timeout{60000};  // then the tool's process group is killed
};

struct ToolOutput {
  int exit_code = -1;  // 128 + signal when killed by one
  std::string out;
  std::string err;
  bool timed_out = false;
};

// A tool running in the background, for a caller that must not wait for it (the agent's control
// loop polls it each tick; SIGCHLD wakes the loop when it exits). Its output is collected as it
// comes; past its timeout its process group is killed. Destroying a job kills what still runs.
class ToolJob {
 public:
  // Starts the tool; fails only when it could not be started.
  static Result<std::unique_ptr<ToolJob>> start(const OsUser& user, ToolRun run);
  ~ToolJob();
  ToolJob(const ToolJob&) = delete;
  ToolJob& operator=(const ToolJob&) = delete;

  // Never blocks: moves input and output along; the output once the tool has exited (or was
  // killed at its timeout), else nullopt.
  std::optional<ToolOutput> poll();
  // Blocks until the tool is done.
  ToolOutput wait();
  const ToolRun& run() const { return run_; }

 private:
  ToolJob() = default;
  bool pump();

  ToolRun run_;
  pid_t pid_ = -1;
  std::chrono::steady_clock::time_point deadline_{};
  core::Fd in_, out_, err_;
  size_t written_ = 0;
  ToolOutput output_;
};

// Runs a tool to completion (or until its timeout) and returns what it printed. Fails only when
// the tool could not be started; a non-zero exit is a ToolOutput for the caller to judge.
Result<ToolOutput> runTool(const OsUser& user, const ToolRun& run);

// "initdb: exit 1: <last lines of stderr>" for a failed run, for error messages.
std::string describeFailure(const ToolRun& run, const ToolOutput& output);

// A long-running server process (the postmaster) that is our child. It leads its own session (a
// Ctrl-C to the terminal reaches the agent, not PostgreSQL) and receives `parent_death_signal`
// when the thread that started it dies, so a crashed agent never leaves a primary running
// unsupervised. The destructor kills and reaps what is still running.
// (A postmaster's own children each lead a session of their own: kill() finds them by parent.)
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  // Starts argv with stdout and stderr appended to `log` (created owned by `user`).
  Status spawn(const OsUser& user, const std::vector<std::string>& argv, const std::vector<std::string>& env,
               const std::filesystem::path& log, const std::filesystem::path& cwd, int parent_death_signal);

  pid_t pid() const { return pid_; }
  bool started() const { return pid_ > 0; }
  // Reaps the child if it has exited; returns its wait status then (once), else nullopt.
  std::optional<int> poll();
  // Sends `sig` to the child alone, or (group = true) to its whole process group.
  void signal(int sig, bool group = false) const;
  // Waits until the child exits or `limit` passes (bounded polling); the wait status, or nullopt.
  std::optional<int> waitExit(std::chrono::milliseconds limit);
  // SIGKILL to the child, its children and its group, then reap: the last resort, never fails.
  void kill();

 private:
  pid_t pid_ = -1;
};

// "exit 1", "killed by signal 9" for a wait status.
std::string describeWaitStatus(int status);

}  // namespace fulcrum::db
