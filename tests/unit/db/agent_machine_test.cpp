// The agent's named states: what facts make each, and which changes one tick may make.
#include "db/agent_machine.h"

#include <gtest/gtest.h>

#include <vector>

namespace fulcrum::db {
namespace {

using S = AgentState;

AgentFacts leader() {
  AgentFacts f;
  f.has_data = true;
  f.primary_data = true;
  f.holds_lease = true;
  f.may_write = true;
  return f;
}

AgentFacts replica() {
  AgentFacts f;
  f.has_data = true;
  return f;
}

TEST(AgentMachineTest, FactsNameTheState) {
  EXPECT_EQ(classify(AgentFacts{}), S::Bootstrapping);
  EXPECT_EQ(classify(leader()), S::Leader);
  AgentFacts f = leader();
  f.may_write = false;  // past the fence deadline
  EXPECT_EQ(classify(f), S::Fenced);
  f = leader();
  f.holds_lease = false;
  EXPECT_EQ(classify(f), S::Fenced);
  f = leader();
  f.checkpoint_pending = true;
  EXPECT_EQ(classify(f), S::Promoting);
  f = leader();
  f.switching_over = true;
  EXPECT_EQ(classify(f), S::SwitchingOver);
  EXPECT_EQ(classify(replica()), S::Replica);
  f = replica();
  f.leader_key_free = true;
  EXPECT_EQ(classify(f), S::Candidate);
  f.rejoining = true;
  EXPECT_EQ(classify(f), S::Rejoining);
  f = leader();
  f.foreign = true;  // whatever else holds
  EXPECT_EQ(classify(f), S::Foreign);
  f = AgentFacts{};
  f.rejoining = true;  // data moved aside for a re-clone
  EXPECT_EQ(classify(f), S::Rejoining);
}

TEST(AgentMachineTest, NamesAreDistinct) {
  for (int a = 0; a < kAgentStates; ++a) {
    for (int b = a + 1; b < kAgentStates; ++b) {
      EXPECT_NE(stateName(static_cast<S>(a)), stateName(static_cast<S>(b)));
    }
  }
}

TEST(AgentMachineTest, TheLifeOfAFailover) {
  // A replica sees the key free, promotes, checkpoints, leads; loses the lease, is fenced;
  // another node leads, so it is rewound and follows it.
  const std::vector<S> path = {S::Bootstrapping, S::Replica, S::Candidate, S::Promoting,
                               S::Leader,        S::Fenced,  S::Rejoining, S::Replica};
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    EXPECT_TRUE(transitionAllowed(path[i], path[i + 1]))
        << stateName(path[i]) << " -> " << stateName(path[i + 1]);
  }
  for (int s = 0; s < kAgentStates; ++s) {
    EXPECT_TRUE(transitionAllowed(static_cast<S>(s), static_cast<S>(s)));
  }
}

TEST(AgentMachineTest, ARestoreOnTheLeaderPromotesItsRestoredCopy) {
  // fulcrum restore: the leader keeps its key while the restored copy replays and promotes.
  EXPECT_TRUE(transitionAllowed(S::Leader, S::Promoting));
  EXPECT_TRUE(transitionAllowed(S::Promoting, S::Leader));
  AgentFacts f;
  EXPECT_EQ(transitionReason(S::Leader, S::Promoting, f), "a restored copy of the database promoted (fulcrum restore)");
}

TEST(AgentMachineTest, ShortcutsThatWouldSkipASafetyStepAreNotAllowed) {
  // A leader never becomes a replica without being fenced and rewound first.
  EXPECT_FALSE(transitionAllowed(S::Leader, S::Replica));
  EXPECT_FALSE(transitionAllowed(S::Leader, S::Rejoining));
  EXPECT_FALSE(transitionAllowed(S::Leader, S::Candidate));
  // Nothing but initdb or a clone leaves Bootstrapping; nothing returns to it but a re-clone.
  EXPECT_FALSE(transitionAllowed(S::Bootstrapping, S::Promoting));
  EXPECT_FALSE(transitionAllowed(S::Leader, S::Bootstrapping));
  // A promotion ends in leadership or a fence, never back to following.
  EXPECT_FALSE(transitionAllowed(S::Promoting, S::Replica));
  EXPECT_FALSE(transitionAllowed(S::Promoting, S::Candidate));
  // Foreign data never leads directly.
  EXPECT_FALSE(transitionAllowed(S::Foreign, S::Leader));
  EXPECT_FALSE(transitionAllowed(S::Foreign, S::Promoting));
}

TEST(AgentMachineTest, EveryAllowedChangeHasAReason) {
  for (int a = 0; a < kAgentStates; ++a) {
    for (int b = 0; b < kAgentStates; ++b) {
      if (a != b && transitionAllowed(static_cast<S>(a), static_cast<S>(b))) {
        EXPECT_FALSE(transitionReason(static_cast<S>(a), static_cast<S>(b), AgentFacts{}).empty())
            << stateName(static_cast<S>(a)) << " -> " << stateName(static_cast<S>(b));
      }
    }
  }
  AgentFacts renewals_failing = leader();
  renewals_failing.may_write = false;
  EXPECT_NE(transitionReason(S::Leader, S::Fenced, renewals_failing).find("renewals failing"), std::string::npos);
  EXPECT_EQ(transitionReason(S::Promoting, S::Leader, leader()), "post-promotion checkpoint done");
}

}  // namespace
}  // namespace fulcrum::db
