#include "web/web_app.h"

#include "metrics/prometheus.h"

namespace fulcrum::web {

WebApp::WebApp(std::string node_name, const std::filesystem::path& docroot,
               const std::vector<std::unique_ptr<http::ServerStats>>& worker_stats)
    : node_name_(std::move(node_name)), files_(docroot), worker_stats_(worker_stats) {}

void WebApp::handle(const http::Request& request, http::Response& response) {
  std::string_view path = request.head.path;
  bool read_method = request.head.method == http::Method::Get || request.head.method == http::Method::Head;
  if (path == "/healthz" && read_method) {
    response.setBody(200, "text/plain; charset=utf-8", "ok\n");
    response.addHeader("Cache-Control", "no-store");
    return;
  }
  if (path == "/metrics" && read_method) {
    response.setBody(200, metrics::kContentType, metricsText());
    return;
  }
  files_.serve(request, response);
}

std::string WebApp::metricsText() const {
  uint64_t conns_total = 0;
  uint64_t conns_active = 0;
  uint64_t requests = 0;
  uint64_t by_class[6] = {};
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t parse_errors = 0;
  uint64_t timeouts = 0;
  for (const auto& s : worker_stats_) {
    conns_total += s->connections_total.get();
    conns_active += s->connections_active.get();
    requests += s->requests_total.get();
    for (size_t i = 1; i < 6; ++i) {
      by_class[i] += s->responses_by_class[i].get();
    }
    bytes_in += s->bytes_in.get();
    bytes_out += s->bytes_out.get();
    parse_errors += s->parse_errors.get();
    timeouts += s->timeouts.get();
  }
  metrics::PrometheusWriter w;
  const std::string_view node = node_name_;
  w.family("fulcrum_web_requests_total", "counter", "HTTP requests handled.");
  w.sample("fulcrum_web_requests_total", {{"node", node}}, requests);
  w.family("fulcrum_web_responses_total", "counter", "HTTP responses sent, by status class.");
  static constexpr std::string_view kClasses[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (size_t i = 1; i < 6; ++i) {
    w.sample("fulcrum_web_responses_total", {{"node", node}, {"code", kClasses[i]}}, by_class[i]);
  }
  w.family("fulcrum_web_connections_total", "counter", "Client connections accepted.");
  w.sample("fulcrum_web_connections_total", {{"node", node}}, conns_total);
  w.family("fulcrum_web_connections_active", "gauge", "Client connections open now.");
  w.sample("fulcrum_web_connections_active", {{"node", node}}, conns_active);
  w.family("fulcrum_web_received_bytes_total", "counter", "Bytes read from clients.");
  w.sample("fulcrum_web_received_bytes_total", {{"node", node}}, bytes_in);
  w.family("fulcrum_web_sent_bytes_total", "counter", "Bytes written to clients.");
  w.sample("fulcrum_web_sent_bytes_total", {{"node", node}}, bytes_out);
  w.family("fulcrum_web_bad_requests_total", "counter",
           "Requests refused as malformed (4xx/5xx before dispatch).");
  w.sample("fulcrum_web_bad_requests_total", {{"node", node}}, parse_errors);
  w.family("fulcrum_web_timeouts_total", "counter", "Connections closed by a request or idle timeout.");
  w.sample("fulcrum_web_timeouts_total", {{"node", node}}, timeouts);
  return w.take();
}

}  // namespace fulcrum::web
