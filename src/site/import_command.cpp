#include "site/import_command.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "config/haproxy_import.h"
#include "config/loader.h"
#include "core/address.h"
#include "core/exit_codes.h"

namespace fulcrum::site {

namespace {

constexpr size_t kMaxInputBytes = size_t{16} << 20;
constexpr int kExitUsage = core::kExitConfig;

bool readInput(const std::string& path, std::string& out, std::string& error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    error = std::strerror(errno);
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    error = "not a regular file";
    return false;
  }
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      error = std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) {
      break;
    }
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxInputBytes) {
      ::close(fd);
      error = "larger than 16 MiB";
      return false;
    }
  }
  ::close(fd);
  return true;
}

bool writeOutput(const std::string& path, const std::string& text, bool force, std::string& error) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL);
  int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) {
    error = errno == EEXIST ? "exists: pass --force to overwrite it" : std::strerror(errno);
    return false;
  }
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      error = std::strerror(errno);
      ::close(fd);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) {
    error = std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace

int runImportCommand(const ImportOptions& options) {
  config::HaproxyImportOptions import;
  import.source_name = options.input;
  import.site_name = options.name.empty() ? config::siteNameFromPath(options.input) : options.name;
  if (!config::isSiteName(import.site_name)) {
    std::fprintf(stderr,
                 "fulcrum import: --name '%s': use 1-64 letters, digits, '-', '_' and '.', not starting "
                 "with '.' or '-'\n",
                 import.site_name.c_str());
    return kExitUsage;
  }
  if (!options.bind_ip.empty()) {
    if (!core::IpAddress::parse(options.bind_ip)) {
      std::fprintf(stderr, "fulcrum import: --bind-ip '%s' is not an IP address\n", options.bind_ip.c_str());
      return kExitUsage;
    }
    import.wildcard_ip = options.bind_ip;
  }
  std::string text;
  std::string error;
  if (!readInput(options.input, text, error)) {
    std::fprintf(stderr, "%s: cannot read: %s\n", options.input.c_str(), error.c_str());
    return kExitUsage;
  }
  config::HaproxyImport result = config::importHaproxy(text, import);
  if (!result.ok) {
    std::fprintf(stderr, "%s\n", result.error.c_str());
    return kExitUsage;
  }
  for (const std::string& line : result.messages()) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  // What `fulcrum check` would still refuse on this host (a certificate not copied here yet,
  // no docroot): said now, the file is printed all the same. Printed, it is most likely saved in
  // the current directory.
  std::filesystem::path as =
      options.out.empty() ? std::filesystem::path("site.toml") : std::filesystem::path(options.out);
  config::LoadResult loaded = config::loadSiteString(result.toml, as);
  for (const config::ConfigError& e : loaded.errors) {
    std::fprintf(stderr, "fulcrum import: before `fulcrum check` passes: %s\n", e.toString().c_str());
  }
  if (options.out.empty()) {
    std::fputs(result.toml.c_str(), stdout);
    return core::kExitOk;
  }
  if (!writeOutput(options.out, result.toml, options.force, error)) {
    std::fprintf(stderr, "fulcrum import: %s: %s\n", options.out.c_str(), error.c_str());
    return kExitUsage;
  }
  return core::kExitOk;
}

}  // namespace fulcrum::site
