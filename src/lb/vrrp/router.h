#pragma once
// The VRRPv3 state machine of one virtual router (RFC 5798 §6.4), pure: the caller feeds it
// time, received advertisements and priority changes, and carries out the actions it asks for
// (send an advertisement, take or release the virtual IP). Time is injected, so every sequence
// of events is tested on simulated time.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "lb/vrrp/advert.h"

namespace fulcrum::lb::vrrp {

enum class State : uint8_t { Initialize, Backup, Master };
std::string_view stateName(State state);

struct RouterConfig {
  uint8_t vrid = 51;
  uint8_t priority = 100;  // as configured; the effective one changes with setPriority
  core::Duration advert_interval = std::chrono::seconds(1);
  bool preempt = true;
  // A backup that could preempt waits until it has been able to for this long (keepalived's
  // preempt_delay), so a node that just came back does not take the address at once.
  core::Duration preempt_delay{0};
  uint32_t primary_ip = 0;  // host order: breaks priority ties (the higher address wins)
};

struct Action {
  // Announce: send gratuitous ARP again for the address this master holds — another master was
  // heard (a healed partition), so the segment may be sending the address's traffic to it.
  enum Kind : uint8_t { SendAdvert, TakeVip, ReleaseVip, Announce };
  Kind kind;
  uint8_t priority = 0;      // SendAdvert: the priority to advertise (0 = leaving)
  uint16_t interval_cs = 0;  // SendAdvert: Max Adver Int
};

struct Transition {
  State from;
  State to;
  std::string reason;
};

class Router {
 public:
  explicit Router(RouterConfig config);

  // Initialize -> Backup (Master at once only for an address owner, priority 255).
  void start(core::TimePoint now);
  // Leaves the virtual router: a master sends a priority-0 advertisement (the backup takes over
  // after its Skew_Time) and releases the address. -> Initialize.
  void shutdown(core::TimePoint now);
  // An advertisement decoded for this VRID from `source` (host order). Own ones are ignored.
  void receive(core::TimePoint now, uint32_t source, const Advert& advert);
  // Runs the timers due at `now`. Call at nextDeadline() at the latest.
  void tick(core::TimePoint now);
  // The effective priority (1..254) after tracking: the node's own health.
  void setPriority(core::TimePoint now, uint8_t priority);

  // When tick() must run next (none in Initialize).
  std::optional<core::TimePoint> nextDeadline() const;
  std::vector<Action> takeActions();
  std::vector<Transition> takeTransitions();

  State state() const { return state_; }
  uint8_t priority() const { return priority_; }
  const RouterConfig& config() const { return config_; }
  core::Duration masterAdvertInterval() const { return master_advert_interval_; }
  core::Duration skewTime() const;
  core::Duration masterDownInterval() const;
  // The sender of the last advertisement taken in Backup (0 = none yet).
  uint32_t masterIp() const { return master_ip_; }
  uint64_t freezes() const { return freezes_; }

 private:
  // A gap since the last call long enough that the peers may have elected another master
  // (SIGSTOP, a stuck host): leave Master, release the address, and listen again before deciding.
  void checkFrozen(core::TimePoint now);
  void becomeMaster(core::TimePoint now, std::string reason);
  void becomeBackup(core::TimePoint now, std::string reason);
  void sendAdvert(uint8_t priority);
  void transition(State to, std::string reason);
  void learnInterval(uint16_t interval_cs);

  RouterConfig config_;
  State state_ = State::Initialize;
  uint8_t priority_;
  core::Duration master_advert_interval_;
  std::optional<core::TimePoint> advert_due_;       // Adver_Timer (Master)
  std::optional<core::TimePoint> master_down_due_;  // Master_Down_Timer (Backup)
  std::optional<core::TimePoint> preempt_since_;    // since when a lower master could be preempted
  std::optional<core::TimePoint> last_run_;
  uint32_t master_ip_ = 0;
  uint64_t freezes_ = 0;
  std::vector<Action> actions_;
  std::vector<Transition> transitions_;
};

}  // namespace fulcrum::lb::vrrp

namespace fulcrum::lb::vrrp {

// What a node advertises while its proxy cannot serve: low enough that any healthy peer
// preempts it (keepalived's tracking weight), not 0 (that would mean "leaving now").
inline constexpr uint8_t kDegradedPriority = 1;

// The node's own health, as the priority tracks it.
struct NodeHealth {
  bool servers_up = false;    // a server has passed a check and is up (true without servers)
  bool workers_alive = true;  // every worker loop answered its last heartbeat in time
};

// The priority to advertise: the configured one while the node can serve, else kDegradedPriority.
uint8_t trackedPriority(uint8_t configured, const NodeHealth& health);

}  // namespace fulcrum::lb::vrrp
