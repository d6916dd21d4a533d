#pragma once
// The topology file (contract §3) as typed structs with the contract's defaults. Every role
// reads this; loading and validation live in config/loader.h.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/address.h"

namespace fulcrum::config {

// Where a key sits in the topology file; 1-based, 0:0 when unknown.
struct SourcePos {
  uint32_t line = 0;
  uint32_t column = 0;
};

struct ConfigError {
  std::string file;
  uint32_t line = 0;    // 1-based; 0 when the error has no position (e.g. file missing)
  uint32_t column = 0;  // 1-based
  std::string key;      // dotted path, 0-based indices: "lb.node[1].http", "lb.firewall.allow[0]"
  std::string message;

  std::string toString() const;  // "FILE:LINE:COL: key: message"
};

struct SiteSection {
  std::string name = "fulcrum";
  std::filesystem::path state_dir;  // absolute after loading; default "<file dir>/var"
  // Every log file Fulcrum writes itself (access logs, --log-file, `up`'s per-node logs) is
  // rotated past this size (FILE -> FILE.1 ... FILE.log_keep); 0 = never (logrotate's job).
  uint64_t log_max_bytes = 64ull << 20;
  uint32_t log_keep = 5;
};

// An lb's or web node's access log: one line per request, "off", "text" or "json", in `file`
// ("{node}" in it is the node's name; empty = stdout, or state_dir/logs/NODE.access.log under `up`).
struct AccessLog {
  std::string format = "text";
  std::filesystem::path file;
  bool operator==(const AccessLog&) const = default;
};

struct LbHealth {
  std::string path = "/healthz";  // "" = TCP connect check
  uint32_t interval_ms = 2000;
  uint32_t timeout_ms = 1000;
  uint32_t rise = 2;
  uint32_t fall = 3;
  bool operator==(const LbHealth&) const = default;
};

struct LbTimeouts {
  uint32_t connect_ms = 2000;
  uint32_t client_ms = 30000;
  uint32_t server_ms = 30000;
  uint32_t http_request_ms = 10000;
  // A stopping lb (SIGTERM, or handing its sockets to a successor) finishes its requests and
  // tunnels for up to this long, then closes what is left.
  uint32_t drain_ms = 10000;
  bool operator==(const LbTimeouts&) const = default;
};

struct LbLimits {
  uint32_t max_connections = 20000;
  uint32_t max_header_bytes = 16384;
  uint64_t max_body_bytes = 10485760;
  uint32_t rate_per_ip = 0;       // requests/s per client address; 0 = off
  uint32_t rate_burst = 0;        // requests a client may send at once; 0 = rate_per_ip
  uint32_t conn_per_ip = 0;       // open connections per client address; 0 = off
  uint32_t client_table = 100000;  // addresses tracked for the two above (fixed memory, LRU)
  uint32_t min_body_rate = 500;  // bytes/s a request body averages after http_request_ms; 0 = off
  uint32_t h2_max_streams = 100;  // HTTP/2: concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS)
  bool operator==(const LbLimits&) const = default;
};

struct Cidr {
  std::string text;  // as written, for messages
  core::IpAddress network;
  uint8_t prefix_len = 0;
  bool operator==(const Cidr&) const = default;
};

struct LbFirewall {
  std::vector<Cidr> allow;
  std::vector<Cidr> deny;
  bool operator==(const LbFirewall&) const = default;
};

struct CertKey {
  std::filesystem::path cert;  // PEM: the certificate, then its chain
  std::filesystem::path key;   // PEM private key (ECDSA or RSA)
  bool operator==(const CertKey&) const = default;
};

struct LbTls {
  std::filesystem::path cert;  // empty (and no certs) = self-signed in state_dir
  std::filesystem::path key;
  std::vector<CertKey> certs;  // more pairs, chosen by SNI (and ECDSA or RSA by what the client takes)
  bool redirect_http = false;  // 308 from the http listener to https
  bool hsts = false;           // Strict-Transport-Security on https responses
  bool http2 = true;           // offer h2 by ALPN before http/1.1
  bool operator==(const LbTls&) const = default;
};

struct LbAcme {
  std::string directory;  // the ACME directory URL
  std::string email;
  std::vector<std::string> domains;
  std::filesystem::path ca_file;
  // How the CA checks this node answers for each domain: "http-01" (the http listener, port 80
  // for a real CA) or "tls-alpn-01" (RFC 8737: the https listener, port 443).
  std::string challenge = "http-01";
  bool operator==(const LbAcme&) const = default;
};

struct LbVip {
  std::string address;  // "10.77.0.100/24", as written
  core::IpAddress ip;   // parsed from address: the virtual IP itself (host bits kept)
  uint8_t prefix_len = 0;
  std::string interface;
  uint32_t vrid = 51;
  uint32_t advert_interval_ms = 1000;
  bool preempt = true;                      // a higher-priority backup takes the address over
  uint32_t preempt_delay_ms = 0;            // ... once it could have for this long
  std::vector<core::IpAddress> unicast_peers;  // empty: multicast to 224.0.0.18
  bool operator==(const LbVip&) const = default;
};

// [lb.outlier] (Envoy's outlier detection): a server answering runs of 5xx or failing runs of
// requests, or far slower than its peers, is ejected for a growing time even while its health
// check passes. Off unless the table is there (and `enabled` is not false).
struct LbOutlier {
  bool enabled = false;
  uint32_t consecutive_5xx = 5;       // 5xx answers in a row, across workers; 0 = not judged
  uint32_t consecutive_failures = 5;  // connect failures, resets and timeouts in a row; 0 = not judged
  // A server whose mean response time over an interval is more than this many times the median
  // of its peers' is ejected; 0 = off.
  uint32_t slow_factor = 0;
  uint32_t interval_ms = 10000;       // the slow comparison's window, and the pace ejection counts decay at
  uint32_t min_requests = 20;         // requests a server needs in an interval to be compared
  uint32_t base_ejection_ms = 30000;  // times the number of ejections so far
  uint32_t max_ejection_ms = 300000;
  uint32_t max_ejection_percent = 50;  // of the servers, at once (one may always be)
  bool operator==(const LbOutlier&) const = default;
};

struct LbNode {
  std::string name;
  core::SocketAddress http;
  std::optional<core::SocketAddress> https;
  std::optional<core::SocketAddress> stats;
  std::optional<core::SocketAddress> db_write;
  std::optional<core::SocketAddress> db_read;
  uint32_t threads = 0;  // 0 = one per core
  uint32_t priority = 100;
  bool operator==(const LbNode&) const = default;
};

struct LbSection {
  bool present = false;  // the file has an [lb] table or [[lb.node]]
  std::string algorithm = "roundrobin";
  // Bounded-load consistent hashing for source and uri (HAProxy's hash-balance-factor): a server
  // takes at most this percentage of its share of the requests in flight. 0 = off, else >= 100.
  uint32_t hash_balance_factor = 0;
  // A server that comes up, back from maintenance, or is added ramps its weight up over this
  // time (HAProxy's slowstart) with roundrobin, leastconn and random2. 0 = at once.
  uint32_t slow_start_ms = 0;
  // Requests waiting for a server slot (max_conn): how long one waits before its 503 (HAProxy's
  // timeout queue; 0 = no queue, a 503 at once), and how many wait at most.
  uint32_t queue_timeout_ms = 5000;
  uint32_t max_queue = 10000;
  // Sticky sessions (HAProxy's cookie ... insert): "cookie" sets `sticky_cookie` to the name of
  // the web node that answered and sends a client that presents it back there while that node
  // takes requests; "none" = off.
  std::string sticky = "none";
  std::string sticky_cookie = "FULCRUM_SERVER";
  uint32_t retries = 2;
  // Envoy's retry budget: a retry goes out only while the retries in flight are fewer than this
  // percentage of the requests in flight (every server, every worker), or than retry_budget_min.
  uint32_t retry_budget_percent = 20;
  uint32_t retry_budget_min = 3;
  bool h2c = false;  // HTTP/2 with prior knowledge (cleartext) on the http listeners
  // Behind another balancer: every connection to the http and https listeners starts with a
  // PROXY protocol header (v1 or v2) naming the client, from a peer in accept_proxy_from (empty: any).
  bool accept_proxy = false;
  std::vector<Cidr> accept_proxy_from;
  LbHealth health;
  LbOutlier outlier;
  LbTimeouts timeouts;
  LbLimits limits;
  LbFirewall firewall;
  LbTls tls;
  std::optional<LbAcme> acme;  // [lb.acme]: read, refused until ACME is built
  std::optional<LbVip> vip;
  AccessLog access_log;
  std::vector<LbNode> nodes;
};

struct WebNode {
  std::string name;
  core::SocketAddress listen;
  uint32_t weight = 1;
  bool backup = false;
  // Requests the lb sends it at once, across its workers (HAProxy's server maxconn); the rest
  // wait in the lb's queue. 0 = no limit.
  uint32_t max_conn = 0;
  uint32_t threads = 0;  // Fulcrum extension: 0 = one per core
  // "v1" or "v2": the lb opens each connection to this server with a PROXY protocol header
  // naming the client, and the web node expects one on every connection; empty: off.
  std::string send_proxy;
  bool operator==(const WebNode&) const = default;
};

struct WebSection {
  bool present = false;
  std::filesystem::path docroot;  // absolute after loading; default "<file dir>/www"
  std::string app = "guestbook";  // "guestbook" | "none"
  AccessLog access_log;
  std::vector<WebNode> nodes;
};

struct DbNode {
  std::string name;
  core::SocketAddress pg;
  core::SocketAddress agent;
  bool operator==(const DbNode&) const = default;
};

// [db.backup]: continuous WAL archiving and scheduled backups with pgBackRest (Debian's
// `pgbackrest`), into one repository every node reaches.
struct DbBackup {
  std::filesystem::path repo_path;  // absolute after loading; default "<state_dir>/backup"
  uint32_t full_every_hours = 168;  // a full backup at least this often
  uint32_t diff_every_hours = 24;   // a differential one in between; 0 = none
  uint32_t retention_full = 2;      // full backups kept (their diffs and WAL with them)
  uint32_t retention_diff = 7;      // differential backups kept
  bool from_replica = true;         // taken from a healthy replica when there is one
  // WAL waiting to be archived beyond this is dropped (the primary keeps serving; the archive
  // then has a gap, reported, until the next full backup), so a dead repository never fills
  // the primary's disk.
  uint64_t archive_queue_max_bytes = uint64_t{1} << 30;
  // A node that needs a copy of the database (new, emptied, or re-cloned) restores the newest
  // backup of the leader's timeline and streams the rest when that backup is at least this large,
  // sparing the primary a full copy; smaller ones clone with pg_basebackup. 0: always pg_basebackup.
  uint64_t replica_from_backup_bytes = uint64_t{1} << 30;
  bool operator==(const DbBackup&) const = default;
};

struct DbSection {
  bool present = false;
  std::string database = "site";
  std::string user = "site";
  std::filesystem::path password_file;  // empty = generated into state_dir
  // Unset in the file: true with three or more [[db.node]] (two replicas or more), else false.
  bool synchronous = false;
  // With synchronous: commits wait even when no replica is healthy (Patroni's
  // synchronous_mode_strict), instead of going on acknowledged by the primary alone.
  bool synchronous_strict = false;
  uint64_t max_lag_bytes = 1048576;
  bool failover = true;
  uint32_t leader_ttl_ms = 5000;
  std::filesystem::path pg_bin;  // empty = newest /usr/lib/postgresql/*/bin
  std::optional<DbBackup> backup;  // [db.backup]; nullopt: no archiving, no backups
  std::vector<DbNode> nodes;
};

struct EtcdSection {
  bool present = false;
  std::vector<core::SocketAddress> endpoints;
  bool managed = true;
};

// [monitoring]: a Prometheus scraping every node with the alert rules, and an Alertmanager.
struct MonitoringSection {
  bool present = false;
  core::SocketAddress prometheus = *core::SocketAddress::parse("127.0.0.1:9090");
  // Where Prometheus sends alerts; nullopt ("" in the file) = no Alertmanager.
  std::optional<core::SocketAddress> alertmanager = core::SocketAddress::parse("127.0.0.1:9093");
  bool managed = true;          // `fulcrum up` runs both (else they run elsewhere, from `fulcrum monitoring`)
  uint32_t interval_ms = 5000;  // scrape and rule evaluation interval
};

// [security]: least privilege inside the site.
struct SecuritySection {
  bool present = false;
  // Mutual TLS on the internal links, with certificates from the site CA (tls/site_pki.h).
  bool internal_tls = false;
  // The user's own CA (both or neither, absolute after loading); empty = one made in state_dir.
  std::filesystem::path ca_cert;
  std::filesystem::path ca_key;
};

struct Site {
  std::filesystem::path file;  // absolute path of the topology file
  std::filesystem::path dir;   // its directory; relative paths resolve against it
  std::string display_path;    // the path as the user gave it: the FILE of every message
  // Every key present in the file, by dotted path ("lb.node[0].http", "lb.firewall.allow[1]"),
  // at the position of the key (or of the element, inside arrays). Lets later code refuse a key
  // precisely, e.g. errorAt("lb.vip", "not supported yet").
  std::map<std::string, SourcePos, std::less<>> positions;
  SiteSection site;
  LbSection lb;
  WebSection web;
  DbSection db;
  EtcdSection etcd;
  MonitoringSection monitoring;
  SecuritySection security;

  const LbNode* findLbNode(std::string_view name) const;
  const WebNode* findWebNode(std::string_view name) const;
  const DbNode* findDbNode(std::string_view name) const;

  // True when the file sets `key` (a dotted path as in `positions`).
  bool has(std::string_view key) const { return positions.find(key) != positions.end(); }
  // Position of `key`, else of its nearest parent present in the file ("lb.node[0].https" ->
  // "lb.node[0]" -> "lb.node" -> "lb"), else 0:0.
  SourcePos positionOf(std::string_view key) const;
  // An error about `key`, placed at positionOf(key), in this file.
  ConfigError errorAt(std::string key, std::string message) const;
};

}  // namespace fulcrum::config
