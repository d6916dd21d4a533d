#include "core/ip_filter.h"

#include <algorithm>
#include <sys/socket.h>

namespace fulcrum::core {

namespace {

bool matchesAny(const std::vector<IpPrefix>& list, const IpAddress& ip) {
  return std::any_of(list.begin(), list.end(),
                     [&](const IpPrefix& p) { return ip.inPrefix(p.network, p.prefix_len); });
}

}  // namespace

IpAddress unmapIpv4(const IpAddress& ip) {
  if (ip.family != AF_INET6) {
    return ip;
  }
  for (size_t i = 0; i < 10; ++i) {
    if (ip.bytes[i] != 0) {
      return ip;
    }
  }
  if (ip.bytes[10] != 0xff || ip.bytes[11] != 0xff) {
    return ip;
  }
  IpAddress v4;
  v4.family = AF_INET;
  std::copy(ip.bytes.begin() + 12, ip.bytes.begin() + 16, v4.bytes.begin());
  return v4;
}

IpFilter::IpFilter(std::vector<IpPrefix> allow, std::vector<IpPrefix> deny)
    : allow_(std::move(allow)), deny_(std::move(deny)) {}

IpFilter::Verdict IpFilter::check(const IpAddress& peer) const {
  const IpAddress ip = unmapIpv4(peer);
  if (matchesAny(deny_, ip)) {
    return Verdict::Denied;
  }
  if (!allow_.empty() && !matchesAny(allow_, ip)) {
    return Verdict::NotAllowed;
  }
  return Verdict::Allowed;
}

IpFilter::Verdict IpFilter::admit(const IpAddress& peer) {
  Verdict verdict = check(peer);
  if (verdict == Verdict::Denied) {
    denied_.fetch_add(1, std::memory_order_relaxed);
  } else if (verdict == Verdict::NotAllowed) {
    not_allowed_.fetch_add(1, std::memory_order_relaxed);
  }
  return verdict;
}

}  // namespace fulcrum::core
