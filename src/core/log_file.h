#pragma once
// One log file a process writes itself: appended to, reopened at its path on request (logrotate's
// `create` then SIGUSR1), and rotated by size when asked (path -> path.1 -> ... -> path.KEEP).
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/fd.h"

namespace fulcrum::core {

struct LogRotation {
  uint64_t max_bytes = 0;  // 0: never rotated by size (logrotate's job)
  int keep = 5;            // rotated files kept: path.1 (newest) ... path.KEEP
};

class LogFile {
 public:
  // Opens (creating, appending) `path`. False with `error` when it cannot.
  bool open(std::filesystem::path path, LogRotation rotation, std::string& error);
  bool isOpen() const { return fd_.valid(); }
  const std::filesystem::path& path() const { return path_; }
  // Appends all of `data`; first rotates when it would take a non-empty file past max_bytes.
  // A write error is returned (the caller may report it elsewhere), the data is then lost.
  bool write(std::string_view data, std::string& error);
  // Opens the path again: after an outside rotation moved the file away, lines go to a new one.
  // The old descriptor stays in use when the path cannot be opened.
  bool reopen(std::string& error);
  uint64_t size() const { return size_; }

 private:
  bool rotate(std::string& error);

  std::filesystem::path path_;
  LogRotation rotation_;
  Fd fd_;
  uint64_t size_ = 0;
};

// path.(keep-1) -> path.keep, ..., path -> path.1; whatever was path.keep is replaced.
void shiftRotatedFiles(const std::filesystem::path& path, int keep);

}  // namespace fulcrum::core
