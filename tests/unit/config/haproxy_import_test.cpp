#include "config/haproxy_import.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "site_fixture.h"

namespace fulcrum::config {
namespace {

using testing::SiteDir;

std::string readCfg(const std::string& name) {
  std::ifstream in(std::string(FULCRUM_SOURCE_DIR) + "/tests/unit/config/haproxy/" + name);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

HaproxyImport import(const std::string& text, const std::string& name = "haproxy.cfg",
                     const std::string& wildcard_ip = "0.0.0.0") {
  HaproxyImportOptions options;
  options.source_name = name;
  options.site_name = "imported";
  options.wildcard_ip = wildcard_ip;
  return importHaproxy(text, options);
}

// The topology printed must load with Fulcrum's own loader, untouched.
Site loadClean(const SiteDir& dir, const HaproxyImport& result) {
  EXPECT_TRUE(result.ok) << result.error;
  LoadResult loaded = dir.load(result.toml);
  EXPECT_TRUE(loaded.ok()) << ::testing::PrintToString(testing::lines(loaded)) << "\n" << result.toml;
  return loaded.site;
}

std::vector<uint32_t> untranslatedLines(const HaproxyImport& result) {
  std::vector<uint32_t> out;
  for (const auto& u : result.untranslated) {
    out.push_back(u.line);
  }
  return out;
}

std::string whyOf(const HaproxyImport& result, uint32_t line) {
  for (const auto& u : result.untranslated) {
    if (u.line == line) {
      return u.why;
    }
  }
  return "";
}

core::SocketAddress addr(const char* text) {
  return *core::SocketAddress::parse(text);
}

TEST(HaproxyImport, SimpleHttpRoundRobinWithHttpCheck) {
  SiteDir dir;
  HaproxyImport result = import(readCfg("simple.cfg"), "simple.cfg");
  Site site = loadClean(dir, result);
  EXPECT_EQ(site.site.name, "imported");
  EXPECT_EQ(site.lb.algorithm, "roundrobin");
  EXPECT_EQ(site.lb.retries, 3u);
  EXPECT_EQ(site.lb.health.path, "/health");
  EXPECT_EQ(site.lb.timeouts.connect_ms, 5000u);
  EXPECT_EQ(site.lb.timeouts.client_ms, 50000u);
  EXPECT_EQ(site.lb.timeouts.server_ms, 50000u);
  EXPECT_EQ(site.lb.timeouts.http_request_ms, 10000u);
  EXPECT_EQ(site.lb.limits.max_connections, 4096u);
  ASSERT_EQ(site.lb.nodes.size(), 1u);
  EXPECT_EQ(site.lb.nodes[0].http, addr("192.0.2.10:80"));
  ASSERT_EQ(site.web.nodes.size(), 2u);
  EXPECT_EQ(site.web.nodes[0].name, "app1");
  EXPECT_EQ(site.web.nodes[0].listen, addr("10.0.0.11:8080"));
  EXPECT_EQ(site.web.nodes[1].name, "app2");
  EXPECT_EQ(site.web.app, "none");
  // Logging and process set-up have no counterpart: named, each with its line.
  EXPECT_EQ(untranslatedLines(result), (std::vector<uint32_t>{3, 5, 6, 7, 11, 12, 13}));
  ASSERT_FALSE(result.messages().empty());
  EXPECT_EQ(
      result.messages()[0],
      "simple.cfg:3: log /dev/log local0: not translated: logging: Fulcrum logs to stderr (--log-format "
      "text|json)");
  EXPECT_NE(result.toml.find("#   3: log /dev/log local0: logging"), std::string::npos) << result.toml;
  EXPECT_EQ(result.toml.rfind("# Imported from simple.cfg", 0), 0u);
}

TEST(HaproxyImport, WeightsBackupLeastconnAndDefaultServer) {
  SiteDir dir;
  HaproxyImport result = import(readCfg("weights_backup.cfg"));
  Site site = loadClean(dir, result);
  EXPECT_TRUE(result.untranslated.empty()) << ::testing::PrintToString(result.messages());
  EXPECT_EQ(site.lb.algorithm, "leastconn");
  EXPECT_EQ(site.lb.health.path, "/status");  // http-check send uri wins over option httpchk's "/"
  EXPECT_EQ(site.lb.health.interval_ms, 5000u);
  EXPECT_EQ(site.lb.health.rise, 4u);
  EXPECT_EQ(site.lb.health.fall, 2u);
  EXPECT_EQ(site.lb.timeouts.server_ms, 60000u);
  EXPECT_EQ(site.lb.limits.max_connections, 2000u);
  ASSERT_EQ(site.lb.nodes.size(), 1u);
  EXPECT_EQ(site.lb.nodes[0].http, addr("0.0.0.0:8080"));  // bind *:8080
  EXPECT_EQ(site.lb.nodes[0].threads, 4u);                 // nbthread 4
  EXPECT_NE(result.toml.find("every address ('*' or none)"), std::string::npos);
  ASSERT_EQ(site.web.nodes.size(), 3u);
  EXPECT_EQ(site.web.nodes[0].weight, 200u);
  EXPECT_FALSE(site.web.nodes[0].backup);
  EXPECT_EQ(site.web.nodes[1].weight, 50u);  // options in any order
  EXPECT_EQ(site.web.nodes[2].weight, 1u);
  EXPECT_TRUE(site.web.nodes[2].backup);
}

TEST(HaproxyImport, UriAndSourceBalancingQuotedNamesIpv6) {
  SiteDir dir;
  HaproxyImport result = import(readCfg("hashing.cfg"));
  Site site = loadClean(dir, result);
  EXPECT_EQ(site.lb.algorithm, "uri");
  ASSERT_EQ(site.web.nodes.size(), 3u);
  EXPECT_EQ(site.web.nodes[0].name, "cache-1");  // "cache 1"
  EXPECT_EQ(site.web.nodes[1].name, "cache-2");  // cache\ 2
  EXPECT_EQ(site.web.nodes[2].listen, addr("[2001:db8::3]:6081"));
  // A second frontend and its backend: one set of web nodes per site.
  EXPECT_EQ(untranslatedLines(result), (std::vector<uint32_t>{18, 19, 20, 22, 23, 24}));
  EXPECT_NE(whyOf(result, 18).find("one set of web nodes per site"), std::string::npos);

  for (const auto& [balance, algorithm] : std::vector<std::pair<std::string, std::string>>{
           {"source", "source"}, {"random", "random2"}, {"static-rr", "static-rr"}, {"uri", "uri"}}) {
    SiteDir d;
    HaproxyImport r = import("defaults\n  mode http\nlisten l\n  bind 127.0.0.1:8080\n  balance " + balance +
                             "\n  server a 127.0.0.2:9000 check\n");
    Site s = loadClean(d, r);
    EXPECT_EQ(s.lb.algorithm, algorithm) << balance;
    EXPECT_EQ(s.lb.health.path, "") << "check without httpchk is a TCP connect";
  }
  HaproxyImport first = import(
      "defaults\n  mode http\nlisten l\n  bind 127.0.0.1:8080\n  balance first\n"
      "  server a 127.0.0.2:9000\n");
  SiteDir d;
  EXPECT_EQ(loadClean(d, first).lb.algorithm, "roundrobin");
  EXPECT_NE(whyOf(first, 5).find("balance first"), std::string::npos);
}

TEST(HaproxyImport, TlsFrontendWithRedirect) {
  SiteDir dir;
  dir.touch("certs/site.pem");
  std::string cfg = readCfg("tls.cfg");
  std::string base = "crt-base /etc/haproxy/certs";
  cfg.replace(cfg.find(base), base.size(), "crt-base " + (dir.dir() / "certs").string());
  HaproxyImport result = import(cfg, "tls.cfg");
  Site site = loadClean(dir, result);
  ASSERT_EQ(site.lb.nodes.size(), 1u);
  EXPECT_EQ(site.lb.nodes[0].http, addr("0.0.0.0:80"));
  ASSERT_TRUE(site.lb.nodes[0].https.has_value());
  EXPECT_EQ(*site.lb.nodes[0].https, addr("0.0.0.0:443"));
  EXPECT_EQ(site.lb.tls.cert, dir.dir() / "certs/site.pem");
  EXPECT_EQ(site.lb.tls.key, dir.dir() / "certs/site.pem");
  EXPECT_TRUE(site.lb.tls.redirect_http);
  EXPECT_TRUE(site.lb.tls.hsts);
  EXPECT_TRUE(site.lb.tls.http2);
  ASSERT_EQ(site.web.nodes.size(), 2u);
  // Ciphers and versions, and the redirect's 301 (Fulcrum sends 308).
  EXPECT_EQ(untranslatedLines(result), (std::vector<uint32_t>{3, 4, 14}));
  EXPECT_NE(whyOf(result, 14).find("308"), std::string::npos);
}

TEST(HaproxyImport, PatroniPrimaryAndReplicas) {
  SiteDir dir;
  HaproxyImport result = import(readCfg("patroni.cfg"), "patroni.cfg");
  Site site = loadClean(dir, result);
  ASSERT_EQ(site.lb.nodes.size(), 1u);
  const LbNode& lb = site.lb.nodes[0];
  ASSERT_TRUE(lb.db_write && lb.db_read && lb.stats);
  EXPECT_EQ(*lb.db_write, addr("0.0.0.0:5000"));
  EXPECT_EQ(*lb.db_read, addr("0.0.0.0:5001"));
  EXPECT_EQ(*lb.stats, addr("0.0.0.0:7000"));
  ASSERT_EQ(site.db.nodes.size(), 3u);  // the same three servers behind both listeners
  EXPECT_EQ(site.db.nodes[0].name, "postgresql_10.0.0.31_5432");
  EXPECT_EQ(site.db.nodes[0].pg, addr("10.0.0.31:5432"));
  EXPECT_EQ(site.db.nodes[0].agent, addr("10.0.0.31:8008"));  // check port 8008
  EXPECT_EQ(site.db.nodes[2].pg, addr("10.0.0.33:5432"));
  EXPECT_EQ(site.lb.health.interval_ms, 3000u);
  EXPECT_EQ(site.lb.health.rise, 2u);
  EXPECT_EQ(site.lb.health.fall, 3u);
  EXPECT_EQ(site.lb.health.timeout_ms, 5000u);
  EXPECT_EQ(site.lb.timeouts.client_ms, 30u * 60 * 1000);
  EXPECT_EQ(site.lb.timeouts.connect_ms, 4000u);
  EXPECT_EQ(site.lb.retries, 2u);
  EXPECT_EQ(site.lb.limits.max_connections, 100u);
  // Only logging and the per-server maxconn are left out; the checks are what db_write and
  // db_read do, and on-marked-down shutdown-sessions is how they treat a node marked down.
  EXPECT_EQ(untranslatedLines(result), (std::vector<uint32_t>{7, 26, 27, 28, 35, 36, 37}));
  EXPECT_NE(whyOf(result, 26).find("maxconn 100"), std::string::npos);
}

// The file in Patroni's repository: one listener to the leader (OPTIONS /), REST APIs on 8008, 8009.
TEST(HaproxyImport, PatroniRepositoryBatman) {
  SiteDir dir;
  HaproxyImport result = import(R"(global
    maxconn 100

defaults
    log global
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s

listen stats
    mode http
    bind *:7000
    stats enable
    stats uri /

listen batman
    bind *:5000
    option httpchk
    http-check expect status 200
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
    server postgresql_127.0.0.1_5432 127.0.0.1:5432 maxconn 100 check port 8008
    server postgresql_127.0.0.1_5433 127.0.0.1:5433 maxconn 100 check port 8009
)");
  Site site = loadClean(dir, result);
  ASSERT_TRUE(site.lb.nodes[0].db_write.has_value());
  EXPECT_FALSE(site.lb.nodes[0].db_read.has_value());
  ASSERT_EQ(site.db.nodes.size(), 2u);
  EXPECT_EQ(site.db.nodes[1].pg, addr("127.0.0.1:5433"));
  EXPECT_EQ(site.db.nodes[1].agent, addr("127.0.0.1:8009"));
}

// As PostgreSQL cluster deployment playbooks write it: replicas within a lag, a third listener
// for synchronous replicas, pgbouncer's port behind the checks.
TEST(HaproxyImport, PatroniReplicaLagAndExtraListeners) {
  SiteDir dir;
  HaproxyImport result = import(R"(defaults
    mode tcp
    timeout connect 5s
    timeout client 60m
    timeout server 60m
listen master
    bind 10.128.64.140:5000
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 3s fastinter 1s fall 3 rise 4 on-marked-down shutdown-sessions
    server pgnode01 10.128.64.140:6432 check port 8008
    server pgnode02 10.128.64.141:6432 check port 8008
listen replicas
    bind 10.128.64.140:5001
    option httpchk OPTIONS /replica?lag=100MB
    balance roundrobin
    default-server inter 3s fall 3 rise 4 on-marked-down shutdown-sessions
    server pgnode01 10.128.64.140:6432 check port 8008
    server pgnode02 10.128.64.141:6432 check port 8008
listen replicas_sync
    bind 10.128.64.140:5002
    option httpchk OPTIONS /sync
    server pgnode01 10.128.64.140:6432 check port 8008
)");
  Site site = loadClean(dir, result);
  EXPECT_EQ(site.db.max_lag_bytes, 100u << 20);
  ASSERT_EQ(site.db.nodes.size(), 2u);
  EXPECT_EQ(site.db.nodes[1].agent, addr("10.128.64.141:8008"));
  EXPECT_EQ(*site.lb.nodes[0].db_read, addr("10.128.64.140:5001"));
  EXPECT_EQ(site.lb.nodes[0].http, addr("10.128.64.140:80"));  // none in HAProxy: port 80 of the same address
  EXPECT_EQ(untranslatedLines(result), (std::vector<uint32_t>{10, 20, 21, 22, 23}));
  EXPECT_NE(whyOf(result, 10).find("fastinter 1s"), std::string::npos);
  EXPECT_NE(whyOf(result, 20).find("one db_read frontend"), std::string::npos);
}

TEST(HaproxyImport, RoutingStickinessAndCookiesAreListed) {
  SiteDir dir;
  HaproxyImport result = import(readCfg("routing.cfg"), "routing.cfg");
  Site site = loadClean(dir, result);
  ASSERT_EQ(site.web.nodes.size(), 2u);  // the default backend's
  EXPECT_EQ(site.web.nodes[0].name, "s1");
  EXPECT_EQ(site.lb.timeouts.client_ms, 60000u);  // from the named defaults
  EXPECT_EQ(site.lb.queue_timeout_ms, 30000u);     // timeout queue
  EXPECT_EQ(site.web.nodes[0].max_conn, 200u);
  EXPECT_EQ(site.lb.sticky, "cookie");  // cookie SERVERID insert indirect nocache
  EXPECT_EQ(site.lb.sticky_cookie, "SERVERID");
  EXPECT_EQ(untranslatedLines(result), (std::vector<uint32_t>{2, 3, 12, 13, 17, 18, 19, 20, 21, 26, 30, 31}));
  EXPECT_NE(whyOf(result, 18).find("one set of web nodes per site"), std::string::npos);
  EXPECT_NE(whyOf(result, 19).find("stick tables"), std::string::npos);
  EXPECT_NE(whyOf(result, 26).find("indirect nocache: Fulcrum's cookie"), std::string::npos);
  for (const std::string& m : result.messages()) {
    EXPECT_EQ(m.rfind("routing.cfg:", 0), 0u) << m;
    EXPECT_NE(m.find(": not translated: "), std::string::npos) << m;
  }
}

TEST(HaproxyImport, BindForms) {
  SiteDir dir;
  HaproxyImport result = import(
      "defaults\n  mode http\n"
      "frontend f\n  bind [::1]:8080\n  bind :8443 ssl\n  default_backend b\n"
      "backend b\n  server a 127.0.0.2:9000\n  server named app.example.com:80\n"
      "  server noport 127.0.0.3\n");
  Site site = loadClean(dir, result);
  EXPECT_EQ(site.lb.nodes[0].http, addr("[::1]:8080"));
  EXPECT_EQ(*site.lb.nodes[0].https, addr("0.0.0.0:8443"));
  ASSERT_EQ(site.web.nodes.size(), 1u);
  EXPECT_EQ(untranslatedLines(result),
            (std::vector<uint32_t>{5, 9, 10}));  // ssl without crt; host name; no port
  EXPECT_NE(whyOf(result, 9).find("host names"), std::string::npos);

  HaproxyImport range = import(
      "defaults\n  mode http\nlisten l\n  bind 127.0.0.1:8000-8010\n"
      "  bind 127.0.0.1:8080\n  server a 127.0.0.2:9000\n");
  SiteDir d;
  EXPECT_EQ(loadClean(d, range).lb.nodes[0].http, addr("127.0.0.1:8080"));
  EXPECT_NE(whyOf(range, 4).find("port ranges"), std::string::npos);
}

TEST(HaproxyImport, ProxyProtocolOnBindsAndServers) {
  SiteDir dir;
  HaproxyImport result = import(
      "defaults\n  mode http\n"
      "frontend f\n  bind 127.0.0.1:8080 accept-proxy\n  default_backend b\n"
      "backend b\n  default-server check-send-proxy\n  server a 127.0.0.2:9000 send-proxy\n"
      "  server b 127.0.0.3:9000 send-proxy-v2\n  server c 127.0.0.4:9000 send-proxy-v2-ssl-cn\n"
      "  server d 127.0.0.5:9000\n");
  Site site = loadClean(dir, result);
  EXPECT_TRUE(site.lb.accept_proxy);
  ASSERT_EQ(site.web.nodes.size(), 4u);
  EXPECT_EQ(site.web.nodes[0].send_proxy, "v1");
  EXPECT_EQ(site.web.nodes[1].send_proxy, "v2");
  EXPECT_EQ(site.web.nodes[2].send_proxy, "v2");
  EXPECT_EQ(site.web.nodes[3].send_proxy, "");
  // Only the SSL details of send-proxy-v2-ssl-cn are lost.
  EXPECT_EQ(untranslatedLines(result), (std::vector<uint32_t>{10}));
  EXPECT_NE(whyOf(result, 10).find("without the TLS details"), std::string::npos);

  HaproxyImport one = import(
      "defaults\n  mode http\n"
      "frontend f\n  bind 127.0.0.1:8080 accept-proxy\n  bind 127.0.0.1:8443 ssl crt /x.pem\n"
      "  default_backend b\nbackend b\n  server a 127.0.0.2:9000\n");
  EXPECT_NE(one.toml.find("accept_proxy applies to both"), std::string::npos) << one.toml;
}

TEST(HaproxyImport, WildcardSharingAServerPortNeedsBindIp) {
  std::string cfg = "defaults\n  mode http\nlisten l\n  bind *:80\n  server a 10.0.0.1:80\n";
  HaproxyImport refused = import(cfg);
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.error.find("haproxy.cfg:4: "), std::string::npos) << refused.error;
  EXPECT_NE(refused.error.find("--bind-ip"), std::string::npos) << refused.error;
  SiteDir dir;
  Site site = loadClean(dir, import(cfg, "haproxy.cfg", "192.0.2.1"));
  EXPECT_EQ(site.lb.nodes[0].http, addr("192.0.2.1:80"));
}

TEST(HaproxyImport, MalformedInputIsRefusedWithItsLine) {
  HaproxyImport quote = import("global\n  maxconn 10\nfrontend f\n  bind \"127.0.0.1:80\n");
  EXPECT_FALSE(quote.ok);
  EXPECT_EQ(quote.error, "haproxy.cfg:4: unterminated double quote: bind \"127.0.0.1:80");

  HaproxyImport server = import("backend b\n  mode http\n  server lonely\n");
  EXPECT_FALSE(server.ok);
  EXPECT_EQ(server.error, "haproxy.cfg:3: server needs a name and an address: server lonely");

  HaproxyImport outside = import("  bind :80\n");
  EXPECT_FALSE(outside.ok);
  EXPECT_EQ(outside.error.rfind("haproxy.cfg:1: 'bind' is outside any section", 0), 0u) << outside.error;

  HaproxyImport from = import("frontend f from nowhere\n  bind :80\n");
  EXPECT_FALSE(from.ok);
  EXPECT_EQ(from.error, "haproxy.cfg:1: no defaults section named 'nowhere' above this line");

  HaproxyImport nothing = import(
      "global\n  daemon\ndefaults\n  mode tcp\nlisten redis\n  bind :6379\n"
      "  server r 127.0.0.1:6380\n");
  EXPECT_FALSE(nothing.ok);
  EXPECT_NE(nothing.error.find("no frontend, listen or backend Fulcrum can translate"), std::string::npos);

  EXPECT_FALSE(import("").ok);
}

TEST(HaproxyImport, OtherSectionsAreListedLineByLine) {
  SiteDir dir;
  HaproxyImport result = import(
      "peers mypeers\n  peer lb1 192.0.2.1:10000\n  server lb2\n"
      "resolvers dns\n  nameserver ns1 192.0.2.53:53\n"
      "defaults\n  mode http\n"
      "listen l\n  bind 127.0.0.1:8080\n  server a 127.0.0.2:9000 resolvers dns\n");
  loadClean(dir, result);
  EXPECT_EQ(untranslatedLines(result), (std::vector<uint32_t>{1, 2, 3, 4, 5, 10}));
  EXPECT_NE(whyOf(result, 3).find("peers section"), std::string::npos);
  EXPECT_NE(whyOf(result, 10).find("resolvers dns"), std::string::npos);
}

TEST(HaproxyImport, SiteNameFromPath) {
  EXPECT_EQ(siteNameFromPath("/etc/haproxy/haproxy.cfg"), "haproxy");
  EXPECT_EQ(siteNameFromPath("my site.cfg"), "my-site");
  EXPECT_EQ(siteNameFromPath("_x"), "x");
}

}  // namespace
}  // namespace fulcrum::config
