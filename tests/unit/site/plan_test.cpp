// What `fulcrum up` runs, in which order, with which probes: worked out from the file alone.
#include "site/plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>

#include "config/loader.h"

namespace fulcrum::site {
namespace {

constexpr const char* kSite = R"([site]
name = "t"
state_dir = "/srv/state"
[[lb.node]]
name = "lb-1"
http = "127.0.0.1:8080"
stats = "127.0.0.1:8404"
[[lb.node]]
name = "lb-2"
http = "127.0.0.1:8081"
[web]
docroot = "/"
app = "none"
[[web.node]]
name = "web-1"
listen = "127.0.0.1:9001"
[[db.node]]
name = "db-1"
pg = "127.0.0.1:15432"
agent = "127.0.0.1:8008"
[[db.node]]
name = "db-2"
pg = "127.0.0.1:15433"
agent = "127.0.0.1:2380"
[etcd]
endpoints = ["127.0.0.1:2379"]
)";

config::Site load(const std::string& text) {
  auto result = config::loadSiteString(text, "/srv/site.toml");
  EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
  return result.site;
}

PlanOptions options() {
  PlanOptions o;
  o.self_exe = "/bin/fulcrum";
  o.etcd_exe = "/usr/bin/etcd";
  o.etcd_peer_ports = {2381};
  o.log_format = "json";
  o.log_level = "debug";
  return o;
}

TEST(PlanTest, StartOrderIsEtcdThenDatabasesThenWebThenLoadBalancers) {
  auto children = planChildren(load(kSite), options());
  std::vector<std::string> names;
  for (const auto& c : children) {
    names.push_back(std::string(roleName(c.role)) + ":" + c.name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"etcd:etcd", "db:db-1", "db:db-2", "web:web-1", "lb:lb-1", "lb:lb-2"}));
  EXPECT_TRUE(std::is_sorted(children.begin(), children.end(),
                             [](const ChildSpec& a, const ChildSpec& b) { return a.role < b.role; }));
}

TEST(PlanTest, RoleChildrenRunThisBinaryWithTheSiteAndLogOptions) {
  auto children = planChildren(load(kSite), options());
  const ChildSpec& db = children[1];
  EXPECT_EQ(db.argv, (std::vector<std::string>{"/bin/fulcrum", "--log-format", "json", "--log-level", "debug", "db",
                                               "--site", "/srv/site.toml", "--node", "db-1"}));
  EXPECT_EQ(db.log, "/srv/state/logs/db-1.log");
  EXPECT_EQ(db.probe.url(), "http://127.0.0.1:8008/health");
  EXPECT_GT(db.start_timeout, children[3].start_timeout);  // a first bootstrap runs initdb
  EXPECT_EQ(children[3].probe.url(), "http://127.0.0.1:9001/healthz");
  EXPECT_EQ(children[3].argv[5], "web");
  // A load balancer is probed on its stats listener, or on its HTTP port without one.
  EXPECT_EQ(children[4].probe.url(), "http://127.0.0.1:8404/healthz");
  EXPECT_EQ(children[5].probe.url(), "tcp://127.0.0.1:8081");
}

TEST(PlanTest, ManagedEtcdIsOneMemberOnTheFirstEndpoint) {
  auto children = planChildren(load(kSite), options());
  const ChildSpec& etcd = children[0];
  EXPECT_EQ(etcd.argv[0], "/usr/bin/etcd");
  auto has = [&](const std::string& arg) {
    return std::find(etcd.argv.begin(), etcd.argv.end(), arg) != etcd.argv.end();
  };
  EXPECT_TRUE(has("--data-dir=/srv/state/etcd"));
  EXPECT_TRUE(has("--listen-client-urls=http://127.0.0.1:2379"));
  EXPECT_TRUE(has("--listen-peer-urls=http://127.0.0.1:2381"));
  EXPECT_TRUE(has("--initial-cluster=fulcrum=http://127.0.0.1:2381"));
  EXPECT_TRUE(has("--initial-cluster-state=new"));
  EXPECT_TRUE(has("--initial-cluster-token=fulcrum-t"));
  EXPECT_EQ(etcd.probe.url(), "http://127.0.0.1:2379/health");
  EXPECT_EQ(etcd.log, "/srv/state/logs/etcd.log");
}

TEST(PlanTest, UnmanagedEtcdIsNotStarted) {
  auto children = planChildren(load(std::string(kSite) + "managed = false\n"), options());
  EXPECT_EQ(children.front().role, Role::Db);
}

TEST(PlanTest, MonitoringRunsLastOnItsAddressesWithStateInStateDir) {
  PlanOptions o = options();
  o.prometheus_exe = "/usr/bin/prometheus";
  o.alertmanager_exe = "/usr/bin/prometheus-alertmanager";
  auto children =
      planChildren(load(std::string(kSite) +
                        "[monitoring]\nprometheus = \"127.0.0.2:9090\"\nalertmanager = \"[::1]:9093\"\n"),
                   o);
  ASSERT_EQ(children.size(), 8u);
  const ChildSpec& am = children[6];
  const ChildSpec& prom = children[7];
  EXPECT_EQ(am.role, Role::Monitoring);
  EXPECT_EQ(prom.role, Role::Monitoring);
  EXPECT_EQ(am.argv,
            (std::vector<std::string>{
                "/usr/bin/prometheus-alertmanager", "--config.file=/srv/state/monitoring/alertmanager.yml",
                "--storage.path=/srv/state/alertmanager", "--web.listen-address=[::1]:9093",
                "--cluster.listen-address=", "--log.level=debug", "--log.format=json"}));
  EXPECT_EQ(am.probe.url(), "http://[::1]:9093/-/ready");
  EXPECT_EQ(am.log, "/srv/state/logs/alertmanager.log");
  EXPECT_EQ(prom.argv, (std::vector<std::string>{
                           "/usr/bin/prometheus", "--config.file=/srv/state/monitoring/prometheus.yml",
                           "--storage.tsdb.path=/srv/state/prometheus", "--web.listen-address=127.0.0.2:9090",
                           "--log.level=debug", "--log.format=json"}));
  EXPECT_EQ(prom.probe.url(), "http://127.0.0.2:9090/-/ready");

  // No Alertmanager: Prometheus alone. Not managed: neither.
  auto alone = planChildren(load(std::string(kSite) + "[monitoring]\nalertmanager = \"\"\n"), o);
  ASSERT_EQ(alone.size(), 7u);
  EXPECT_EQ(alone.back().name, "prometheus");
  EXPECT_EQ(planChildren(load(std::string(kSite) + "[monitoring]\nmanaged = false\n"), o).size(), 6u);
  EXPECT_EQ(planChildren(load(kSite), o).size(), 6u);
}

TEST(PlanTest, PeerPortSkipsSiteListenersAndBusyPorts) {
  config::Site site = load(kSite);
  auto choose = [&](const config::Site& s, std::function<bool(uint16_t)> free) {
    return chooseEtcdPeerPorts(s, [&](const core::SocketAddress& a) { return free(a.port()); });
  };
  // 2380 is db-2's agent; 2381 is busy; 2382 is free.
  EXPECT_EQ(choose(site, [](uint16_t port) { return port != 2381; }), (std::vector<uint16_t>{2382}));
  EXPECT_EQ(choose(site, [](uint16_t) { return true; }), (std::vector<uint16_t>{2381}));
  EXPECT_EQ(choose(site, [](uint16_t) { return false; }), (std::vector<uint16_t>{}));
  EXPECT_EQ(choose(load(std::string(kSite) + "managed = false\n"), [](uint16_t) { return true; }),
            (std::vector<uint16_t>{}));
}

// Three members on one IP with adjacent client ports: each peer port avoids every client port
// and the peer ports chosen before it; a member of another IP is free to use client port + 1.
constexpr const char* kCluster = R"([site]
name = "c"
state_dir = "/srv/state"
[[db.node]]
name = "db-1"
pg = "127.0.0.1:15432"
agent = "127.0.0.1:2384"
)";

TEST(PlanTest, PeerPortsOfAClusterClashWithNothing) {
  config::Site site =
      load(std::string(kCluster) +
           "[etcd]\nendpoints = [\"127.0.0.1:2379\", \"127.0.0.1:2380\", \"127.0.0.1:2381\"]\n");
  std::vector<std::string> probed;
  auto ports = chooseEtcdPeerPorts(site, [&](const core::SocketAddress& a) {
    probed.push_back(a.toString());
    return a.port() != 2383;  // something else has it
  });
  // 2382 for etcd-1; etcd-2: 2381 is etcd-3's client, 2382 taken, 2383 busy, 2384 db-1's agent.
  EXPECT_EQ(ports, (std::vector<uint16_t>{2382, 2385, 2386}));
  // Only ports no listener of the site takes are bind-tested (2383 once per member after it).
  EXPECT_EQ(probed, (std::vector<std::string>{"127.0.0.1:2382", "127.0.0.1:2383", "127.0.0.1:2385",
                                              "127.0.0.1:2383", "127.0.0.1:2386"}));

  // One member per host (the lab: every port is free in its namespace): client port + 1 each.
  config::Site hosts =
      load(std::string(kCluster) +
           "[etcd]\nendpoints = [\"10.77.0.31:2379\", \"10.77.0.32:2379\", \"10.77.0.33:2379\"]\n");
  EXPECT_EQ(chooseEtcdPeerPorts(hosts, [](const core::SocketAddress&) { return true; }),
            (std::vector<uint16_t>{2380, 2380, 2380}));
  // A wildcard listener on the port is a clash on every IP.
  config::Site wild =
      load(std::string(kCluster) +
           "[[web.node]]\nname = \"w\"\nlisten = \"0.0.0.0:2380\"\n[web]\ndocroot = \"/\"\napp = \"none\"\n"
           "[etcd]\nendpoints = [\"10.77.0.31:2379\", \"10.77.0.32:2379\", \"10.77.0.33:2379\"]\n");
  EXPECT_EQ(chooseEtcdPeerPorts(wild, [](const core::SocketAddress&) { return true; }),
            (std::vector<uint16_t>{2381, 2381, 2381}));
}

TEST(PlanTest, ClusterMembersEachGetTheirOwnDataDirAndListTheWholeCluster) {
  config::Site site =
      load(std::string(kCluster) +
           "[etcd]\nendpoints = [\"127.0.0.1:2379\", \"127.0.0.1:2380\", \"127.0.0.1:2381\"]\n");
  PlanOptions o = options();
  o.etcd_peer_ports = {2382, 2385, 2386};
  auto children = planChildren(site, o);
  ASSERT_EQ(children.size(), 4u);
  const std::string cluster =
      "--initial-cluster=etcd-1=http://127.0.0.1:2382,etcd-2=http://127.0.0.1:2385,etcd-3=http://"
      "127.0.0.1:2386";
  for (size_t i = 0; i < 3; ++i) {
    const ChildSpec& etcd = children[i];
    const std::string n = std::to_string(i + 1);
    EXPECT_EQ(etcd.role, Role::Etcd);
    EXPECT_EQ(etcd.name, "etcd-" + n);
    EXPECT_EQ(etcd.name, etcdMemberName(site, i));
    const std::string client = "http://127.0.0.1:" + std::to_string(2379 + i);
    const std::string peer = "http://127.0.0.1:" + std::to_string(o.etcd_peer_ports[i]);
    EXPECT_EQ(etcd.argv,
              (std::vector<std::string>{
                  "/usr/bin/etcd", "--name=etcd-" + n, "--data-dir=/srv/state/etcd-" + n,
                  "--listen-client-urls=" + client, "--advertise-client-urls=" + client,
                  "--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer, cluster,
                  "--initial-cluster-state=new", "--initial-cluster-token=fulcrum-c",
                  "--heartbeat-interval=50", "--election-timeout=500", "--logger=zap", "--log-level=debug"}));
    EXPECT_EQ(etcd.probe.url(), client + "/health");
    EXPECT_EQ(etcd.log, "/srv/state/logs/etcd-" + n + ".log");
  }
  EXPECT_EQ(children[3].role, Role::Db);

  std::vector<std::string> seen;
  for (const auto& l : siteListeners(site, o.etcd_peer_ports)) {
    seen.push_back(l.what + "=" + l.address.toString());
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"etcd-1 client=127.0.0.1:2379", "etcd-1 peer=127.0.0.1:2382",
                                            "etcd-2 client=127.0.0.1:2380", "etcd-2 peer=127.0.0.1:2385",
                                            "etcd-3 client=127.0.0.1:2381", "etcd-3 peer=127.0.0.1:2386",
                                            "db-1 PostgreSQL=127.0.0.1:15432", "db-1 agent=127.0.0.1:2384"}));
}

TEST(PlanTest, InternalTlsPutsEtcdClientsAndPeersOnMutualTls) {
  const std::string tls = "[security]\ninternal_tls = true\n";
  config::Site site =
      load(std::string(kCluster) +
           "[etcd]\nendpoints = [\"127.0.0.1:2379\", \"127.0.0.1:2380\", \"127.0.0.1:2381\"]\n" + tls);
  PlanOptions o = options();
  o.etcd_peer_ports = {2382, 2385, 2386};
  auto children = planChildren(site, o);
  const ChildSpec& etcd = children[1];
  ASSERT_EQ(etcd.name, "etcd-2");
  auto has = [&](const std::string& arg) {
    return std::find(etcd.argv.begin(), etcd.argv.end(), arg) != etcd.argv.end();
  };
  EXPECT_TRUE(has("--listen-client-urls=https://127.0.0.1:2380"));
  EXPECT_TRUE(has("--advertise-client-urls=https://127.0.0.1:2380"));
  EXPECT_TRUE(has("--listen-peer-urls=https://127.0.0.1:2385"));
  EXPECT_TRUE(
      has("--initial-cluster=etcd-1=https://127.0.0.1:2382,etcd-2=https://127.0.0.1:2385,"
          "etcd-3=https://127.0.0.1:2386"));
  for (const char* flag :
       {"--cert-file=/srv/state/tls/etcd-2.crt", "--key-file=/srv/state/tls/etcd-2.key", "--client-cert-auth",
        "--trusted-ca-file=/srv/state/tls/ca.crt", "--peer-cert-file=/srv/state/tls/etcd-2.crt",
        "--peer-key-file=/srv/state/tls/etcd-2.key", "--peer-client-cert-auth",
        "--peer-trusted-ca-file=/srv/state/tls/ca.crt"}) {
    EXPECT_TRUE(has(flag)) << flag;
  }
  // All on loopback: peers connect from 127.0.0.1, whatever their own address.
  EXPECT_TRUE(has("--experimental-peer-skip-client-san-verification"));
  EXPECT_TRUE(etcd.probe.tls);
  EXPECT_EQ(etcd.probe.url(), "https://127.0.0.1:2380/health");
  // The agents' API speaks TLS only: up asks it as the operator too.
  ASSERT_EQ(children[3].role, Role::Db);
  EXPECT_TRUE(children[3].probe.tls);
  EXPECT_TRUE(children[3].probe.url().starts_with("https://")) << children[3].probe.url();
  // A web node answers site certificates only: up asks it as the operator.
  auto web = planChildren(load(std::string(kSite) + tls), options());
  auto web1 = std::find_if(web.begin(), web.end(), [](const ChildSpec& c) { return c.role == Role::Web; });
  ASSERT_NE(web1, web.end());
  EXPECT_TRUE(web1->probe.tls);
  EXPECT_EQ(web1->probe.url(), "https://127.0.0.1:9001/healthz");
  // So does an lb's stats listener (reads without a client certificate, but up has one); an lb
  // without one is still a connect check on its plain http port.
  auto lb1 = std::find_if(web.begin(), web.end(), [](const ChildSpec& c) { return c.name == "lb-1"; });
  auto lb2 = std::find_if(web.begin(), web.end(), [](const ChildSpec& c) { return c.name == "lb-2"; });
  ASSERT_NE(lb1, web.end());
  ASSERT_NE(lb2, web.end());
  EXPECT_EQ(lb1->probe.url(), "https://127.0.0.1:8404/healthz");
  EXPECT_EQ(lb2->probe.url(), "tcp://127.0.0.1:8081");

  // One member per host: a peer's certificate must name the address it connects from.
  config::Site hosts =
      load(std::string(kCluster) +
           "[etcd]\nendpoints = [\"10.77.0.31:2379\", \"10.77.0.32:2379\", \"10.77.0.33:2379\"]\n" + tls);
  o.etcd_peer_ports = {2380, 2380, 2380};
  for (const ChildSpec& member : planChildren(hosts, o)) {
    EXPECT_EQ(std::count(member.argv.begin(), member.argv.end(),
                         "--experimental-peer-skip-client-san-verification"),
              0)
        << member.name;
  }
}

TEST(PlanTest, ListenersNameEveryAddressOfTheSite) {
  auto listeners = siteListeners(load(kSite), {2381});
  std::vector<std::string> seen;
  for (const auto& l : listeners) {
    seen.push_back(l.what + "=" + l.address.toString());
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"etcd client=127.0.0.1:2379", "etcd peer=127.0.0.1:2381",
                                            "db-1 PostgreSQL=127.0.0.1:15432", "db-1 agent=127.0.0.1:8008",
                                            "db-2 PostgreSQL=127.0.0.1:15433", "db-2 agent=127.0.0.1:2380",
                                            "web-1 listen=127.0.0.1:9001", "lb-1 http=127.0.0.1:8080",
                                            "lb-1 stats=127.0.0.1:8404", "lb-2 http=127.0.0.1:8081"}));
}

TEST(PlanTest, ListenersIncludeManagedMonitoring) {
  auto listeners = siteListeners(load(std::string(kSite) + "[monitoring]\n"), {});
  ASSERT_GE(listeners.size(), 2u);
  EXPECT_EQ(listeners[listeners.size() - 2].what + "=" + listeners[listeners.size() - 2].address.toString(),
            "prometheus=127.0.0.1:9090");
  EXPECT_EQ(listeners.back().what + "=" + listeners.back().address.toString(), "alertmanager=127.0.0.1:9093");
}

}  // namespace
}  // namespace fulcrum::site
