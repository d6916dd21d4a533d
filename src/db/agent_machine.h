#pragma once
// The database agent's states, named, and the rules between them — pure, so the table is unit
// tested on facts alone. Each control tick the agent gathers AgentFacts, classify() names the
// state they describe, and the agent runs that state's step (agent.cpp: one function per state).
// A change of state is logged with its reason and counted per pair in /metrics; a change the
// table does not allow is logged as an error (a bug, or a fact the table missed).
//
//   Bootstrapping  no data yet: initdb (the node that claims the cluster) or a clone of the leader
//   Foreign        the data directory is of another cluster: neither leads nor follows
//   Replica        a standby following (or finding) the leader
//   Candidate      a standby while the leader key is free: promotes if the rules allow it
//   Promoting      took the key and promoted; the checkpoint pg_rewind needs is not done yet
//   Leader         holds the lease and may write
//   SwitchingOver  the leader handing over to a chosen replica (POST /switchover)
//   Fenced         a primary's data without a valid lease: PostgreSQL stopped; it takes the key
//                  again, or rejoins whoever leads
//   Rejoining      being rewound (pg_rewind) or re-cloned to follow the leader
#include <cstdint>
#include <string>
#include <string_view>

namespace fulcrum::db {

enum class AgentState : uint8_t {
  Bootstrapping,
  Foreign,
  Replica,
  Candidate,
  Promoting,
  Leader,
  SwitchingOver,
  Fenced,
  Rejoining,
};
inline constexpr int kAgentStates = 9;

std::string_view stateName(AgentState state);

// What one tick saw.
struct AgentFacts {
  bool has_data = false;            // the data directory holds a cluster (not being bootstrapped)
  bool foreign = false;             // ... of another system than the cluster's
  bool primary_data = false;        // no standby.signal: a primary's data
  bool holds_lease = false;         // this node holds the leader key
  bool may_write = false;           // ... and its lease is before the fence deadline
  bool checkpoint_pending = false;  // promoted, post-promotion checkpoint not done yet
  bool switching_over = false;      // a switchover runs on this node
  bool leader_key_free = false;     // etcd read, and the leader key counts as free
  bool rejoining = false;           // a rewind or re-clone is under way
};

AgentState classify(const AgentFacts& facts);

// Whether the agent may go from one state to the other in one tick.
bool transitionAllowed(AgentState from, AgentState to);

// Why the agent went from `from` to `to`, in words for the log, from the facts that made `to`.
std::string transitionReason(AgentState from, AgentState to, const AgentFacts& facts);

}  // namespace fulcrum::db
