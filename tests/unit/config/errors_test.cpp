// One row per kind of mistake a user can make in a topology file: each must produce exactly
// one error, at the right place, under the right key, with the right words.
#include <gtest/gtest.h>

#include <algorithm>

#include "site_fixture.h"

namespace fulcrum::config {
namespace {

using testing::SiteDir;

struct BadCase {
  const char* name;
  const char* toml;
  const char* key;
  uint32_t line;
  uint32_t column;
  const char* message;
};

std::ostream& operator<<(std::ostream& os, const BadCase& c) {
  return os << c.name;
}

class BadSite : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadSite, ReportsOneErrorAtTheKey) {
  const BadCase& c = GetParam();
  SiteDir site;
  LoadResult result = site.load(c.toml);
  ASSERT_EQ(result.errors.size(), 1u) << ::testing::PrintToString(testing::lines(result));
  EXPECT_EQ(result.errors[0].toString(), site.line(c.line, c.column, c.key, c.message));
}

#define LB_NODE_HTTP(addr) "[[lb.node]]\nname = \"lb-01\"\nhttp = \"" addr "\"\n"

const BadCase kTypeCases[] = {
    {"site_name_integer", "[site]\nname = 5\n", "site.name", 2, 1, "expected a string, got an integer"},
    {"retries_string", "[lb]\nretries = \"2\"\n", "lb.retries", 2, 1, "expected an integer, got a string"},
    {"retries_float", "[lb]\nretries = 2.0\n", "lb.retries", 2, 1, "expected an integer, got a float"},
    {"hsts_string", "[lb.tls]\nhsts = \"yes\"\n", "lb.tls.hsts", 2, 1, "expected a boolean, got a string"},
    {"lb_integer", "lb = 5\n", "lb", 1, 1, "expected a table, got an integer"},
    {"lb_node_single_table", "[lb.node]\nname = \"a\"\n", "lb.node", 1, 5,
     "expected an array of tables ([[lb.node]]), got a table"},
    {"allow_string", "[lb.firewall]\nallow = \"10.0.0.0/8\"\n", "lb.firewall.allow", 2, 1,
     "expected an array, got a string"},
    {"allow_element_integer", "[lb.firewall]\nallow = [1]\n", "lb.firewall.allow[0]", 2, 10,
     "expected a string, got an integer"},
    {"managed_integer", "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\nmanaged = 1\n", "etcd.managed", 3, 1,
     "expected a boolean, got an integer"},
    {"db_node_element_integer", "[db]\nnode = [1]\n", "db.node[0]", 2, 9, "expected a table, got an integer"},
    {"site_name_date", "[site]\nname = 1979-05-27\n", "site.name", 2, 1, "expected a string, got a date"},
    {"health_string", "[lb]\nhealth = \"x\"\n", "lb.health", 2, 1, "expected a table, got a string"},
    {"endpoint_boolean", "[etcd]\nendpoints = [true]\n", "etcd.endpoints[0]", 2, 14,
     "expected a string, got a boolean"},
    {"backup_string", "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\nbackup = \"no\"\n",
     "web.node[0].backup", 4, 1, "expected a boolean, got a string"},
};
INSTANTIATE_TEST_SUITE_P(WrongType, BadSite, ::testing::ValuesIn(kTypeCases),
                         [](const auto& info) { return std::string(info.param.name); });

const BadCase kAddressCases[] = {
    {"host_name", LB_NODE_HTTP("localhost:8080"), "lb.node[0].http", 3, 1,
     "bad address 'localhost:8080': host names are not allowed, use an IP address"},
    {"no_port", LB_NODE_HTTP("127.0.0.1"), "lb.node[0].http", 3, 1,
     "bad address '127.0.0.1': expected IP:port, e.g. 127.0.0.1:8080"},
    {"ipv6_without_brackets", LB_NODE_HTTP("::1:8080"), "lb.node[0].http", 3, 1,
     "bad address '::1:8080': an IPv6 address needs brackets, e.g. [::1]:8080"},
    {"ipv6_no_colon", LB_NODE_HTTP("[::1]8080"), "lb.node[0].http", 3, 1,
     "bad address '[::1]8080': expected [IPv6]:port, e.g. [::1]:8080"},
    {"ipv4_in_brackets", LB_NODE_HTTP("[127.0.0.1]:80"), "lb.node[0].http", 3, 1,
     "bad address '[127.0.0.1]:80': '127.0.0.1' is not an IPv6 address"},
    {"ipv6_unclosed", LB_NODE_HTTP("[::1"), "lb.node[0].http", 3, 1,
     "bad address '[::1': missing ']' after the IPv6 address"},
    {"short_ipv4", LB_NODE_HTTP("1.2.3:80"), "lb.node[0].http", 3, 1,
     "bad address '1.2.3:80': '1.2.3' is not an IP address"},
    {"long_ipv4", LB_NODE_HTTP("1.2.3.4.5:80"), "lb.node[0].http", 3, 1,
     "bad address '1.2.3.4.5:80': '1.2.3.4.5' is not an IP address"},
    {"port_name", LB_NODE_HTTP("127.0.0.1:http"), "lb.node[0].http", 3, 1,
     "bad address '127.0.0.1:http': port 'http' is not a number"},
    {"port_negative", LB_NODE_HTTP("127.0.0.1:-1"), "lb.node[0].http", 3, 1,
     "bad address '127.0.0.1:-1': port '-1' is not a number"},
    {"port_missing", LB_NODE_HTTP("127.0.0.1:"), "lb.node[0].http", 3, 1,
     "bad address '127.0.0.1:': missing port"},
    {"empty", LB_NODE_HTTP(""), "lb.node[0].http", 3, 1,
     "bad address '': expected IP:port, e.g. 127.0.0.1:8080"},
    {"port_too_big", LB_NODE_HTTP("127.0.0.1:70000"), "lb.node[0].http", 3, 1,
     "port out of range in '127.0.0.1:70000': must be 1..65535"},
    {"port_far_too_big", LB_NODE_HTTP("127.0.0.1:99999999999"), "lb.node[0].http", 3, 1,
     "port out of range in '127.0.0.1:99999999999': must be 1..65535"},
    {"port_zero", LB_NODE_HTTP("127.0.0.1:0"), "lb.node[0].http", 3, 1,
     "port 0 not allowed in '127.0.0.1:0': a topology file needs fixed ports"},
    {"port_zero_ipv6", LB_NODE_HTTP("[::1]:0"), "lb.node[0].http", 3, 1,
     "port 0 not allowed in '[::1]:0': a topology file needs fixed ports"},
    {"optional_https", "[[lb.node]]\nname = \"a\"\nhttp = \"127.0.0.1:80\"\nhttps = \"x\"\n",
     "lb.node[0].https", 4, 1, "bad address 'x': expected IP:port, e.g. 127.0.0.1:8080"},
    {"web_listen_port_zero", "[[web.node]]\nname = \"web-01\"\nlisten = \"0.0.0.0:0\"\n",
     "web.node[0].listen", 3, 1, "port 0 not allowed in '0.0.0.0:0': a topology file needs fixed ports"},
    {"db_agent_port",
     "[[db.node]]\nname = \"db-01\"\npg = \"127.0.0.1:15432\"\nagent = \"127.0.0.1:65536\"\n",
     "db.node[0].agent", 4, 1, "port out of range in '127.0.0.1:65536': must be 1..65535"},
    {"etcd_endpoint_name", "[etcd]\nendpoints = [\"127.0.0.1:2379\", \"etcd:2379\"]\n", "etcd.endpoints[1]",
     2, 32, "bad address 'etcd:2379': host names are not allowed, use an IP address"},
    {"prometheus_name", "[monitoring]\nprometheus = \"prom:9090\"\n", "monitoring.prometheus", 2, 1,
     "bad address 'prom:9090': host names are not allowed, use an IP address"},
    {"alertmanager_no_port", "[monitoring]\nalertmanager = \"127.0.0.1\"\n", "monitoring.alertmanager", 2, 1,
     "bad address '127.0.0.1': expected IP:port, e.g. 127.0.0.1:8080 (or \"\" for none)"},
};
INSTANTIATE_TEST_SUITE_P(BadAddress, BadSite, ::testing::ValuesIn(kAddressCases),
                         [](const auto& info) { return std::string(info.param.name); });

const BadCase kRangeCases[] = {
    {"retries_high", "[lb]\nretries = 11\n", "lb.retries", 2, 1, "must be between 0 and 10, got 11"},
    {"monitoring_interval_low", "[monitoring]\ninterval_ms = 10\n", "monitoring.interval_ms", 2, 1,
     "must be between 100 and 600000, got 10"},
    {"retries_negative", "[lb]\nretries = -1\n", "lb.retries", 2, 1, "must not be negative, got -1"},
    {"retries_huge", "[lb]\nretries = 9223372036854775807\n", "lb.retries", 2, 1,
     "must be between 0 and 10, got 9223372036854775807"},
    {"interval_zero", "[lb.health]\ninterval_ms = 0\n", "lb.health.interval_ms", 2, 1,
     "must be between 1 and 86400000, got 0"},
    {"interval_over_a_day", "[lb.health]\ninterval_ms = 86400001\n", "lb.health.interval_ms", 2, 1,
     "must be between 1 and 86400000, got 86400001"},
    {"health_timeout_zero", "[lb.health]\ntimeout_ms = 0\n", "lb.health.timeout_ms", 2, 1,
     "must be between 1 and 86400000, got 0"},
    {"rise_zero", "[lb.health]\nrise = 0\n", "lb.health.rise", 2, 1, "must be between 1 and 100, got 0"},
    {"fall_high", "[lb.health]\nfall = 101\n", "lb.health.fall", 2, 1, "must be between 1 and 100, got 101"},
    {"connect_zero", "[lb.timeouts]\nconnect_ms = 0\n", "lb.timeouts.connect_ms", 2, 1,
     "must be between 1 and 86400000, got 0"},
    {"client_negative", "[lb.timeouts]\nclient_ms = -5\n", "lb.timeouts.client_ms", 2, 1,
     "must not be negative, got -5"},
    {"server_high", "[lb.timeouts]\nserver_ms = 100000000\n", "lb.timeouts.server_ms", 2, 1,
     "must be between 1 and 86400000, got 100000000"},
    {"http_request_zero", "[lb.timeouts]\nhttp_request_ms = 0\n", "lb.timeouts.http_request_ms", 2, 1,
     "must be between 1 and 86400000, got 0"},
    {"header_bytes_low", "[lb.limits]\nmax_header_bytes = 1023\n", "lb.limits.max_header_bytes", 2, 1,
     "must be between 1024 and 1048576, got 1023"},
    {"header_bytes_high", "[lb.limits]\nmax_header_bytes = 1048577\n", "lb.limits.max_header_bytes", 2, 1,
     "must be between 1024 and 1048576, got 1048577"},
    {"max_connections_zero", "[lb.limits]\nmax_connections = 0\n", "lb.limits.max_connections", 2, 1,
     "must be between 1 and 10000000, got 0"},
    {"body_bytes_negative", "[lb.limits]\nmax_body_bytes = -1\n", "lb.limits.max_body_bytes", 2, 1,
     "must not be negative, got -1"},
    {"rate_negative", "[lb.limits]\nrate_per_ip = -1\n", "lb.limits.rate_per_ip", 2, 1,
     "must not be negative, got -1"},
    {"vrid_zero", "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\nvrid = 0\n", "lb.vip.vrid",
     4, 1, "must be between 1 and 255, got 0"},
    {"vrid_high", "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\nvrid = 256\n", "lb.vip.vrid",
     4, 1, "must be between 1 and 255, got 256"},
    {"advert_low", "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\nadvert_interval_ms = 5\n",
     "lb.vip.advert_interval_ms", 4, 1, "must be between 10 and 40950, got 5"},
    {"preempt_delay_high", "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\npreempt_delay_ms = 3600001\n",
     "lb.vip.preempt_delay_ms", 4, 1, "must be between 0 and 3600000, got 3600001"},
    {"unicast_peer_name", "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\nunicast_peers = [\"lb-02\"]\n",
     "lb.vip.unicast_peers[0]", 4, 18, "bad address 'lb-02': use an IP address"},
    {"unicast_peer_family", "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\nunicast_peers = [\"10.0.0.2\", \"fd00::2\"]\n",
     "lb.vip.unicast_peers[1]", 4, 30, "'fd00::2' is not of the virtual IP's family"},
    {"lb_threads_high", "[[lb.node]]\nname = \"a\"\nhttp = \"127.0.0.1:80\"\nthreads = 257\n",
     "lb.node[0].threads", 4, 1, "must be between 0 and 256, got 257"},
    {"priority_zero", "[[lb.node]]\nname = \"a\"\nhttp = \"127.0.0.1:80\"\npriority = 0\n",
     "lb.node[0].priority", 4, 1, "must be between 1 and 254, got 0"},
    {"priority_255", "[[lb.node]]\nname = \"a\"\nhttp = \"127.0.0.1:80\"\npriority = 255\n",
     "lb.node[0].priority", 4, 1, "must be between 1 and 254, got 255"},
    {"weight_zero", "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\nweight = 0\n",
     "web.node[0].weight", 4, 1, "must be between 1 and 256, got 0"},
    {"weight_high", "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\nweight = 257\n",
     "web.node[0].weight", 4, 1, "must be between 1 and 256, got 257"},
    {"web_threads_negative", "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\nthreads = -1\n",
     "web.node[0].threads", 4, 1, "must not be negative, got -1"},
    {"leader_ttl_low", "[db]\nleader_ttl_ms = 999\n", "db.leader_ttl_ms", 2, 1,
     "must be between 1000 and 600000, got 999"},
    {"leader_ttl_high", "[db]\nleader_ttl_ms = 600001\n", "db.leader_ttl_ms", 2, 1,
     "must be between 1000 and 600000, got 600001"},
    {"max_lag_negative", "[db]\nmax_lag_bytes = -1\n", "db.max_lag_bytes", 2, 1,
     "must not be negative, got -1"},
    {"etcd_members_even", "[etcd]\nendpoints = [\"127.0.0.1:2379\", \"127.0.0.2:2379\"]\n", "etcd.endpoints",
     2, 1,
     "2 endpoints make a managed etcd cluster of 2 members, which works while 2 are up (a quorum), so it "
     "survives no more failures (0) than one member fewer: list 1, 3, 5 or 7 endpoints (3 survive one "
     "failure, 5 two)"},
    {"etcd_members_many",
     "[etcd]\nendpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\", \"127.0.0.1:4\", "
     "\"127.0.0.1:5\", "
     "\"127.0.0.1:6\", \"127.0.0.1:7\", \"127.0.0.1:8\", \"127.0.0.1:9\"]\n",
     "etcd.endpoints", 2, 1,
     "9 endpoints make a managed etcd cluster of 9 members, which works while 5 are up (a quorum), and every "
     "write waits for that many: list 1, 3, 5 or 7 endpoints (3 survive one failure, 5 two)"},
};
INSTANTIATE_TEST_SUITE_P(OutOfRange, BadSite, ::testing::ValuesIn(kRangeCases),
                         [](const auto& info) { return std::string(info.param.name); });

const BadCase kChoiceCases[] = {
    {"algorithm_typo", "[lb]\nalgorithm = \"roundrobbin\"\n", "lb.algorithm", 2, 1,
     "unknown algorithm 'roundrobbin'; did you mean 'roundrobin'?"},
    {"algorithm_close", "[lb]\nalgorithm = \"leastcon\"\n", "lb.algorithm", 2, 1,
     "unknown algorithm 'leastcon'; did you mean 'leastconn'?"},
    {"hash_balance_factor_small", "[lb]\nalgorithm = \"uri\"\nhash_balance_factor = 50\n",
     "lb.hash_balance_factor", 3, 1,
     "must be 0 (off) or a percentage of at least 100 (150: a server takes at most 1.5 times its share), got 50"},
    {"slow_start_hashing", "[lb]\nalgorithm = \"source\"\nslow_start_ms = 5000\n", "lb.slow_start_ms", 3, 1,
     "ramps weights up for roundrobin, leastconn and random2; \"source\" keeps its own shares (a hashing or static "
     "algorithm would move keys at every step)"},
    {"outlier_slow_factor_one", "[lb.outlier]\nslow_factor = 1\n", "lb.outlier.slow_factor", 2, 1,
     "must be 0 (off) or at least 2 (a server slower than that many times its peers' median), got 1"},
    {"outlier_max_below_base", "[lb.outlier]\nbase_ejection_ms = 60000\nmax_ejection_ms = 30000\n",
     "lb.outlier.max_ejection_ms", 3, 1, "max_ejection_ms (30000) must be at least base_ejection_ms (60000)"},
    {"outlier_judges_nothing", "[lb.outlier]\nconsecutive_5xx = 0\nconsecutive_failures = 0\n", "lb.outlier",
     1, 5,
     "judges nothing: consecutive_5xx, consecutive_failures and slow_factor are all 0 (set enabled = false "
     "to turn it off)"},
    {"outlier_percent_high", "[lb.outlier]\nmax_ejection_percent = 101\n", "lb.outlier.max_ejection_percent",
     2, 1, "must be between 0 and 100, got 101"},
    {"outlier_unknown_key", "[lb.outlier]\nconsecutive_500 = 3\n", "lb.outlier.consecutive_500", 2, 1,
     "unknown key 'consecutive_500'; did you mean 'consecutive_5xx'?"},
    {"retry_budget_percent_high", "[lb]\nretry_budget_percent = 150\n", "lb.retry_budget_percent", 2, 1,
     "must be between 0 and 100, got 150"},
    {"hash_balance_factor_not_hashing", "[lb]\nalgorithm = \"leastconn\"\nhash_balance_factor = 150\n",
     "lb.hash_balance_factor", 3, 1,
     "bounds the loads of consistent hashing: it needs algorithm \"source\" or \"uri\", not \"leastconn\""},
    {"sticky_unknown", "[lb]\nsticky = \"ip\"\n", "lb.sticky", 2, 1,
     "unknown sticky mode 'ip'; expected one of: none, cookie"},
    {"sticky_cookie_bad", "[lb]\nsticky = \"cookie\"\nsticky_cookie = \"a=b\"\n", "lb.sticky_cookie", 3, 1,
     "must be 1 to 64 letters, digits, '_', '-' or '.', got 'a=b'"},
    {"max_conn_negative", "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:1\"\nmax_conn = -1\n",
     "web.node[0].max_conn", 4, 1, "must not be negative, got -1"},
    {"queue_timeout_huge", "[lb]\nqueue_timeout_ms = 3600001\n", "lb.queue_timeout_ms", 2, 1,
     "must be between 0 and 3600000, got 3600001"},
    {"algorithm_unknown", "[lb]\nalgorithm = \"fastest\"\n", "lb.algorithm", 2, 1,
     "unknown algorithm 'fastest'; expected one of: roundrobin, static-rr, leastconn, source, uri, random2, "
     "maglev"},
    {"app_unknown", "[web]\napp = \"wordpress\"\n", "web.app", 2, 1,
     "unknown app 'wordpress'; expected one of: guestbook, none"},
    {"app_case", "[web]\napp = \"Guestbook\"\n", "web.app", 2, 1,
     "unknown app 'Guestbook'; did you mean 'guestbook'?"},
    {"acme_challenge",
     "[lb.acme]\ndirectory = \"https://ca.test/dir\"\ndomains = [\"a.test\"]\nchallenge = \"dns-01\"\n",
     "lb.acme.challenge", 4, 1, "must be \"http-01\" or \"tls-alpn-01\""},
};
const BadCase kProxyProtocolCases[] = {
    {"accept_proxy_string", "[lb]\naccept_proxy = \"yes\"\n", "lb.accept_proxy", 2, 1,
     "expected a boolean, got a string"},
    {"accept_proxy_from_without_accept_proxy", "[lb]\naccept_proxy_from = [\"10.0.0.0/8\"]\n",
     "lb.accept_proxy_from", 2, 1, "names who may send a PROXY header: it needs accept_proxy = true"},
    {"accept_proxy_from_bad_cidr", "[lb]\naccept_proxy = true\naccept_proxy_from = [\"10.0.0.1/8\"]\n",
     "lb.accept_proxy_from[0]", 3, 22,
     "bad CIDR '10.0.0.1/8': host bits are set; did you mean '10.0.0.0/8'?"},
    {"send_proxy_v3", "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\nsend_proxy = \"v3\"\n",
     "web.node[0].send_proxy", 4, 1, "unknown PROXY protocol version 'v3'; did you mean 'v1'?"},
    {"send_proxy_bool", "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\nsend_proxy = true\n",
     "web.node[0].send_proxy", 4, 1, "expected a string, got a boolean"},
};
INSTANTIATE_TEST_SUITE_P(ProxyProtocol, BadSite, ::testing::ValuesIn(kProxyProtocolCases),
                         [](const auto& info) { return std::string(info.param.name); });

const BadCase kLogCases[] = {
    {"access_log_unknown", "[lb]\naccess_log = \"jsn\"\n", "lb.access_log", 2, 1,
     "unknown access_log format 'jsn'; did you mean 'json'?"},
    {"access_log_bool", "[web]\naccess_log = false\n", "web.access_log", 2, 1,
     "expected a string, got a boolean"},
    {"access_log_file_integer", "[web]\naccess_log_file = 3\n", "web.access_log_file", 2, 1,
     "expected a string, got an integer"},
    {"log_max_bytes_tiny", "[site]\nlog_max_bytes = 100\n", "site.log_max_bytes", 2, 1,
     "must be 0 (no rotation by size) or at least 4096 bytes"},
    {"log_keep_zero", "[site]\nlog_keep = 0\n", "site.log_keep", 2, 1, "must be between 1 and 1000, got 0"},
};
INSTANTIATE_TEST_SUITE_P(Logs, BadSite, ::testing::ValuesIn(kLogCases),
                         [](const auto& info) { return std::string(info.param.name); });

INSTANTIATE_TEST_SUITE_P(UnknownChoice, BadSite, ::testing::ValuesIn(kChoiceCases),
                         [](const auto& info) { return std::string(info.param.name); });

const BadCase kCidrCases[] = {
    {"host_bits", "[lb.firewall]\nallow = [\"10.0.0.1/8\"]\n", "lb.firewall.allow[0]", 2, 10,
     "bad CIDR '10.0.0.1/8': host bits are set; did you mean '10.0.0.0/8'?"},
    {"ipv4_prefix_33", "[lb.firewall]\nallow = [\"10.0.0.0/33\"]\n", "lb.firewall.allow[0]", 2, 10,
     "bad CIDR '10.0.0.0/33': prefix length must be 0..32 for IPv4"},
    {"ipv6_prefix_129", "[lb.firewall]\nallow = [\"::1/129\"]\n", "lb.firewall.allow[0]", 2, 10,
     "bad CIDR '::1/129': prefix length must be 0..128 for IPv6"},
    {"host_name", "[lb.firewall]\nallow = [\"example.com/8\"]\n", "lb.firewall.allow[0]", 2, 10,
     "bad CIDR 'example.com/8': host names are not allowed, use an IP address"},
    {"empty_prefix", "[lb.firewall]\nallow = [\"10.0.0.0/\"]\n", "lb.firewall.allow[0]", 2, 10,
     "bad CIDR '10.0.0.0/': prefix length must be 0..32 for IPv4"},
    {"ipv6_host_bits", "[lb.firewall]\ndeny = [\"fe80::1/64\"]\n", "lb.firewall.deny[0]", 2, 9,
     "bad CIDR 'fe80::1/64': host bits are set; did you mean 'fe80::/64'?"},
    {"second_element", "[lb.firewall]\nallow = [\"10.0.0.0/8\", \"300.0.0.0/8\"]\n", "lb.firewall.allow[1]",
     2, 24, "bad CIDR '300.0.0.0/8': '300.0.0.0' is not an IP address"},
    {"empty", "[lb.firewall]\nallow = [\"\"]\n", "lb.firewall.allow[0]", 2, 10,
     "bad CIDR '': expected ADDRESS/PREFIX, e.g. 10.0.0.0/8"},
    {"vip_without_prefix", "[lb.vip]\naddress = \"10.77.0.100\"\ninterface = \"eth0\"\n", "lb.vip.address", 2,
     1, "bad address '10.77.0.100': expected ADDRESS/PREFIX, e.g. 10.77.0.100/24"},
    {"vip_prefix_33", "[lb.vip]\naddress = \"10.77.0.100/33\"\ninterface = \"eth0\"\n", "lb.vip.address", 2,
     1, "bad address '10.77.0.100/33': prefix length must be 1..32 for IPv4"},
    {"vip_host_name", "[lb.vip]\naddress = \"vip.example/24\"\ninterface = \"eth0\"\n", "lb.vip.address", 2,
     1, "bad address 'vip.example/24': host names are not allowed, use an IP address"},
};
INSTANTIATE_TEST_SUITE_P(BadCidr, BadSite, ::testing::ValuesIn(kCidrCases),
                         [](const auto& info) { return std::string(info.param.name); });

const BadCase kStringCases[] = {
    {"site_name_empty", "[site]\nname = \"\"\n", "site.name", 2, 1, "must not be empty"},
    {"site_name_slash", "[site]\nname = \"a/b\"\n", "site.name", 2, 1,
     "must be letters, digits, '-', '_' and '.', not starting with '.' or '-'"},
    {"site_name_dotdot", "[site]\nname = \"..\"\n", "site.name", 2, 1,
     "must be letters, digits, '-', '_' and '.', not starting with '.' or '-'"},
    {"site_name_newline", "[site]\nname = \"a\\nb\"\n", "site.name", 2, 1,
     "must be letters, digits, '-', '_' and '.', not starting with '.' or '-'"},
    {"site_name_nul", "[site]\nname = \"a\\u0000b\"\n", "site.name", 2, 1,
     "must be letters, digits, '-', '_' and '.', not starting with '.' or '-'"},
    {"site_name_long", "[site]\nname = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n", "site.name", 2, 1,
     "is 65 bytes; at most 64 are allowed"},
    {"state_dir_empty", "[site]\nstate_dir = \"\"\n", "site.state_dir", 2, 1, "must not be empty"},
    {"docroot_empty", "[web]\ndocroot = \"\"\n", "web.docroot", 2, 1, "must not be empty"},
    {"health_path_relative", "[lb.health]\npath = \"healthz\"\n", "lb.health.path", 2, 1,
     "must be empty (TCP check) or a URL path starting with '/', got 'healthz'"},
    {"node_name_space", "[[web.node]]\nname = \"web 1\"\nlisten = \"127.0.0.1:9001\"\n", "web.node[0].name",
     2, 1,
     "bad node name 'web 1': use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"},
    {"node_name_empty", "[[web.node]]\nname = \"\"\nlisten = \"127.0.0.1:9001\"\n", "web.node[0].name", 2, 1,
     "bad node name '': use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"},
    {"node_name_dash", "[[db.node]]\nname = \"-db\"\npg = \"127.0.0.1:15432\"\nagent = \"127.0.0.1:8008\"\n",
     "db.node[0].name", 2, 1,
     "bad node name '-db': use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"},
    {"database_dash", "[db]\ndatabase = \"my-db\"\n", "db.database", 2, 1,
     "bad name 'my-db': use 1-63 letters, digits or '_', not starting with a digit"},
    {"user_digit", "[db]\nuser = \"1user\"\n", "db.user", 2, 1,
     "bad name '1user': use 1-63 letters, digits or '_', not starting with a digit"},
    {"interface_empty", "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"\"\n", "lb.vip.interface", 3,
     1, "bad interface name ''"},
    {"interface_long", "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"averyveryverylongname\"\n",
     "lb.vip.interface", 3, 1, "bad interface name 'averyveryverylongname'"},
};
INSTANTIATE_TEST_SUITE_P(BadString, BadSite, ::testing::ValuesIn(kStringCases),
                         [](const auto& info) { return std::string(info.param.name); });

const BadCase kUnknownKeyCases[] = {
    {"lb_algorithm_typo", "[lb]\nalgoritm = \"maglev\"\n", "lb.algoritm", 2, 1,
     "unknown key 'algoritm'; did you mean 'algorithm'?"},
    {"section_typo", "[sitee]\n", "sitee", 1, 2, "unknown key 'sitee'; did you mean 'site'?"},
    {"no_close_match", "[site]\nzzz = 1\n", "site.zzz", 2, 1,
     "unknown key 'zzz'; expected one of: name, state_dir, log_max_bytes, log_keep"},
    {"root_key", "top = 1\n", "top", 1, 1,
     "unknown key 'top'; expected one of: site, lb, web, db, etcd, monitoring, security"},
    {"health_typo", "[lb.health]\nintervall_ms = 5\n", "lb.health.intervall_ms", 2, 1,
     "unknown key 'intervall_ms'; did you mean 'interval_ms'?"},
    {"web_node_typo", "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9001\"\ntread = 2\n",
     "web.node[0].tread", 4, 1, "unknown key 'tread'; did you mean 'threads'?"},
    {"case", "[db]\nNode = []\n", "db.Node", 2, 1, "unknown key 'Node'; did you mean 'node'?"},
    {"plural_table", "[lb.nodes]\n", "lb.nodes", 1, 5, "unknown key 'nodes'; did you mean 'node'?"},
    {"lb_node_typo", "[[lb.node]]\nname = \"a\"\nhttp = \"127.0.0.1:80\"\nstat = \"127.0.0.1:81\"\n",
     "lb.node[0].stat", 4, 1, "unknown key 'stat'; did you mean 'stats'?"},
    {"tls_typo", "[lb.tls]\nredirect = true\n", "lb.tls.redirect", 2, 1,
     "unknown key 'redirect'; did you mean 'redirect_http'?"},
};
INSTANTIATE_TEST_SUITE_P(UnknownKey, BadSite, ::testing::ValuesIn(kUnknownKeyCases),
                         [](const auto& info) { return std::string(info.param.name); });

const BadCase kMissingCases[] = {
    {"lb_node_http", "[[lb.node]]\nname = \"lb-01\"\n", "lb.node[0].http", 1, 1, "required key is missing"},
    {"web_node_name", "[[web.node]]\nlisten = \"127.0.0.1:9001\"\n", "web.node[0].name", 1, 1,
     "required key is missing"},
    {"db_node_agent", "[[db.node]]\nname = \"db-01\"\npg = \"127.0.0.1:15432\"\n", "db.node[0].agent", 1, 1,
     "required key is missing"},
    {"second_node",
     "[[db.node]]\nname = \"db-01\"\npg = \"127.0.0.1:15432\"\nagent = \"127.0.0.1:8008\"\n"
     "[[db.node]]\nname = \"db-02\"\nagent = \"127.0.0.1:8009\"\n",
     "db.node[1].pg", 5, 1, "required key is missing"},
    {"etcd_endpoints", "[etcd]\nmanaged = false\n", "etcd.endpoints", 1, 2, "required key is missing"},
    {"etcd_endpoints_empty", "[etcd]\nendpoints = []\n", "etcd.endpoints", 2, 1,
     "must list at least one IP:port"},
    {"vip_interface", "[lb.vip]\naddress = \"10.77.0.100/24\"\n", "lb.vip.interface", 1, 5,
     "required key is missing"},
    {"tls_key", "[lb.tls]\ncert = \"c.pem\"\n", "lb.tls.key", 1, 5, "must be set when lb.tls.cert is set"},
    {"tls_cert", "[lb.tls]\nkey = \"k.pem\"\n", "lb.tls.cert", 1, 5, "must be set when lb.tls.key is set"},
};
INSTANTIATE_TEST_SUITE_P(Missing, BadSite, ::testing::ValuesIn(kMissingCases),
                         [](const auto& info) { return std::string(info.param.name); });

const BadCase kClashCases[] = {
    {"name_across_roles",
     "[[lb.node]]\nname = \"n1\"\nhttp = \"127.0.0.1:80\"\n[[web.node]]\nname = \"n1\"\nlisten = "
     "\"127.0.0.1:81\"\n",
     "web.node[0].name", 5, 1, "duplicate node name 'n1': already used by lb.node[0]"},
    {"name_same_role",
     "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:81\"\n[[web.node]]\nname = \"w\"\nlisten = "
     "\"127.0.0.1:82\"\n",
     "web.node[1].name", 5, 1, "duplicate node name 'w': already used by web.node[0]"},
    {"same_listen",
     "[[web.node]]\nname = \"a\"\nlisten = \"127.0.0.1:9001\"\n[[web.node]]\nname = \"b\"\nlisten = "
     "\"127.0.0.1:9001\"\n",
     "web.node[1].listen", 6, 1, "address 127.0.0.1:9001 is already used by web.node[0].listen"},
    {"ipv4_wildcard",
     "[[lb.node]]\nname = \"l\"\nhttp = \"0.0.0.0:9001\"\n[[web.node]]\nname = \"w\"\nlisten = "
     "\"127.0.0.1:9001\"\n",
     "web.node[0].listen", 6, 1,
     "address 127.0.0.1:9001 clashes with 0.0.0.0:9001 (lb.node[0].http): same port, and a wildcard address "
     "covers "
     "both"},
    {"ipv6_wildcard_covers_ipv4",
     "[[lb.node]]\nname = \"l\"\nhttp = \"[::]:9001\"\n[[web.node]]\nname = \"w\"\nlisten = "
     "\"127.0.0.1:9001\"\n",
     "web.node[0].listen", 6, 1,
     "address 127.0.0.1:9001 clashes with [::]:9001 (lb.node[0].http): same port, and a wildcard address "
     "covers "
     "both"},
    {"within_one_node", "[[lb.node]]\nname = \"l\"\nhttp = \"127.0.0.1:80\"\nstats = \"127.0.0.1:80\"\n",
     "lb.node[0].stats", 4, 1, "address 127.0.0.1:80 is already used by lb.node[0].http"},
    {"db_agent_vs_lb_stats",
     "[[lb.node]]\nname = \"l\"\nhttp = \"127.0.0.1:80\"\nstats = \"127.0.0.1:8008\"\n"
     "[[db.node]]\nname = \"d\"\npg = \"127.0.0.1:15432\"\nagent = \"127.0.0.1:8008\"\n",
     "db.node[0].agent", 8, 1, "address 127.0.0.1:8008 is already used by lb.node[0].stats"},
    {"managed_etcd_vs_pg",
     "[[db.node]]\nname = \"d\"\npg = \"127.0.0.1:2379\"\nagent = \"127.0.0.1:8008\"\n"
     "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\n",
     "etcd.endpoints[0]", 6, 14, "address 127.0.0.1:2379 is already used by db.node[0].pg"},
    {"ipv6_same", "[[lb.node]]\nname = \"l\"\nhttp = \"[::1]:80\"\ndb_read = \"[::1]:80\"\n",
     "lb.node[0].db_read", 4, 1, "address [::1]:80 is already used by lb.node[0].http"},
    // A wildcard after specific addresses clashes with the first of them.
    {"wildcard_after_specific",
     "[[web.node]]\nname = \"a\"\nlisten = \"127.0.0.2:9001\"\n[[web.node]]\nname = \"b\"\nlisten = "
     "\"[::1]:9001\"\n[[web.node]]\nname = \"c\"\nlisten = \"0.0.0.0:9001\"\n",
     "web.node[2].listen", 9, 1,
     "address 0.0.0.0:9001 clashes with 127.0.0.2:9001 (web.node[0].listen): same port, and a wildcard address "
     "covers both"},
    {"ipv6_wildcard_after_ipv6",
     "[[web.node]]\nname = \"a\"\nlisten = \"127.0.0.1:9002\"\n[[web.node]]\nname = \"b\"\nlisten = "
     "\"[::1]:9001\"\n[[web.node]]\nname = \"c\"\nlisten = \"[::]:9001\"\n",
     "web.node[2].listen", 9, 1,
     "address [::]:9001 clashes with [::1]:9001 (web.node[1].listen): same port, and a wildcard address "
     "covers both"},
    {"prometheus_vs_web",
     "[[web.node]]\nname = \"w\"\nlisten = \"127.0.0.1:9090\"\n[monitoring]\nprometheus = \"127.0.0.1:9090\"\n",
     "monitoring.prometheus", 5, 1, "address 127.0.0.1:9090 is already used by web.node[0].listen"},
    // Defaults clash too: the error sits at the section that brought them in.
    {"default_alertmanager_vs_lb_stats",
     "[[lb.node]]\nname = \"l\"\nhttp = \"127.0.0.1:80\"\nstats = \"127.0.0.1:9093\"\n[monitoring]\n",
     "monitoring.alertmanager", 5, 2, "address 127.0.0.1:9093 is already used by lb.node[0].stats"},
};
INSTANTIATE_TEST_SUITE_P(Clash, BadSite, ::testing::ValuesIn(kClashCases),
                         [](const auto& info) { return std::string(info.param.name); });

// Near misses of the rules above that must load cleanly.
class GoodSite : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(GoodSite, Loads) {
  SiteDir site;
  LoadResult result = site.load(GetParam().second);
  EXPECT_TRUE(result.ok()) << ::testing::PrintToString(testing::lines(result));
}

const std::pair<const char*, const char*> kGoodCases[] = {
    {"v4_wildcard_v6_loopback",
     "[[lb.node]]\nname = \"l\"\nhttp = \"0.0.0.0:80\"\n[[web.node]]\nname = \"w\"\nlisten = \"[::1]:80\"\n"},
    {"same_port_other_ip",
     "[[lb.node]]\nname = \"l\"\nhttp = \"127.0.0.1:80\"\n[[web.node]]\nname = \"w\"\nlisten = "
     "\"127.0.0.2:80\"\n"},
    {"unmanaged_etcd_may_share",
     "[[db.node]]\nname = \"d\"\npg = \"127.0.0.1:2379\"\nagent = \"127.0.0.1:8008\"\n"
     "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\nmanaged = false\n"},
    {"cidrs",
     "[lb.firewall]\nallow = [\"10.0.0.0/8\", \"::1/128\", \"192.168.1.7\", \"0.0.0.0/0\", \"::/0\"]\n"},
    {"edges",
     "[lb]\nretries = 0\n[lb.limits]\nmax_body_bytes = 0\nmax_header_bytes = 1024\n"
     "[lb.health]\npath = \"\"\nrise = 100\n[db]\nleader_ttl_ms = 600000\nmax_lag_bytes = 0\n"},
    {"app_none", "[web]\napp = \"none\"\n"},
    {"proxy_protocol",
     "[lb]\naccept_proxy = true\naccept_proxy_from = [\"10.0.0.0/8\", \"::1\"]\n[[web.node]]\nname = \"w\"\n"
     "listen = \"127.0.0.1:9001\"\nsend_proxy = \"v2\"\n"},
    {"ipv6_listen", "[[web.node]]\nname = \"w\"\nlisten = \"[::1]:9001\"\nthreads = 256\nweight = 256\n"},
    {"inline_tables",
     "[web]\nnode = [{name = \"a\", listen = \"127.0.0.1:1\"}, {name = \"b\", listen = "
     "\"127.0.0.1:2\"}]\n"},
    {"dotted_keys", "lb.health.rise = 5\nsite.name = \"x\"\n"},
    {"vip",
     "[lb.vip]\naddress = \"fd00::1/64\"\ninterface = \"br0\"\nvrid = 255\nadvert_interval_ms = 40950\n"},
    {"empty_tls_paths", "[lb.tls]\ncert = \"\"\nkey = \"\"\n"},
    {"lbs_share_the_vip",
     "[lb.vip]\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\n[[lb.node]]\nname = \"a\"\nhttp = "
     "\"10.77.0.100:80\"\n[[lb.node]]\nname = \"b\"\nhttp = \"10.77.0.100:80\"\n"},
};
INSTANTIATE_TEST_SUITE_P(NearMiss, GoodSite, ::testing::ValuesIn(kGoodCases),
                         [](const auto& info) { return std::string(info.param.first); });

class Algorithms : public ::testing::TestWithParam<const char*> {};

TEST_P(Algorithms, EveryNamedAlgorithmIsAccepted) {
  SiteDir site;
  LoadResult result = site.load(std::string("[lb]\nalgorithm = \"") + GetParam() + "\"\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(testing::lines(result));
  EXPECT_EQ(result.site.lb.algorithm, GetParam());
}

INSTANTIATE_TEST_SUITE_P(All, Algorithms,
                         ::testing::Values("roundrobin", "static-rr", "leastconn", "source", "uri", "random2",
                                           "maglev"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace fulcrum::config
