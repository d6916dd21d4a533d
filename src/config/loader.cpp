#include "config/loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "config/reader.h"
#include "config/validate.h"
#include "config/values.h"

namespace fulcrum::config {

namespace {

using detail::Diagnostics;
using detail::IntRange;
using detail::TableReader;

constexpr int64_t kOneDayMs = 24 * 60 * 60 * 1000;
constexpr size_t kMaxSiteNameBytes = 64;
constexpr size_t kMaxSiteFileBytes = size_t{16} << 20;  // 40,000 nodes take about 3 MiB
constexpr IntRange kDurationMs{1, kOneDayMs};
constexpr IntRange kThreads{0, 256};
constexpr int64_t kOneTiB = int64_t{1} << 40;

constexpr std::array<std::string_view, 7> kAlgorithms = {"roundrobin", "static-rr", "leastconn", "source",
                                                         "uri",        "random2",   "maglev"};
constexpr std::array<std::string_view, 2> kSticky = {"none", "cookie"};
constexpr std::array<std::string_view, 2> kApps = {"guestbook", "none"};
constexpr std::array<std::string_view, 2> kProxyVersions = {"v1", "v2"};
constexpr std::array<std::string_view, 3> kAccessLogFormats = {"off", "text", "json"};

// Node names end up in file names, URLs (/api/servers/NAME/state) and log lines.
bool isNodeName(std::string_view s) {
  if (s.empty() || s.size() > 63 || !std::isalnum(static_cast<unsigned char>(s.front()))) {
    return false;
  }
  return std::all_of(s.begin(), s.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_' || c == '.'; });
}

// PostgreSQL names are spliced into commands and SQL; plain identifiers need no quoting.
bool isSqlIdentifier(std::string_view s) {
  if (s.empty() || s.size() > 63 ||
      !(std::isalpha(static_cast<unsigned char>(s.front())) || s.front() == '_')) {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isalnum(c) || c == '_'; });
}

void readNodeName(TableReader& r, std::string& out) {
  std::string name;
  if (!r.require("name") || !r.read("name", name)) {
    return;
  }
  if (!isNodeName(name)) {
    r.error("name", "bad node name '" + name +
                        "': use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit");
    return;
  }
  out = name;
}

void readSqlName(TableReader& r, std::string_view key, std::string& out) {
  std::string value;
  if (!r.read(key, value)) {
    return;
  }
  if (!isSqlIdentifier(value)) {
    r.error(key, "bad name '" + value + "': use 1-63 letters, digits or '_', not starting with a digit");
    return;
  }
  out = value;
}

void readSiteSection(Diagnostics& diag, const toml::table& table) {
  Site& site = diag.site();
  TableReader r(diag, table, "site", {"name", "state_dir", "log_max_bytes", "log_keep"});
  if (r.read("name", site.site.name)) {
    // The name becomes an etcd key prefix, a PostgreSQL cluster label and part of paths: one
    // safe segment, bounded.
    const std::string& name = site.site.name;
    if (name.empty()) {
      r.error("name", "must not be empty");
    } else if (name.size() > kMaxSiteNameBytes) {
      r.error("name", "is " + std::to_string(name.size()) + " bytes; at most " +
                          std::to_string(kMaxSiteNameBytes) + " are allowed");
    } else if (!isSiteName(name)) {
      r.error("name", "must be letters, digits, '-', '_' and '.', not starting with '.' or '-'");
    }
  }
  r.readPath("state_dir", site.site.state_dir, site.dir, /*allow_empty=*/false);
  if (r.read("log_max_bytes", site.site.log_max_bytes, {0, int64_t{1} << 50}) &&
      site.site.log_max_bytes != 0 && site.site.log_max_bytes < 4096) {
    r.error("log_max_bytes", "must be 0 (no rotation by size) or at least 4096 bytes");
  }
  r.read("log_keep", site.site.log_keep, {1, 1000});
}

// access_log and access_log_file of [lb] or [web].
void readAccessLog(TableReader& r, const std::filesystem::path& base, AccessLog& out) {
  r.readChoice("access_log", out.format, kAccessLogFormats, "access_log format");
  r.readPath("access_log_file", out.file, base, /*allow_empty=*/true);
}

void readLbNode(Diagnostics& diag, const std::string& key, const toml::table& table, LbNode& node) {
  TableReader r(diag, table, key,
                {"name", "http", "https", "stats", "db_write", "db_read", "threads", "priority"});
  readNodeName(r, node.name);
  r.readAddress("http", node.http);
  r.readAddress("https", node.https);
  r.readAddress("stats", node.stats);
  r.readAddress("db_write", node.db_write);
  r.readAddress("db_read", node.db_read);
  r.read("threads", node.threads, kThreads);
  r.read("priority", node.priority, {1, 254});
}

void readCidrs(Diagnostics& diag, TableReader& r, std::string_view name, std::vector<Cidr>& out) {
  for (auto& [key, text] : r.strings(name)) {
    std::string problem;
    if (auto cidr = parseCidr(text, problem)) {
      out.push_back(*cidr);
    } else {
      diag.error(key, problem);
    }
  }
}

void readVip(Diagnostics& diag, const toml::table& table, LbVip& vip) {
  TableReader r(diag, table, "lb.vip",
                {"address", "interface", "vrid", "advert_interval_ms", "preempt", "preempt_delay_ms", "unicast_peers"});
  if (r.require("address") && r.read("address", vip.address)) {
    std::string problem;
    if (auto parsed = parseInterfaceAddress(vip.address, problem)) {
      vip.ip = parsed->network;
      vip.prefix_len = parsed->prefix_len;
    } else {
      r.error("address", problem);
    }
  }
  if (r.require("interface") && r.read("interface", vip.interface)) {
    // IFNAMSIZ is 16 with the terminating NUL.
    bool ok = !vip.interface.empty() && vip.interface.size() <= 15 &&
              vip.interface.find_first_of("/ \t") == std::string::npos;
    if (!ok) {
      r.error("interface", "bad interface name '" + vip.interface + "'");
    }
  }
  r.read("vrid", vip.vrid, {1, 255});
  // VRRPv3 carries the interval in centiseconds, 12 bits: 10 ms .. 40.95 s.
  r.read("advert_interval_ms", vip.advert_interval_ms, {10, 40950});
  r.read("preempt", vip.preempt);
  r.read("preempt_delay_ms", vip.preempt_delay_ms, {0, 3600000});
  for (auto& [key, text] : r.strings("unicast_peers")) {
    auto ip = core::IpAddress::parse(text);
    if (!ip) {
      diag.error(key, "bad address '" + text + "': use an IP address");
    } else if (ip->family != vip.ip.family) {
      diag.error(key, "'" + text + "' is not of the virtual IP's family");
    } else {
      vip.unicast_peers.push_back(*ip);
    }
  }
}

void readOutlier(Diagnostics& diag, const toml::table& table, LbOutlier& o) {
  TableReader h(diag, table, "lb.outlier",
                {"enabled", "consecutive_5xx", "consecutive_failures", "slow_factor", "interval_ms",
                 "min_requests", "base_ejection_ms", "max_ejection_ms", "max_ejection_percent"});
  o.enabled = true;  // the table turns it on
  h.read("enabled", o.enabled);
  h.read("consecutive_5xx", o.consecutive_5xx, {0, 1000000});
  h.read("consecutive_failures", o.consecutive_failures, {0, 1000000});
  if (h.read("slow_factor", o.slow_factor, {0, 1000}) && o.slow_factor == 1) {
    h.error("slow_factor",
            "must be 0 (off) or at least 2 (a server slower than that many times its peers' median), got 1");
  }
  h.read("interval_ms", o.interval_ms, {100, kOneDayMs});
  h.read("min_requests", o.min_requests, {1, 1000000});
  const bool base_given = h.read("base_ejection_ms", o.base_ejection_ms, kDurationMs);
  const bool max_given = h.read("max_ejection_ms", o.max_ejection_ms, kDurationMs);
  if (o.max_ejection_ms < o.base_ejection_ms && (base_given || max_given)) {
    h.error(max_given ? "max_ejection_ms" : "base_ejection_ms",
            fmt::format("max_ejection_ms ({}) must be at least base_ejection_ms ({})", o.max_ejection_ms,
                        o.base_ejection_ms));
  }
  h.read("max_ejection_percent", o.max_ejection_percent, {0, 100});
  if (o.enabled && o.consecutive_5xx == 0 && o.consecutive_failures == 0 && o.slow_factor == 0) {
    diag.error("lb.outlier",
               "judges nothing: consecutive_5xx, consecutive_failures and slow_factor are all 0 (set "
               "enabled = false to turn it off)");
  }
}

void readLbSection(Diagnostics& diag, const toml::table& table) {
  Site& site = diag.site();
  LbSection& lb = site.lb;
  lb.present = true;
  TableReader r(diag, table, "lb",
                {"algorithm", "hash_balance_factor", "slow_start_ms", "queue_timeout_ms", "max_queue", "sticky",
                 "sticky_cookie", "retries", "retry_budget_percent", "retry_budget_min", "h2c", "accept_proxy",
                 "accept_proxy_from", "health", "outlier", "timeouts", "limits", "firewall", "tls", "acme", "vip",
                 "access_log", "access_log_file", "node"});
  readAccessLog(r, site.dir, lb.access_log);
  r.readChoice("algorithm", lb.algorithm, kAlgorithms, "algorithm");
  if (r.read("hash_balance_factor", lb.hash_balance_factor, {0, 1000})) {
    if (lb.hash_balance_factor != 0 && lb.hash_balance_factor < 100) {
      r.error("hash_balance_factor",
              fmt::format("must be 0 (off) or a percentage of at least 100 (150: a server takes at most 1.5 times "
                          "its share), got {}",
                          lb.hash_balance_factor));
    } else if (lb.hash_balance_factor != 0 && lb.algorithm != "source" && lb.algorithm != "uri") {
      r.error("hash_balance_factor",
              fmt::format("bounds the loads of consistent hashing: it needs algorithm \"source\" or \"uri\", not "
                          "\"{}\"",
                          lb.algorithm));
    }
  }
  if (r.read("slow_start_ms", lb.slow_start_ms, {0, 3600000}) && lb.slow_start_ms != 0 &&
      lb.algorithm != "roundrobin" && lb.algorithm != "leastconn" && lb.algorithm != "random2") {
    r.error("slow_start_ms",
            fmt::format("ramps weights up for roundrobin, leastconn and random2; \"{}\" keeps its own shares (a hashing "
                        "or static algorithm would move keys at every step)",
                        lb.algorithm));
  }
  r.read("queue_timeout_ms", lb.queue_timeout_ms, {0, 3600000});
  r.read("max_queue", lb.max_queue, {1, 10'000'000});
  r.readChoice("sticky", lb.sticky, kSticky, "sticky mode");
  if (r.read("sticky_cookie", lb.sticky_cookie) &&
      (lb.sticky_cookie.empty() || lb.sticky_cookie.size() > 64 ||
       lb.sticky_cookie.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.") !=
           std::string::npos)) {
    r.error("sticky_cookie", "must be 1 to 64 letters, digits, '_', '-' or '.', got '" + lb.sticky_cookie + "'");
  }
  r.read("retries", lb.retries, {0, 10});
  r.read("retry_budget_percent", lb.retry_budget_percent, {0, 100});
  r.read("retry_budget_min", lb.retry_budget_min, {0, 100000});
  r.read("h2c", lb.h2c);
  r.read("accept_proxy", lb.accept_proxy);
  readCidrs(diag, r, "accept_proxy_from", lb.accept_proxy_from);
  if (!lb.accept_proxy_from.empty() && !lb.accept_proxy) {
    r.error("accept_proxy_from", "names who may send a PROXY header: it needs accept_proxy = true");
  }

  if (const auto* t = r.table("health")) {
    TableReader h(diag, *t, "lb.health", {"path", "interval_ms", "timeout_ms", "rise", "fall"});
    if (h.read("path", lb.health.path) && !lb.health.path.empty() &&
        (lb.health.path.front() != '/' || lb.health.path.find_first_of(" \t\r\n") != std::string::npos)) {
      h.error("path",
              "must be empty (TCP check) or a URL path starting with '/', got '" + lb.health.path + "'");
    }
    h.read("interval_ms", lb.health.interval_ms, kDurationMs);
    h.read("timeout_ms", lb.health.timeout_ms, kDurationMs);
    h.read("rise", lb.health.rise, {1, 100});
    h.read("fall", lb.health.fall, {1, 100});
  }
  if (const auto* t = r.table("outlier")) {
    readOutlier(diag, *t, lb.outlier);
  }
  if (const auto* t = r.table("timeouts")) {
    TableReader h(diag, *t, "lb.timeouts", {"connect_ms", "client_ms", "server_ms", "http_request_ms", "drain_ms"});
    h.read("connect_ms", lb.timeouts.connect_ms, kDurationMs);
    h.read("client_ms", lb.timeouts.client_ms, kDurationMs);
    h.read("server_ms", lb.timeouts.server_ms, kDurationMs);
    h.read("http_request_ms", lb.timeouts.http_request_ms, kDurationMs);
    h.read("drain_ms", lb.timeouts.drain_ms, kDurationMs);
  }
  if (const auto* t = r.table("limits")) {
    TableReader h(diag, *t, "lb.limits",
                  {"max_connections", "max_header_bytes", "max_body_bytes", "rate_per_ip", "rate_burst",
                   "conn_per_ip", "client_table", "min_body_rate", "h2_max_streams"});
    h.read("max_connections", lb.limits.max_connections, {1, 10'000'000});
    h.read("max_header_bytes", lb.limits.max_header_bytes, {1024, 1'048'576});
    h.read("max_body_bytes", lb.limits.max_body_bytes, {0, kOneTiB});
    h.read("rate_per_ip", lb.limits.rate_per_ip, {0, 10'000'000});
    h.read("rate_burst", lb.limits.rate_burst, {0, 10'000'000});
    h.read("conn_per_ip", lb.limits.conn_per_ip, {0, 10'000'000});
    h.read("client_table", lb.limits.client_table, {1024, 10'000'000});
    h.read("min_body_rate", lb.limits.min_body_rate, {0, 1'000'000'000});
    h.read("h2_max_streams", lb.limits.h2_max_streams, {1, 10'000});
  }
  if (const auto* t = r.table("firewall")) {
    TableReader h(diag, *t, "lb.firewall", {"allow", "deny"});
    readCidrs(diag, h, "allow", lb.firewall.allow);
    readCidrs(diag, h, "deny", lb.firewall.deny);
  }
  if (const auto* t = r.table("tls")) {
    TableReader h(diag, *t, "lb.tls", {"cert", "key", "certs", "redirect_http", "hsts", "http2"});
    h.readPath("cert", lb.tls.cert, site.dir, /*allow_empty=*/true);
    h.readPath("key", lb.tls.key, site.dir, /*allow_empty=*/true);
    for (auto& [key, element] : h.tables("certs")) {
      if (element == nullptr) {
        continue;
      }
      TableReader c(diag, *element, key, {"cert", "key"});
      CertKey pair;
      if (c.require("cert") && c.require("key") && c.readPath("cert", pair.cert, site.dir, false) &&
          c.readPath("key", pair.key, site.dir, false)) {
        lb.tls.certs.push_back(std::move(pair));
      }
    }
    h.read("redirect_http", lb.tls.redirect_http);
    h.read("hsts", lb.tls.hsts);
    h.read("http2", lb.tls.http2);
  }
  if (const auto* t = r.table("acme")) {
    TableReader h(diag, *t, "lb.acme", {"directory", "email", "domains", "ca_file", "challenge"});
    LbAcme& acme = lb.acme.emplace();
    h.read("directory", acme.directory);
    h.read("email", acme.email);
    for (auto& [key, domain] : h.strings("domains")) {
      acme.domains.push_back(domain);
    }
    h.readPath("ca_file", acme.ca_file, site.dir, /*allow_empty=*/true);
    h.read("challenge", acme.challenge);
  }
  if (const auto* t = r.table("vip")) {
    lb.vip.emplace();
    readVip(diag, *t, *lb.vip);
  }
  for (auto& [key, node] : r.tables("node")) {
    lb.nodes.emplace_back();
    if (node != nullptr) {
      readLbNode(diag, key, *node, lb.nodes.back());
    }
  }
}

void readWebSection(Diagnostics& diag, const toml::table& table) {
  Site& site = diag.site();
  WebSection& web = site.web;
  web.present = true;
  TableReader r(diag, table, "web", {"docroot", "app", "access_log", "access_log_file", "node"});
  r.readPath("docroot", web.docroot, site.dir, /*allow_empty=*/false);
  readAccessLog(r, site.dir, web.access_log);
  r.readChoice("app", web.app, kApps, "app");
  for (auto& [key, element] : r.tables("node")) {
    web.nodes.emplace_back();
    if (element == nullptr) {
      continue;
    }
    WebNode& node = web.nodes.back();
    TableReader n(diag, *element, key, {"name", "listen", "weight", "backup", "max_conn", "threads", "send_proxy"});
    readNodeName(n, node.name);
    n.readAddress("listen", node.listen);
    n.read("weight", node.weight, {1, 256});
    n.read("backup", node.backup);
    n.read("max_conn", node.max_conn, {0, 1'000'000});
    n.read("threads", node.threads, kThreads);
    n.readChoice("send_proxy", node.send_proxy, kProxyVersions, "PROXY protocol version");
  }
}

void readDbSection(Diagnostics& diag, const toml::table& table) {
  Site& site = diag.site();
  DbSection& db = site.db;
  db.present = true;
  TableReader r(diag, table, "db",
                {"database", "user", "password_file", "synchronous", "synchronous_strict", "max_lag_bytes",
                 "failover", "leader_ttl_ms", "pg_bin", "backup", "node"});
  readSqlName(r, "database", db.database);
  readSqlName(r, "user", db.user);
  r.readPath("password_file", db.password_file, site.dir, /*allow_empty=*/true);
  const bool synchronous_given = r.read("synchronous", db.synchronous);
  const bool strict_given = r.read("synchronous_strict", db.synchronous_strict);
  r.read("max_lag_bytes", db.max_lag_bytes, {0, kOneTiB});
  r.read("failover", db.failover);
  r.read("leader_ttl_ms", db.leader_ttl_ms, {1000, 600'000});
  r.readPath("pg_bin", db.pg_bin, site.dir, /*allow_empty=*/true);
  if (const auto* t = r.table("backup")) {
    DbBackup& backup = db.backup.emplace();
    TableReader b(diag, *t, "db.backup",
                  {"repo_path", "full_every_hours", "diff_every_hours", "retention_full", "retention_diff",
                   "from_replica", "archive_queue_max_bytes", "replica_from_backup_bytes"});
    b.readPath("repo_path", backup.repo_path, site.dir, /*allow_empty=*/true);
    b.read("full_every_hours", backup.full_every_hours, {1, 24 * 366});
    b.read("diff_every_hours", backup.diff_every_hours, {0, 24 * 366});
    b.read("retention_full", backup.retention_full, {1, 1000});
    b.read("retention_diff", backup.retention_diff, {1, 1000});
    b.read("from_replica", backup.from_replica);
    b.read("archive_queue_max_bytes", backup.archive_queue_max_bytes, {int64_t{16} << 20, kOneTiB});
    b.read("replica_from_backup_bytes", backup.replica_from_backup_bytes, {0, kOneTiB * 1024});
    if (backup.diff_every_hours != 0 && backup.diff_every_hours >= backup.full_every_hours) {
      b.error("diff_every_hours",
              fmt::format("a differential backup comes between full ones: must be under full_every_hours ({}), "
                          "or 0 for none, got {}",
                          backup.full_every_hours, backup.diff_every_hours));
    }
  }
  for (auto& [key, element] : r.tables("node")) {
    db.nodes.emplace_back();
    if (element == nullptr) {
      continue;
    }
    DbNode& node = db.nodes.back();
    TableReader n(diag, *element, key, {"name", "pg", "agent"});
    readNodeName(n, node.name);
    n.readAddress("pg", node.pg);
    n.readAddress("agent", node.agent);
  }
  if (!synchronous_given) {
    // Safe by default: with two or more replicas a commit waits for one of them (Patroni's
    // non-strict synchronous mode), so a failover loses no acknowledged write. A single replica
    // would stop writes while it is down for maintenance: asynchronous unless asked.
    db.synchronous = db.nodes.size() >= 3;
  }
  if (strict_given && db.synchronous_strict && !db.synchronous) {
    r.error("synchronous_strict", "needs synchronous = true");
  }
}

void readEtcdSection(Diagnostics& diag, const toml::table& table) {
  EtcdSection& etcd = diag.site().etcd;
  etcd.present = true;
  TableReader r(diag, table, "etcd", {"endpoints", "managed"});
  if (r.require("endpoints")) {
    if (const auto* list = table.get_as<toml::array>("endpoints"); list != nullptr && list->empty()) {
      r.error("endpoints", "must list at least one IP:port");
    }
    for (auto& [key, text] : r.strings("endpoints")) {
      std::string problem;
      if (auto address = parseSiteAddress(text, problem)) {
        etcd.endpoints.push_back(*address);
      } else {
        diag.error(key, problem);
      }
    }
  }
  r.read("managed", etcd.managed);
  // `fulcrum up` makes one member of each endpoint, and a cluster works while a majority of its
  // members is up: an even count tolerates no more failures than one member fewer, and more than
  // 7 members only slow every write (each waits for a majority). Another cluster (managed = false)
  // may be reached through any subset of its members.
  const size_t members = etcd.endpoints.size();
  if (etcd.managed && members > 0 && (members % 2 == 0 || members > 7)) {
    const size_t survives = (members - 1) / 2;
    r.error("endpoints", std::to_string(members) + " endpoints make a managed etcd cluster of " +
                             std::to_string(members) + " members, which works while " +
                             std::to_string(members / 2 + 1) + " are up (a quorum)" +
                             (members % 2 == 0 ? ", so it survives no more failures (" +
                                                     std::to_string(survives) + ") than one member fewer"
                                               : ", and every write waits for that many") +
                             ": list 1, 3, 5 or 7 endpoints (3 survive one failure, 5 two)");
  }
}

void readMonitoringSection(Diagnostics& diag, const toml::table& table) {
  MonitoringSection& mon = diag.site().monitoring;
  mon.present = true;
  TableReader r(diag, table, "monitoring", {"prometheus", "alertmanager", "managed", "interval_ms"});
  if (std::optional<core::SocketAddress> prometheus; r.readAddress("prometheus", prometheus)) {
    mon.prometheus = *prometheus;
  }
  if (std::string text; r.read("alertmanager", text)) {
    std::string problem;
    if (text.empty()) {
      mon.alertmanager.reset();  // "" = none
    } else if (auto address = parseSiteAddress(text, problem)) {
      mon.alertmanager = *address;
    } else {
      r.error("alertmanager", problem + " (or \"\" for none)");
    }
  }
  r.read("managed", mon.managed);
  // Prometheus takes whole milliseconds; alerts should fire within tens of seconds.
  r.read("interval_ms", mon.interval_ms, {100, 600'000});
}

void readSecuritySection(Diagnostics& diag, const toml::table& table) {
  Site& site = diag.site();
  SecuritySection& security = site.security;
  security.present = true;
  TableReader r(diag, table, "security", {"internal_tls", "ca_cert", "ca_key"});
  r.read("internal_tls", security.internal_tls);
  bool cert = r.readPath("ca_cert", security.ca_cert, site.dir, /*allow_empty=*/false);
  bool key = r.readPath("ca_key", security.ca_key, site.dir, /*allow_empty=*/false);
  if (cert != key) {
    r.error(cert ? "ca_cert" : "ca_key", std::string("needs ") + (cert ? "ca_key" : "ca_cert") +
                                             " too: the CA's certificate and its key issue the nodes' certificates");
  }
}

void readRoot(Diagnostics& diag, const toml::table& root) {
  TableReader r(diag, root, "", {"site", "lb", "web", "db", "etcd", "monitoring", "security"});
  if (const auto* t = r.table("site")) {
    readSiteSection(diag, *t);
  }
  if (const auto* t = r.table("lb")) {
    readLbSection(diag, *t);
  }
  if (const auto* t = r.table("web")) {
    readWebSection(diag, *t);
  }
  if (const auto* t = r.table("db")) {
    readDbSection(diag, *t);
  }
  if (const auto* t = r.table("etcd")) {
    readEtcdSection(diag, *t);
  }
  if (const auto* t = r.table("monitoring")) {
    readMonitoringSection(diag, *t);
  }
  if (const auto* t = r.table("security")) {
    readSecuritySection(diag, *t);
  }
}

// How deep a key or value may nest (key segments plus enclosing arrays and inline tables). The
// deepest topology key is 4 ("lb.node[0].http" counts 3); the TOML library recurses per level.
constexpr size_t kMaxNesting = 32;

// A light scan of the TOML text: strings and comments are skipped, and for every key (in a
// table header, before '=', or inside an inline table) the dotted segments are counted on top
// of the arrays and inline tables around it. It decides nothing else: the parser does that.
std::optional<ConfigError> checkNesting(std::string_view text, const std::string& file) {
  uint32_t line = 1;
  uint32_t column = 0;
  std::string brackets;  // open '[' and '{' of values
  bool in_key = true;    // at a key: line start, after '{' or ',' in an inline table, in a header
  bool header = false;
  size_t segments = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    ++column;
    if (c == '\n') {
      ++line;
      column = 0;
      if (brackets.empty()) {
        in_key = true;
        header = false;
        segments = 1;
      }
      continue;
    }
    if (c == '#') {
      size_t end = text.find('\n', i);
      column += static_cast<uint32_t>((end == std::string_view::npos ? text.size() : end) - i - 1);
      i = (end == std::string_view::npos ? text.size() : end) - 1;
      continue;
    }
    if (c == '"' || c == '\'') {
      // Strings: basic (escapes), literal, and their multi-line forms. Newlines inside count.
      bool multi = text.substr(i, 3) == std::string_view(c == '"' ? "\"\"\"" : "'''");
      std::string_view close = multi ? text.substr(i, 3) : text.substr(i, 1);
      size_t j = i + close.size();
      while (j < text.size() && text.substr(j, close.size()) != close) {
        if (text[j] == '\\' && c == '"') {
          ++j;
        } else if (text[j] == '\n') {
          if (!multi) {
            break;  // an unterminated string: the parser will say so
          }
          ++line;
          column = 0;
        }
        ++j;
      }
      size_t end = std::min(text.size(), j + close.size());
      column += static_cast<uint32_t>(end - i - 1);
      i = end - 1;
      continue;
    }
    if (in_key) {
      if (c == '.') {
        ++segments;
      } else if (c == '[' && !header && segments == 1 && brackets.empty()) {
        header = true;  // "[table]" or "[[array]]": the key ends at ']'
        continue;
      } else if ((c == ']' && header) || c == '=') {
        in_key = false;
        header = false;
        segments = 1;
        continue;
      }
      if (segments + brackets.size() > kMaxNesting) {
        return ConfigError{file, line, column, "",
                           "nested deeper than " + std::to_string(kMaxNesting) + " levels"};
      }
      continue;
    }
    if (c == '[' || c == '{') {
      brackets.push_back(c);
      if (brackets.size() > kMaxNesting) {
        return ConfigError{file, line, column, "",
                           "nested deeper than " + std::to_string(kMaxNesting) + " levels"};
      }
      in_key = c == '{';
      segments = 1;
    } else if ((c == ']' || c == '}') && !brackets.empty()) {
      brackets.pop_back();
    } else if (c == ',' && !brackets.empty() && brackets.back() == '{') {
      in_key = true;
      segments = 1;
    }
  }
  return std::nullopt;
}

// Whole file into `out`; on failure returns errno (EFBIG: over kMaxSiteFileBytes; EINVAL: not
// a regular file, such as /dev/zero or a FIFO that would be read without end).
int readWholeFile(const std::filesystem::path& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return errno;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int saved = errno;
    ::close(fd);
    return saved;
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return EISDIR;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return EINVAL;
  }
  char buf[16384];
  for (;;) {
    if (out.size() > kMaxSiteFileBytes) {
      ::close(fd);
      return EFBIG;
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      return saved;
    }
    if (n == 0) {
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return 0;
}

}  // namespace

LoadResult loadSiteFile(const std::filesystem::path& path) {
  std::string text;
  if (int err = readWholeFile(path, text); err != 0) {
    LoadResult result;
    std::string why = err == EFBIG    ? "larger than " + std::to_string(kMaxSiteFileBytes >> 20) + " MiB"
                      : err == EINVAL ? std::string("not a regular file")
                                      : std::string(std::strerror(err));
    result.errors.push_back(ConfigError{path.string(), 0, 0, "", "cannot read file: " + why});
    return result;
  }
  return loadSiteString(text, path);
}

LoadResult loadSiteString(std::string_view text, const std::filesystem::path& path) {
  LoadResult result;
  Site& site = result.site;
  site.display_path = path.string();
  std::error_code ec;
  site.file = std::filesystem::absolute(path, ec).lexically_normal();
  if (ec) {
    site.file = path.lexically_normal();
  }
  site.dir = site.file.parent_path();
  site.site.state_dir = site.dir / "var";
  site.web.docroot = site.dir / "www";

  if (text.size() > kMaxSiteFileBytes) {
    result.errors.push_back(ConfigError{site.display_path, 0, 0, "",
                                        "larger than " + std::to_string(kMaxSiteFileBytes >> 20) + " MiB"});
    return result;
  }
  // The TOML library recurses once per key segment and nesting level: refuse a file nested
  // deeper than any topology needs before it is parsed.
  if (std::optional<ConfigError> deep = checkNesting(text, site.display_path)) {
    result.errors.push_back(std::move(*deep));
    return result;
  }
  toml::table root;
  try {
    root = toml::parse(text, std::string_view(site.display_path));
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    result.errors.push_back(ConfigError{site.display_path, static_cast<uint32_t>(where.line),
                                        static_cast<uint32_t>(where.column), "",
                                        std::string(e.description())});
    return result;
  }

  detail::Diagnostics diag(site);
  readRoot(diag, root);
  if (site.db.backup && site.db.backup->repo_path.empty()) {
    site.db.backup->repo_path = site.site.state_dir / "backup";  // [site] state_dir is read by now
  }
  if (site.db.backup) {
    // pgBackRest writes these paths into PostgreSQL's restore_command between single quotes,
    // without escaping: a quote would break the restored server's configuration.
    auto unsafe = [](const std::filesystem::path& p) { return p.string().find_first_of("'\"$`\\\n") != std::string::npos; };
    const char* why = "with [db.backup] this path must hold none of ' \" $ ` \\ (pgBackRest copies it into "
                      "PostgreSQL's restore_command unescaped)";
    if (unsafe(site.site.state_dir)) {
      diag.error("site.state_dir", why);
    } else if (unsafe(site.db.backup->repo_path)) {
      diag.error("db.backup.repo_path", why);
    }
  }
  detail::validateSite(diag);
  result.errors = diag.take();
  return result;
}

bool isSiteName(std::string_view name) {
  auto safe = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
  };
  return !name.empty() && name.size() <= kMaxSiteNameBytes && name.front() != '.' && name.front() != '-' &&
         std::all_of(name.begin(), name.end(), safe);
}

}  // namespace fulcrum::config
