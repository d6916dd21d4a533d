#pragma once
// The request handler of a web node: health, metrics, then static files. One instance is
// shared read-only by every worker thread.
#include <memory>
#include <string>
#include <vector>

#include "http/server.h"
#include "web/static_files.h"

namespace fulcrum::web {

class WebApp final : public http::Handler {
 public:
  WebApp(std::string node_name, const std::filesystem::path& docroot,
         const std::vector<std::unique_ptr<http::ServerStats>>& worker_stats);
  void handle(const http::Request& request, http::Response& response) override;

 private:
  std::string metricsText() const;

  std::string node_name_;
  StaticFiles files_;
  const std::vector<std::unique_ptr<http::ServerStats>>& worker_stats_;
};

}  // namespace fulcrum::web
