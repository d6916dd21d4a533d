#pragma once
// The log file of each child of `fulcrum up` (state_dir/logs/NODE.log), written by `up` alone:
// the child's stdout and stderr are a pipe `up` reads on its loop, so `up` can rotate the file by
// size and reopen it on SIGUSR1. A file the children held open themselves could be neither: after
// a rename they would write on into the old file until their next restart.
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "core/event_loop.h"
#include "core/fd.h"
#include "core/log_file.h"

namespace fulcrum::site {

class ChildLogs {
 public:
  ChildLogs(core::EventLoop& loop, core::LogRotation rotation);
  ~ChildLogs();
  ChildLogs(const ChildLogs&) = delete;
  ChildLogs& operator=(const ChildLogs&) = delete;

  // The write end of the pipe into `path` (one pipe per file, kept for every start of its child:
  // `up` holds the write end too, so the pipe never ends). -1 with `error` when it cannot be made.
  int writerFor(const std::filesystem::path& path, std::string& error);
  // A line of `up`'s own ("---- started ... ----") into `path`, after what its pipe held.
  void note(const std::filesystem::path& path, std::string_view line);
  // SIGUSR1: every file opened again at its path.
  void reopenAll();
  // Writes what the pipes hold now (before reading a file's last lines).
  void drainAll();

 private:
  struct Pipe;
  core::EventLoop& loop_;
  core::LogRotation rotation_;
  std::map<std::filesystem::path, std::unique_ptr<Pipe>> pipes_;
};

}  // namespace fulcrum::site
