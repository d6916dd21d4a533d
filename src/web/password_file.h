#pragma once
// The database password a web worker connects with: the first line of a file the db agents write
// (state_dir/db.password) or the site names (db.password_file). Read once, and again only when
// the file changed (another inode, size, mtime or ctime: rewritten, replaced, recreated), so a
// reconnect storm costs a stat() per attempt, not an open and read.
#include <sys/types.h>

#include <ctime>
#include <filesystem>
#include <string>

namespace fulcrum::web {

class PasswordFile {
 public:
  explicit PasswordFile(std::filesystem::path path) : path_(std::move(path)) {}

  // The password (trailing spaces and CRs dropped), or "" while the file is missing, unreadable
  // or empty.
  const std::string& get();
  // Times the file was actually read (tests).
  unsigned reads() const { return reads_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  struct Stamp {
    bool exists = false;
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    timespec mtime{};
    timespec ctime{};
    bool operator==(const Stamp& o) const;
  };

  std::filesystem::path path_;
  Stamp stamp_;
  bool loaded_ = false;
  std::string password_;
  unsigned reads_ = 0;
};

}  // namespace fulcrum::web
