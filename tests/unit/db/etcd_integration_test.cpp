// The etcd client and the elector against a real etcd (Debian's etcd-server, 3.4), started by the
// test suite on free loopback ports with its data in a fresh temporary directory. Skipped, with
// a message, when no etcd binary is installed. Real time is unavoidable here (leases expire in
// etcd's time), so every wait is a bounded poll and every timing assertion has slack in the safe
// direction only.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/address.h"
#include "core/clock.h"
#include "core/fd.h"
#include "core/socket.h"
#include "db/elector.h"
#include "db/etcd_client.h"
#include "test_support.h"

namespace fulcrum::db {
namespace {

using testing::freePort;
using testing::waitFor;

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

std::optional<std::string> findEtcd() {
  if (const char* env = std::getenv("FULCRUM_ETCD_BIN"); env != nullptr && *env != '\0') {
    return ::access(env, X_OK) == 0 ? std::optional<std::string>(env) : std::nullopt;
  }
  std::string path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  path += ":/usr/bin:/usr/local/bin";
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/etcd";
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return std::nullopt;
}

// One etcd member, a child of the test process for as long as the object lives.
class EtcdProcess {
 public:
  EtcdProcess() = default;
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;
  ~EtcdProcess() { stop(); }

  // Starts etcd and waits until it answers a range call. Retries with other ports when the
  // child exits early (a port taken between freePort() and etcd's bind).
  bool start(const std::string& binary, std::string& error) {
    char tmpl[] = "/tmp/fulcrum-etcd-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      error = "mkdtemp failed";
      return false;
    }
    dir_ = tmpl;
    for (int attempt = 0; attempt < 3; ++attempt) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_ + "/data", ignored);  // a failed start may have left a member
      if (spawn(binary) && waitReady()) {
        return true;
      }
      kill();
    }
    error = "etcd did not become ready; its log:\n" + logTail();
    return false;
  }

  // Starts one member of a cluster in `dir` without waiting: a member answers only once a
  // quorum of its cluster runs.
  bool startMember(const std::string& binary, const std::string& dir, const std::string& name,
                   uint16_t client_port, uint16_t peer_port, const std::string& initial_cluster) {
    dir_ = dir;
    name_ = name;
    initial_cluster_ = initial_cluster;
    return spawn(binary, client_port, peer_port);
  }

  void pause() {
    if (pid_ > 0) {
      ::kill(pid_, SIGSTOP);
    }
  }
  void resume() {
    if (pid_ > 0) {
      ::kill(pid_, SIGCONT);
    }
  }

  // Stops and reaps etcd, then removes its data directory.
  void stop() {
    kill();
    if (!dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
      dir_.clear();
    }
  }

  core::SocketAddress endpoint() const { return client_; }
  std::string logTail() const {
    std::ifstream in(dir_ + "/etcd.log");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
  }

 private:
  bool spawn(const std::string& binary) { return spawn(binary, freePort(), freePort()); }

  bool spawn(const std::string& binary, uint16_t client_port, uint16_t peer_port) {
    if (client_port == 0 || peer_port == 0 || client_port == peer_port) {
      return false;
    }
    client_ = *core::SocketAddress::parse("127.0.0.1:" + std::to_string(client_port));
    const std::string client_url = "http://127.0.0.1:" + std::to_string(client_port);
    const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer_port);
    std::vector<std::string> args = {
        binary,
        "--name=" + name_,
        "--data-dir=" + dir_ + "/data",
        "--listen-client-urls=" + client_url,
        "--advertise-client-urls=" + client_url,
        "--listen-peer-urls=" + peer_url,
        "--initial-advertise-peer-urls=" + peer_url,
        "--initial-cluster=" + (initial_cluster_.empty() ? name_ + "=" + peer_url : initial_cluster_),
        "--initial-cluster-token=fulcrum-test-" + std::to_string(::getpid()),
        // Faster elections also lower etcd's minimum lease TTL to 1 s (1.5 election timeouts).
        "--heartbeat-interval=50",
        "--election-timeout=500",
        "--logger=zap",
        "--log-level=warn",
    };
    std::vector<char*> argv;
    for (std::string& arg : args) {
      argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    const std::string log = dir_ + "/etcd.log";
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      return false;
    }
    if (pid == 0) {
      // Dies with the test process even if the test crashes before TearDown.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) {
        ::_exit(127);
      }
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
    return true;
  }

  bool waitReady() {
    EtcdClientOptions options;
    options.endpoints = {client_};
    options.request_timeout = milliseconds(500);
    EtcdClient probe(options);
    return waitFor(
               [&] {
                 int status = 0;
                 if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                   pid_ = -1;  // exited: reaped here
                   return true;
                 }
                 return probe.get("/fulcrum-test/ready").ok;
               },
               seconds(30)) &&
           pid_ > 0;
  }

  void kill() {
    if (pid_ <= 0) {
      return;
    }
    ::kill(pid_, SIGCONT);  // a stopped process would not act on SIGTERM
    ::kill(pid_, SIGTERM);
    int status = 0;
    bool reaped = waitFor([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, seconds(5));
    if (!reaped) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }

  std::string dir_;
  std::string name_ = "fulcrum-test";
  std::string initial_cluster_;  // empty: a cluster of one
  pid_t pid_ = -1;
  core::SocketAddress client_;
};

// A TCP relay in front of etcd that counts the connections it accepts: how many a client opens.
// One thread polls the listener and every relayed pair; the destructor wakes and joins it.
class CountingRelay {
 public:
  explicit CountingRelay(core::SocketAddress upstream)
      : upstream_(std::move(upstream)), stop_(::eventfd(0, EFD_CLOEXEC)) {
    std::string error;
    listener_ =
        core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), core::ListenOptions{false, 16}, error);
    EXPECT_TRUE(listener_) << error;
    address_ = core::localAddress(listener_.get());
    thread_ = std::thread([this] { run(); });
  }
  ~CountingRelay() {
    uint64_t one = 1;
    EXPECT_EQ(::write(stop_.get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
    thread_.join();
  }
  CountingRelay(const CountingRelay&) = delete;
  CountingRelay& operator=(const CountingRelay&) = delete;

  const core::SocketAddress& address() const { return address_; }
  int accepted() const { return accepted_.load(); }

 private:
  struct Pair {
    core::Fd client;
    core::Fd upstream;
  };

  void run() {
    std::vector<Pair> pairs;
    for (;;) {
      std::vector<pollfd> fds = {{stop_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
      for (const Pair& pair : pairs) {
        fds.push_back({pair.client.get(), POLLIN, 0});
        fds.push_back({pair.upstream.get(), POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), -1) < 0 || fds[0].revents != 0) {
        return;
      }
      // Only the pairs that were polled have revents; one accepted below is polled next round.
      const size_t polled = pairs.size();
      if (fds[1].revents != 0) {
        Pair pair{core::Fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC)),
                  core::Fd(::socket(upstream_.family(), SOCK_STREAM | SOCK_CLOEXEC, 0))};
        if (pair.client) {
          ++accepted_;
          if (::connect(pair.upstream.get(), upstream_.sockaddrPtr(), upstream_.sockaddrLen()) == 0) {
            pairs.push_back(std::move(pair));
          }
        }
      }
      std::vector<bool> closed(pairs.size(), false);
      for (size_t i = 0; i < polled; ++i) {
        for (int side = 0; side < 2; ++side) {
          if (fds[2 + 2 * i + side].revents == 0) {
            continue;
          }
          const int from = side == 0 ? pairs[i].client.get() : pairs[i].upstream.get();
          const int to = side == 0 ? pairs[i].upstream.get() : pairs[i].client.get();
          char buffer[65536];
          ssize_t n = ::recv(from, buffer, sizeof buffer, MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) ||
              (n > 0 && ::send(to, buffer, static_cast<size_t>(n), MSG_NOSIGNAL) != n)) {
            closed[i] = true;
          }
        }
      }
      for (size_t i = pairs.size(); i-- > 0;) {
        if (closed[i]) {
          pairs.erase(pairs.begin() + static_cast<std::ptrdiff_t>(i));
        }
      }
    }
  }

  core::SocketAddress upstream_;
  core::Fd stop_;
  core::Fd listener_;
  core::SocketAddress address_;
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

class EtcdIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::optional<std::string> binary = findEtcd();
    if (!binary) {
      skip_reason_ = new std::string(
          "etcd is not installed (apt-get install etcd-server, or set FULCRUM_ETCD_BIN): skipping the etcd "
          "tests");
      return;
    }
    etcd_ = new EtcdProcess();
    std::string error;
    if (!etcd_->start(*binary, error)) {
      start_error_ = new std::string(error);
    }
  }

  static void TearDownTestSuite() {
    delete etcd_;  // kills and reaps etcd, removes its data directory
    etcd_ = nullptr;
    delete skip_reason_;
    skip_reason_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }

  void SetUp() override {
    if (skip_reason_ != nullptr) {
      FULCRUM_SKIP_UNLESS_CI(*skip_reason_);
    }
    ASSERT_EQ(start_error_, nullptr) << *start_error_;
    // Each test works under its own prefix, so tests sharing the one etcd never meet.
    prefix_ = std::string("/test/") + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "/";
  }

  void TearDown() override {
    if (etcd_ != nullptr) {
      etcd_->resume();  // in case a test stopped it and failed before resuming
    }
  }

  static EtcdClientOptions clientOptions() {
    EtcdClientOptions options;
    options.endpoints = {etcd_->endpoint()};
    options.request_timeout = milliseconds(1000);
    options.connect_timeout = milliseconds(300);
    return options;
  }

  ElectorOptions electorOptions(std::string node, LeaseTiming timing) const {
    ElectorOptions options;
    options.key = prefix_ + "leader";
    options.node = std::move(node);
    options.timing = timing;
    return options;
  }

  static EtcdProcess* etcd_;
  static std::string* skip_reason_;
  static std::string* start_error_;
  std::string prefix_;
  core::MonotonicClock& clock_ = core::MonotonicClock::instance();
};

EtcdProcess* EtcdIntegrationTest::etcd_ = nullptr;
std::string* EtcdIntegrationTest::skip_reason_ = nullptr;
std::string* EtcdIntegrationTest::start_error_ = nullptr;

TEST_F(EtcdIntegrationTest, PutGetListDelete) {
  EtcdClient client(clientOptions());
  const std::string key = prefix_ + "a";
  auto missing = client.get(key);
  ASSERT_TRUE(missing.ok) << missing.error;
  EXPECT_FALSE(missing.value);

  // Arbitrary bytes survive the base64 round trip.
  const std::string binary("v\0\xff\n\"{}", 7);
  ASSERT_TRUE(client.put(key, binary).ok);
  auto got = client.get(key);
  ASSERT_TRUE(got.ok) << got.error;
  ASSERT_TRUE(got.value);
  EXPECT_EQ(got.value->value, binary);
  EXPECT_EQ(got.value->lease, 0);
  EXPECT_GT(got.value->mod_revision, 0);
  EXPECT_EQ(got.value->version, 1);

  ASSERT_TRUE(client.put(key, "second").ok);
  auto again = client.get(key);
  ASSERT_TRUE(again.ok && again.value);
  EXPECT_EQ(again.value->value, "second");
  EXPECT_GT(again.value->mod_revision, got.value->mod_revision);
  EXPECT_EQ(again.value->create_revision, got.value->create_revision);

  ASSERT_TRUE(client.put(prefix_ + "b", "2").ok);
  ASSERT_TRUE(client.put(prefix_ + "c/d", "3").ok);
  ASSERT_TRUE(client.put(prefix_.substr(0, prefix_.size() - 1) + "0", "outside").ok);  // after the prefix
  auto listed = client.list(prefix_);
  ASSERT_TRUE(listed.ok) << listed.error;
  ASSERT_EQ(listed.value.size(), 3u);
  EXPECT_EQ(listed.value[0].key, prefix_ + "a");
  EXPECT_EQ(listed.value[1].key, prefix_ + "b");
  EXPECT_EQ(listed.value[2].key, prefix_ + "c/d");

  auto deleted = client.deletePrefix(prefix_);
  ASSERT_TRUE(deleted.ok) << deleted.error;
  EXPECT_EQ(deleted.value, 3);
  auto empty = client.list(prefix_);
  ASSERT_TRUE(empty.ok);
  EXPECT_TRUE(empty.value.empty());
  auto outside = client.get(prefix_.substr(0, prefix_.size() - 1) + "0");
  ASSERT_TRUE(outside.ok && outside.value);
  EXPECT_FALSE(client.deletePrefix("").ok);  // never the whole keyspace
}

TEST_F(EtcdIntegrationTest, CreateIfAbsentOnlyOnce) {
  EtcdClient client(clientOptions());
  const std::string key = prefix_ + "k";
  auto first = client.createIfAbsent(key, "one");
  ASSERT_TRUE(first.ok) << first.error;
  EXPECT_TRUE(first.value);
  auto second = client.createIfAbsent(key, "two");
  ASSERT_TRUE(second.ok) << second.error;
  EXPECT_FALSE(second.value);
  auto got = client.get(key);
  ASSERT_TRUE(got.ok && got.value);
  EXPECT_EQ(got.value->value, "one");
}

TEST_F(EtcdIntegrationTest, CompareAndPutAndDelete) {
  EtcdClient client(clientOptions());
  const std::string key = prefix_ + "k";
  auto absent = client.compareAndPut(key, "x", "y");
  ASSERT_TRUE(absent.ok) << absent.error;
  EXPECT_FALSE(absent.value);  // a missing key equals no value
  ASSERT_TRUE(client.put(key, "x").ok);
  auto wrong = client.compareAndPut(key, "nope", "y");
  ASSERT_TRUE(wrong.ok);
  EXPECT_FALSE(wrong.value);
  auto right = client.compareAndPut(key, "x", "y");
  ASSERT_TRUE(right.ok);
  EXPECT_TRUE(right.value);
  EXPECT_EQ(client.get(key).value->value, "y");

  auto keep = client.compareAndDelete(key, "x");
  ASSERT_TRUE(keep.ok);
  EXPECT_FALSE(keep.value);
  EXPECT_TRUE(client.get(key).value.has_value());
  auto gone = client.compareAndDelete(key, "y");
  ASSERT_TRUE(gone.ok);
  EXPECT_TRUE(gone.value);
  EXPECT_FALSE(client.get(key).value.has_value());
}

TEST_F(EtcdIntegrationTest, LeaseKeepAliveThenExpiry) {
  EtcdClient client(clientOptions());
  auto lease = client.grantLease(milliseconds(1000));
  ASSERT_TRUE(lease.ok) << lease.error;
  EXPECT_NE(lease.value.id, 0);
  EXPECT_GE(lease.value.ttl_seconds, 1);
  const std::string key = prefix_ + "ephemeral";
  ASSERT_TRUE(client.put(key, "v", lease.value.id).ok);
  auto bound = client.get(key);
  ASSERT_TRUE(bound.ok && bound.value);
  EXPECT_EQ(bound.value->lease, lease.value.id);

  // Kept alive across two TTLs, the key stays.
  const seconds ttl_granted(lease.value.ttl_seconds);
  const auto until = SteadyClock::now() + 2 * ttl_granted;
  SteadyClock::time_point last_sent;
  while (SteadyClock::now() < until) {
    last_sent = SteadyClock::now();
    auto ttl = client.keepAlive(lease.value.id);
    ASSERT_TRUE(ttl.ok) << ttl.error;
    ASSERT_EQ(ttl.value, ttl_granted);
    std::this_thread::sleep_for(milliseconds(200));
  }
  ASSERT_TRUE(client.get(key).value.has_value());

  // Left alone, the lease expires and takes the key with it, but never sooner than a TTL after
  // the last keepalive was sent.
  EXPECT_TRUE(waitFor([&] { return !client.get(key).value.has_value(); }, seconds(10)));
  EXPECT_GE(SteadyClock::now(), last_sent + ttl_granted);
  auto expired = client.keepAlive(lease.value.id);
  ASSERT_TRUE(expired.ok) << expired.error;
  EXPECT_EQ(expired.value, milliseconds(0));
}

TEST_F(EtcdIntegrationTest, RevokeDeletesBoundKeys) {
  EtcdClient client(clientOptions());
  auto lease = client.grantLease(seconds(30));
  ASSERT_TRUE(lease.ok) << lease.error;
  ASSERT_TRUE(client.put(prefix_ + "k", "v", lease.value.id).ok);
  ASSERT_TRUE(client.revoke(lease.value.id).ok);
  EXPECT_FALSE(client.get(prefix_ + "k").value.has_value());
  Status again = client.revoke(lease.value.id);  // already gone: the goal holds
  EXPECT_TRUE(again.ok) << again.error;
  auto ttl = client.keepAlive(lease.value.id);
  ASSERT_TRUE(ttl.ok);
  EXPECT_EQ(ttl.value, milliseconds(0));
  // A put bound to a lease that does not exist is refused with etcd's message.
  Status refused = client.put(prefix_ + "k", "v", lease.value.id);
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.error.find("lease not found"), std::string::npos) << refused.error;
}

TEST_F(EtcdIntegrationTest, FailsOverToTheNextEndpoint) {
  EtcdClientOptions options = clientOptions();
  core::SocketAddress dead = *core::SocketAddress::parse("127.0.0.1:" + std::to_string(freePort()));
  options.endpoints = {dead, etcd_->endpoint()};
  EtcdClient client(options);
  ASSERT_TRUE(client.put(prefix_ + "k", "v").ok);  // nothing sent to the dead one: safe to go on
  auto got = client.get(prefix_ + "k");
  ASSERT_TRUE(got.ok) << got.error;
  ASSERT_TRUE(got.value);

  EtcdClientOptions none = clientOptions();
  none.endpoints = {dead};
  EtcdClient unreachable(none);
  auto failed = unreachable.get(prefix_ + "k");
  EXPECT_FALSE(failed.ok);
  EXPECT_NE(failed.error.find(dead.toString()), std::string::npos) << failed.error;
}

TEST_F(EtcdIntegrationTest, CallsShareOnePersistentConnection) {
  CountingRelay relay(etcd_->endpoint());
  EtcdClientOptions options = clientOptions();
  options.endpoints = {relay.address()};
  EtcdClient client(options);
  // An agent's calls, several ticks' worth: reads, writes, txns, lease calls.
  auto lease = client.grantLease(seconds(30));
  ASSERT_TRUE(lease.ok) << lease.error;
  int calls = 1;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(client.put(prefix_ + "k", std::to_string(i), lease.value.id).ok);
    auto ttl = client.keepAlive(lease.value.id);
    ASSERT_TRUE(ttl.ok) << ttl.error;
    auto many = client.getMany({prefix_ + "k", prefix_ + "absent"});
    ASSERT_TRUE(many.ok) << many.error;
    auto created = client.createIfAbsent(prefix_ + "once", "v");
    ASSERT_TRUE(created.ok) << created.error;
    EXPECT_EQ(created.value, i == 0);
    ASSERT_TRUE(client.list(prefix_).ok);
    calls += 5;
  }
  ASSERT_TRUE(client.revoke(lease.value.id).ok);
  ++calls;
  RecordProperty("etcd_calls", calls);
  RecordProperty("etcd_connections", relay.accepted());
  EXPECT_EQ(relay.accepted(), 1) << calls << " calls";
  EXPECT_EQ(client.connectionsOpened(), 1u);

  // Failing over from a dead endpoint leaves one connection, to the live one.
  core::SocketAddress dead = *core::SocketAddress::parse("127.0.0.1:" + std::to_string(freePort()));
  options.endpoints = {dead, relay.address()};
  EtcdClient failover(options);
  for (int i = 0; i < 5; ++i) {
    auto got = failover.get(prefix_ + "once");
    ASSERT_TRUE(got.ok) << got.error;
  }
  EXPECT_EQ(relay.accepted(), 2);
}

TEST_F(EtcdIntegrationTest, SilentEndpointTimesOutOnTime) {
  // A listener that never accepts: the connect completes in the kernel, no answer ever comes.
  std::string error;
  core::Fd silent =
      core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), core::ListenOptions{false, 8}, error);
  ASSERT_TRUE(silent) << error;
  const core::SocketAddress silent_address = core::localAddress(silent.get());

  EtcdClientOptions options = clientOptions();
  options.endpoints = {silent_address};
  options.request_timeout = milliseconds(300);
  EtcdClient alone(options);
  auto start = SteadyClock::now();
  auto got = alone.get(prefix_ + "k");
  auto took = SteadyClock::now() - start;
  EXPECT_FALSE(got.ok);
  EXPECT_NE(got.error.find("timeout"), std::string::npos) << got.error;
  EXPECT_GE(took, milliseconds(290));
  EXPECT_LT(took, milliseconds(1500));

  // With a live endpoint after it, a read waits out the silent one's share of the budget and
  // is answered by the next; the following call starts with the one that answered.
  options.endpoints = {silent_address, etcd_->endpoint()};
  options.request_timeout = milliseconds(1000);
  EtcdClient reader(options);
  start = SteadyClock::now();
  got = reader.get(prefix_ + "k");
  took = SteadyClock::now() - start;
  EXPECT_TRUE(got.ok) << got.error;
  EXPECT_GE(took, milliseconds(490));
  start = SteadyClock::now();
  EXPECT_TRUE(reader.get(prefix_ + "k").ok);
  EXPECT_LT(SteadyClock::now() - start, milliseconds(400));

  // A write that reached the silent endpoint is never replayed elsewhere: it may yet apply.
  EtcdClient writer(options);
  auto put = writer.put(prefix_ + "k", "v");
  EXPECT_FALSE(put.ok);
  EXPECT_NE(put.error.find("may have been applied"), std::string::npos) << put.error;
}

TEST_F(EtcdIntegrationTest, TwoElectorsExactlyOneLeader) {
  EtcdClient client_a(clientOptions());
  EtcdClient client_b(clientOptions());
  Elector a(client_a, clock_, electorOptions("db-01", LeaseTiming::forTtl(seconds(2))));
  Elector b(client_b, clock_, electorOptions("db-02", LeaseTiming::forTtl(seconds(2))));

  auto none = a.currentLeader();
  ASSERT_TRUE(none.ok) << none.error;
  EXPECT_FALSE(none.value);

  auto got_a = a.tryAcquire();
  auto got_b = b.tryAcquire();
  ASSERT_TRUE(got_a.ok) << got_a.error;
  ASSERT_TRUE(got_b.ok) << got_b.error;
  EXPECT_TRUE(got_a.value);
  EXPECT_FALSE(got_b.value);
  EXPECT_TRUE(a.isLeader() && a.mayWrite());
  EXPECT_FALSE(b.isLeader() || b.mayWrite());
  EXPECT_EQ(a.currentLeader().value, std::optional<std::string>("db-01"));
  EXPECT_EQ(b.currentLeader().value, std::optional<std::string>("db-01"));
  // The loser's lease was revoked, not left to expire: only the leader's lease holds a key.
  auto kv = client_b.get(prefix_ + "leader");
  ASSERT_TRUE(kv.ok && kv.value);
  EXPECT_EQ(kv.value->lease, a.leaseId());
  ASSERT_TRUE(a.release().ok);
}

TEST_F(EtcdIntegrationTest, RenewingLeaderKeepsLeadership) {
  EtcdClient client_a(clientOptions());
  EtcdClient client_b(clientOptions());
  Elector a(client_a, clock_, electorOptions("db-01", LeaseTiming::forTtl(seconds(1))));
  Elector b(client_b, clock_, electorOptions("db-02", LeaseTiming::forTtl(seconds(1))));
  ASSERT_TRUE(a.tryAcquire().value);
  const LeaseId lease = a.leaseId();
  // Three TTLs: a renews when due, b keeps trying and never gets in.
  const auto until = SteadyClock::now() + seconds(3);
  while (SteadyClock::now() < until) {
    LeaseDecision d = a.tick();
    ASSERT_FALSE(d.fenced) << a.lastError();
    auto got_b = b.tryAcquire();
    ASSERT_TRUE(got_b.ok) << got_b.error;
    ASSERT_FALSE(got_b.value);
    std::this_thread::sleep_for(
        std::min<SteadyClock::duration>(d.next_action - clock_.now(), milliseconds(50)));
  }
  EXPECT_EQ(a.leaseId(), lease);
  EXPECT_GT(a.lease().lastRenewalSent(), until - seconds(1));
  ASSERT_TRUE(a.release().ok);
}

TEST_F(EtcdIntegrationTest, LeaderThatStopsRenewingFencesBeforeTheOtherTakesOver) {
  EtcdClient client_a(clientOptions());
  EtcdClient client_b(clientOptions());
  const LeaseTiming timing = LeaseTiming::forTtl(seconds(2));  // fence 1.6 s after the last send
  Elector a(client_a, clock_, electorOptions("db-01", timing));
  Elector b(client_b, clock_, electorOptions("db-02", timing));
  ASSERT_TRUE(a.tryAcquire().value);
  const core::TimePoint granted = a.lease().lastRenewalSent();
  // One renewal round first, so the deadline under test comes from a keepalive, not the grant.
  std::this_thread::sleep_for(timing.renew_interval);
  LeaseDecision d = a.tick();
  ASSERT_TRUE(!d.fenced && !d.should_renew) << a.lastError();
  const core::TimePoint renewed = a.lease().lastRenewalSent();
  ASSERT_GT(renewed, granted);

  // a stops renewing (a hung agent). b polls until it takes over.
  core::TimePoint b_sent{};
  bool b_leads = false;
  ASSERT_TRUE(waitFor(
      [&] {
        b_sent = clock_.now();
        auto got = b.tryAcquire();
        b_leads = got.ok && got.value;
        return b_leads;
      },
      seconds(15)));
  const core::TimePoint b_acquired = clock_.now();
  const bool a_wrote_while_b_led = a.mayWrite();

  RecordProperty(
      "fence_to_takeover_ms",
      std::to_string(std::chrono::duration_cast<milliseconds>(b_sent - a.lease().fenceDeadline()).count()));
  // a was fenced before b even asked for the key in the attempt that won it...
  EXPECT_LE(a.lease().fenceDeadline(), b_sent);
  EXPECT_FALSE(a_wrote_while_b_led);
  // ...and etcd kept the lease at least a TTL from the renewal's send time.
  EXPECT_GE(b_acquired, a.lease().lastRenewalSent() + timing.ttl);
  EXPECT_EQ(a.lease().lastRenewalSent(), renewed);
  EXPECT_EQ(b.currentLeader().value, std::optional<std::string>("db-02"));

  // a wakes up: its renewal finds the lease gone and it steps down for good.
  EXPECT_FALSE(a.renew().ok);
  EXPECT_FALSE(a.isLeader());
  EXPECT_FALSE(a.mayWrite());
  EXPECT_TRUE(b.mayWrite());
  ASSERT_TRUE(b.release().ok);
}

TEST_F(EtcdIntegrationTest, ReleaseHandsOverAtOnce) {
  EtcdClient client_a(clientOptions());
  EtcdClient client_b(clientOptions());
  Elector a(client_a, clock_, electorOptions("db-01", LeaseTiming::forTtl(seconds(30))));
  Elector b(client_b, clock_, electorOptions("db-02", LeaseTiming::forTtl(seconds(30))));
  ASSERT_TRUE(a.tryAcquire().value);
  ASSERT_FALSE(b.tryAcquire().value);
  ASSERT_TRUE(a.release().ok);
  EXPECT_FALSE(a.mayWrite());
  auto got = b.tryAcquire();  // no 30 s wait: the key went with the revoked lease
  ASSERT_TRUE(got.ok) << got.error;
  EXPECT_TRUE(got.value);
  ASSERT_TRUE(b.release().ok);
}

TEST_F(EtcdIntegrationTest, KeyTakenBehindTheLeadersBackIsNoticedOnRenewal) {
  EtcdClient client(clientOptions());
  Elector a(client, clock_, electorOptions("db-01", LeaseTiming::forTtl(seconds(30))));
  ASSERT_TRUE(a.tryAcquire().value);
  ASSERT_TRUE(client.put(prefix_ + "leader", "intruder").ok);  // an operator with etcdctl
  Status renewed = a.renew();
  EXPECT_FALSE(renewed.ok);
  EXPECT_NE(renewed.error.find("intruder"), std::string::npos) << renewed.error;
  EXPECT_FALSE(a.isLeader());
  EXPECT_FALSE(a.mayWrite());
}

TEST_F(EtcdIntegrationTest, GetManyReadsExactKeysInOneRevision) {
  EtcdClient client(clientOptions());
  ASSERT_TRUE(client.put(prefix_ + "a", "1").ok);
  ASSERT_TRUE(client.put(prefix_ + "ab", "not asked for").ok);
  ASSERT_TRUE(client.put(prefix_ + "c", "3").ok);
  auto got = client.getMany({prefix_ + "a", prefix_ + "b", prefix_ + "c"});
  ASSERT_TRUE(got.ok) << got.error;
  ASSERT_EQ(got.value.size(), 3u);
  ASSERT_TRUE(got.value[0]);
  EXPECT_EQ(got.value[0]->value, "1");
  EXPECT_FALSE(got.value[1]);  // absent: "ab" is not "a"'s prefix match
  ASSERT_TRUE(got.value[2]);
  EXPECT_EQ(got.value[2]->value, "3");
  auto none = client.getMany({});
  ASSERT_TRUE(none.ok) << none.error;
  EXPECT_TRUE(none.value.empty());
}

TEST_F(EtcdIntegrationTest, RevisionGuardedPutAndDelete) {
  EtcdClient client(clientOptions());
  const std::string key = prefix_ + "k";
  ASSERT_TRUE(client.put(key, "v1").ok);
  auto v1 = client.get(key);
  ASSERT_TRUE(v1.ok && v1.value);
  ASSERT_TRUE(client.put(key, "v2").ok);
  auto stale = client.putIfUnchanged(key, v1.value->mod_revision, "lost update");
  ASSERT_TRUE(stale.ok) << stale.error;
  EXPECT_FALSE(stale.value);
  auto stale_delete = client.deleteIfUnchanged(key, v1.value->mod_revision);
  ASSERT_TRUE(stale_delete.ok) << stale_delete.error;
  EXPECT_FALSE(stale_delete.value);
  auto v2 = client.get(key);
  ASSERT_TRUE(v2.ok && v2.value);
  EXPECT_EQ(v2.value->value, "v2");
  auto put = client.putIfUnchanged(key, v2.value->mod_revision, "v3");
  ASSERT_TRUE(put.ok && put.value);
  auto v3 = client.get(key);
  ASSERT_TRUE(v3.ok && v3.value);
  auto deleted = client.deleteIfUnchanged(key, v3.value->mod_revision);
  ASSERT_TRUE(deleted.ok && deleted.value);
  auto gone = client.get(key);
  ASSERT_TRUE(gone.ok);
  EXPECT_FALSE(gone.value);
}

TEST_F(EtcdIntegrationTest, LeaderKeyRewrittenWithoutItsLeaseIsBoundAgainOnRenewal) {
  EtcdClient client(clientOptions());
  Elector a(client, clock_, electorOptions("db-01", LeaseTiming::forTtl(seconds(30))));
  ASSERT_TRUE(a.tryAcquire().value);
  ASSERT_TRUE(client.put(prefix_ + "leader", "db-01").ok);  // same value, no lease (etcdctl put)
  Status renewed = a.renew();
  ASSERT_TRUE(renewed.ok) << renewed.error;
  EXPECT_TRUE(a.isLeader());
  EXPECT_TRUE(a.mayWrite());
  auto kv = client.get(prefix_ + "leader");
  ASSERT_TRUE(kv.ok && kv.value);
  EXPECT_EQ(kv.value->value, "db-01");
  EXPECT_EQ(kv.value->lease, a.leaseId());
  ASSERT_TRUE(a.release().ok);
  auto gone = client.get(prefix_ + "leader");
  ASSERT_TRUE(gone.ok);
  EXPECT_FALSE(gone.value);  // bound again, so it went with the lease
}

TEST_F(EtcdIntegrationTest, FrozenEtcdFencesTheLeaderOnTimeThenItRecovers) {
  EtcdClient client(clientOptions());  // 1 s per call: longer than the time left before the fence
  LeaseTiming timing;
  timing.ttl = seconds(4);
  timing.renew_interval = seconds(1);
  timing.retry_interval = milliseconds(200);
  timing.safety_margin = milliseconds(1600);  // fence 2.4 s after the send: 1.6 s before expiry
  ASSERT_EQ(timing.validate(), "");
  Elector a(client, clock_, electorOptions("db-01", timing));
  ASSERT_TRUE(a.tryAcquire().value);
  const LeaseId lease = a.leaseId();
  const core::TimePoint deadline = a.lease().fenceDeadline();

  etcd_->pause();  // every call now hangs until its deadline
  LeaseDecision d;
  for (;;) {
    const core::TimePoint before = clock_.now();
    d = a.tick();
    const core::TimePoint after = clock_.now();
    if (before < deadline) {
      // A renewal started while writes were allowed never keeps the agent past the fence.
      EXPECT_LE(after, deadline + milliseconds(100));
    }
    if (d.fenced) {
      break;
    }
    ASSERT_LT(after, deadline + seconds(2)) << "never fenced";
    std::this_thread::sleep_until(std::min(d.next_action, clock_.now() + milliseconds(50)));
  }
  const core::TimePoint fenced_at = clock_.now();
  EXPECT_GE(fenced_at, deadline);
  EXPECT_LE(fenced_at, deadline + milliseconds(150));
  EXPECT_FALSE(a.lastError().empty());
  EXPECT_TRUE(a.isLeader());  // fenced, not lost: etcd may still hold the lease

  etcd_->resume();  // back within the TTL: the lease still exists and the next renewal restores it
  ASSERT_TRUE(waitFor([&] { return !a.tick().fenced; }, seconds(3))) << a.lastError();
  EXPECT_EQ(a.leaseId(), lease);
  EXPECT_TRUE(a.mayWrite());
  EXPECT_EQ(a.currentLeader().value, std::optional<std::string>("db-01"));
  ASSERT_TRUE(a.release().ok);
}

// A cluster of three members, as `fulcrum up` runs one for three [etcd] endpoints.
class EtcdCluster {
 public:
  bool start(const std::string& binary, std::string& error) {
    char tmpl[] = "/tmp/fulcrum-etcd-cluster-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      error = "mkdtemp failed";
      return false;
    }
    dir_ = tmpl;
    uint16_t ports[6];
    std::string initial;
    for (size_t i = 0; i < 6; ++i) {
      ports[i] = freePort();
    }
    for (size_t i = 0; i < 3; ++i) {
      initial += (i == 0 ? "" : ",") + std::string("m") + std::to_string(i + 1) +
                 "=http://127.0.0.1:" + std::to_string(ports[3 + i]);
    }
    for (size_t i = 0; i < 3; ++i) {
      const std::string dir = dir_ + "/m" + std::to_string(i + 1);
      std::filesystem::create_directories(dir);
      if (!members_[i].startMember(binary, dir, "m" + std::to_string(i + 1), ports[i], ports[3 + i],
                                   initial)) {
        error = "cannot start member " + std::to_string(i + 1);
        return false;
      }
    }
    EtcdClientOptions options;
    options.endpoints = endpoints();
    options.request_timeout = milliseconds(1000);
    EtcdClient probe(options);
    if (!waitFor([&] { return probe.put("/cluster/ready", "1").ok; }, seconds(30))) {
      error = "the cluster did not become ready; member 1's log:\n" + members_[0].logTail();
      return false;
    }
    return true;
  }
  ~EtcdCluster() {
    for (EtcdProcess& m : members_) {
      m.stop();
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::vector<core::SocketAddress> endpoints() const {
    return {members_[0].endpoint(), members_[1].endpoint(), members_[2].endpoint()};
  }
  EtcdProcess& member(size_t i) { return members_[i]; }

 private:
  std::string dir_;
  EtcdProcess members_[3];
};

// The agent's calls against a three-member cluster: a frozen member (SIGSTOP: connects succeed,
// answers never come), even the one the client prefers and even the raft leader, costs one
// share of a call's deadline and never a lease renewal; a member without a leader refuses at
// once, and a write refused so goes to another member.
TEST_F(EtcdIntegrationTest, ClusterMemberFrozenOrWithoutLeaderIsSkipped) {
  EtcdCluster cluster;
  std::string error;
  ASSERT_TRUE(cluster.start(*findEtcd(), error)) << error;
  // The agent's timing for a 3 s leader TTL: each call 750 ms over every endpoint.
  const milliseconds ttl(3000);
  EtcdClientOptions options;
  options.endpoints = cluster.endpoints();
  options.request_timeout = ttl / 4;
  options.connect_timeout = milliseconds(375);
  EtcdClient client(options);
  std::vector<std::string> failed;
  client.onEndpointFailed(
      [&](const core::SocketAddress& a, const std::string&) { failed.push_back(a.toString()); });
  Elector elector(client, clock_, electorOptions("db-01", LeaseTiming::forTtl(ttl)));
  ASSERT_TRUE(elector.tryAcquire().value);

  cluster.member(0).pause();  // the endpoint the client uses first
  const auto frozen = SteadyClock::now();
  uint64_t renewed = elector.renewals(true);
  milliseconds slowest_tick{0};
  while (SteadyClock::now() - frozen < 2 * ttl) {
    const auto tick_start = SteadyClock::now();
    LeaseDecision d = elector.tick();
    slowest_tick = std::max(slowest_tick, std::chrono::duration_cast<milliseconds>(SteadyClock::now() - tick_start));
    ASSERT_FALSE(d.fenced) << "fenced "
                           << std::chrono::duration_cast<milliseconds>(SteadyClock::now() - frozen).count()
                           << " ms after the freeze: " << elector.lastError();
    std::this_thread::sleep_until(std::min(d.next_action, clock_.now() + milliseconds(50)));
  }
  EXPECT_GE(elector.renewals(true), renewed + 2);
  // A renewal is a keepalive and a read: the frozen member costs the first its share (1/3).
  RecordProperty("slowest_renewal_ms", static_cast<int>(slowest_tick.count()));
  EXPECT_LT(slowest_tick, 2 * options.request_timeout);
  EXPECT_EQ(elector.currentLeader().value, std::optional<std::string>("db-01"));
  ASSERT_FALSE(failed.empty());
  EXPECT_EQ(failed.front(), cluster.endpoints()[0].toString());
  cluster.member(0).resume();
  ASSERT_TRUE(elector.release().ok);

  // Member 1 alone: no quorum, no leader. Its answer comes at once, and the call retries it
  // (an election may end) until its deadline, no longer.
  cluster.member(1).stop();
  cluster.member(2).stop();
  EtcdClientOptions lone_options = options;
  lone_options.endpoints = {cluster.endpoints()[0]};
  EtcdClient lone(lone_options);
  ASSERT_TRUE(waitFor(
      [&] {
        auto got = lone.get(prefix_ + "k");
        return !got.ok && got.error.find("no leader") != std::string::npos;
      },
      seconds(10)));
  auto start = SteadyClock::now();
  auto refused = lone.put(prefix_ + "k", "v");
  auto took = SteadyClock::now() - start;
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.error.find("no leader"), std::string::npos) << refused.error;
  EXPECT_LT(took, options.request_timeout + milliseconds(200));  // etcd alone would hold it 5 s and more

  // A write it refused was never proposed: the next endpoint (a live etcd) takes it.
  EtcdClientOptions mixed = options;
  mixed.endpoints = {cluster.endpoints()[0], etcd_->endpoint()};
  EtcdClient writer(mixed);
  auto put = writer.put(prefix_ + "k", "v");
  ASSERT_TRUE(put.ok) << put.error;
  EtcdClient reader(clientOptions());
  auto got = reader.get(prefix_ + "k");
  ASSERT_TRUE(got.ok && got.value) << got.error;
  EXPECT_EQ(got.value->value, "v");
}

}  // namespace
}  // namespace fulcrum::db
