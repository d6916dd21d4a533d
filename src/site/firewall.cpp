#include "site/firewall.h"

#include <algorithm>
#include <optional>

#include <fmt/format.h>

#include "config/values.h"
#include "site/plan.h"

namespace fulcrum::site {

namespace {

enum class Kind { Etcd, Db, Web, Lb, Prometheus, Alertmanager };

struct NodeInfo {
  std::string name;
  Kind kind = Kind::Web;
  std::vector<core::IpAddress> own;  // the addresses it listens on, the VIP excepted
  size_t host = 0;
};

// One listener of the site: siteListeners' entry, with the node it belongs to.
struct Port {
  size_t node = 0;
  std::string purpose;  // what siteListeners names after the node: "http", "PostgreSQL", "peer", ...
  core::SocketAddress address;
};

struct Model {
  std::vector<NodeInfo> nodes;
  std::vector<Port> ports;
  std::vector<std::vector<core::IpAddress>> hosts;  // each host's addresses
};

bool lessIp(const core::IpAddress& a, const core::IpAddress& b) {
  if (a.family != b.family) {
    return a.family == AF_INET;
  }
  return a.bytes < b.bytes;
}

void addUnique(std::vector<core::IpAddress>& to, const core::IpAddress& ip) {
  if (std::find(to.begin(), to.end(), ip) == to.end()) {
    to.push_back(ip);
  }
}

bool contains(const std::vector<core::IpAddress>& in, const core::IpAddress& ip) {
  return std::find(in.begin(), in.end(), ip) != in.end();
}

bool isVip(const config::Site& site, const core::IpAddress& ip) {
  return site.lb.vip && site.lb.vip->ip == ip;
}

Model buildModel(const config::Site& site) {
  Model m;
  auto add = [&](std::string name, Kind kind) { m.nodes.push_back(NodeInfo{std::move(name), kind, {}, 0}); };
  if (hasManagedEtcd(site)) {
    for (size_t i = 0; i < site.etcd.endpoints.size(); ++i) {
      add(etcdMemberName(site, i), Kind::Etcd);
    }
  }
  for (const auto& n : site.db.nodes) {
    add(n.name, Kind::Db);
  }
  for (const auto& n : site.web.nodes) {
    add(n.name, Kind::Web);
  }
  for (const auto& n : site.lb.nodes) {
    add(n.name, Kind::Lb);
  }
  if (hasManagedMonitoring(site)) {
    if (site.monitoring.alertmanager) {
      add("alertmanager", Kind::Alertmanager);
    }
    add("prometheus", Kind::Prometheus);
  }
  // The listeners `up` and `lab` open, with the etcd peer ports they pick in a namespace of the
  // member's own (client port + 1 unless the site already uses it).
  const auto peer_ports = chooseEtcdPeerPorts(site, [](const core::SocketAddress&) { return true; });
  for (const Listener& l : siteListeners(site, peer_ports)) {
    // The node it is named after ("lb-01 http", or "prometheus" alone: its web listener); the
    // longest name wins should one prefix another.
    std::optional<size_t> best;
    for (size_t i = 0; i < m.nodes.size(); ++i) {
      const std::string& name = m.nodes[i].name;
      const bool named = l.what == name || l.what.compare(0, name.size() + 1, name + " ") == 0;
      if (named && (!best || name.size() > m.nodes[*best].name.size())) {
        best = i;
      }
    }
    if (best) {
      const size_t skip = m.nodes[*best].name.size() + 1;
      m.ports.push_back(Port{*best, l.what.size() > skip ? l.what.substr(skip) : "web", l.address});
    }
  }
  // An etcd `up` does not run still answers its clients on its endpoint; its peer port is its own.
  if (!hasManagedEtcd(site)) {
    for (size_t i = 0; i < site.etcd.endpoints.size(); ++i) {
      add(etcdMemberName(site, i), Kind::Etcd);
      m.ports.push_back(Port{m.nodes.size() - 1, "client", site.etcd.endpoints[i]});
    }
  }
  for (const Port& p : m.ports) {
    if (!isVip(site, p.address.ip())) {
      addUnique(m.nodes[p.node].own, p.address.ip());
    }
  }
  for (const Port& p : m.ports) {
    if (m.nodes[p.node].own.empty()) {
      addUnique(m.nodes[p.node].own, p.address.ip());  // listens on the VIP alone
    }
  }
  // Hosts: nodes sharing an address share a host (as `fulcrum lab` groups them).
  for (auto& node : m.nodes) {
    std::vector<core::IpAddress> merged = node.own;
    std::vector<std::vector<core::IpAddress>> kept;
    for (auto& host : m.hosts) {
      bool shares = std::any_of(host.begin(), host.end(), [&](const auto& ip) { return contains(node.own, ip); });
      if (shares) {
        for (const auto& ip : host) {
          addUnique(merged, ip);
        }
      } else {
        kept.push_back(std::move(host));
      }
    }
    if (!merged.empty()) {
      kept.push_back(std::move(merged));
    }
    m.hosts = std::move(kept);
  }
  for (auto& host : m.hosts) {
    std::sort(host.begin(), host.end(), lessIp);
  }
  std::sort(m.hosts.begin(), m.hosts.end(), [](const auto& a, const auto& b) { return lessIp(a.front(), b.front()); });
  for (auto& node : m.nodes) {
    for (size_t h = 0; h < m.hosts.size(); ++h) {
      if (!node.own.empty() && contains(m.hosts[h], node.own.front())) {
        node.host = h;
      }
    }
  }
  return m;
}

// Text that cannot end a comment or a statement early: node names are [A-Za-z0-9_.-] already,
// but a file path may hold anything.
std::string oneLine(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '"') {
      c = '?';
    }
  }
  return text;
}

std::string quoted(const std::string& text) {
  return "\"" + oneLine(text) + "\"";
}

std::string familyWord(int family) {
  return family == AF_INET ? "ip" : "ip6";
}

std::string addressSet(const std::vector<core::IpAddress>& ips) {
  if (ips.size() == 1) {
    return ips.front().toString();
  }
  std::string out = "{ ";
  for (size_t i = 0; i < ips.size(); ++i) {
    out += (i == 0 ? "" : ", ") + ips[i].toString();
  }
  return out + " }";
}

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void line(const std::string& text) { out_ += "\t\t" + text + "\n"; }

  // Accepts TCP to `to` from `sources` (or from anyone), one rule per address family the
  // listener takes; a comment line instead when no other host needs the port.
  void allow(const core::SocketAddress& to, const std::vector<core::IpAddress>& sources, bool anyone,
             const std::string& comment) {
    const core::IpAddress ip = to.ip();
    const bool wildcard = config::isZeroAddress(ip);
    std::vector<int> families = {ip.family};
    if (wildcard && ip.family == AF_INET6) {
      families = {AF_INET, AF_INET6};  // [::] takes IPv4 too (Linux's dual stack)
    }
    bool any = false;
    for (int family : families) {
      const std::string word = familyWord(family);
      std::string rule = wildcard ? "" : word + " daddr " + ip.toString() + " ";
      if (!anyone) {
        std::vector<core::IpAddress> from;
        std::copy_if(sources.begin(), sources.end(), std::back_inserter(from),
                     [&](const auto& s) { return s.family == family; });
        if (from.empty()) {
          continue;
        }
        rule += word + " saddr " + addressSet(from) + " ";
      }
      rule += fmt::format("tcp dport {} accept comment {}", to.port(), quoted(comment));
      if (std::find(rules_.begin(), rules_.end(), rule) == rules_.end()) {
        rules_.push_back(rule);
        line(rule);
      }
      any = true;
    }
    if (!any) {
      line(fmt::format("# {} ({}): no other host connects to it", oneLine(comment), to.toString()));
    }
  }

 private:
  std::string& out_;
  std::vector<std::string> rules_;
};

}  // namespace

std::vector<std::string> firewallNodeNames(const config::Site& site) {
  std::vector<std::string> out;
  for (const auto& n : buildModel(site).nodes) {
    out.push_back(n.name);
  }
  return out;
}

bool firewallRuleset(const config::Site& site, const std::string& node, const FirewallOptions& options,
                     std::string& out, std::string& error) {
  const Model m = buildModel(site);
  auto found = std::find_if(m.nodes.begin(), m.nodes.end(), [&](const NodeInfo& n) { return n.name == node; });
  if (found == m.nodes.end() || found->own.empty()) {
    std::string names;
    for (const auto& n : m.nodes) {
      names += (names.empty() ? "" : ", ") + n.name;
    }
    error = fmt::format("{}: no node named \"{}\" (nodes: {})", site.display_path, node,
                        names.empty() ? "none" : names);
    return false;
  }
  const size_t here = found->host;
  const std::vector<core::IpAddress>& mine = m.hosts[here];

  // The addresses of the other hosts running a node for which `pred` holds.
  auto hostsOf = [&](auto pred) {
    std::vector<core::IpAddress> ips;
    for (const auto& n : m.nodes) {
      if (n.host == here || !pred(n)) {
        continue;
      }
      for (const auto& ip : m.hosts[n.host]) {
        if (!config::isZeroAddress(ip) && !isVip(site, ip)) {
          addUnique(ips, ip);
        }
      }
    }
    std::sort(ips.begin(), ips.end(), lessIp);
    return ips;
  };
  auto kindIs = [](Kind k) { return [k](const NodeInfo& n) { return n.kind == k; }; };
  auto join = [](std::vector<core::IpAddress> a, const std::vector<core::IpAddress>& b) {
    for (const auto& ip : b) {
      addUnique(a, ip);
    }
    std::sort(a.begin(), a.end(), lessIp);
    return a;
  };
  const auto lbs = hostsOf(kindIs(Kind::Lb));
  const auto webs = hostsOf(kindIs(Kind::Web));
  const auto dbs = hostsOf(kindIs(Kind::Db));
  const auto etcds = hostsOf(kindIs(Kind::Etcd));
  const auto db_frontends = hostsOf([&](const NodeInfo& n) {
    const config::LbNode* lb = n.kind == Kind::Lb ? site.findLbNode(n.name) : nullptr;
    return lb && (lb->db_write || lb->db_read);
  });
  // The scraper: Prometheus' address, wherever it runs (also when `up` does not run it).
  std::vector<core::IpAddress> monitoring;
  if (site.monitoring.present) {
    const core::IpAddress ip = site.monitoring.prometheus.ip();
    if (!config::isZeroAddress(ip) && !contains(mine, ip)) {
      monitoring.push_back(ip);
    }
  }

  std::string nodes_here;
  for (const auto& n : m.nodes) {
    if (n.host == here) {
      nodes_here += (nodes_here.empty() ? "" : ", ") + n.name;
    }
  }
  std::string host_text;
  for (const auto& ip : mine) {
    host_text += (host_text.empty() ? "" : ", ") + ip.toString();
  }
  out = "#!/usr/sbin/nft -f\n";
  out += fmt::format("# fulcrum firewall of host {} ({}), site {} ({})\n", host_text, nodes_here, site.site.name,
                     oneLine(site.file.string()));
  out += "# Inbound traffic is dropped unless a rule below accepts it; outbound is not filtered.\n";
  out += fmt::format("# Apply: fulcrum firewall {} --node {} | nft -f -    Check: nft list table inet fulcrum\n",
                     oneLine(site.display_path), node);
  // Declaring, deleting and declaring again replaces the table atomically, also on a re-run.
  out += "table inet fulcrum\ndelete table inet fulcrum\ntable inet fulcrum {\n\tchain input {\n";
  Writer w(out);
  w.line("type filter hook input priority filter; policy drop;");
  w.line("iif lo accept comment \"loopback: the nodes of this host among themselves\"");
  w.line("ct state established,related accept comment \"replies, and ICMP errors about our connections\"");
  w.line("icmp type echo-request limit rate 5/second burst 10 packets accept comment \"ping, rate-limited\"");
  w.line("icmp type { destination-unreachable, time-exceeded, parameter-problem } accept comment "
         "\"ICMP errors (path MTU discovery)\"");
  w.line("icmpv6 type echo-request limit rate 5/second burst 10 packets accept comment \"ping6, rate-limited\"");
  w.line("icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, "
         "nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept comment "
         "\"ICMPv6 errors and neighbour discovery (IPv6 needs them)\"");
  for (const auto& cidr : options.admin) {
    w.line(fmt::format("{} saddr {}/{} accept comment \"operator (--admin): every port\"",
                       familyWord(cidr.network.family), cidr.network.toString(), cidr.prefix_len));
  }

  bool lb_here = false;
  for (const Port& p : m.ports) {
    const NodeInfo& n = m.nodes[p.node];
    if (n.host != here) {
      continue;
    }
    const std::string what = n.name + " " + p.purpose;
    switch (n.kind) {
      case Kind::Lb:
        lb_here = true;
        if (p.purpose == "http" || p.purpose == "https") {
          w.allow(p.address, {}, true, what + ": public, from anyone");
        } else if (p.purpose == "stats") {
          w.allow(p.address, join(lbs, monitoring), false,
                  what + ": from the other lbs (site view) and the monitoring host");
        } else {  // db_write, db_read
          w.allow(p.address, webs, false, what + ": from the web hosts");
        }
        break;
      case Kind::Web:
        w.allow(p.address, join(lbs, monitoring), false, what + ": from the lb hosts and the monitoring host");
        break;
      case Kind::Db:
        if (p.purpose == "PostgreSQL") {
          w.allow(p.address, join(join(webs, db_frontends), dbs), false,
                  what + ": from the web hosts, the lbs' db frontends and the other db hosts (replication)");
        } else {
          w.allow(p.address, join(join(join(lbs, webs), dbs), monitoring), false,
                  what + " REST: from the lb, web and other db hosts and the monitoring host");
        }
        break;
      case Kind::Etcd:
        if (p.purpose == "peer") {
          w.allow(p.address, etcds, false, what + ": from the other etcd members");
        } else {
          w.allow(p.address, join(join(join(dbs, etcds), lbs), monitoring), false,
                  what + ": from the db hosts, the other etcd members, the lb hosts (site view) and the "
                         "monitoring host");
        }
        break;
      case Kind::Prometheus:
        w.allow(p.address, {}, false, what + ": from this host and the operator (--admin) only");
        break;
      case Kind::Alertmanager:
        w.allow(p.address, monitoring, false, what + ": from Prometheus");
        break;
    }
  }

  // VRRP adverts of the lb pair sharing [lb.vip]: from the other lbs (or the configured unicast
  // peers), to the VRRP multicast group unless unicast.
  if (lb_here && site.lb.vip) {
    const config::LbVip& vip = *site.lb.vip;
    const bool unicast = !vip.unicast_peers.empty();
    std::vector<core::IpAddress> peers;
    for (const auto& ip : unicast ? vip.unicast_peers : lbs) {
      if (ip.family == vip.ip.family && !contains(mine, ip)) {
        addUnique(peers, ip);
      }
    }
    const bool v4 = vip.ip.family == AF_INET;
    const std::string comment =
        quoted(fmt::format("VRRP (vrid {}) from the other lbs, for the VIP {}", vip.vrid, vip.ip.toString()));
    if (peers.empty()) {
      w.line("# VRRP: no other lb to hear from");
    } else {
      std::string rule = familyWord(vip.ip.family) + " saddr " + addressSet(peers) + " ";
      if (!unicast) {
        rule += familyWord(vip.ip.family) + " daddr " + (v4 ? "224.0.0.18 " : "ff02::12 ");
      }
      rule += (v4 ? "ip protocol 112" : "meta l4proto 112") + std::string(" accept comment ") + comment;
      w.line(rule);
    }
  }
  out += "\t}\n}\n";
  return true;
}

}  // namespace fulcrum::site
