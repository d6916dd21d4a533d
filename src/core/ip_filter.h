#pragma once
// The firewall of the lb's listeners ([lb.firewall]): allow and deny lists of CIDRs, judged on
// the peer address right after accept, before a byte is read. Deny wins; an empty allow list
// allows everyone. An IPv4 client reaching a dual-stack [::] listener (::ffff:a.b.c.d) is judged
// as the IPv4 address it is. Refusals are counted per reason (atomics: every worker's listener
// shares one filter, and a refusal is rare next to the accept and close it costs).
#include <atomic>
#include <cstdint>
#include <vector>

#include "core/address.h"

namespace fulcrum::core {

struct IpPrefix {
  IpAddress network;
  uint8_t prefix_len = 0;
};

class IpFilter {
 public:
  enum class Verdict : uint8_t { Allowed, Denied, NotAllowed };

  IpFilter(std::vector<IpPrefix> allow, std::vector<IpPrefix> deny);

  // Judges `peer` and counts a refusal.
  Verdict admit(const IpAddress& peer);
  // Judges without counting.
  Verdict check(const IpAddress& peer) const;
  bool empty() const { return allow_.empty() && deny_.empty(); }

  uint64_t denied() const { return denied_.load(std::memory_order_relaxed); }
  uint64_t notAllowed() const { return not_allowed_.load(std::memory_order_relaxed); }

 private:
  std::vector<IpPrefix> allow_;
  std::vector<IpPrefix> deny_;
  std::atomic<uint64_t> denied_{0};
  std::atomic<uint64_t> not_allowed_{0};
};

// ::ffff:a.b.c.d as a.b.c.d; any other address unchanged.
IpAddress unmapIpv4(const IpAddress& ip);

}  // namespace fulcrum::core
