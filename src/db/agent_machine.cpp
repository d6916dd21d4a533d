#include "db/agent_machine.h"

#include <array>

namespace fulcrum::db {

namespace {

using S = AgentState;

constexpr size_t index(AgentState s) {
  return static_cast<size_t>(s);
}

// kAllowed[from] lists the states reachable from `from` in one tick (staying is always allowed).
struct Row {
  AgentState from;
  std::initializer_list<AgentState> to;
};

const std::array<std::array<bool, kAgentStates>, kAgentStates>& table() {
  static const auto built = [] {
    std::array<std::array<bool, kAgentStates>, kAgentStates> t{};
    const Row rows[] = {
        // initdb done (a primary's data, the lease next tick), or a clone started as a replica.
        {S::Bootstrapping, {S::Fenced, S::Leader, S::Replica, S::Candidate, S::Foreign}},
        // An operator put the right data back, or removed it.
        {S::Foreign, {S::Bootstrapping, S::Replica, S::Candidate, S::Fenced}},
        {S::Replica, {S::Candidate, S::Promoting, S::Leader, S::Rejoining, S::Bootstrapping, S::Foreign}},
        {S::Candidate, {S::Replica, S::Promoting, S::Leader, S::Rejoining, S::Bootstrapping, S::Foreign}},
        // The checkpoint done, or the lease lost first.
        {S::Promoting, {S::Leader, S::Fenced, S::SwitchingOver}},
        // Promoting: a restored copy of the database promoted itself (fulcrum restore).
        {S::Leader, {S::Fenced, S::SwitchingOver, S::Foreign, S::Promoting}},
        // Given up (leads on), key released (fenced), or already rejoined as the target's replica.
        {S::SwitchingOver, {S::Leader, S::Fenced, S::Replica, S::Rejoining}},
        {S::Fenced,
         {S::Leader, S::Promoting, S::Rejoining, S::Replica, S::Candidate, S::Bootstrapping, S::Foreign}},
        // Rewound (a replica), re-cloned (bootstrapping), or given up for now.
        {S::Rejoining, {S::Replica, S::Candidate, S::Bootstrapping, S::Fenced, S::Foreign}},
    };
    for (const Row& row : rows) {
      t[index(row.from)][index(row.from)] = true;
      for (AgentState to : row.to) {
        t[index(row.from)][index(to)] = true;
      }
    }
    return t;
  }();
  return built;
}

}  // namespace

std::string_view stateName(AgentState state) {
  switch (state) {
    case S::Bootstrapping:
      return "bootstrapping";
    case S::Foreign:
      return "foreign";
    case S::Replica:
      return "replica";
    case S::Candidate:
      return "candidate";
    case S::Promoting:
      return "promoting";
    case S::Leader:
      return "leader";
    case S::SwitchingOver:
      return "switching_over";
    case S::Fenced:
      return "fenced";
    case S::Rejoining:
      return "rejoining";
  }
  return "unknown";
}

AgentState classify(const AgentFacts& f) {
  if (!f.has_data) {
    return f.rejoining ? S::Rejoining : S::Bootstrapping;
  }
  if (f.foreign) {
    return S::Foreign;
  }
  if (f.rejoining) {
    return S::Rejoining;
  }
  if (f.primary_data) {
    if (!f.holds_lease || !f.may_write) {
      return S::Fenced;
    }
    if (f.switching_over) {
      return S::SwitchingOver;
    }
    return f.checkpoint_pending ? S::Promoting : S::Leader;
  }
  return f.leader_key_free ? S::Candidate : S::Replica;
}

bool transitionAllowed(AgentState from, AgentState to) {
  return table()[index(from)][index(to)];
}

std::string transitionReason(AgentState from, AgentState to, const AgentFacts& f) {
  switch (to) {
    case S::Bootstrapping:
      return from == S::Rejoining || from == S::Replica || from == S::Candidate || from == S::Fenced
                 ? "data moved aside: cloning the leader again"
                 : "no data: bootstrapping";
    case S::Foreign:
      return "the data directory is of another system than the cluster's";
    case S::Replica:
      if (from == S::Bootstrapping) {
        return "cloned the leader";
      }
      if (from == S::Candidate) {
        return "a leader was elected";
      }
      if (from == S::Rejoining || from == S::Fenced || from == S::SwitchingOver) {
        return "rewound: following the leader";
      }
      return "data of the cluster again: following the leader";
    case S::Candidate:
      return "the leader key is free";
    case S::Promoting:
      return from == S::Leader ? "a restored copy of the database promoted (fulcrum restore)"
                               : "took the leader key and promoted";
    case S::Leader:
      if (from == S::Promoting) {
        return "post-promotion checkpoint done";
      }
      if (from == S::SwitchingOver) {
        return "switchover given up: leading on";
      }
      return from == S::Bootstrapping ? "initialized the cluster and took the leader key"
                                      : "took the leader key";
    case S::SwitchingOver:
      return "switchover requested";
    case S::Fenced:
      if (from == S::Bootstrapping) {
        return "initialized the cluster; the leader key is not held yet";
      }
      if (from == S::SwitchingOver) {
        return "leadership handed over";
      }
      return f.holds_lease ? "lease past its fence deadline (renewals failing)" : "no leader lease";
    case S::Rejoining:
      return "rewinding (or re-cloning) to follow the leader";
  }
  return "";
}

}  // namespace fulcrum::db
