#pragma once
// Starting one child of `fulcrum up`: its own process group (a Ctrl-C at the terminal reaches
// `up` alone, which then stops the children in order), SIGTERM when `up` dies (even by SIGKILL),
// stdin from /dev/null, stdout and stderr appended to its log file.
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "site/plan.h"

namespace fulcrum::site {

// Exit status of a child whose exec failed (the program is missing or not executable).
inline constexpr int kExecFailed = 127;

// Forks and execs `spec`. Returns the pid, or -1 with `error` set when the log file cannot be
// opened or fork fails. An exec failure is reported in the log and as exit status kExecFailed.
// With `output_fd` (a pipe `up` reads: child_logs.h) the child writes there instead of spec.log,
// and the caller writes startedBanner() itself.
pid_t spawnChild(const ChildSpec& spec, std::string& error, int output_fd = -1);

// "---- TIME fulcrum up: started NAME (pid PID) ----\n", the line before each start's output.
std::string startedBanner(const ChildSpec& spec, pid_t pid);

// Runs `argv` as `spec` would run (namespace, log) and waits for it, at most `timeout` (then
// SIGKILL). Returns its wait status, or -1 with `error` when it could not start.
int runToCompletion(const ChildSpec& spec, const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                    std::string& error);

// "exit code 1", "killed by signal 9 (Killed)".
std::string describeWaitStatus(int status);

}  // namespace fulcrum::site
