#pragma once
// `fulcrum firewall`: the nftables ruleset of one host of a site, worked out from the topology
// alone (no I/O), so every rule is unit-tested.
//
// A host is every address a node listens on (the [lb.vip] address excepted: it moves between
// the lbs), joined with every node sharing one of those addresses, as `fulcrum lab` groups them.
// Its inbound traffic is dropped unless the topology says someone needs it: the lbs' public
// ports from anyone, every other port only from the hosts whose nodes talk to it (web from the
// lbs, PostgreSQL from the web nodes, the lbs' db frontends and the other db nodes, ...).
#include <string>
#include <vector>

#include "config/config.h"

namespace fulcrum::site {

struct FirewallOptions {
  // Sources allowed to every TCP port of the host: the operator's machine (`fulcrum status`,
  // dashboards, Prometheus' UI), or the lab's bridge address, from which `lab up` probes nodes.
  std::vector<config::Cidr> admin;
};

// Every name `--node` takes: lb, web and db nodes, managed etcd members ("etcd", "etcd-1", ...),
// and "prometheus" and "alertmanager" when `up` runs them.
std::vector<std::string> firewallNodeNames(const config::Site& site);

// The whole ruleset (`nft -f` input, idempotent: it replaces table inet fulcrum) for the host of
// `node`. False with `error` when the site has no such node.
bool firewallRuleset(const config::Site& site, const std::string& node, const FirewallOptions& options,
                     std::string& out, std::string& error);

}  // namespace fulcrum::site
