#include "lb/vrrp/router.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <utility>

namespace fulcrum::lb::vrrp {
namespace {

using std::chrono::milliseconds;
using Ms = milliseconds;

constexpr uint32_t kIpA = 0x0AC73301;
constexpr uint32_t kIpB = 0x0AC73302;

const core::TimePoint kT0{std::chrono::seconds(1000)};

RouterConfig config(uint8_t priority, uint32_t ip = kIpA, Ms interval = Ms(1000)) {
  RouterConfig c;
  c.vrid = 51;
  c.priority = priority;
  c.advert_interval = interval;
  c.primary_ip = ip;
  return c;
}

Advert advert(uint8_t priority, uint16_t cs = 100) {
  return Advert{51, priority, cs, {}};
}

bool has(const std::vector<Action>& actions, Action::Kind kind) {
  return std::any_of(actions.begin(), actions.end(), [&](const Action& a) { return a.kind == kind; });
}

// Ticks the router at each of its deadlines up to `until`.
void runUntil(Router& r, core::TimePoint until) {
  while (auto due = r.nextDeadline()) {
    if (*due > until) {
      break;
    }
    r.tick(*due);
  }
}

TEST(VrrpRouter, TimersFollowTheRfc) {
  Router r(config(100));
  EXPECT_EQ(r.skewTime(), core::Duration(Ms(1000)) * 156 / 256);
  EXPECT_EQ(r.masterDownInterval(), Ms(3000) + core::Duration(Ms(1000)) * 156 / 256);
  Router top(config(254));
  EXPECT_EQ(top.skewTime(), core::Duration(Ms(1000)) * 2 / 256);
}

TEST(VrrpRouter, AloneItBecomesMasterAfterMasterDownInterval) {
  Router r(config(100));
  r.start(kT0);
  EXPECT_EQ(r.state(), State::Backup);
  EXPECT_FALSE(has(r.takeActions(), Action::TakeVip));
  core::TimePoint down = kT0 + r.masterDownInterval();
  r.tick(down - Ms(1));
  EXPECT_EQ(r.state(), State::Backup);
  r.tick(down);
  EXPECT_EQ(r.state(), State::Master);
  auto actions = r.takeActions();
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0].kind, Action::SendAdvert);  // the advert first, then the address
  EXPECT_EQ(actions[0].priority, 100);
  EXPECT_EQ(actions[0].interval_cs, 100);
  EXPECT_EQ(actions[1].kind, Action::TakeVip);
  // Then an advert every interval.
  r.tick(down + Ms(1000));
  actions = r.takeActions();
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Action::SendAdvert);
}

TEST(VrrpRouter, AMasterHearingALowerMasterAdvertisesAndAnnouncesAgain) {
  // A healed partition: both sides were master. The higher one asserts itself at once and
  // sends gratuitous ARP again, since the segment learned the other's MAC meanwhile.
  Router r(config(150));
  r.start(kT0);
  core::TimePoint down = kT0 + r.masterDownInterval();
  r.tick(down);
  ASSERT_EQ(r.state(), State::Master);
  r.takeActions();
  r.receive(down + Ms(10), kIpB, advert(100));
  EXPECT_EQ(r.state(), State::Master);
  auto actions = r.takeActions();
  EXPECT_TRUE(has(actions, Action::SendAdvert));
  EXPECT_TRUE(has(actions, Action::Announce));
  EXPECT_FALSE(has(actions, Action::ReleaseVip));
  // A higher one: no announce, the address goes.
  r.receive(down + Ms(20), kIpB, advert(200));
  actions = r.takeActions();
  EXPECT_FALSE(has(actions, Action::Announce));
  EXPECT_TRUE(has(actions, Action::ReleaseVip));
}

TEST(VrrpRouter, AdvertsFromAHigherMasterKeepItBackup) {
  Router r(config(100));
  r.start(kT0);
  for (int i = 1; i <= 20; ++i) {
    r.receive(kT0 + Ms(1000) * i, kIpB, advert(200));
    runUntil(r, kT0 + Ms(1000) * i + Ms(999));
  }
  EXPECT_EQ(r.state(), State::Backup);
  EXPECT_EQ(r.masterIp(), kIpB);
}

TEST(VrrpRouter, LearnsTheMasterInterval) {
  Router r(config(100));
  r.start(kT0);
  r.receive(kT0, kIpB, advert(200, 10));  // the master advertises every 100 ms
  EXPECT_EQ(r.masterAdvertInterval(), Ms(100));
  EXPECT_EQ(r.masterDownInterval(), Ms(300) + core::Duration(Ms(100)) * 156 / 256);
  runUntil(r, kT0 + Ms(400));
  EXPECT_EQ(r.state(), State::Master);
}

TEST(VrrpRouter, MasterYieldsToHigherPriorityAndTies) {
  struct Case {
    uint8_t ours;
    uint8_t theirs;
    uint32_t their_ip;
    bool yields;
  } cases[] = {
      {100, 101, kIpB, true},      {100, 99, kIpB, false},   {100, 100, kIpB, true},  // B's address is higher
      {100, 100, kIpA - 1, false}, {1, 100, kIpA - 1, true}, {254, 253, kIpB, false},
  };
  for (const Case& c : cases) {
    Router r(config(c.ours));
    r.start(kT0);
    runUntil(r, kT0 + Ms(5000));
    ASSERT_EQ(r.state(), State::Master);
    r.takeActions();
    r.receive(kT0 + Ms(5000), c.their_ip, advert(c.theirs));
    auto actions = r.takeActions();
    EXPECT_EQ(r.state() == State::Backup, c.yields) << int(c.ours) << " vs " << int(c.theirs);
    EXPECT_EQ(has(actions, Action::ReleaseVip), c.yields);
    // A master that stays answers at once (the other side goes back to Backup sooner).
    EXPECT_EQ(has(actions, Action::SendAdvert), !c.yields);
  }
}

TEST(VrrpRouter, ShutdownHandsOverAfterSkewTime) {
  Router master(config(200, kIpA));
  master.start(kT0);
  runUntil(master, kT0 + Ms(4000));
  ASSERT_EQ(master.state(), State::Master);
  master.takeActions();
  master.shutdown(kT0 + Ms(4000));
  auto actions = master.takeActions();
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0].kind, Action::SendAdvert);
  EXPECT_EQ(actions[0].priority, 0);
  EXPECT_EQ(actions[1].kind, Action::ReleaseVip);
  EXPECT_EQ(master.state(), State::Initialize);

  Router backup(config(100, kIpB));
  backup.start(kT0);
  backup.receive(kT0 + Ms(500), kIpA, advert(200));
  backup.receive(kT0 + Ms(1000), kIpA, advert(0));
  EXPECT_EQ(backup.nextDeadline(), kT0 + Ms(1000) + backup.skewTime());
  runUntil(backup, kT0 + Ms(1000) + backup.skewTime());
  EXPECT_EQ(backup.state(), State::Master);
}

TEST(VrrpRouter, PreemptsALowerMasterOnlyWhenAllowed) {
  for (bool preempt : {true, false}) {
    RouterConfig c = config(200);
    c.preempt = preempt;
    Router r(c);
    r.start(kT0);
    for (int i = 0; i < 10; ++i) {
      core::TimePoint t = kT0 + Ms(1000) * i;
      runUntil(r, t);
      r.receive(t, kIpB, advert(100));
    }
    EXPECT_EQ(r.state(), preempt ? State::Master : State::Backup) << preempt;
  }
}

TEST(VrrpRouter, PreemptDelayWaitsBeforeTakingOver) {
  RouterConfig c = config(200);
  c.preempt_delay = Ms(5000);
  Router r(c);
  r.start(kT0);
  core::TimePoint became{};
  for (int i = 0; i < 20 && r.state() == State::Backup; ++i) {
    core::TimePoint t = kT0 + Ms(1000) * i;
    runUntil(r, t);
    if (r.state() == State::Master) {
      became = *r.nextDeadline() - Ms(1000);
      break;
    }
    r.receive(t, kIpB, advert(100));
  }
  ASSERT_EQ(r.state(), State::Master);
  // The first lower advert at t0 starts the delay; adverts are still taken until t0+5s, and
  // the Master_Down_Interval after the last one taken runs out.
  EXPECT_GE(became, kT0 + Ms(5000));
  EXPECT_LE(became, kT0 + Ms(5000) + r.masterDownInterval() + Ms(1000));
}

TEST(VrrpRouter, AFrozenMasterReleasesAndListensFirst) {
  Router r(config(200));
  r.start(kT0);
  runUntil(r, kT0 + Ms(4000));
  ASSERT_EQ(r.state(), State::Master);
  r.takeActions();
  core::TimePoint resumed = *r.nextDeadline() + Ms(10000);  // SIGSTOP for 10 s
  // Whatever comes first after the freeze, the address goes before anything else happens.
  r.receive(resumed, kIpB, advert(100));
  auto actions = r.takeActions();
  ASSERT_FALSE(actions.empty());
  EXPECT_EQ(actions[0].kind, Action::ReleaseVip);
  EXPECT_FALSE(has(actions, Action::TakeVip));
  EXPECT_EQ(r.state(), State::Backup);
  EXPECT_EQ(r.freezes(), 1u);
  // Then, with preemption, it takes the address back once a Master_Down_Interval has passed
  // (the lower master then yields to its advert).
  runUntil(r, resumed + r.masterDownInterval());
  EXPECT_EQ(r.state(), State::Master);
}

TEST(VrrpRouter, AFrozenBackupDoesNotTakeOverBeforeListening) {
  Router r(config(100));
  r.start(kT0);
  r.receive(kT0, kIpB, advert(200));
  core::TimePoint resumed = kT0 + Ms(30000);
  r.tick(resumed);  // its Master_Down_Timer ran out long ago
  EXPECT_EQ(r.state(), State::Backup);
  r.receive(resumed + Ms(5), kIpB, advert(200));  // the adverts waiting in the socket
  runUntil(r, resumed + Ms(3000));
  EXPECT_EQ(r.state(), State::Backup);
}

TEST(VrrpRouter, ADegradedMasterAdvertisesAtOnceAndIsPreempted) {
  Router a(config(150, kIpA));
  a.start(kT0);
  runUntil(a, kT0 + Ms(4000));
  ASSERT_EQ(a.state(), State::Master);
  a.takeActions();
  a.setPriority(kT0 + Ms(4000), kDegradedPriority);
  auto actions = a.takeActions();
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].priority, kDegradedPriority);
  EXPECT_EQ(a.state(), State::Master);
  a.receive(kT0 + Ms(4100), kIpA - 1, advert(100));  // the healthy backup, now master
  EXPECT_EQ(a.state(), State::Backup);
}

TEST(VrrpRouter, TrackedPriority) {
  EXPECT_EQ(trackedPriority(100, {true, true}), 100);
  EXPECT_EQ(trackedPriority(100, {false, true}), kDegradedPriority);
  EXPECT_EQ(trackedPriority(100, {true, false}), kDegradedPriority);
  EXPECT_EQ(trackedPriority(100, {false, false}), kDegradedPriority);
}

// Sequences of random events over three routers on one zero-latency segment (kill -9, restart,
// SIGSTOP/SIGCONT, graceful stop, health changes). Invariants: never two routers that run
// (not frozen) holding the address after any step; once the events stop, within a bound,
// exactly one holder, the live router with the highest effective priority.
class Segment {
 public:
  struct Node {
    uint8_t priority;
    uint32_t ip;
    std::unique_ptr<Router> router;
    bool holds = false;
    bool frozen = false;
    bool healthy = true;
    std::vector<std::pair<uint32_t, Advert>> queued;  // arrived while frozen
  };

  explicit Segment(std::mt19937& rng) : rng_(rng) {
    nodes_.push_back(Node{200, kIpA});
    nodes_.push_back(Node{150, kIpB});
    nodes_.push_back(Node{100, kIpB + 1});
    for (size_t i = 0; i < nodes_.size(); ++i) {
      startNode(i);
    }
  }

  void startNode(size_t i) {
    Node& n = nodes_[i];
    n.router = std::make_unique<Router>(config(n.priority, n.ip, Ms(100)));
    n.frozen = false;
    n.queued.clear();
    n.holds = false;  // a restart removes a stale address first
    n.router->setPriority(now_, n.healthy ? n.priority : kDegradedPriority);
    n.router->start(now_);
    apply(i);
  }

  // Carries out node i's actions; adverts reach every other running router at once.
  void apply(size_t i) {
    std::vector<size_t> work{i};
    while (!work.empty()) {
      size_t k = work.back();
      work.pop_back();
      if (!nodes_[k].router) {
        continue;
      }
      for (const Action& a : nodes_[k].router->takeActions()) {
        if (a.kind == Action::TakeVip) {
          nodes_[k].holds = true;
        } else if (a.kind == Action::ReleaseVip) {
          nodes_[k].holds = false;
        } else {
          Advert ad{51, a.priority, a.interval_cs, {}};
          for (size_t j = 0; j < nodes_.size(); ++j) {
            if (j == k || !nodes_[j].router) {
              continue;
            }
            if (nodes_[j].frozen) {
              nodes_[j].queued.emplace_back(nodes_[k].ip, ad);
            } else {
              nodes_[j].router->receive(now_, nodes_[k].ip, ad);
              work.push_back(j);
            }
          }
        }
      }
    }
  }

  // Advances simulated time to `until`, firing every deadline in order.
  void runTo(core::TimePoint until) {
    for (;;) {
      std::optional<core::TimePoint> next;
      size_t who = 0;
      for (size_t i = 0; i < nodes_.size(); ++i) {
        if (nodes_[i].router && !nodes_[i].frozen) {
          if (auto d = nodes_[i].router->nextDeadline(); d && (!next || *d < *next)) {
            next = d;
            who = i;
          }
        }
      }
      if (!next || *next > until) {
        break;
      }
      now_ = std::max(now_, *next);
      nodes_[who].router->tick(now_);
      apply(who);
      checkNeverTwo();
    }
    now_ = until;
  }

  void randomEvent() {
    size_t i = rng_() % nodes_.size();
    Node& n = nodes_[i];
    switch (rng_() % 6) {
      case 0:  // kill -9: the address stays on its interface until a restart removes it
        n.router.reset();
        n.holds = false;  // the host's address is gone with it in this model (the agent is dead)
        n.frozen = false;
        n.queued.clear();
        break;
      case 1:
        if (!n.router) {
          startNode(i);
        }
        break;
      case 2:
        if (n.router) {
          n.frozen = true;
        }
        break;
      case 3:
        if (n.router && n.frozen) {
          n.frozen = false;
          // Either the timer or the socket runs first after SIGCONT.
          if (rng_() % 2 == 0) {
            n.router->tick(now_);
            apply(i);
          }
          for (auto& [from, ad] : std::exchange(n.queued, {})) {
            n.router->receive(now_, from, ad);
            apply(i);
          }
        }
        break;
      case 4:
        if (n.router && !n.frozen) {
          n.router->shutdown(now_);
          apply(i);
          n.router.reset();
        }
        break;
      case 5:
        n.healthy = !n.healthy;
        if (n.router && !n.frozen) {
          n.router->setPriority(now_, n.healthy ? n.priority : kDegradedPriority);
          apply(i);
        }
        break;
    }
    checkNeverTwo();
  }

  void checkNeverTwo() {
    int holders = 0;
    for (const Node& n : nodes_) {
      holders += n.router && !n.frozen && n.holds;
    }
    ASSERT_LE(holders, 1) << "two running holders at t=" << (now_ - kT0).count();
  }

  // After a quiet period: one holder, of the highest effective priority among running routers
  // (between equal priorities a master keeps the address: a backup preempts only a lower one).
  void checkConverged() {
    int holders = 0;
    int running = 0;
    uint8_t top = 0;
    const Node* holder = nullptr;
    for (const Node& n : nodes_) {
      if (!n.router) {
        continue;
      }
      ASSERT_FALSE(n.frozen);
      ++running;
      top = std::max(top, n.router->priority());
      if (n.holds) {
        ++holders;
        holder = &n;
      }
    }
    EXPECT_EQ(holders, running > 0 ? 1 : 0);
    if (holder != nullptr) {
      EXPECT_EQ(holder->router->priority(), top) << "the holder is not of the highest priority";
      EXPECT_EQ(holder->router->state(), State::Master);
    }
  }

  void resumeAll() {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].router && nodes_[i].frozen) {
        nodes_[i].frozen = false;
        nodes_[i].router->tick(now_);
        apply(i);
        for (auto& [from, ad] : std::exchange(nodes_[i].queued, {})) {
          nodes_[i].router->receive(now_, from, ad);
          apply(i);
        }
      }
    }
    checkNeverTwo();
  }

  core::TimePoint now() const { return now_; }

 private:
  std::mt19937& rng_;
  std::vector<Node> nodes_;
  core::TimePoint now_ = kT0;
};

TEST(VrrpRouter, RandomFaultSequencesKeepOneHolder) {
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    std::mt19937 rng(seed);
    Segment s(rng);
    for (int step = 0; step < 40; ++step) {
      s.runTo(s.now() + Ms(rng() % 800));
      if (HasFatalFailure()) {
        FAIL() << "seed " << seed << " step " << step;
      }
      s.randomEvent();
      if (HasFatalFailure()) {
        FAIL() << "seed " << seed << " step " << step;
      }
    }
    s.resumeAll();
    s.runTo(s.now() + Ms(2000));  // a few Master_Down_Intervals of 100 ms adverts
    s.checkConverged();
    if (HasFailure()) {
      FAIL() << "seed " << seed;
    }
  }
}

}  // namespace
}  // namespace fulcrum::lb::vrrp
