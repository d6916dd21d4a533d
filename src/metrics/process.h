#pragma once
// The standard Prometheus process collector's series (process_cpu_seconds_total,
// process_resident_memory_bytes, ...) from /proc and getrlimit, and fulcrum_build_info: every
// role's /metrics ends with them, so one dashboard or rule covers lb, web and db alike.
#include <cstdint>
#include <optional>
#include <string_view>

#include "metrics/prometheus.h"

namespace fulcrum::metrics {

// The fields of /proc/<pid>/stat that the process series need, in the kernel's units.
struct ProcStat {
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  uint64_t start_ticks = 0;  // since boot
  uint64_t vsize_bytes = 0;
  uint64_t rss_pages = 0;
};

// Parses one /proc/<pid>/stat line; the command name (field 2) may hold spaces and ')'.
std::optional<ProcStat> parseProcStat(std::string_view text);
// The boot time (Unix seconds) from /proc/stat's "btime" line.
std::optional<uint64_t> parseBootTime(std::string_view text);

// Appends the process_* families and fulcrum_build_info for this process.
void writeProcessMetrics(PrometheusWriter& w);

}  // namespace fulcrum::metrics
