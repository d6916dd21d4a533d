#include "config/loader.h"

#include <gtest/gtest.h>

#include <fstream>

#include "site_fixture.h"

namespace fulcrum::config {
namespace {

using testing::SiteDir;

core::SocketAddress addr(const char* text) {
  return *core::SocketAddress::parse(text);
}

TEST(Loader, EmptyFileGivesContractDefaults) {
  SiteDir dir;
  LoadResult result = dir.load("");
  ASSERT_TRUE(result.ok());
  const Site& s = result.site;
  EXPECT_EQ(s.file, dir.file());
  EXPECT_EQ(s.dir, dir.dir());
  EXPECT_EQ(s.display_path, dir.file().string());
  EXPECT_EQ(s.site.state_dir, dir.dir() / "var");
  EXPECT_EQ(s.web.docroot, dir.dir() / "www");
  EXPECT_FALSE(s.lb.present);
  EXPECT_FALSE(s.web.present);
  EXPECT_FALSE(s.db.present);
  EXPECT_FALSE(s.etcd.present);
  EXPECT_EQ(s.lb.algorithm, "roundrobin");
  EXPECT_EQ(s.lb.retries, 2u);
  EXPECT_EQ(s.lb.health.path, "/healthz");
  EXPECT_EQ(s.lb.health.interval_ms, 2000u);
  EXPECT_EQ(s.lb.health.timeout_ms, 1000u);
  EXPECT_EQ(s.lb.health.rise, 2u);
  EXPECT_EQ(s.lb.health.fall, 3u);
  EXPECT_EQ(s.lb.timeouts.http_request_ms, 10000u);
  EXPECT_EQ(s.lb.limits.max_header_bytes, 16384u);
  EXPECT_EQ(s.lb.limits.max_body_bytes, 10485760u);
  EXPECT_FALSE(s.lb.vip.has_value());
  EXPECT_EQ(s.web.app, "guestbook");
  EXPECT_EQ(s.db.database, "site");
  EXPECT_EQ(s.db.leader_ttl_ms, 5000u);
  EXPECT_TRUE(s.db.failover);
  EXPECT_TRUE(s.db.password_file.empty());
  EXPECT_TRUE(s.etcd.managed);
  EXPECT_TRUE(s.positions.empty());
}

TEST(Loader, NodeDefaultsApply) {
  SiteDir dir;
  LoadResult result = dir.load(
      "[[lb.node]]\nname = \"lb-01\"\nhttp = \"127.0.0.1:8080\"\n"
      "[[web.node]]\nname = \"web-01\"\nlisten = \"127.0.0.1:9001\"\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(testing::lines(result));
  const Site& s = result.site;
  EXPECT_TRUE(s.lb.present);
  EXPECT_TRUE(s.web.present);
  ASSERT_EQ(s.lb.nodes.size(), 1u);
  EXPECT_EQ(s.lb.nodes[0].threads, 0u);
  EXPECT_EQ(s.lb.nodes[0].priority, 100u);
  EXPECT_FALSE(s.lb.nodes[0].https.has_value());
  EXPECT_FALSE(s.lb.nodes[0].stats.has_value());
  ASSERT_EQ(s.web.nodes.size(), 1u);
  EXPECT_EQ(s.web.nodes[0].weight, 1u);
  EXPECT_FALSE(s.web.nodes[0].backup);
  EXPECT_EQ(s.web.nodes[0].threads, 0u);
}

// The contract's own example (§3), every key set.
constexpr const char* kContractExample = R"(
[site]
name = "www.foobar.com"
state_dir = "var"

[lb]
algorithm = "maglev"
retries = 3
[lb.health]
path = ""
interval_ms = 500
timeout_ms = 250
rise = 4
fall = 5
[lb.timeouts]
connect_ms = 100
client_ms = 200
server_ms = 300
http_request_ms = 400
[lb.limits]
max_connections = 10
max_header_bytes = 2048
max_body_bytes = 4096
rate_per_ip = 7
rate_burst = 20
conn_per_ip = 30
client_table = 5000
min_body_rate = 0
[lb.firewall]
allow = ["10.0.0.0/8", "::1"]
deny = ["10.1.0.0/16"]
[lb.tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
redirect_http = true
hsts = true
[lb.vip]
address = "10.77.0.100/24"
interface = "eth0"
vrid = 52
advert_interval_ms = 2000
preempt = false
preempt_delay_ms = 1500
unicast_peers = ["10.77.0.2", "10.77.0.3"]

[[lb.node]]
name = "lb-01"
http = "127.0.0.1:8080"
https = "127.0.0.1:8443"
stats = "127.0.0.1:8404"
db_write = "127.0.0.1:5000"
db_read = "127.0.0.1:5001"
threads = 4
priority = 150

[web]
docroot = "www"
app = "none"
[[web.node]]
name = "web-01"
listen = "127.0.0.1:9001"
weight = 3
backup = true
threads = 2

[db]
database = "shop"
user = "shop_owner"
password_file = "secrets/pg.pass"
synchronous = true
max_lag_bytes = 0
failover = false
leader_ttl_ms = 8000
pg_bin = "/usr/lib/postgresql/15/bin"
[[db.node]]
name = "db-01"
pg = "127.0.0.1:15432"
agent = "127.0.0.1:8008"

[etcd]
endpoints = ["127.0.0.1:12379", "[::1]:12380"]
managed = false
)";

TEST(Loader, ReadsEveryKeyOfTheContract) {
  SiteDir dir;
  dir.touch("tls/cert.pem");
  dir.touch("tls/key.pem");
  LoadResult result = dir.load(kContractExample);
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(testing::lines(result));
  const Site& s = result.site;
  EXPECT_EQ(s.site.name, "www.foobar.com");
  EXPECT_EQ(s.site.state_dir, dir.dir() / "var");

  EXPECT_EQ(s.lb.algorithm, "maglev");
  EXPECT_EQ(s.lb.retries, 3u);
  EXPECT_EQ(s.lb.health.path, "");
  EXPECT_EQ(s.lb.health.interval_ms, 500u);
  EXPECT_EQ(s.lb.health.timeout_ms, 250u);
  EXPECT_EQ(s.lb.health.rise, 4u);
  EXPECT_EQ(s.lb.health.fall, 5u);
  EXPECT_EQ(s.lb.timeouts.connect_ms, 100u);
  EXPECT_EQ(s.lb.timeouts.client_ms, 200u);
  EXPECT_EQ(s.lb.timeouts.server_ms, 300u);
  EXPECT_EQ(s.lb.timeouts.http_request_ms, 400u);
  EXPECT_EQ(s.lb.limits.max_connections, 10u);
  EXPECT_EQ(s.lb.limits.max_header_bytes, 2048u);
  EXPECT_EQ(s.lb.limits.max_body_bytes, 4096u);
  EXPECT_EQ(s.lb.limits.rate_per_ip, 7u);
  EXPECT_EQ(s.lb.limits.rate_burst, 20u);
  EXPECT_EQ(s.lb.limits.conn_per_ip, 30u);
  EXPECT_EQ(s.lb.limits.client_table, 5000u);
  EXPECT_EQ(s.lb.limits.min_body_rate, 0u);

  ASSERT_EQ(s.lb.firewall.allow.size(), 2u);
  EXPECT_EQ(s.lb.firewall.allow[0].text, "10.0.0.0/8");
  EXPECT_EQ(s.lb.firewall.allow[0].network, *core::IpAddress::parse("10.0.0.0"));
  EXPECT_EQ(s.lb.firewall.allow[0].prefix_len, 8);
  EXPECT_EQ(s.lb.firewall.allow[1].network, *core::IpAddress::parse("::1"));
  EXPECT_EQ(s.lb.firewall.allow[1].prefix_len, 128);
  ASSERT_EQ(s.lb.firewall.deny.size(), 1u);
  EXPECT_EQ(s.lb.firewall.deny[0].prefix_len, 16);

  EXPECT_EQ(s.lb.tls.cert, dir.dir() / "tls/cert.pem");
  EXPECT_EQ(s.lb.tls.key, dir.dir() / "tls/key.pem");
  EXPECT_TRUE(s.lb.tls.redirect_http);
  EXPECT_TRUE(s.lb.tls.hsts);

  ASSERT_TRUE(s.lb.vip.has_value());
  EXPECT_EQ(s.lb.vip->address, "10.77.0.100/24");
  EXPECT_EQ(s.lb.vip->ip, *core::IpAddress::parse("10.77.0.100"));
  EXPECT_EQ(s.lb.vip->prefix_len, 24);
  EXPECT_EQ(s.lb.vip->interface, "eth0");
  EXPECT_EQ(s.lb.vip->vrid, 52u);
  EXPECT_EQ(s.lb.vip->advert_interval_ms, 2000u);
  EXPECT_FALSE(s.lb.vip->preempt);
  EXPECT_EQ(s.lb.vip->preempt_delay_ms, 1500u);
  ASSERT_EQ(s.lb.vip->unicast_peers.size(), 2u);
  EXPECT_EQ(s.lb.vip->unicast_peers[1], *core::IpAddress::parse("10.77.0.3"));

  ASSERT_EQ(s.lb.nodes.size(), 1u);
  const LbNode& lb = s.lb.nodes[0];
  EXPECT_EQ(lb.name, "lb-01");
  EXPECT_EQ(lb.http, addr("127.0.0.1:8080"));
  EXPECT_EQ(lb.https, addr("127.0.0.1:8443"));
  EXPECT_EQ(lb.stats, addr("127.0.0.1:8404"));
  EXPECT_EQ(lb.db_write, addr("127.0.0.1:5000"));
  EXPECT_EQ(lb.db_read, addr("127.0.0.1:5001"));
  EXPECT_EQ(lb.threads, 4u);
  EXPECT_EQ(lb.priority, 150u);

  EXPECT_EQ(s.web.docroot, dir.dir() / "www");
  EXPECT_EQ(s.web.app, "none");
  ASSERT_EQ(s.web.nodes.size(), 1u);
  EXPECT_EQ(s.web.nodes[0].listen, addr("127.0.0.1:9001"));
  EXPECT_EQ(s.web.nodes[0].weight, 3u);
  EXPECT_TRUE(s.web.nodes[0].backup);
  EXPECT_EQ(s.web.nodes[0].threads, 2u);

  EXPECT_EQ(s.db.database, "shop");
  EXPECT_EQ(s.db.user, "shop_owner");
  EXPECT_EQ(s.db.password_file, dir.dir() / "secrets/pg.pass");
  EXPECT_TRUE(s.db.synchronous);
  EXPECT_EQ(s.db.max_lag_bytes, 0u);
  EXPECT_FALSE(s.db.failover);
  EXPECT_EQ(s.db.leader_ttl_ms, 8000u);
  EXPECT_EQ(s.db.pg_bin, "/usr/lib/postgresql/15/bin");
  ASSERT_EQ(s.db.nodes.size(), 1u);
  EXPECT_EQ(s.db.nodes[0].pg, addr("127.0.0.1:15432"));
  EXPECT_EQ(s.db.nodes[0].agent, addr("127.0.0.1:8008"));

  ASSERT_EQ(s.etcd.endpoints.size(), 2u);
  EXPECT_EQ(s.etcd.endpoints[1], addr("[::1]:12380"));
  EXPECT_FALSE(s.etcd.managed);
}

TEST(Loader, MonitoringDefaultsAndSettings) {
  SiteDir dir;
  LoadResult defaults = dir.load("[monitoring]\n");
  ASSERT_TRUE(defaults.ok()) << ::testing::PrintToString(testing::lines(defaults));
  const MonitoringSection& d = defaults.site.monitoring;
  EXPECT_TRUE(d.present);
  EXPECT_EQ(d.prometheus, addr("127.0.0.1:9090"));
  EXPECT_EQ(d.alertmanager, addr("127.0.0.1:9093"));
  EXPECT_TRUE(d.managed);
  EXPECT_EQ(d.interval_ms, 5000u);
  EXPECT_FALSE(dir.load("").site.monitoring.present);

  LoadResult set = dir.load(
      "[monitoring]\nprometheus = \"[::1]:19090\"\nalertmanager = \"\"\nmanaged = false\ninterval_ms = "
      "1000\n");
  ASSERT_TRUE(set.ok()) << ::testing::PrintToString(testing::lines(set));
  const MonitoringSection& m = set.site.monitoring;
  EXPECT_EQ(m.prometheus, addr("[::1]:19090"));
  EXPECT_FALSE(m.alertmanager.has_value());
  EXPECT_FALSE(m.managed);
  EXPECT_EQ(m.interval_ms, 1000u);

  // Not run here: its addresses may be those of nodes of this file on another host.
  EXPECT_TRUE(
      dir.load("[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9090\"\n[monitoring]\nmanaged = false\n")
          .ok());
}

TEST(Loader, LogKeysDefaultsAndSettings) {
  SiteDir dir;
  LoadResult defaults = dir.load("");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults.site.site.log_max_bytes, 64ull << 20);
  EXPECT_EQ(defaults.site.site.log_keep, 5u);
  EXPECT_EQ(defaults.site.lb.access_log.format, "text");
  EXPECT_TRUE(defaults.site.lb.access_log.file.empty());
  EXPECT_EQ(defaults.site.web.access_log.format, "text");

  LoadResult set = dir.load(
      "[site]\nlog_max_bytes = 0\nlog_keep = 9\n[lb]\naccess_log = \"json\"\naccess_log_file = "
      "\"logs/{node}.access.log\"\n[web]\naccess_log = \"off\"\n");
  ASSERT_TRUE(set.ok()) << ::testing::PrintToString(testing::lines(set));
  EXPECT_EQ(set.site.site.log_max_bytes, 0u);
  EXPECT_EQ(set.site.site.log_keep, 9u);
  EXPECT_EQ(set.site.lb.access_log.format, "json");
  EXPECT_EQ(set.site.lb.access_log.file, set.site.dir / "logs/{node}.access.log");
  EXPECT_EQ(set.site.web.access_log.format, "off");
}

TEST(Loader, FindsNodesByName) {
  SiteDir dir;
  dir.touch("tls/cert.pem");
  dir.touch("tls/key.pem");
  LoadResult result = dir.load(kContractExample);
  ASSERT_TRUE(result.ok());
  const Site& s = result.site;
  ASSERT_NE(s.findLbNode("lb-01"), nullptr);
  EXPECT_EQ(s.findLbNode("lb-01")->priority, 150u);
  ASSERT_NE(s.findWebNode("web-01"), nullptr);
  ASSERT_NE(s.findDbNode("db-01"), nullptr);
  EXPECT_EQ(s.findWebNode("lb-01"), nullptr);
  EXPECT_EQ(s.findDbNode("nope"), nullptr);
}

TEST(Loader, ResolvesRelativePathsAgainstTheFileDirectory) {
  SiteDir dir;
  LoadResult result = dir.load(
      "[site]\nstate_dir = \"../state/./x\"\n[web]\ndocroot = \"www/\"\n"
      "[db]\npassword_file = \"pw\"\npg_bin = \"bin\"\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(testing::lines(result));
  EXPECT_EQ(result.site.site.state_dir, dir.dir().parent_path() / "state/x");
  EXPECT_EQ(result.site.web.docroot, dir.dir() / "www/");
  EXPECT_EQ(result.site.db.password_file, dir.dir() / "pw");
  EXPECT_EQ(result.site.db.pg_bin, dir.dir() / "bin");
}

TEST(Loader, KeepsAbsolutePaths) {
  SiteDir dir;
  LoadResult result = dir.load("[site]\nstate_dir = \"/srv/fulcrum\"\n[db]\npassword_file = \"/etc/pw\"\n");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.site.site.state_dir, "/srv/fulcrum");
  EXPECT_EQ(result.site.db.password_file, "/etc/pw");
}

TEST(Loader, MakesARelativeFilePathAbsolute) {
  LoadResult result = loadSiteString("[site]\nname = \"x\"\n", "some/dir/../site.toml");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.site.display_path, "some/dir/../site.toml");
  EXPECT_TRUE(result.site.file.is_absolute());
  EXPECT_EQ(result.site.file, std::filesystem::current_path() / "some/site.toml");
  EXPECT_EQ(result.site.dir, std::filesystem::current_path() / "some");
  EXPECT_EQ(result.site.site.state_dir, std::filesystem::current_path() / "some/var");
}

TEST(Loader, ErrorsNameThePathAsGiven) {
  LoadResult result = loadSiteString("[lb]\nretries = 11\n", "rel/site.toml");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].toString(), "rel/site.toml:2:1: lb.retries: must be between 0 and 10, got 11");
}

TEST(Loader, MissingDocrootIsAnErrorOnlyWithWebNodes) {
  SiteDir dir;
  EXPECT_TRUE(dir.load("[web]\ndocroot = \"nowhere\"\n").ok());
  LoadResult result =
      dir.load("[web]\ndocroot = \"nowhere\"\n[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\n");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].toString(),
            dir.line(2, 1, "web.docroot", "no such directory: " + (dir.dir() / "nowhere").string()));
}

TEST(Loader, DefaultDocrootMustExistWithWebNodes) {
  SiteDir dir;
  std::filesystem::remove(dir.dir() / "www");
  LoadResult result = dir.load("[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\n");
  ASSERT_EQ(result.errors.size(), 1u);
  // No docroot key: the error sits on [web] (here made by [[web.node]]).
  EXPECT_EQ(result.errors[0].toString(),
            dir.line(1, 3, "web.docroot", "no such directory: " + (dir.dir() / "www").string()));
}

TEST(Loader, DocrootMustBeADirectory) {
  SiteDir dir;
  std::ofstream(dir.dir() / "file.txt") << "x";
  LoadResult result =
      dir.load("[web]\ndocroot = \"file.txt\"\n[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\n");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].toString(),
            dir.line(2, 1, "web.docroot", "not a directory: " + (dir.dir() / "file.txt").string()));
}

TEST(Loader, SyntaxErrorCarriesTomlPosition) {
  SiteDir dir;
  LoadResult result = dir.load("[site]\nname = \n");
  ASSERT_EQ(result.errors.size(), 1u);
  const ConfigError& e = result.errors[0];
  EXPECT_EQ(e.line, 2u);
  EXPECT_EQ(e.column, 8u);
  EXPECT_EQ(e.key, "");
  EXPECT_NE(e.message.find("expected value"), std::string::npos) << e.message;
  EXPECT_EQ(e.toString().rfind(dir.file().string() + ":2:8: : ", 0), 0u) << e.toString();
}

TEST(Loader, DuplicateKeyIsASyntaxError) {
  SiteDir dir;
  LoadResult result = dir.load("[lb]\nretries = 1\nretries = 2\n");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].line, 3u);
  EXPECT_NE(result.errors[0].message.find("retries"), std::string::npos) << result.errors[0].message;
}

TEST(Loader, MissingFile) {
  LoadResult result = loadSiteFile("/nonexistent/fulcrum/site.toml");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].toString(),
            "/nonexistent/fulcrum/site.toml:0:0: : cannot read file: No such file or directory");
}

TEST(Loader, DirectoryIsNotAFile) {
  SiteDir dir;
  LoadResult result = loadSiteFile(dir.dir());
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].message, "cannot read file: Is a directory");
}

TEST(Loader, LoadsAFileFromDisk) {
  SiteDir dir;
  std::ofstream(dir.file()) << "[site]\nname = \"disk\"\n[lb]\nretries = 99\n";
  LoadResult result = loadSiteFile(dir.file());
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].toString(), dir.line(4, 1, "lb.retries", "must be between 0 and 10, got 99"));
  EXPECT_EQ(result.site.site.name, "disk");
}

TEST(Loader, CollectsEveryErrorSortedByPosition) {
  SiteDir dir;
  LoadResult result = dir.load(
      "[web]\n"                    // 1
      "app = \"wordpress\"\n"      // 2
      "[lb]\n"                     // 3
      "algoritm = \"x\"\n"         // 4
      "retries = -3\n"             // 5
      "[[lb.node]]\n"              // 6
      "name = \"dup\"\n"           // 7
      "http = \"localhost:80\"\n"  // 8
      "[[db.node]]\n"              // 9
      "name = \"dup\"\n"           // 10
      "pg = \"127.0.0.1:5432\"\n"  // 11
      "[site]\n"                   // 12
      "name = 1\n");               // 13
  std::vector<std::string> expected = {
      dir.line(2, 1, "web.app", "unknown app 'wordpress'; expected one of: guestbook, none"),
      dir.line(4, 1, "lb.algoritm", "unknown key 'algoritm'; did you mean 'algorithm'?"),
      dir.line(5, 1, "lb.retries", "must not be negative, got -3"),
      dir.line(8, 1, "lb.node[0].http",
               "bad address 'localhost:80': host names are not allowed, use an IP address"),
      dir.line(9, 1, "db.node[0].agent", "required key is missing"),
      dir.line(10, 1, "db.node[0].name", "duplicate node name 'dup': already used by lb.node[0]"),
      dir.line(13, 1, "site.name", "expected a string, got an integer"),
  };
  EXPECT_EQ(testing::lines(result), expected);
}

TEST(Loader, ReportsEveryClashOnce) {
  SiteDir dir;
  LoadResult result = dir.load(
      "[web]\nnode = [{name = \"a\", listen = \"127.0.0.1:1\"}, {name = \"b\", listen = \"127.0.0.1:1\"},\n"
      "        {name = \"c\", listen = \"127.0.0.1:1\"}]\n");
  ASSERT_EQ(result.errors.size(), 2u) << ::testing::PrintToString(testing::lines(result));
  EXPECT_EQ(result.errors[0].key, "web.node[1].listen");
  EXPECT_EQ(result.errors[1].key, "web.node[2].listen");
  EXPECT_EQ(result.errors[1].message, "address 127.0.0.1:1 is already used by web.node[0].listen");
}

TEST(Loader, NodeIndicesFollowTheFileEvenPastBadElements) {
  SiteDir dir;
  LoadResult result = dir.load("[web]\nnode = [1, {name = \"b\", listen = \"127.0.0.1:1\", weight = 0}]\n");
  std::vector<std::string> expected = {
      dir.line(2, 9, "web.node[0]", "expected a table, got an integer"),
      dir.line(2, 49, "web.node[1].weight", "must be between 1 and 256, got 0"),
  };
  EXPECT_EQ(testing::lines(result), expected);
}

TEST(Loader, EtcdEndpointMistakesAreAllReported) {
  SiteDir dir;
  LoadResult result = dir.load("[etcd]\nendpoint = [\"127.0.0.1:2379\"]\n");
  std::vector<std::string> expected = {
      dir.line(1, 2, "etcd.endpoints", "required key is missing"),
      dir.line(2, 1, "etcd.endpoint", "unknown key 'endpoint'; did you mean 'endpoints'?"),
  };
  EXPECT_EQ(testing::lines(result), expected);
}

TEST(Loader, StrictSynchronousNeedsSynchronous) {
  SiteDir dir;
  LoadResult result = dir.load("[db]\nsynchronous_strict = true\n");
  EXPECT_EQ(testing::lines(result),
            std::vector<std::string>{dir.line(2, 1, "db.synchronous_strict", "needs synchronous = true")});
  LoadResult ok = dir.load("[db]\nsynchronous = true\nsynchronous_strict = true\n");
  ASSERT_TRUE(ok.errors.empty()) << ::testing::PrintToString(testing::lines(ok));
  EXPECT_TRUE(ok.site.db.synchronous_strict);
  EXPECT_FALSE(dir.load("[db]\nsynchronous = true\n").site.db.synchronous_strict);
}

TEST(Loader, SynchronousByDefaultWithTwoReplicas) {
  SiteDir dir;
  auto nodes = [](int n) {
    std::string text = "[db]\n";
    for (int i = 1; i <= n; ++i) {
      text += "[[db.node]]\nname = \"db-" + std::to_string(i) + "\"\npg = \"127.0.0.1:" +
              std::to_string(15431 + i) + "\"\nagent = \"127.0.0.1:" + std::to_string(18007 + i) + "\"\n";
    }
    return text;
  };
  LoadResult three = dir.load(nodes(3));
  ASSERT_TRUE(three.errors.empty()) << ::testing::PrintToString(testing::lines(three));
  EXPECT_TRUE(three.site.db.synchronous);
  EXPECT_FALSE(dir.load(nodes(2)).site.db.synchronous);  // one replica: writes would stop with it
  EXPECT_FALSE(dir.load("[db]\nsynchronous = false\n" + nodes(3).substr(5)).site.db.synchronous);
  LoadResult strict = dir.load("[db]\nsynchronous_strict = true\n" + nodes(3).substr(5));
  ASSERT_TRUE(strict.errors.empty()) << ::testing::PrintToString(testing::lines(strict));
  EXPECT_TRUE(strict.site.db.synchronous_strict);
}

TEST(Positions, RecordEveryKeyOfTheFile) {
  SiteDir dir;
  LoadResult result = dir.load(
      "[lb]\nretries = 1\n[lb.firewall]\nallow = [\"10.0.0.0/8\", \"::1\"]\n"
      "[[lb.node]]\nname = \"l\"\n  http = \"127.0.0.1:80\"\n");
  ASSERT_TRUE(result.ok());
  const Site& s = result.site;
  auto at = [&](const char* key) {
    auto it = s.positions.find(key);
    return it == s.positions.end()
               ? std::string("absent")
               : std::to_string(it->second.line) + ":" + std::to_string(it->second.column);
  };
  EXPECT_EQ(at("lb"), "1:2");
  EXPECT_EQ(at("lb.retries"), "2:1");
  EXPECT_EQ(at("lb.firewall"), "3:5");
  EXPECT_EQ(at("lb.firewall.allow"), "4:1");
  EXPECT_EQ(at("lb.firewall.allow[1]"), "4:24");
  EXPECT_EQ(at("lb.node[0]"), "5:1");
  EXPECT_EQ(at("lb.node[0].http"), "7:3");
  EXPECT_EQ(at("lb.health"), "absent");
  EXPECT_TRUE(s.has("lb.node[0].name"));
  EXPECT_FALSE(s.has("lb.node[0].https"));
}

TEST(Positions, ErrorAtRefusesAKeyPrecisely) {
  SiteDir dir;
  LoadResult result = dir.load(
      "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\n"
      "[[lb.node]]\nname = \"l\"\nhttp = \"127.0.0.1:80\"\n");
  ASSERT_TRUE(result.ok());
  const Site& s = result.site;
  EXPECT_EQ(s.errorAt("lb.vip", "not supported yet").toString(),
            dir.line(1, 5, "lb.vip", "not supported yet"));
  EXPECT_EQ(s.errorAt("lb.vip.interface", "not supported yet").toString(),
            dir.line(3, 1, "lb.vip.interface", "not supported yet"));
  // Absent keys fall back to their nearest parent, then to 0:0.
  EXPECT_EQ(s.errorAt("lb.node[0].https", "x").toString(), dir.line(4, 1, "lb.node[0].https", "x"));
  EXPECT_EQ(s.errorAt("lb.tls.cert", "x").toString(), dir.line(1, 2, "lb.tls.cert", "x"));
  EXPECT_EQ(s.errorAt("db.synchronous", "x").toString(), dir.line(0, 0, "db.synchronous", "x"));
}

TEST(ConfigErrorFormat, IsFileLineColumnKeyMessage) {
  ConfigError e{"examples/site.toml", 12, 8, "lb.node[1].http", "bad address 'x'"};
  EXPECT_EQ(e.toString(), "examples/site.toml:12:8: lb.node[1].http: bad address 'x'");
}

TEST(ConfigErrorFormat, ControlCharactersCannotForgeLines) {
  ConfigError e{"a\nb.toml", 1, 2, "web.node[0].name", "duplicate node name 'x\nsite.toml:9:9: y\x1b[2J'"};
  EXPECT_EQ(e.toString(), "a\\nb.toml:1:2: web.node[0].name: duplicate node name 'x\\nsite.toml:9:9: y\\x1b[2J'");
}

TEST(HostileFiles, DeepNestingIsRefusedBeforeParsing) {
  SiteDir dir;
  std::string deep = "[site]\nname = \"x\"\n[a";
  for (int i = 0; i < 50000; ++i) {
    deep += ".a";
  }
  deep += "]\n";
  LoadResult result = dir.load(deep);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].toString(), dir.line(3, 65, "", "nested deeper than 32 levels"));
  // Values: arrays and inline tables count too, and so do dotted keys inside them.
  result = dir.load("x = " + std::string(40, '[') + std::string(40, ']') + "\n");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_NE(result.errors[0].message.find("nested deeper"), std::string::npos);
  result = dir.load("x = {a = {b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h = 1}}\n");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_NE(result.errors[0].message.find("nested deeper"), std::string::npos);
}

TEST(HostileFiles, OrdinaryNestingStringsAndCommentsPass) {
  SiteDir dir;
  // Dots inside strings, comments and float values are not key segments.
  LoadResult result = dir.load(
      "# a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i\n"
      "[site]\nname = \"a.b\" # x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x\n"
      "state_dir = '''var'''\n"
      "[lb.health]\nrise = 2\n"
      "[[lb.node]]\nname = \"l\"\nhttp = \"127.0.0.1:9001\"\n");
  EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
}

TEST(HostileFiles, NonRegularFilesAreRefused) {
  LoadResult result = loadSiteFile("/dev/zero");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].toString(), "/dev/zero:0:0: : cannot read file: not a regular file");
}

TEST(HostileFiles, ManyNodesAreCheckedWithEveryClashFound) {
  // 5,000 web nodes on distinct addresses, then one more on the first one's address: the
  // clash check finds it without comparing every pair.
  SiteDir dir;
  std::string text = "[site]\nname = \"many\"\n";
  for (int i = 0; i < 5000; ++i) {
    text += "[[web.node]]\nname = \"w" + std::to_string(i) + "\"\nlisten = \"127.0." + std::to_string(i / 250) +
            "." + std::to_string(1 + i % 250) + ":9001\"\n";
  }
  text += "[[web.node]]\nname = \"late\"\nlisten = \"127.0.0.1:9001\"\n";
  LoadResult result = dir.load(text);
  ASSERT_FALSE(result.ok());
  bool clash = false;
  for (const ConfigError& e : result.errors) {
    clash = clash || e.message == "address 127.0.0.1:9001 is already used by web.node[0].listen";
  }
  EXPECT_TRUE(clash);
}

TEST(Example, TheDemoSiteLoads) {
  const std::filesystem::path source = FULCRUM_SOURCE_DIR;
  LoadResult result = loadSiteFile(source / "examples/site.toml");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(testing::lines(result));
  const Site& s = result.site;
  EXPECT_EQ(s.site.name, "www.foobar.com");
  EXPECT_EQ(s.site.state_dir, (source / "examples/var").lexically_normal());
  EXPECT_EQ(s.web.docroot, (source / "www").lexically_normal());
  EXPECT_EQ(s.web.app, "guestbook");
  EXPECT_EQ(s.lb.algorithm, "roundrobin");
  ASSERT_EQ(s.lb.nodes.size(), 1u);
  EXPECT_EQ(s.lb.nodes[0].name, "lb-01");
  EXPECT_EQ(s.lb.nodes[0].http, addr("127.0.0.1:8080"));
  EXPECT_EQ(s.lb.nodes[0].stats, addr("127.0.0.1:8404"));
  EXPECT_EQ(s.lb.nodes[0].db_write, addr("127.0.0.1:5000"));
  EXPECT_EQ(s.lb.nodes[0].db_read, addr("127.0.0.1:5001"));
  EXPECT_EQ(s.lb.nodes[0].https, addr("127.0.0.1:8443"));  // self-signed: no cert configured
  EXPECT_TRUE(s.lb.tls.cert.empty());
  EXPECT_FALSE(s.lb.vip.has_value());
  EXPECT_FALSE(s.lb.acme.has_value());
  ASSERT_EQ(s.web.nodes.size(), 3u);
  EXPECT_EQ(s.web.nodes[2].name, "web-03");
  EXPECT_EQ(s.web.nodes[2].listen, addr("127.0.0.1:9003"));
  ASSERT_EQ(s.db.nodes.size(), 3u);
  EXPECT_EQ(s.db.nodes[0].pg, addr("127.0.0.1:15432"));
  EXPECT_EQ(s.db.nodes[2].agent, addr("127.0.0.1:8010"));
  ASSERT_EQ(s.etcd.endpoints.size(), 1u);
  EXPECT_EQ(s.etcd.endpoints[0], addr("127.0.0.1:12379"));
  EXPECT_TRUE(s.etcd.managed);
}

}  // namespace
}  // namespace fulcrum::config
