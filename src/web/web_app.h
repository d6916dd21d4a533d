#pragma once
// The request handler of a web node: health, metrics, then static files. One instance per
// worker thread; the document root they serve is shared read-only, and replaced on a reload by
// a message to each worker's loop (setFiles), never under a request.
#include <memory>
#include <string>
#include <vector>

#include "http/server.h"
#include "metrics/prometheus.h"
#include "tls/tls_transport.h"
#include "web/db_router.h"
#include "web/static_files.h"

namespace fulcrum::web {

// The routes of fulcrum_web_route_* (http::Handler::routeOf): a fixed few, never raw paths, so
// the series stay bounded whatever clients ask for.
enum class Route : size_t { Other, Static, Guestbook, Health, Metrics };
inline constexpr std::string_view kRouteNames[] = {"other", "static", "guestbook", "health", "metrics"};

class WebApp final : public http::Handler {
 public:
  WebApp(std::string node_name, std::shared_ptr<const StaticFiles> files,
         const std::vector<std::unique_ptr<http::ServerStats>>& worker_stats);
  // Health, metrics and static files take no body (RFC 9110 §9.3.1: a GET body has no meaning).
  uint64_t maxBodyBytes(const http::RequestHead&) const override { return 0; }
  void handle(const http::Request& request, http::Response& response) override;
  size_t routeOf(const http::RequestHead& head) const override;
  // The guestbook's per-worker database counters, for /metrics: set before workers start, and on
  // this worker's thread when a reload changes the [[db.node]] list.
  void setDb(std::shared_ptr<const DbGeneration> db) { db_ = std::move(db); }
  // A new document root (a reload), on this worker's thread. A response already built keeps the
  // file it opened.
  void setFiles(std::shared_ptr<const StaticFiles> files) { files_ = std::move(files); }
  // [security] internal_tls: the listener's handshake counters, for /metrics (set before the
  // workers start; not owned).
  void setTlsStats(const tls::TlsStats* stats) { tls_stats_ = stats; }

 private:
  void appendDbMetrics(metrics::PrometheusWriter& w) const;
  void appendRouteMetrics(metrics::PrometheusWriter& w) const;
  std::string metricsText() const;

  std::string node_name_;
  std::shared_ptr<const StaticFiles> files_;
  const std::vector<std::unique_ptr<http::ServerStats>>& worker_stats_;
  std::shared_ptr<const DbGeneration> db_;
  const tls::TlsStats* tls_stats_ = nullptr;
};

}  // namespace fulcrum::web
