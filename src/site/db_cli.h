#pragma once
// `fulcrum db list|switchover|failover`: patronictl's everyday commands. Each finds the agents from
// the topology file and the admin token in state_dir, asks them, prints what happened, and exits
// non-zero with the reason when it could not.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace fulcrum::site {

struct DbMemberRow {
  std::string name;
  std::string host;   // the PostgreSQL address
  bool answered = false;
  std::string error;  // why the agent did not answer
  std::string role;   // "leader", "replica", "primary" (writable without the lease: fenced), "stopped", ...
  std::string state;  // "running", "stopped", "starting", "cloning", "rewinding", "initializing", "unreachable"
  int64_t timeline = 0;
  std::string receiver;  // a replica's WAL receiver ("streaming"), else ""
  std::optional<int64_t> lag_bytes;
  std::optional<double> lag_seconds;
  bool pending_restart = false;  // a changed setting waits for `fulcrum db restart`
};

struct DbClusterView {
  std::string site;
  std::optional<std::string> leader;  // as the agents see the leader key
  int64_t timeline = 0;               // the leader's
  bool synchronous = false;
  std::optional<std::string> paused;  // maintenance mode: by whom, since when (nullopt: not paused)
  std::optional<std::string> scheduled;  // "db-1 -> db-2 at 2026-12-04 03:00:00+00" (nullopt: none)
  std::vector<DbMemberRow> members;
};

// Reads each agent's /status answer (nullopt: it did not answer, with `errors[i]`), in the file's
// node order. Pure: every field of the wrong type reads as unknown.
DbClusterView readDbCluster(const config::Site& site, const std::vector<std::optional<std::string>>& answers,
                            const std::vector<std::string>& errors);
std::string formatDbCluster(const DbClusterView& view);
std::string dbClusterJson(const DbClusterView& view);

// Exit 0 when every agent answered and a leader leads, else 1.
int runDbList(const config::Site& site, bool json);
// POST /switchover ({"to": NODE} or {}, with "at": TIME to schedule it) to the agents until one
// acts (any forwards to the leader); `cancel`: {"cancel": true}, drops a scheduled one.
// With `as_json`, each action prints one JSON object on stdout instead of its text (errors stay
// on stderr, with the exit code).
int runDbSwitchover(const config::Site& site, const std::string& to, const std::string& at = "",
                    bool cancel = false, bool as_json = false);
// POST /failover {"to": NODE} to NODE's agent (a cluster without a leader).
int runDbFailover(const config::Site& site, const std::string& to, bool as_json = false);
// POST /pause {"paused": ...} to the first agent that answers: maintenance mode on or off.
int runDbPause(const config::Site& site, bool paused, bool as_json = false);
// POST /restart to NODE's agent, then waits (bounded) until its PostgreSQL runs again.
int runDbRestart(const config::Site& site, const std::string& node, bool as_json = false);
// POST /reinit to NODE's agent (a replica), then waits (at most `wait`) until it streams again.
int runDbReinit(const config::Site& site, const std::string& node, std::chrono::seconds wait,
                bool as_json = false);
// GET /history from the first agent that answers: every timeline, when and why it began.
int runDbHistory(const config::Site& site, bool json);

// The history table (pure, for tests): `answer` is an agent's GET /history body.
std::string formatDbHistory(const std::string& answer);

}  // namespace fulcrum::site
