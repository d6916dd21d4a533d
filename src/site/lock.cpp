#include "site/lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace fulcrum::site {

bool SiteLock::acquire(const std::filesystem::path& path, std::string& error) {
  // CLOEXEC: the children must not inherit the lock (a leftover child would keep the site "running").
  core::Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd) {
    error = "cannot open " + path.string() + ": " + std::strerror(errno);
    return false;
  }
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      error = "cannot lock " + path.string() + ": " + std::strerror(errno);
      return false;
    }
    char buf[32] = {};
    ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) {
      pid.pop_back();
    }
    error = "this site is already running under `fulcrum up`" + (pid.empty() ? "" : " (pid " + pid + ")") +
            ", which holds " + path.string() + "; stop it first (Ctrl-C in its terminal" +
            (pid.empty() ? "" : ", or kill " + pid) + ")";
    return false;
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) < 0) {
    error = "cannot write " + path.string() + ": " + std::strerror(errno);
    return false;
  }
  fd_ = std::move(fd);
  return true;
}

}  // namespace fulcrum::site
