#include "lb/reload_plan.h"

#include <algorithm>

#include <fmt/format.h>

namespace fulcrum::lb {

namespace {

const config::WebNode* findWeb(const config::Site& site, const std::string& name) {
  for (const config::WebNode& w : site.web.nodes) {
    if (w.name == name) {
      return &w;
    }
  }
  return nullptr;
}

std::string describe(const config::WebNode& w) {
  return fmt::format("{} {} weight {}{}", w.name, w.listen.toString(), w.weight, w.backup ? " backup" : "");
}

}  // namespace

ReloadPlan planReload(const config::Site& running, const config::Site& next, const std::string& node) {
  ReloadPlan plan;
  plan.effective = next;
  config::Site& eff = plan.effective;
  auto restart = [&](std::string key, std::string why) { plan.needs_restart.push_back(key + ": " + why); };

  const config::LbNode* old_node = running.findLbNode(node);
  const config::LbNode* new_node = next.findLbNode(node);
  if (new_node == nullptr) {
    // A file without this node: nothing of it can be applied to a node that should not run.
    plan.effective = running;
    restart("lb.node", fmt::format("no [[lb.node]] named '{}' in the file any more; stop this node", node));
    return plan;
  }
  // What a running node cannot change: its listeners, threads and identity on the network.
  if (old_node != nullptr && !(*old_node == *new_node)) {
    auto& nodes = eff.lb.nodes;
    auto it = std::find_if(nodes.begin(), nodes.end(), [&](const config::LbNode& n) { return n.name == node; });
    *it = *old_node;
    restart(fmt::format("lb.node[{}]", it - nodes.begin()), "listeners, threads and priority are fixed at start");
  }
  if (running.site.name != next.site.name || running.site.state_dir != next.site.state_dir) {
    eff.site = running.site;
    restart("site", "the site's name and state_dir are fixed at start");
  }
  if (running.site.log_max_bytes != next.site.log_max_bytes || running.site.log_keep != next.site.log_keep) {
    eff.site.log_max_bytes = running.site.log_max_bytes;
    eff.site.log_keep = running.site.log_keep;
    restart("site.log_max_bytes", "log files and their rotation are set at start");
  }
  if (!(running.lb.access_log == next.lb.access_log)) {
    eff.lb.access_log = running.lb.access_log;
    restart("lb.access_log", "the access log is opened at start (SIGUSR1 reopens it at the same path)");
  }
  if (!(running.lb.vip == next.lb.vip)) {
    eff.lb.vip = running.lb.vip;
    restart("lb.vip", "the virtual IP's router is set up at start");
  }
  if (!(running.lb.acme == next.lb.acme)) {
    eff.lb.acme = running.lb.acme;
    restart("lb.acme", "the ACME account and order run from start");
  }
  if (running.lb.tls.http2 != next.lb.tls.http2) {
    eff.lb.tls.http2 = running.lb.tls.http2;
    restart("lb.tls.http2", "ALPN is set when the https listener starts");
  }
  if (running.lb.hash_balance_factor != next.lb.hash_balance_factor) {
    eff.lb.hash_balance_factor = running.lb.hash_balance_factor;
    restart("lb.hash_balance_factor", "each worker's balancers take it when they are made");
  }
  if (running.lb.slow_start_ms != next.lb.slow_start_ms) {
    eff.lb.slow_start_ms = running.lb.slow_start_ms;
    restart("lb.slow_start_ms", "each worker's pool takes it when it is made");
  }
  if (running.lb.accept_proxy != next.lb.accept_proxy ||
      running.lb.accept_proxy_from != next.lb.accept_proxy_from) {
    eff.lb.accept_proxy = running.lb.accept_proxy;
    eff.lb.accept_proxy_from = running.lb.accept_proxy_from;
    restart("lb.accept_proxy", "the listeners learn at start whether a PROXY header comes first");
  }
  if (!(running.lb.outlier == next.lb.outlier)) {
    eff.lb.outlier = running.lb.outlier;
    restart("lb.outlier", "outlier ejection's counters and timers are set up at start");
  }
  if (running.lb.h2c != next.lb.h2c) {
    eff.lb.h2c = running.lb.h2c;
    restart("lb.h2c", "the http listeners' protocols are set when they start");
  }
  if (running.security.internal_tls != next.security.internal_tls) {
    eff.security.internal_tls = running.security.internal_tls;
    restart("security.internal_tls", "the web nodes' TLS client context is made at start");
  }
  if (!(running.lb.firewall == next.lb.firewall)) {
    plan.firewall = true;
    plan.changes.push_back(fmt::format("firewall: {} allow and {} deny entries (checked at accept: open "
                                       "connections stay)",
                                       next.lb.firewall.allow.size(), next.lb.firewall.deny.size()));
  }
  {
    const config::LbLimits& a = running.lb.limits;
    config::LbLimits& b = eff.lb.limits;
    if (a.max_connections != b.max_connections || a.rate_per_ip != b.rate_per_ip || a.rate_burst != b.rate_burst ||
        a.conn_per_ip != b.conn_per_ip || a.client_table != b.client_table) {
      b.max_connections = a.max_connections;
      b.rate_per_ip = a.rate_per_ip;
      b.rate_burst = a.rate_burst;
      b.conn_per_ip = a.conn_per_ip;
      b.client_table = a.client_table;
      restart("lb.limits", "max_connections, rate_per_ip, rate_burst, conn_per_ip and client_table are sized at start");
    }
  }
  const bool db_frontends = new_node->db_write || new_node->db_read;
  if (db_frontends && !(running.db.nodes == next.db.nodes)) {
    eff.db.nodes = running.db.nodes;
    restart("db.node", "the database frontends' servers are fixed at start");
  }

  // Servers, by name.
  for (const config::WebNode& w : next.web.nodes) {
    const config::WebNode* was = findWeb(running, w.name);
    if (was == nullptr) {
      plan.added.push_back(w);
      plan.changes.push_back("server " + describe(w) + " added");
    } else if (!(was->listen == w.listen)) {
      plan.removed.push_back(w.name);
      plan.added.push_back(w);
      plan.changes.push_back(fmt::format("server {} moved from {} to {} (the old address drains)", w.name,
                                         was->listen.toString(), w.listen.toString()));
    } else if (was->send_proxy != w.send_proxy) {
      // Its connections and checks open differently: a new server, the old one drains (as a move).
      plan.removed.push_back(w.name);
      plan.added.push_back(w);
      plan.changes.push_back(fmt::format("server {} send_proxy '{}' -> '{}' (its old connections drain)",
                                         w.name, was->send_proxy, w.send_proxy));
    } else if (was->weight != w.weight || was->backup != w.backup || was->max_conn != w.max_conn) {
      plan.updated.push_back(w);
      if (was->max_conn != w.max_conn) {
        plan.changes.push_back(fmt::format("server {} max_conn {} -> {} (0: no limit)", w.name, was->max_conn,
                                           w.max_conn));
      }
      if (was->weight != w.weight) {
        plan.changes.push_back(fmt::format("server {} weight {} -> {}", w.name, was->weight, w.weight));
      }
      if (was->backup != w.backup) {
        plan.changes.push_back(fmt::format("server {} {}", w.name, w.backup ? "is now a backup" : "is now active"));
      }
    }
  }
  for (const config::WebNode& w : running.web.nodes) {
    if (findWeb(next, w.name) == nullptr) {
      plan.removed.push_back(w.name);
      plan.changes.push_back("server " + w.name + " removed (in-flight requests finish)");
    }
  }
  if (running.lb.algorithm != next.lb.algorithm) {
    plan.algorithm = true;
    plan.changes.push_back(fmt::format("algorithm {} -> {}", running.lb.algorithm, next.lb.algorithm));
  }
  if (!(running.lb.health == next.lb.health)) {
    plan.health = true;
    const config::LbHealth& a = running.lb.health;
    const config::LbHealth& b = next.lb.health;
    plan.changes.push_back(fmt::format(
        "health checks: path \"{}\" interval {} ms timeout {} ms rise {} fall {} (were \"{}\" {} ms {} ms {} {})", b.path,
        b.interval_ms, b.timeout_ms, b.rise, b.fall, a.path, a.interval_ms, a.timeout_ms, a.rise, a.fall));
  }
  auto tunable = [&](bool changed, std::string line) {
    if (changed) {
      plan.tunables = true;
      plan.changes.push_back(std::move(line));
    }
  };
  const config::LbTimeouts& ta = running.lb.timeouts;
  const config::LbTimeouts& tb = next.lb.timeouts;
  tunable(!(ta == tb), fmt::format("timeouts: connect {} ms, client {} ms, server {} ms, http_request {} ms, drain {} ms",
                                   tb.connect_ms, tb.client_ms, tb.server_ms, tb.http_request_ms, tb.drain_ms));
  tunable(running.lb.retries != next.lb.retries,
          fmt::format("retries {} -> {}", running.lb.retries, next.lb.retries));
  tunable(running.lb.sticky != next.lb.sticky || running.lb.sticky_cookie != next.lb.sticky_cookie,
          fmt::format("sticky {} (cookie {})", next.lb.sticky, next.lb.sticky_cookie));
  tunable(running.lb.queue_timeout_ms != next.lb.queue_timeout_ms || running.lb.max_queue != next.lb.max_queue,
          fmt::format("queue: queue_timeout_ms {}, max_queue {}", next.lb.queue_timeout_ms, next.lb.max_queue));
  tunable(running.lb.retry_budget_percent != next.lb.retry_budget_percent ||
              running.lb.retry_budget_min != next.lb.retry_budget_min,
          fmt::format("retry budget {} % of the requests in flight, at least {}",
                      next.lb.retry_budget_percent, next.lb.retry_budget_min));
  const config::LbLimits& la = running.lb.limits;
  const config::LbLimits& lb = eff.lb.limits;
  tunable(la.max_header_bytes != lb.max_header_bytes || la.max_body_bytes != lb.max_body_bytes ||
              la.min_body_rate != lb.min_body_rate || la.h2_max_streams != lb.h2_max_streams,
          fmt::format("limits: max_header_bytes {}, max_body_bytes {}, min_body_rate {}, h2_max_streams {} (new "
                      "HTTP/2 connections)",
                      lb.max_header_bytes, lb.max_body_bytes, lb.min_body_rate, lb.h2_max_streams));
  tunable(running.lb.tls.hsts != next.lb.tls.hsts, fmt::format("tls.hsts {}", next.lb.tls.hsts));
  tunable(running.lb.tls.redirect_http != next.lb.tls.redirect_http,
          fmt::format("tls.redirect_http {}", next.lb.tls.redirect_http));
  if (running.lb.tls.cert != next.lb.tls.cert || running.lb.tls.key != next.lb.tls.key ||
      !(running.lb.tls.certs == next.lb.tls.certs)) {
    plan.certificates = true;
    plan.changes.push_back("tls certificates: new files");
  }
  return plan;
}

}  // namespace fulcrum::lb
