#pragma once
// One `fulcrum up` per site: an flock on state_dir/up.lock, held for the life of `up` (the kernel
// drops it when `up` dies, however it dies) and holding the pid of its owner for the message.
#include <filesystem>
#include <string>

#include "core/fd.h"

namespace fulcrum::site {

class SiteLock {
 public:
  // Takes the lock; on failure `error` says who holds it (or why it could not be taken).
  bool acquire(const std::filesystem::path& path, std::string& error);

 private:
  core::Fd fd_;
};

}  // namespace fulcrum::site
