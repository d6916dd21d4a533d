#include "run/node_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/log.h"

namespace fulcrum::run {

namespace {

std::atomic<uint64_t> g_reload_sequence{0};

struct flock writeLock() {
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 0;  // the whole file
  return lock;
}

}  // namespace

std::filesystem::path runDir(const std::filesystem::path& state_dir) { return state_dir / "run"; }

std::filesystem::path pidPath(const std::filesystem::path& state_dir, const std::string& node) {
  return runDir(state_dir) / (node + ".pid");
}

std::filesystem::path reloadPath(const std::filesystem::path& state_dir, const std::string& node) {
  return runDir(state_dir) / (node + ".reload.json");
}

std::unique_ptr<PidFile> PidFile::create(const std::filesystem::path& state_dir, const std::string& node,
                                         std::string& error) {
  std::error_code ec;
  std::filesystem::create_directories(runDir(state_dir), ec);
  if (ec) {
    error = fmt::format("{}: {}", runDir(state_dir).string(), ec.message());
    return nullptr;
  }
  std::filesystem::path path = pidPath(state_dir, node);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = fmt::format("{}: {}", path.string(), std::strerror(errno));
    return nullptr;
  }
  struct flock lock = writeLock();
  if (::fcntl(fd, F_SETLK, &lock) != 0) {
    int err = errno;
    std::optional<pid_t> holder = runningPid(state_dir, node);
    ::close(fd);
    error = holder ? fmt::format("{}: node {} already runs here (pid {})", path.string(), node, *holder)
                   : fmt::format("{}: cannot lock: {}", path.string(), std::strerror(err));
    return nullptr;
  }
  std::string text = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    error = fmt::format("{}: {}", path.string(), std::strerror(errno));
    ::close(fd);
    return nullptr;
  }
  return std::unique_ptr<PidFile>(new PidFile(std::move(path), fd));
}

PidFile::~PidFile() {
  std::error_code ec;
  std::filesystem::remove(path_, ec);  // while still locked: a successor's file is never removed
  ::close(fd_);
}

std::optional<pid_t> runningPid(const std::filesystem::path& state_dir, const std::string& node) {
  int fd = ::open(pidPath(state_dir, node).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return std::nullopt;
  }
  struct flock lock = writeLock();
  int rc = ::fcntl(fd, F_GETLK, &lock);
  ::close(fd);
  if (rc != 0 || lock.l_type == F_UNLCK || lock.l_pid <= 0) {
    return std::nullopt;
  }
  return lock.l_pid;
}

std::string ReloadReport::toJson() const {
  nlohmann::json j{{"node", node},       {"pid", pid},         {"sequence", sequence},
                   {"ok", ok},           {"changes", changes}, {"needs_restart", needs_restart},
                   {"errors", errors}};
  return j.dump();
}

std::optional<ReloadReport> ReloadReport::fromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) {
    return std::nullopt;
  }
  ReloadReport r;
  try {
    r.node = j.value("node", "");
    r.pid = j.value("pid", 0);
    r.sequence = j.value("sequence", uint64_t{0});
    r.ok = j.value("ok", false);
    r.changes = j.value("changes", std::vector<std::string>{});
    r.needs_restart = j.value("needs_restart", std::vector<std::string>{});
    r.errors = j.value("errors", std::vector<std::string>{});
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
  return r;
}

std::string ReloadReport::summary() const {
  std::string out;
  if (!ok) {
    out = "refused, the running configuration is kept:";
    for (const std::string& e : errors) {
      out += "\n  " + e;
    }
    return out;
  }
  out = changes.empty() ? "reloaded, nothing changed" : "reloaded:";
  for (const std::string& c : changes) {
    out += "\n  " + c;
  }
  for (const std::string& n : needs_restart) {
    out += "\n  needs a restart: " + n;
  }
  return out;
}

void writeReloadReport(const std::filesystem::path& state_dir, const std::string& node, ReloadReport report) {
  report.node = node;
  report.pid = ::getpid();
  report.sequence = ++g_reload_sequence;
  std::error_code ec;
  std::filesystem::create_directories(runDir(state_dir), ec);
  std::filesystem::path path = reloadPath(state_dir, node);
  std::filesystem::path tmp = path;
  tmp += fmt::format(".{}.tmp", ::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << report.toJson() << "\n";
    if (!out) {
      log::warn("reload: cannot write {}", tmp.string());
      return;
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    log::warn("reload: cannot write {}: {}", path.string(), ec.message());
    std::filesystem::remove(tmp, ec);
  }
}

std::optional<ReloadReport> readReloadReport(const std::filesystem::path& state_dir, const std::string& node) {
  std::ifstream in(reloadPath(state_dir, node));
  if (!in) {
    return std::nullopt;
  }
  std::stringstream text;
  text << in.rdbuf();
  return ReloadReport::fromJson(text.str());
}

}  // namespace fulcrum::run
