#include "lb/check_metrics.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

namespace fulcrum::lb {

void writeCheckMetrics(metrics::PrometheusWriter& w, std::string_view prefix,
                       const std::vector<CheckSeries>& series) {
  const std::string up = std::string(prefix) + "_check_up";
  const std::string duration = std::string(prefix) + "_last_check_duration_seconds";
  const std::string checks = std::string(prefix) + "_checks_total";
  const std::string changes = std::string(prefix) + "_state_changes_total";
  const std::string downtime = std::string(prefix) + "_downtime_seconds_total";
  const std::string last_change = std::string(prefix) + "_last_change_seconds";
  // One extra label (result, to) after the series' own.
  auto with = [](const CheckSeries& s, std::string_view key, std::string_view value) {
    std::vector<metrics::Label> labels = s.labels;
    labels.emplace_back(key, value);
    return labels;
  };
  w.family(up, "gauge", "1 when the last active health check passed (the state also needs rise/fall).");
  for (const CheckSeries& s : series) {
    if (s.stats.checked) {
      w.sampleOf(up, s.labels, uint64_t{s.stats.last_ok ? 1u : 0u});
    }
  }
  w.family(duration, "gauge", "How long the last active health check took, in seconds.");
  for (const CheckSeries& s : series) {
    if (s.stats.checked) {
      w.sampleOf(duration, s.labels, s.stats.last_duration_s);
    }
  }
  w.family(checks, "counter", "Active health checks finished, by result (passed, failed).");
  for (const CheckSeries& s : series) {
    w.sampleOf(checks, with(s, "result", "passed"), s.stats.passed);
    w.sampleOf(checks, with(s, "result", "failed"), s.stats.failed);
  }
  w.family(changes, "counter",
           "Health state changes (rise or fall reached), by the state entered (up, down).");
  for (const CheckSeries& s : series) {
    w.sampleOf(changes, with(s, "to", "up"), s.stats.went_up);
    w.sampleOf(changes, with(s, "to", "down"), s.stats.went_down);
  }
  w.family(downtime, "counter",
           "Time spent down since the load balancer started, the current down spell included.");
  for (const CheckSeries& s : series) {
    w.sampleOf(downtime, s.labels, s.stats.downtime_s);
  }
  w.family(last_change, "gauge", "Seconds since the state last changed (or the load balancer started).");
  for (const CheckSeries& s : series) {
    w.sampleOf(last_change, s.labels, s.stats.since_change_s);
  }
}

void addCheckJson(nlohmann::json& server, const CheckStats& stats) {
  auto millis = [](double v) { return std::round(v * 1000) / 1000; };  // three decimals
  if (stats.checked) {
    server["last_check"] = {
        {"result", stats.last_result},
        {"status", stats.last_status != 0 ? nlohmann::json(stats.last_status) : nlohmann::json()},
        {"reason", stats.last_reason},
        {"duration_ms", millis(stats.last_duration_s * 1000)}};
  } else {
    server["last_check"] = nullptr;
  }
  server["last_change_seconds"] = millis(stats.since_change_s);
  server["downtime_seconds"] = millis(stats.downtime_s);
  server["down_transitions"] = stats.went_down;
  server["checks_failed"] = stats.failed;
}

}  // namespace fulcrum::lb
