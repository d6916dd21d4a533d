#pragma once
// The health-check families of /metrics, shared by the HTTP servers ("fulcrum_lb_server_…",
// labelled node and server) and the database frontends' checks ("fulcrum_lb_db_server_…",
// labelled node, server and check).
#include <string_view>
#include <vector>

#include "lb/health/health_checker.h"
#include "metrics/prometheus.h"

namespace fulcrum::lb {

struct CheckSeries {
  std::vector<metrics::Label> labels;  // views into strings that outlive the write
  CheckStats stats;
};

// Writes `prefix`_check_up, _last_check_duration_seconds, _checks_total{result} and
// _state_changes_total{to} for each series; servers not checked yet have no _check_up or
// _last_check_duration_seconds sample.
void writeCheckMetrics(metrics::PrometheusWriter& w, std::string_view prefix,
                       const std::vector<CheckSeries>& series);

}  // namespace fulcrum::lb
