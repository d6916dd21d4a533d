#pragma once
// `fulcrum lab`: the hosts of a site worked out from the topology alone (no namespaces, no
// processes), so the host grouping, the names and the addresses are unit-tested.
//
// Every distinct IP address a node listens on belongs to a host; the addresses of one node are
// one host; nodes sharing an address share a host. Each host becomes a network namespace whose
// `eth0` (or [lb.vip] interface) is one end of a veth pair, the other end on one bridge; the
// bridge holds an address of the same subnet, so this machine reaches every host and the VIP.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/address.h"
#include "site/plan.h"

namespace fulcrum::site {

struct LabHost {
  std::string netns;  // "fl-1a2b3c-10.77.0.11": the tag, then the host's first address
  std::string veth;   // the bridge-side end of its veth pair, "fl1a2b3c-3" (<= 15 bytes)
  std::vector<core::IpAddress> addresses;
  std::vector<std::string> nodes;  // children of `up` on this host (node names, "etcd", "prometheus")
};

struct LabPlan {
  std::string tag;                 // 6 hex digits from state_dir: the names of two sites never clash
  std::string bridge;              // "flbr-1a2b3c"
  std::string inside_name;         // the veth end inside each namespace: "eth0", or [lb.vip] interface
  uint8_t prefix_len = 24;         // of the one subnet every host is on
  core::IpAddress bridge_address;  // this machine's address on it (the highest free one)
  std::optional<core::IpAddress> vip;
  std::vector<LabHost> hosts;  // ordered by address

  // The host a child of `up` runs on, or null.
  const LabHost* hostOf(const std::string& node) const;
};

// The names every lab of the site with this state_dir uses (also when its file changed since).
std::string labTag(const std::filesystem::path& state_dir);
std::string labBridgeName(const std::string& tag);
std::string labNetnsPrefix(const std::string& tag);  // "fl-1a2b3c-"
std::string labVethPrefix(const std::string& tag);   // "fl1a2b3c-"

// Groups `children` (planChildren's, each placed by its probe address and by every listener of the
// site named after it) into hosts. False with `error` when the file cannot run as a lab: loopback
// or wildcard addresses, IPv6, hosts on more than one subnet.
bool planLab(const config::Site& site, const std::vector<ChildSpec>& children, LabPlan& out,
             std::string& error);

// "10.77.0.11/24".
std::string withPrefix(const core::IpAddress& ip, uint8_t prefix_len);

}  // namespace fulcrum::site
