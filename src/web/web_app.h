#pragma once
// The request handler of a web node: health, metrics, then static files. One instance is
// shared read-only by every worker thread.
#include <memory>
#include <string>
#include <vector>

#include "http/server.h"
#include "metrics/prometheus.h"
#include "web/db_router.h"
#include "web/static_files.h"

namespace fulcrum::web {

// The routes of fulcrum_web_route_* (http::Handler::routeOf): a fixed few, never raw paths, so
// the series stay bounded whatever clients ask for.
enum class Route : size_t { Other, Static, Guestbook, Health, Metrics };
inline constexpr std::string_view kRouteNames[] = {"other", "static", "guestbook", "health", "metrics"};

class WebApp final : public http::Handler {
 public:
  WebApp(std::string node_name, const std::filesystem::path& docroot,
         const std::vector<std::unique_ptr<http::ServerStats>>& worker_stats);
  // Health, metrics and static files take no body (RFC 9110 §9.3.1: a GET body has no meaning).
  uint64_t maxBodyBytes(const http::RequestHead&) const override { return 0; }
  void handle(const http::Request& request, http::Response& response) override;
  size_t routeOf(const http::RequestHead& head) const override;
  // The guestbook's per-worker database counters, for /metrics (set before workers start).
  void setDbStats(const std::vector<std::unique_ptr<DbStats>>* stats, std::vector<std::string> db_nodes);

 private:
  void appendDbMetrics(metrics::PrometheusWriter& w) const;
  void appendRouteMetrics(metrics::PrometheusWriter& w) const;
  std::string metricsText() const;

  std::string node_name_;
  StaticFiles files_;
  const std::vector<std::unique_ptr<http::ServerStats>>& worker_stats_;
  const std::vector<std::unique_ptr<DbStats>>* db_stats_ = nullptr;
  std::vector<std::string> db_nodes_;
};

}  // namespace fulcrum::web
