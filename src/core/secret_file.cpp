#include "core/secret_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/fd.h"

namespace fulcrum::core {

namespace {

bool readSecret(const std::filesystem::path& path, std::string& value, std::string& error) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    error = "cannot read " + path.string();
    return false;
  }
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
    line.pop_back();
  }
  if (line.empty()) {
    error = path.string() + ": empty secret";
    return false;
  }
  value = std::move(line);
  return true;
}

}  // namespace

bool loadOrCreateSecretFile(const std::filesystem::path& path, const std::function<std::string()>& make,
                            std::string& value, std::string& error) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    return readSecret(path, value, error);
  }
  if (path.has_parent_path()) {
    std::filesystem::create_directories(path.parent_path(), ec);
  }
  std::filesystem::path temp = path;
  static std::atomic<unsigned> attempts{0};  // private per process and per call
  temp += ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(attempts.fetch_add(1));
  std::string secret = make();
  if (secret.empty()) {
    error = "could not generate a secret for " + path.string();
    return false;
  }
  Fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    error = "create " + temp.string() + ": " + std::strerror(errno);
    return false;
  }
  std::string line = secret + "\n";
  if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()) || ::fsync(fd.get()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    error = "write " + temp.string() + ": " + std::strerror(err);
    return false;
  }
  int linked = ::link(temp.c_str(), path.c_str());
  int err = errno;
  ::unlink(temp.c_str());
  if (linked != 0) {
    if (err == EEXIST) {
      return readSecret(path, value, error);
    }
    error = "create " + path.string() + ": " + std::strerror(err);
    return false;
  }
  value = std::move(secret);
  return true;
}

}  // namespace fulcrum::core
