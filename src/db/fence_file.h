#pragma once
// The agent's half of the fence that holds without the agent: the deadline file read by the
// PostgreSQL library fulcrum_fence.so (pgext/fulcrum_fence.c; layout in fence_layout.h), and
// that library itself, built into this binary and written out next to the data directory.
//
// The agent arms the file with its lease's fence deadline after every successful renewal and
// disarms it whenever it may not write; PostgreSQL refuses commits of writing transactions
// once the deadline passes and its background worker stops the server immediately, so even a
// frozen agent (SIGSTOP, a stuck syscall) or a whole node frozen and thawed cannot acknowledge
// a write after another node may have been promoted.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>

#include "core/clock.h"
#include "db/fence_layout.h"
#include "db/result.h"

namespace fulcrum::db {

class FenceFile {
 public:
  // Opens `path`, or creates it (mode 0644, so the PostgreSQL OS user can read it; its directory
  // must be traversable by that user), and maps it. Never truncated or replaced: a server that
  // mapped it keeps reading the same page. A new file, or one with another layout, starts
  // disarmed; an existing one keeps its deadlines (a postmaster left running by an earlier agent
  // is fenced at the deadline that agent armed).
  static Result<std::unique_ptr<FenceFile>> open(const std::filesystem::path& path);
  ~FenceFile();
  FenceFile(const FenceFile&) = delete;
  FenceFile& operator=(const FenceFile&) = delete;

  // Writes may go on until `deadline` (the agent's steady clock), written as CLOCK_BOOTTIME and
  // CLOCK_REALTIME deadlines: each is that clock's reading now plus (deadline - steady now).
  void arm(core::TimePoint deadline);
  // No writes from now on.
  void disarm();
  // The steady-clock deadline last armed through this object; nullopt when disarmed.
  std::optional<core::TimePoint> deadline() const { return deadline_; }
  // What the file holds now (for tests and diagnostics).
  FulcrumFenceLayout read() const;
  const std::filesystem::path& path() const { return path_; }

 private:
  FenceFile(std::filesystem::path path, FulcrumFenceLayout* map);
  void store(int64_t boottime_ns, int64_t realtime_ns);

  std::filesystem::path path_;
  FulcrumFenceLayout* map_;
  std::optional<core::TimePoint> deadline_;
};

// The bytes of fulcrum_fence.so as built with this binary.
std::string_view fenceLibraryBytes();
// The PostgreSQL major version the library was built for (PG_MODULE_MAGIC refuses any other).
int fenceLibraryPgMajor();
// Writes the library to `path` (temp file + rename, mode 0644): a running postmaster keeps the
// copy it loaded, the next start loads this one.
Status writeFenceLibrary(const std::filesystem::path& path);
// Failure, with a clear message, when `server_version` (`postgres --version` output, e.g.
// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)") is not of fenceLibraryPgMajor().
Status checkFenceLibraryFits(std::string_view server_version);

}  // namespace fulcrum::db
