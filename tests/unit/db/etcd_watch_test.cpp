// EtcdWatch against a real etcd 3.4 (skipped when none is installed), plus a scripted server that
// cuts the stream at awkward places. The etcd here is started by this file, not shared with
// etcd_integration_test.cpp, because one test kills and restarts it on the same ports and data.
// Real time: every wait is a bounded pump of the event loop.
#include "db/etcd_watch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/event_loop.h"
#include "core/socket.h"
#include "db/etcd_client.h"
#include "db/etcd_codec.h"
#include "test_support.h"

namespace fulcrum::db {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

// Runs `loop` until `done` holds or `limit` passes; returns the final answer.
bool pumpUntil(core::EventLoop& loop, const std::function<bool()>& done, SteadyClock::duration limit) {
  const auto until = SteadyClock::now() + limit;
  while (!done()) {
    if (SteadyClock::now() >= until) {
      return false;
    }
    loop.runOnce(milliseconds(10));
  }
  return true;
}

// One etcd member on fixed loopback ports and a fixed data directory, so it can be killed and
// started again as "the same member after a crash".
class EtcdMember {
 public:
  ~EtcdMember() {
    kill();
    if (!dir_.empty()) {
      std::filesystem::remove_all(dir_);
    }
  }

  // False with `error` set; `missing` when no etcd binary exists (the test is then skipped).
  bool start(std::string& error, bool& missing) {
    const char* env = std::getenv("FULCRUM_ETCD_BIN");
    binary_ = env != nullptr && *env != '\0' ? env : "etcd";
    char tmpl[] = "/tmp/fulcrum-watch-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      error = "mkdtemp failed";
      return false;
    }
    dir_ = tmpl;
    for (int attempt = 0; attempt < 3; ++attempt) {  // a port may be taken between pick and bind
      client_port_ = testing::freePort();
      peer_port_ = testing::freePort();
      if (launch(missing)) {
        return true;
      }
      if (missing) {
        return false;
      }
      kill();
      std::filesystem::remove_all(dir_ + "/data");
    }
    error = "etcd did not become ready (log in " + dir_ + "/etcd.log)";
    return false;
  }

  bool restart() {
    bool missing = false;
    return launch(missing);
  }

  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);  // a crash, not a clean shutdown
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  core::SocketAddress endpoint() const {
    return *core::SocketAddress::parse("127.0.0.1:" + std::to_string(client_port_));
  }

 private:
  bool launch(bool& missing) {
    const std::string client = "http://127.0.0.1:" + std::to_string(client_port_);
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::vector<std::string> args = {binary_,
                                     "--name=watch",
                                     "--data-dir=" + dir_ + "/data",
                                     "--listen-client-urls=" + client,
                                     "--advertise-client-urls=" + client,
                                     "--listen-peer-urls=" + peer,
                                     "--initial-advertise-peer-urls=" + peer,
                                     "--initial-cluster=watch=" + peer,
                                     "--heartbeat-interval=50",  // also lowers the minimum lease TTL to 1 s
                                     "--election-timeout=500",
                                     "--log-level=warn"};
    std::vector<char*> argv;
    for (std::string& arg : args) {
      argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    const std::string log = dir_ + "/etcd.log";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives a crashed test
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    EtcdClientOptions options;
    options.endpoints = {endpoint()};
    options.request_timeout = milliseconds(500);
    EtcdClient probe(options);
    int status = 0;
    bool exited = false;
    bool ready = testing::waitFor(
        [&] {
          exited = ::waitpid(pid_, &status, WNOHANG) == pid_;
          return exited || probe.get("/ready").ok;
        },
        seconds(30));
    if (exited) {
      pid_ = -1;
      missing = WIFEXITED(status) && WEXITSTATUS(status) == 127;
      return false;
    }
    return ready;
  }

  std::string binary_;
  std::string dir_;
  uint16_t client_port_ = 0;
  uint16_t peer_port_ = 0;
  pid_t pid_ = -1;
};

// What a watch reported, in order.
struct Recorder {
  std::vector<WatchEvent> events;
  int resyncs = 0;

  EtcdWatch::EventCallback onEvent() {
    return [this](const WatchEvent& e) { events.push_back(e); };
  }
  EtcdWatch::ResyncCallback onResync() {
    return [this] { ++resyncs; };
  }
};

class EtcdWatchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    member_ = new EtcdMember();
    bool missing = false;
    if (!member_->start(start_error_, missing)) {
      delete member_;
      member_ = nullptr;
      if (missing) {
        start_error_.clear();
      }
    }
  }
  static void TearDownTestSuite() {
    delete member_;
    member_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(start_error_.empty()) << start_error_;
    if (member_ == nullptr) {
      FULCRUM_SKIP_UNLESS_CI("etcd is not installed (apt-get install etcd-server, or set FULCRUM_ETCD_BIN)");
    }
    prefix_ = std::string("/watch/") + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "/";
    EtcdClientOptions options;
    options.endpoints = {member_->endpoint()};
    client_ = std::make_unique<EtcdClient>(options);
  }

  EtcdWatchOptions watchOptions() const {
    EtcdWatchOptions options;
    options.endpoints = {member_->endpoint()};
    options.prefix = prefix_;
    return options;
  }

  static EtcdMember* member_;
  static std::string start_error_;
  std::string prefix_;
  std::unique_ptr<EtcdClient> client_;
  core::EventLoop loop_;
  Recorder seen_;
};

EtcdMember* EtcdWatchTest::member_ = nullptr;
std::string EtcdWatchTest::start_error_;

TEST_F(EtcdWatchTest, PutAndDeleteUnderThePrefixArriveOthersDoNot) {
  EtcdWatch watch(loop_, watchOptions(), seen_.onEvent(), seen_.onResync());
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return watch.connected(); }, seconds(5)))
      << watch.lastError();
  EXPECT_EQ(seen_.resyncs, 1);
  EXPECT_GT(watch.revision(), 0);

  // Written first, so an event for it would come before the others.
  ASSERT_TRUE(client_->put(prefix_.substr(0, prefix_.size() - 1) + "0", "outside").ok);
  ASSERT_TRUE(client_->put("/other", "outside").ok);
  const std::string key = prefix_ + "leader";
  ASSERT_TRUE(client_->put(key, "node-a").ok);
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return !seen_.events.empty(); }, seconds(5)));
  ASSERT_EQ(seen_.events.size(), 1u);
  EXPECT_EQ(seen_.events[0].type, WatchEvent::Type::Put);
  EXPECT_EQ(seen_.events[0].key, key);
  EXPECT_EQ(seen_.events[0].value, "node-a");
  EXPECT_GT(seen_.events[0].mod_revision, 0);

  ASSERT_TRUE(client_->compareAndDelete(key, "node-a").value);
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return seen_.events.size() == 2; }, seconds(5)));
  EXPECT_EQ(seen_.events[1].type, WatchEvent::Type::Delete);
  EXPECT_EQ(seen_.events[1].key, key);
  EXPECT_EQ(seen_.events[1].value, "");
  EXPECT_GT(seen_.events[1].mod_revision, seen_.events[0].mod_revision);
  EXPECT_EQ(watch.revision(), seen_.events[1].mod_revision);
  EXPECT_EQ(seen_.resyncs, 1);
}

TEST_F(EtcdWatchTest, ALargeValueIsNotDecodedButCallsForAResync) {
  // Anyone who can write under the prefix could stall every agent with megabytes of JSON per
  // write: such a message is not decoded, the owner re-reads its own keys instead.
  EtcdWatch watch(loop_, watchOptions(), seen_.onEvent(), seen_.onResync());
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return watch.connected(); }, seconds(5)))
      << watch.lastError();
  ASSERT_EQ(seen_.resyncs, 1);
  ASSERT_TRUE(client_->put(prefix_ + "junk", std::string(1 << 20, '[')).ok);
  ASSERT_TRUE(client_->put(prefix_ + "leader", "node-a").ok);
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return !seen_.events.empty(); }, seconds(5)));
  ASSERT_EQ(seen_.events.size(), 1u);
  EXPECT_EQ(seen_.events[0].key, prefix_ + "leader");  // the stream goes on after the large one
  EXPECT_EQ(seen_.resyncs, 2);
  EXPECT_TRUE(watch.connected());
}

TEST_F(EtcdWatchTest, ExpiredLeaseDeletesTheKeyAtOnce) {
  EtcdWatch watch(loop_, watchOptions(), seen_.onEvent(), seen_.onResync());
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return watch.connected(); }, seconds(5)))
      << watch.lastError();
  const auto granted = SteadyClock::now();  // no later than etcd's grant, so no later than its expiry
  auto lease = client_->grantLease(milliseconds(1000));
  ASSERT_TRUE(lease.ok) << lease.error;
  ASSERT_TRUE(client_->put(prefix_ + "leader", "node-a", lease.value.id).ok);

  // etcd checks expiry every 500 ms: the delete comes within the TTL plus that, plus slack.
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return seen_.events.size() == 2; }, seconds(lease.value.ttl_seconds) + seconds(4)));
  const auto waited = SteadyClock::now() - granted;
  EXPECT_EQ(seen_.events[0].type, WatchEvent::Type::Put);
  EXPECT_EQ(seen_.events[1].type, WatchEvent::Type::Delete);
  EXPECT_EQ(seen_.events[1].key, prefix_ + "leader");
  EXPECT_GE(waited, seconds(lease.value.ttl_seconds));
}

TEST_F(EtcdWatchTest, SkipsADeadEndpoint) {
  EtcdWatchOptions options = watchOptions();
  options.endpoints.insert(options.endpoints.begin(),
                           *core::SocketAddress::parse("127.0.0.1:" + std::to_string(testing::freePort())));
  EtcdWatch watch(loop_, options, seen_.onEvent(), seen_.onResync());
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return watch.connected(); }, seconds(5)))
      << watch.lastError();
  EXPECT_NE(watch.lastError().find("connect"), std::string::npos) << watch.lastError();
  ASSERT_TRUE(client_->put(prefix_ + "k", "v").ok);
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return seen_.events.size() == 1; }, seconds(5)));
}

TEST_F(EtcdWatchTest, LeavesAMemberItsOwnerFoundUnresponsive) {
  // A listener that never accepts: the connect completes in the kernel, nothing ever answers,
  // as with a frozen member.
  std::string error;
  core::Fd silent =
      core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), core::ListenOptions{false, 8}, error);
  ASSERT_TRUE(silent) << error;
  const core::SocketAddress frozen = core::localAddress(silent.get());
  EtcdWatchOptions options = watchOptions();
  options.endpoints.insert(options.endpoints.begin(), frozen);
  options.create_timeout = seconds(30);  // the watch alone would wait that long
  EtcdWatch watch(loop_, options, seen_.onEvent(), seen_.onResync());
  pumpUntil(
      loop_, [] { return false; }, milliseconds(200));
  EXPECT_FALSE(watch.connected());
  watch.leave(member_->endpoint(), "not the one in use");  // no effect
  const auto left = SteadyClock::now();
  watch.leave(frozen, "timed out");
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return watch.connected(); }, seconds(5)))
      << watch.lastError();
  EXPECT_LT(SteadyClock::now() - left, seconds(2));
  EXPECT_NE(watch.lastError().find("timed out"), std::string::npos) << watch.lastError();
  watch.leave(frozen, "again");  // not on it any more: the stream stays
  ASSERT_TRUE(client_->put(prefix_ + "k", "v").ok);
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return seen_.events.size() == 1; }, seconds(5)));
  EXPECT_TRUE(watch.connected());
}

// Last: it kills the shared member (and leaves it running again).
TEST_F(EtcdWatchTest, ZzReconnectsAfterEtcdRestarts) {
  EtcdWatch watch(loop_, watchOptions(), seen_.onEvent(), seen_.onResync());
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return watch.connected(); }, seconds(5)))
      << watch.lastError();
  ASSERT_TRUE(client_->put(prefix_ + "a", "1").ok);
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return seen_.events.size() == 1; }, seconds(5)));

  member_->kill();
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return !watch.connected(); }, seconds(5)));
  // Retries meet a closed port while etcd is down; they must go on until it is back.
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return watch.lastError().find("Connection refused") != std::string::npos; }, seconds(5)))
      << watch.lastError();
  ASSERT_TRUE(member_->restart());
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return watch.connected(); }, seconds(10)))
      << watch.lastError();
  EXPECT_EQ(seen_.resyncs, 2);

  ASSERT_TRUE(client_->put(prefix_ + "b", "2").ok);
  ASSERT_TRUE(pumpUntil(
      loop_, [&] { return seen_.events.size() == 2; }, seconds(5)));
  EXPECT_EQ(seen_.events[1].key, prefix_ + "b");
  EXPECT_EQ(seen_.events[1].value, "2");
}

// A server that plays etcd's side of a watch from a script, to cut the stream where etcd rarely
// does and to answer what a healthy etcd would not.
class ScriptedEtcd {
 public:
  ScriptedEtcd() {
    std::string error;
    listener_ =
        core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), core::ListenOptions{false, 4}, error);
  }
  core::SocketAddress endpoint() const { return core::localAddress(listener_.get()); }

  // Accepts the watch's next connection and returns its request body.
  std::string acceptRequest(core::EventLoop& loop) {
    std::string in;
    size_t body_at = std::string::npos;
    size_t length = 0;
    pumpUntil(
        loop,
        [&] {
          if (!conn_) {
            conn_ = core::Fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK));
            return false;
          }
          char buffer[4096];
          ssize_t n = ::recv(conn_.get(), buffer, sizeof buffer, 0);
          if (n > 0) {
            in.append(buffer, static_cast<size_t>(n));
          }
          if (body_at == std::string::npos && (body_at = in.find("\r\n\r\n")) != std::string::npos) {
            body_at += 4;
            size_t at = in.find("Content-Length: ");
            length = at == std::string::npos ? 0 : std::stoul(in.substr(at + 16));
          }
          return body_at != std::string::npos && in.size() >= body_at + length;
        },
        seconds(5));
    return body_at == std::string::npos ? std::string() : in.substr(body_at);
  }

  // Sends `bytes` a few at a time, letting the watch read each piece on its own.
  void trickle(core::EventLoop& loop, std::string_view bytes, size_t piece) {
    for (size_t at = 0; at < bytes.size(); at += piece) {
      std::string_view part = bytes.substr(at, piece);
      ASSERT_EQ(::send(conn_.get(), part.data(), part.size(), MSG_NOSIGNAL),
                static_cast<ssize_t>(part.size()));
      loop.runOnce(milliseconds(5));
    }
  }

  void drop() { conn_.reset(); }
  int listenFd() const { return listener_.get(); }

 private:
  core::Fd listener_;
  core::Fd conn_;
};

std::string chunk(std::string_view data) {
  char size[20];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + std::string(data) + "\r\n";
}

constexpr std::string_view kStreamHead = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

std::string created(int revision) {
  return R"({"result":{"header":{"revision":")" + std::to_string(revision) +
         R"("},"created":true}})"
         "\n";
}

TEST(EtcdWatchStreamTest, ParsesMessagesSplitAnywhereAndResumesAfterTheLastRevision) {
  core::EventLoop loop;
  ScriptedEtcd etcd;
  Recorder seen;
  EtcdWatchOptions options;
  options.endpoints = {etcd.endpoint()};
  options.prefix = "/p/";
  options.create_timeout = milliseconds(300);
  EtcdWatch watch(loop, options, seen.onEvent(), seen.onResync());

  std::string body = etcd.acceptRequest(loop);
  EXPECT_NE(body.find(R"("key":")" + etcd::base64Encode("/p/") + "\""), std::string::npos) << body;
  EXPECT_NE(body.find(R"("range_end":")" + etcd::base64Encode("/p0") + "\""), std::string::npos) << body;
  EXPECT_EQ(body.find("start_revision"), std::string::npos) << body;

  // A PUT has no "type" (proto3 leaves the zero value out); two events share one message, and
  // chunk boundaries fall inside messages and between several of them.
  const std::string two_events = R"({"result":{"header":{"revision":"7"},"events":[)"
                                 R"({"kv":{"key":")" +
                                 etcd::base64Encode("/p/a") + R"(","mod_revision":"6","value":")" +
                                 etcd::base64Encode("x") + R"("}},{"type":"DELETE","kv":{"key":")" +
                                 etcd::base64Encode("/p/b") +
                                 R"(","mod_revision":"7"}}]}})"
                                 "\n";
  const std::string one_event = R"({"result":{"events":[{"type":"PUT","kv":{"key":")" +
                                etcd::base64Encode("/p/c") +
                                R"(","mod_revision":"8"}}]}})"
                                "\n";
  const std::string stream = created(5) + two_events + one_event;
  const size_t cut = created(5).size() + 20;
  etcd.trickle(loop, std::string(kStreamHead) + chunk(stream.substr(0, cut)) + chunk(stream.substr(cut)), 7);
  ASSERT_TRUE(pumpUntil(
      loop, [&] { return seen.events.size() == 3; }, seconds(2)));
  EXPECT_TRUE(watch.connected());
  EXPECT_EQ(seen.resyncs, 1);
  EXPECT_EQ(seen.events[0].type, WatchEvent::Type::Put);
  EXPECT_EQ(seen.events[0].key, "/p/a");
  EXPECT_EQ(seen.events[0].value, "x");
  EXPECT_EQ(seen.events[0].mod_revision, 6);
  EXPECT_EQ(seen.events[1].type, WatchEvent::Type::Delete);
  EXPECT_EQ(seen.events[1].key, "/p/b");
  EXPECT_EQ(seen.events[2].type, WatchEvent::Type::Put);
  EXPECT_EQ(watch.revision(), 8);

  // An error inside the stream ends it; the next stream starts after the last revision seen.
  etcd.trickle(loop,
               chunk(R"({"error":{"grpc_code":14,"message":"boom"}})"
                     "\n"),
               1000);
  ASSERT_TRUE(pumpUntil(
      loop, [&] { return !watch.connected(); }, seconds(2)));
  EXPECT_NE(watch.lastError().find("boom"), std::string::npos) << watch.lastError();
  etcd.drop();
  body = etcd.acceptRequest(loop);
  EXPECT_NE(body.find(R"("start_revision":"9")"), std::string::npos) << body;

  // Compacted past that revision: watch from now, and resync.
  etcd.trickle(loop,
               std::string(kStreamHead) + chunk(created(20)) +
                   chunk(R"({"result":{"canceled":true,"compact_revision":"15"}})"
                         "\n"),
               1000);
  etcd.drop();
  body = etcd.acceptRequest(loop);
  EXPECT_EQ(body.find("start_revision"), std::string::npos) << body;
  EXPECT_EQ(seen.resyncs, 2);

  // A member that accepts and never answers is left after create_timeout.
  ASSERT_TRUE(pumpUntil(
      loop, [&] { return watch.lastError().find("timeout") != std::string::npos; }, seconds(2)))
      << watch.lastError();
  etcd.drop();
  body = etcd.acceptRequest(loop);
  etcd.trickle(loop, std::string(kStreamHead) + chunk(created(30)), 1000);
  ASSERT_TRUE(pumpUntil(
      loop, [&] { return watch.connected(); }, seconds(2)));
  EXPECT_EQ(seen.resyncs, 3);
  EXPECT_EQ(watch.revision(), 30);

  watch.stop();
  EXPECT_FALSE(watch.connected());
}

TEST(EtcdWatchStreamTest, StopInsideACallbackEndsTheStreamAndTheRetries) {
  core::EventLoop loop;
  ScriptedEtcd etcd;
  EtcdWatchOptions options;
  options.endpoints = {etcd.endpoint()};
  int events = 0;
  std::unique_ptr<EtcdWatch> watch;
  watch = std::make_unique<EtcdWatch>(
      loop, options,
      [&](const WatchEvent&) {
        ++events;
        watch->stop();
      },
      [] {});
  etcd.acceptRequest(loop);
  const std::string put = R"({"kv":{"key":")" + etcd::base64Encode("k") + R"(","mod_revision":"2"}})";
  etcd.trickle(loop,
               std::string(kStreamHead) + chunk(created(1)) +
                   chunk(R"({"result":{"events":[)" + put + "," + put + "]}}\n"),
               1000);
  // Longer than the first backoff: a retry would have connected by then.
  pumpUntil(
      loop, [] { return false; }, milliseconds(300));
  EXPECT_EQ(events, 1);
  EXPECT_FALSE(watch->connected());
  EXPECT_LT(::accept4(etcd.listenFd(), nullptr, nullptr, SOCK_NONBLOCK), 0);
}

}  // namespace
}  // namespace fulcrum::db
