#include "site/lab_plan.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

namespace fulcrum::site {

namespace {

uint32_t toU32(const core::IpAddress& ip) {
  return (uint32_t{ip.bytes[0]} << 24) | (uint32_t{ip.bytes[1]} << 16) | (uint32_t{ip.bytes[2]} << 8) |
         ip.bytes[3];
}

core::IpAddress fromU32(uint32_t v) {
  core::IpAddress ip;
  ip.family = AF_INET;
  ip.bytes[0] = static_cast<uint8_t>(v >> 24);
  ip.bytes[1] = static_cast<uint8_t>(v >> 16);
  ip.bytes[2] = static_cast<uint8_t>(v >> 8);
  ip.bytes[3] = static_cast<uint8_t>(v);
  return ip;
}

// Why `ip` cannot be a lab host's address, or "".
std::string unusable(const core::IpAddress& ip) {
  if (ip.family != AF_INET) {
    return "is IPv6: the lab builds an IPv4 subnet only";
  }
  if (ip.bytes[0] == 127) {
    return "is a loopback address: the lab runs each host in its own network namespace and needs the "
           "hosts' real addresses (e.g. 10.77.0.0/24, as in examples/lab.toml)";
  }
  if (toU32(ip) == 0) {
    return "listens on every address (0.0.0.0): give the host's own address";
  }
  return "";
}

// Union-find over address indices.
struct Groups {
  std::vector<size_t> parent;
  size_t add() {
    parent.push_back(parent.size());
    return parent.size() - 1;
  }
  size_t find(size_t i) {
    while (parent[i] != i) {
      i = parent[i] = parent[parent[i]];
    }
    return i;
  }
  void join(size_t a, size_t b) { parent[find(a)] = find(b); }
};

bool lessIp(const core::IpAddress& a, const core::IpAddress& b) {
  return toU32(a) < toU32(b);
}

}  // namespace

const LabHost* LabPlan::hostOf(const std::string& node) const {
  for (const auto& host : hosts) {
    if (std::find(host.nodes.begin(), host.nodes.end(), node) != host.nodes.end()) {
      return &host;
    }
  }
  return nullptr;
}

std::string labTag(const std::filesystem::path& state_dir) {
  // FNV-1a: stable across builds and machines, unlike std::hash.
  uint32_t h = 2166136261u;
  std::filesystem::path dir = state_dir.lexically_normal();
  if (!dir.has_filename() && dir.has_parent_path()) {
    dir = dir.parent_path();  // "/srv/lab/" is "/srv/lab"
  }
  for (unsigned char c : dir.string()) {
    h = (h ^ c) * 16777619u;
  }
  return fmt::format("{:06x}", h & 0xffffff);
}

std::string labBridgeName(const std::string& tag) {
  return "flbr-" + tag;
}

std::string labNetnsPrefix(const std::string& tag) {
  return "fl-" + tag + "-";
}

std::string labVethPrefix(const std::string& tag) {
  return "fl" + tag + "-";
}

std::string withPrefix(const core::IpAddress& ip, uint8_t prefix_len) {
  return ip.toString() + "/" + std::to_string(prefix_len);
}

bool planLab(const config::Site& site, const std::vector<ChildSpec>& children, LabPlan& out,
             std::string& error) {
  out = LabPlan{};
  out.tag = labTag(site.site.state_dir);
  out.bridge = labBridgeName(out.tag);
  out.inside_name = site.lb.vip ? site.lb.vip->interface : "eth0";
  out.prefix_len = site.lb.vip ? site.lb.vip->prefix_len : 24;
  if (site.lb.vip) {
    out.vip = site.lb.vip->ip;
  }

  std::vector<core::IpAddress> ips;
  Groups groups;
  auto indexOf = [&](const core::IpAddress& ip) {
    for (size_t i = 0; i < ips.size(); ++i) {
      if (ips[i] == ip) {
        return i;
      }
    }
    ips.push_back(ip);
    return groups.add();
  };
  // Each child's addresses: its probe's, and every listener of the site named after it.
  const auto listeners = siteListeners(site, {});
  std::vector<std::vector<size_t>> child_ips(children.size());
  for (size_t c = 0; c < children.size(); ++c) {
    std::vector<std::pair<std::string, core::IpAddress>> mine = {
        {children[c].name + " " + children[c].probe.address.toString(), children[c].probe.address.ip()}};
    for (const auto& l : listeners) {
      if (l.what.rfind(children[c].name + " ", 0) == 0) {
        mine.emplace_back(l.what + " " + l.address.toString(), l.address.ip());
      }
    }
    for (const auto& [what, ip] : mine) {
      // The virtual IP is no host's: every lb listens on it, only its VRRP master holds it.
      if (out.vip && ip == *out.vip) {
        continue;
      }
      if (std::string why = unusable(ip); !why.empty()) {
        error = fmt::format("{}: {} ({}) {}", site.display_path, ip.toString(), what, why);
        return false;
      }
      child_ips[c].push_back(indexOf(ip));
    }
    if (child_ips[c].empty()) {
      error = fmt::format("{}: {} listens only on the virtual IP: give it an address of its own host (e.g. stats)",
                          site.display_path, children[c].name);
      return false;
    }
    for (size_t i : child_ips[c]) {
      groups.join(i, child_ips[c].front());
    }
  }
  // Every etcd endpoint is a host, even one whose member `up` does not start.
  for (const auto& endpoint : site.etcd.endpoints) {
    if (std::string why = unusable(endpoint.ip()); !why.empty()) {
      error = fmt::format("{}: {} (etcd endpoint) {}", site.display_path, endpoint.ip().toString(), why);
      return false;
    }
    indexOf(endpoint.ip());
  }
  if (ips.empty()) {
    error = site.display_path + ": no node listens anywhere: nothing to run in the lab";
    return false;
  }

  // One subnet: the first address's, with the VIP's prefix (else /24).
  if (out.prefix_len < 8 || out.prefix_len > 30) {
    error = fmt::format("{}: the lab needs a subnet between /8 and /30, not /{}", site.display_path,
                        out.prefix_len);
    return false;
  }
  const core::IpAddress base = *std::min_element(ips.begin(), ips.end(), lessIp);
  std::vector<core::IpAddress> taken = ips;
  if (out.vip) {
    taken.push_back(*out.vip);
  }
  const uint32_t mask = ~uint32_t{0} << (32 - out.prefix_len);
  const uint32_t network = toU32(base) & mask;
  for (const auto& ip : taken) {
    if (!ip.inPrefix(base, out.prefix_len)) {
      error = fmt::format("{}: {} is not in {}: the lab puts every host on one subnet", site.display_path,
                          ip.toString(), withPrefix(fromU32(network), out.prefix_len));
      return false;
    }
  }
  const uint32_t broadcast = network | ~mask;
  bool found = false;
  for (uint32_t v = broadcast - 1; v > network; --v) {
    core::IpAddress candidate = fromU32(v);
    if (std::find(taken.begin(), taken.end(), candidate) == taken.end()) {
      out.bridge_address = candidate;
      found = true;
      break;
    }
  }
  if (!found) {
    error = fmt::format("{}: no free address left in {} for this machine's end of the lab", site.display_path,
                        withPrefix(base, out.prefix_len));
    return false;
  }

  // Hosts: the groups, each with its addresses in order, ordered by their first address.
  std::map<size_t, LabHost> by_root;
  for (size_t i = 0; i < ips.size(); ++i) {
    by_root[groups.find(i)].addresses.push_back(ips[i]);
  }
  for (size_t c = 0; c < children.size(); ++c) {
    by_root[groups.find(child_ips[c].front())].nodes.push_back(children[c].name);
  }
  for (auto& [root, host] : by_root) {
    std::sort(host.addresses.begin(), host.addresses.end(), lessIp);
    out.hosts.push_back(std::move(host));
  }
  std::sort(out.hosts.begin(), out.hosts.end(), [](const LabHost& a, const LabHost& b) {
    return lessIp(a.addresses.front(), b.addresses.front());
  });
  for (size_t i = 0; i < out.hosts.size(); ++i) {
    out.hosts[i].netns = labNetnsPrefix(out.tag) + out.hosts[i].addresses.front().toString();
    out.hosts[i].veth = labVethPrefix(out.tag) + std::to_string(i + 1);
  }
  return true;
}

}  // namespace fulcrum::site
