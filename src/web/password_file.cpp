#include "web/password_file.h"

#include <sys/stat.h>

#include <fstream>

namespace fulcrum::web {

bool PasswordFile::Stamp::operator==(const Stamp& o) const {
  return exists == o.exists && dev == o.dev && ino == o.ino && size == o.size &&
         mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec &&
         ctime.tv_sec == o.ctime.tv_sec && ctime.tv_nsec == o.ctime.tv_nsec;
}

const std::string& PasswordFile::get() {
  Stamp now;
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0) {
    now = {true, st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
  }
  if (loaded_ && now == stamp_) {
    return password_;
  }
  // Stamp first, then read: a write racing the read changes the stamp again, so the next call
  // reads the file once more rather than keeping a torn line.
  stamp_ = now;
  loaded_ = true;
  password_.clear();
  if (!now.exists) {
    return password_;
  }
  ++reads_;
  std::ifstream in(path_);
  std::string line;
  if (in && std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
      line.pop_back();
    }
    password_ = std::move(line);
  }
  return password_;
}

}  // namespace fulcrum::web
