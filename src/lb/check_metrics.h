#pragma once
// The health-check families of /metrics, shared by the HTTP servers ("fulcrum_lb_server_…",
// labelled node and server) and the database frontends' checks ("fulcrum_lb_db_server_…",
// labelled node, server and check), and the same fields of a server in /api/state.
#include <nlohmann/json_fwd.hpp>
#include <string_view>
#include <vector>

#include "lb/health/health_checker.h"
#include "metrics/prometheus.h"

namespace fulcrum::lb {

struct CheckSeries {
  std::vector<metrics::Label> labels;  // views into strings that outlive the write
  CheckStats stats;
};

// Writes `prefix`_check_up, _last_check_duration_seconds, _checks_total{result},
// _state_changes_total{to}, _downtime_seconds_total and _last_change_seconds for each series;
// servers not checked yet have no _check_up or _last_check_duration_seconds sample.
void writeCheckMetrics(metrics::PrometheusWriter& w, std::string_view prefix,
                       const std::vector<CheckSeries>& series);

// Adds to a server of /api/state what HAProxy's stats page shows of its checks: last_check
// ({result, status, reason, duration_ms}; null before the first), last_change_seconds,
// downtime_seconds, down_transitions and checks_failed.
void addCheckJson(nlohmann::json& server, const CheckStats& stats);

}  // namespace fulcrum::lb
