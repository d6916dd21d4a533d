#include "metrics/process.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <string>

// FULCRUM_VERSION and FULCRUM_BUILD_TYPE come from CMake (fulcrum_metrics' definitions).

namespace fulcrum::metrics {

namespace {

bool parseU64(std::string_view s, uint64_t& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string readFile(const char* path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Entries of /proc/self/fd, less the one the listing itself holds open.
std::optional<uint64_t> openFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    return std::nullopt;
  }
  uint64_t n = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') {
      ++n;
    }
  }
  ::closedir(dir);
  return n > 0 ? n - 1 : 0;
}

}  // namespace

std::optional<ProcStat> parseProcStat(std::string_view text) {
  // "pid (comm) state ppid ...": the fields after the last ')' are space-separated numbers.
  size_t close = text.rfind(')');
  if (close == std::string_view::npos) {
    return std::nullopt;
  }
  std::string_view rest = text.substr(close + 1);
  ProcStat s;
  // Field numbers as proc(5) counts them; the state (3) is the first after ')'.
  int field = 2;
  size_t pos = 0;
  int seen = 0;
  while (pos < rest.size()) {
    while (pos < rest.size() && (rest[pos] == ' ' || rest[pos] == '\n')) {
      ++pos;
    }
    if (pos >= rest.size()) {
      break;
    }
    size_t end = rest.find_first_of(" \n", pos);
    if (end == std::string_view::npos) {
      end = rest.size();
    }
    std::string_view token = rest.substr(pos, end - pos);
    pos = end;
    ++field;
    uint64_t* target = nullptr;
    switch (field) {
      case 14:
        target = &s.utime_ticks;
        break;
      case 15:
        target = &s.stime_ticks;
        break;
      case 22:
        target = &s.start_ticks;
        break;
      case 23:
        target = &s.vsize_bytes;
        break;
      case 24:
        target = &s.rss_pages;
        break;
      default:
        break;
    }
    if (target != nullptr) {
      if (!parseU64(token, *target)) {
        return std::nullopt;
      }
      ++seen;
    }
    if (field == 24) {
      break;
    }
  }
  if (seen != 5) {
    return std::nullopt;
  }
  return s;
}

std::optional<uint64_t> parseBootTime(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    constexpr std::string_view kKey = "btime ";
    if (line.starts_with(kKey)) {
      uint64_t value = 0;
      if (parseU64(line.substr(kKey.size()), value)) {
        return value;
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

void writeProcessMetrics(PrometheusWriter& w) {
  const std::optional<ProcStat> stat = parseProcStat(readFile("/proc/self/stat"));
  const long ticks = ::sysconf(_SC_CLK_TCK);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (stat && ticks > 0 && page > 0) {
    w.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    w.sample("process_cpu_seconds_total", {},
             static_cast<double>(stat->utime_ticks + stat->stime_ticks) / static_cast<double>(ticks));
    w.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    w.sample("process_resident_memory_bytes", {}, stat->rss_pages * static_cast<uint64_t>(page));
    w.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    w.sample("process_virtual_memory_bytes", {}, stat->vsize_bytes);
    if (std::optional<uint64_t> boot = parseBootTime(readFile("/proc/stat"))) {
      w.family("process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds.");
      w.sample(
          "process_start_time_seconds", {},
          static_cast<double>(*boot) + static_cast<double>(stat->start_ticks) / static_cast<double>(ticks));
    }
  }
  if (std::optional<uint64_t> fds = openFds()) {
    w.family("process_open_fds", "gauge", "Number of open file descriptors.");
    w.sample("process_open_fds", {}, *fds);
  }
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    w.family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
    w.sample("process_max_fds", {}, static_cast<uint64_t>(limit.rlim_cur));
  }
  w.family("fulcrum_build_info", "gauge", "Always 1; the labels name the build of this fulcrum binary.");
  w.sample("fulcrum_build_info", {{"version", FULCRUM_VERSION}, {"build_type", FULCRUM_BUILD_TYPE}},
           uint64_t{1});
}

}  // namespace fulcrum::metrics
