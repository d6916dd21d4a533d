#pragma once
// A VRRPv3 virtual router on the load balancer's main event loop: the raw IPPROTO_VRRP socket
// (multicast 224.0.0.18 on the interface, or unicast peers), the Router state machine's timers,
// and its actions carried out on the host: the virtual address added or removed with rtnetlink
// and announced with gratuitous ARP. The caller feeds the node's health (setHealth).
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/event_loop.h"
#include "core/fd.h"
#include "lb/vrrp/router.h"

namespace fulcrum::lb::vrrp {

struct NodeOptions {
  std::string interface;
  uint32_t vip = 0;  // host order
  uint8_t prefix_len = 32;
  RouterConfig router;                  // primary_ip is found on the interface when 0
  std::vector<uint32_t> unicast_peers;  // empty: multicast to 224.0.0.18
};

// What /api/state and /metrics show; read on the loop thread.
struct NodeStatus {
  State state = State::Initialize;
  uint8_t priority = 0;  // advertised now
  uint8_t configured_priority = 0;
  uint32_t master_ip = 0;  // the master we hear (ourselves when master)
  uint32_t primary_ip = 0;
  bool holds_vip = false;
  uint64_t master_transitions = 0;  // times this node became master
  uint64_t adverts_received = 0;    // valid, for our VRID
  uint64_t adverts_sent = 0;
  std::array<uint64_t, kDecodeErrorCount> invalid{};  // by DecodeError
  uint64_t freezes = 0;
  uint64_t address_errors = 0;  // netlink or ARP failures
};

class Node final : public core::IoHandler {
 public:
  // Opens the socket and finds the interface; nullptr with `error` on failure (not root, no
  // such interface, no IPv4 address on it).
  static std::unique_ptr<Node> create(core::EventLoop& loop, NodeOptions options, std::string& error);
  ~Node() override;

  // Removes the virtual address if a previous run left it (never two holders), then enters
  // Backup with the priority of `health`.
  void start(const NodeHealth& health);
  // The node's health changed: the advertised priority follows (trackedPriority).
  void setHealth(const NodeHealth& health);
  // Leaves the virtual router: a master advertises priority 0 and releases the address.
  void stop();

  NodeStatus status() const;
  const NodeOptions& options() const { return options_; }

  void onIoEvents(uint32_t events) override;

 private:
  Node(core::EventLoop& loop, NodeOptions options, int ifindex, core::Fd fd);
  void onTimer();
  void apply();  // carries out the router's actions and logs its transitions, re-arms the timer
  void send(const Action& action);
  void takeVip();
  void releaseVip();
  void announce();

  core::EventLoop& loop_;
  NodeOptions options_;
  int ifindex_;
  core::Fd fd_;
  Router router_;
  core::Timer timer_;
  core::Timer garp_timer_;
  int garp_bursts_left_ = 0;
  bool holds_vip_ = false;
  NodeStatus counts_;
};

}  // namespace fulcrum::lb::vrrp
