#pragma once
// The load balancer's stats listener: a live dashboard of the whole site (/, lb/dashboard_page.h), Prometheus metrics (/metrics),
// the state as JSON (/api/state) and the admin API (POST /api/servers/NAME/state). It runs on
// the main thread and only reads the workers' counters; admin changes are posted to workers.
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/client_table.h"
#include "tls/acme.h"
#include "tls/client_context.h"
#include "tls/server_context.h"
#include "http/server.h"
#include "lb/db_frontends.h"
#include "lb/health/health_checker.h"
#include "lb/outlier.h"
#include "lb/pool.h"
#include "lb/proxy.h"
#include "lb/server_slots.h"
#include "lb/site_monitor.h"
#include "lb/vrrp/vrrp_node.h"
#include "run/node_files.h"

namespace fulcrum::lb {

enum class AdminState : uint8_t { Ready, Drain, Maint };
std::string_view adminStateName(AdminState state);

struct StatsContext {
  std::string node;
  std::string algorithm;
  const std::vector<Backend>* backends = nullptr;
  const std::vector<std::unique_ptr<ProxyStats>>* workers = nullptr;
  const std::vector<std::unique_ptr<PoolStats>>* pools = nullptr;  // by worker, when known
  const HealthChecker* health = nullptr;
  const ServerSlots* slots = nullptr;  // [[web.node]] max_conn: slots in use and the queue
  const OutlierDetector* outlier = nullptr;  // [lb.outlier], when set
  const DbFrontends* db = nullptr;  // the node's database frontends, if any
  const core::IpFilter* firewall = nullptr;  // [lb.firewall], when set
  const core::ClientTable* clients = nullptr;  // [lb.limits] rate_per_ip / conn_per_ip, when set
  tls::ServerContext* tls = nullptr;           // the https listener's, when there is one
  tls::ClientContext* upstream_tls = nullptr;  // [security] internal_tls: to the web nodes
  tls::ServerContext* stats_tls = nullptr;     // [security] internal_tls: this listener's own
  const tls::AcmeRenewer* acme = nullptr;      // [lb.acme], when set
  SiteMonitor* monitor = nullptr;              // the dashboard's view of the whole site
  const vrrp::Node* vrrp = nullptr;            // [lb.vip], when set
  std::string token;                // admin API bearer token
  // [security] internal_tls: an admin call needs, besides the token, a client certificate the
  // listener verified against the site CA (http::Request::peer_certificate).
  bool admin_needs_client_certificate = false;
  // Applies an admin state to every worker (called on the main thread).
  std::function<void(uint32_t server, AdminState state)> apply_admin;
  // The same for a [[db.node]] behind the database frontends, by name.
  std::function<void(const std::string& name, AdminState state)> apply_db_admin;
  // Sets a server's weight at runtime (1..256) in the node's table and every worker.
  std::function<void(uint32_t server, uint32_t weight)> apply_weight;
  // POST /api/reload: re-reads the topology file and applies it (the same as SIGHUP).
  std::function<run::ReloadReport()> reload;
  // Where admin states and runtime weights are kept across restarts (HAProxy's
  // server-state-file); empty: not kept.
  std::filesystem::path state_file;
};

class StatsHandler final : public http::Handler {
 public:
  explicit StatsHandler(StatsContext context);
  void handle(const http::Request& request, http::Response& response) override;
  // An admin call with a body and without the token is answered 401 before the body is read.
  bool refuseBeforeBody(const http::RequestHead& head, std::string_view peer_certificate,
                        http::Response& response) const override;

  AdminState adminState(uint32_t server) const { return admin_[server]; }
  // A reload's firewall (null: none), for /metrics and /api/state.
  void setFirewall(const core::IpFilter* firewall) { ctx_.firewall = firewall; }
  // The server table changed (a reload): new servers start ready; the algorithm may be new.
  // `file_changed` names servers whose address, weight or backup flag the file changed: a
  // runtime weight kept for them is dropped (the file wins), their admin state is kept unless
  // the address changed.
  void serversChanged(const std::string& algorithm, const std::vector<std::string>& file_changed);
  // At start, before traffic: admin states and weights kept in state_file for servers the file
  // has not changed since, applied (and logged); the rest of the file is dropped.
  void restoreServerState();
  std::string metricsText() const;
  std::string stateJson() const;

 private:
  void handleAdmin(const http::Request& request, http::Response& response, std::string_view name);
  void handleWeight(const http::Request& request, http::Response& response, std::string_view name);
  void handleReload(const http::Request& request, http::Response& response);
  // Checks method, token and (under internal_tls) client certificate; false when `response`
  // already says why not.
  bool adminCall(const http::Request& request, http::Response& response) const;
  void saveServerState() const;

  StatsContext ctx_;
  std::vector<AdminState> admin_;
  // Weights set by POST /api/servers/NAME/weight, by server id, with the file's weight then
  // (0: none set at runtime).
  struct RuntimeWeight {
    uint32_t weight = 0;
    uint32_t file_weight = 0;
  };
  std::vector<RuntimeWeight> weights_;
  std::map<std::string, AdminState, std::less<>> db_admin_;  // only those ever set
  // When the admin API last changed a server's state (by id; database servers by name): a
  // change of state for last_change_seconds as much as one the checks made.
  std::vector<std::optional<std::chrono::steady_clock::time_point>> admin_changed_;
  std::map<std::string, std::chrono::steady_clock::time_point, std::less<>> db_admin_changed_;
  std::chrono::steady_clock::time_point started_;
};

// Reads the admin token from `path`, or creates it (32 random bytes, hex, mode 0600; shared with
// the db agents of the state_dir, core::loadOrCreateSecretFile).
// Returns "" and sets `error` on failure.
std::string loadOrCreateToken(const std::string& path, std::string& error);

}  // namespace fulcrum::lb
