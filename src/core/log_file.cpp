#include "core/log_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace fulcrum::core {

namespace {

std::filesystem::path numbered(const std::filesystem::path& path, int n) {
  return std::filesystem::path(path.string() + "." + std::to_string(n));
}

}  // namespace

void shiftRotatedFiles(const std::filesystem::path& path, int keep) {
  if (keep < 1) {
    ::unlink(path.c_str());
    return;
  }
  for (int n = keep - 1; n >= 1; --n) {
    ::rename(numbered(path, n).c_str(), numbered(path, n + 1).c_str());  // a gap (missing .n) is fine
  }
  ::rename(path.c_str(), numbered(path, 1).c_str());
}

bool LogFile::open(std::filesystem::path path, LogRotation rotation, std::string& error) {
  path_ = std::move(path);
  rotation_ = rotation;
  return reopen(error);
}

bool LogFile::reopen(std::string& error) {
  Fd fd(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
  if (!fd) {
    error = "cannot open " + path_.string() + ": " + std::strerror(errno);
    return false;
  }
  struct stat st {};
  size_ = ::fstat(fd.get(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  fd_ = std::move(fd);
  return true;
}

bool LogFile::rotate(std::string& error) {
  shiftRotatedFiles(path_, rotation_.keep);
  return reopen(error);
}

bool LogFile::write(std::string_view data, std::string& error) {
  if (!fd_) {
    error = path_.string() + " is not open";
    return false;
  }
  bool ok = true;
  if (rotation_.max_bytes > 0 && size_ > 0 && size_ + data.size() > rotation_.max_bytes && !rotate(error)) {
    // Lines keep going to the renamed file rather than being lost.
    error += " (rotating by size; writing on to the old file)";
    ok = false;
  }
  while (!data.empty()) {
    ssize_t n = ::write(fd_.get(), data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      size_ += static_cast<uint64_t>(n);
    } else if (!(n < 0 && errno == EINTR)) {
      error = "write " + path_.string() + ": " + std::strerror(n < 0 ? errno : ENOSPC);
      return false;
    }
  }
  return ok;
}

}  // namespace fulcrum::core
