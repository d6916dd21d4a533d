#pragma once
// `fulcrum status`: one row per node of a site, from each node's own endpoints (lb stats
// /api/state, web /metrics, db agent /status, etcd /health, Prometheus' targets, Alertmanager's
// alerts), whoever started the nodes. Under a running `fulcrum up`, also what `up` says of each
// (its control socket): a node an operator stopped (`fulcrum stop`) shows as `stopped`, not `down`.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace fulcrum::site {

struct NodeStatus {
  std::string role;  // "etcd", "db", "web", "lb", "monitoring"
  std::string name;
  std::string address;
  bool up = false;       // the node answered
  bool healthy = false;  // and says it can serve (db: a writable primary or a streaming replica)
  std::string health;    // "ok", "primary tl 2", "replica tl 2", "3/3 servers up", or why not
  std::optional<double> requests_per_s;
  std::optional<int64_t> lag_bytes;
  std::optional<double> lag_seconds;  // a replica's replay lag in time
  // A db agent's view of the cluster (the header of the table): the leader key's holder ("" none),
  // synchronous mode, maintenance mode. Unset for other roles.
  std::optional<std::string> db_leader;
  std::optional<int64_t> db_timeline;
  bool db_synchronous = false;
  bool db_paused = false;
  // [db.backup], on the db leader: "ok", "FAILING", with the WAL segments waiting ("" elsewhere).
  std::string archive;
  // Stopped on purpose (`fulcrum stop` under `fulcrum up`), at this Unix time: not a failure.
  std::optional<double> stopped_at;
};

// Pure readers of the nodes' answers (unit-tested).
// The sum of every sample of counter `name` in Prometheus text.
std::optional<double> prometheusCounter(std::string_view text, std::string_view name);
// True when an etcd member's /v3/maintenance/status answer says it is its cluster's leader.
bool etcdIsLeader(std::string_view json);
// Fills health/healthy/lag from a db agent's /status JSON.
void readAgentStatus(std::string_view json, NodeStatus& out);
// Fills health/healthy from a load balancer's /api/state JSON; returns its request counter.
std::optional<double> readLbState(std::string_view json, NodeStatus& out);

// Fills health/healthy from Prometheus' /api/v1/targets JSON: "11/12 targets up".
void readPrometheusTargets(std::string_view json, NodeStatus& out);
// Fills health/healthy from Alertmanager's /api/v2/alerts JSON (active alerts only): "2 alerts firing".
void readAlertmanagerAlerts(std::string_view json, NodeStatus& out);

// Marks the rows `up` reports stopped by an operator, and says in a down row's health that `up`
// is restarting it or gave up on it: `list` is up's answer to {"op": "list"} (up_control.h).
void applyUpList(const nlohmann::json& list, std::vector<NodeStatus>& rows);

std::string formatTable(const std::vector<NodeStatus>& nodes);
std::string formatJson(const std::vector<NodeStatus>& nodes);

// Asks every node; requests/s from two readings of its counter about one second apart.
std::vector<NodeStatus> collectStatus(const config::Site& site);

// The database cluster's line above the table ("" without db nodes): the leader and its
// timeline, synchronous and maintenance mode, as the agents that answered see them.
std::string formatDbHeader(const std::vector<NodeStatus>& nodes);

// Prints the table (or JSON); 0 when every node is up and healthy or stopped by an operator,
// else 1. With `watch_seconds` > 0, redraws it in place every that many seconds until
// interrupted (JSON: one array per report).
int runStatusCommand(const config::Site& site, bool json, int watch_seconds = 0);

}  // namespace fulcrum::site
