#include "core/event_loop.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <vector>

#include "core/address.h"
#include "core/buffer.h"

namespace fulcrum::core {
namespace {

using std::chrono::milliseconds;

// Records its calls; may queue another hook (or itself) from inside its call.
struct RecordingHook : BatchHook {
  RecordingHook(EventLoop& loop, std::vector<int>& log, int id) : loop(loop), log(log), id(id) {}
  void onBatchEnd() override {
    log.push_back(id);
    if (then != nullptr) {
      loop.atBatchEnd(then);
      then = nullptr;
    }
  }
  EventLoop& loop;
  std::vector<int>& log;
  int id;
  BatchHook* then = nullptr;
};

TEST(BatchHookTest, RunsOnceAtTheEndOfTheBatchInOrderAndMayQueueMore) {
  ManualClock clock;
  EventLoop loop(clock);
  std::vector<int> log;
  RecordingHook a(loop, log, 1);
  RecordingHook b(loop, log, 2);
  RecordingHook c(loop, log, 3);
  a.then = &c;  // queued from inside a's call: runs in the same batch end
  loop.atBatchEnd(&a);
  loop.atBatchEnd(&b);
  EXPECT_TRUE(log.empty());  // nothing runs at queue time
  loop.runOnce(Duration::zero());
  EXPECT_EQ(log, (std::vector<int>{1, 2, 3}));
  loop.runOnce(Duration::zero());
  EXPECT_EQ(log.size(), 3u);  // once per queueing
}

TEST(BatchHookTest, CancelledHookDoesNotRun) {
  ManualClock clock;
  EventLoop loop(clock);
  std::vector<int> log;
  RecordingHook a(loop, log, 1);
  RecordingHook b(loop, log, 2);
  loop.atBatchEnd(&a);
  loop.atBatchEnd(&b);
  loop.cancelBatchEnd(&a);  // its owner is going away
  loop.runOnce(Duration::zero());
  EXPECT_EQ(log, (std::vector<int>{2}));
}

TEST(TimerTest, FiresAtDeadlineOnSimulatedTime) {
  ManualClock clock;
  EventLoop loop(clock);
  loop.updateTime();
  int fired = 0;
  Timer timer(loop, [&] { ++fired; });
  timer.armAfter(milliseconds(100));
  clock.advance(milliseconds(99));
  loop.runExpiredTimers();
  EXPECT_EQ(fired, 0);
  clock.advance(milliseconds(1));
  loop.runExpiredTimers();
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(timer.armed());
  clock.advance(milliseconds(1000));
  loop.runExpiredTimers();
  EXPECT_EQ(fired, 1);  // one-shot
}

TEST(TimerTest, RearmLaterPostponesWithoutFiring) {
  ManualClock clock;
  EventLoop loop(clock);
  loop.updateTime();
  int fired = 0;
  Timer timer(loop, [&] { ++fired; });
  timer.armAfter(milliseconds(100));
  clock.advance(milliseconds(50));
  loop.updateTime();
  timer.armAfter(milliseconds(100));  // now due at 150
  clock.advance(milliseconds(60));    // t=110: the first entry pops and must re-queue
  loop.runExpiredTimers();
  EXPECT_EQ(fired, 0);
  EXPECT_TRUE(timer.armed());
  clock.advance(milliseconds(40));  // t=150
  loop.runExpiredTimers();
  EXPECT_EQ(fired, 1);
}

TEST(TimerTest, RearmEarlierFiresEarlier) {
  ManualClock clock;
  EventLoop loop(clock);
  loop.updateTime();
  int fired = 0;
  Timer timer(loop, [&] { ++fired; });
  timer.armAfter(milliseconds(1000));
  timer.armAfter(milliseconds(10));
  clock.advance(milliseconds(10));
  loop.runExpiredTimers();
  EXPECT_EQ(fired, 1);
  clock.advance(milliseconds(2000));
  loop.runExpiredTimers();
  EXPECT_EQ(fired, 1);  // the stale 1000 ms entry does not fire again
}

TEST(TimerTest, DisarmAndDestroyCancel) {
  ManualClock clock;
  EventLoop loop(clock);
  loop.updateTime();
  int fired = 0;
  Timer a(loop, [&] { ++fired; });
  a.armAfter(milliseconds(5));
  a.disarm();
  {
    Timer b(loop, [&] { ++fired; });
    b.armAfter(milliseconds(5));
  }
  // A new timer reusing the released slot must not inherit the old entry.
  Timer c(loop, [&] { fired += 10; });
  c.armAfter(milliseconds(20));
  clock.advance(milliseconds(10));
  loop.runExpiredTimers();
  EXPECT_EQ(fired, 0);
  clock.advance(milliseconds(10));
  loop.runExpiredTimers();
  EXPECT_EQ(fired, 10);
}

TEST(TimerTest, FireInOrderOfDeadline) {
  ManualClock clock;
  EventLoop loop(clock);
  loop.updateTime();
  std::vector<int> order;
  Timer t3(loop, [&] { order.push_back(3); });
  Timer t1(loop, [&] { order.push_back(1); });
  Timer t2(loop, [&] { order.push_back(2); });
  t3.armAfter(milliseconds(30));
  t1.armAfter(milliseconds(10));
  t2.armAfter(milliseconds(20));
  clock.advance(milliseconds(100));
  loop.runExpiredTimers();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(TimerTest, CallbackMayDestroyItsTimer) {
  ManualClock clock;
  EventLoop loop(clock);
  loop.updateTime();
  auto timer = std::make_unique<Timer>(loop, [] {});
  bool ran = false;
  timer = std::make_unique<Timer>(loop, [&] {
    ran = true;
    timer.reset();
  });
  timer->armAfter(milliseconds(1));
  clock.advance(milliseconds(1));
  loop.runExpiredTimers();
  EXPECT_TRUE(ran);
  EXPECT_EQ(timer, nullptr);
}

TEST(EventLoopTest, PostRunsOnLoopAndStopEndsRun) {
  EventLoop loop;
  int ran = 0;
  loop.post([&] { ++ran; });
  loop.post([&] { loop.stop(); });
  loop.run();
  EXPECT_EQ(ran, 1);
}

class Recorder : public IoHandler {
 public:
  void onIoEvents(uint32_t events) override { seen |= events; }
  uint32_t seen = 0;
};

TEST(EventLoopTest, DispatchesReadiness) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  Fd a(sv[0]);
  Fd b(sv[1]);
  EventLoop loop;
  Recorder rec;
  ASSERT_TRUE(loop.add(a.get(), EPOLLIN, &rec));
  loop.runOnce(milliseconds(0));
  EXPECT_EQ(rec.seen, 0u);
  ASSERT_EQ(::write(b.get(), "x", 1), 1);
  loop.runOnce(milliseconds(1000));
  EXPECT_TRUE(rec.seen & EPOLLIN);
  loop.remove(a.get());
}

TEST(BufferTest, AppendConsumeAndGrow) {
  Buffer buf;
  EXPECT_TRUE(buf.empty());
  buf.append("hello ");
  buf.append("world");
  EXPECT_EQ(buf.view(), "hello world");
  buf.consume(6);
  EXPECT_EQ(buf.view(), "world");
  std::string big(100000, 'x');
  buf.append(big);
  EXPECT_EQ(buf.size(), 5 + big.size());
  EXPECT_EQ(buf.view().substr(0, 5), "world");
  buf.consume(buf.size());
  EXPECT_TRUE(buf.empty());
  buf.releaseIfEmpty();
  EXPECT_EQ(buf.capacity(), 0u);
}

TEST(BufferTest, CompactsInsteadOfGrowing) {
  Buffer buf;
  std::string chunk(Buffer::kBlockSize - 100, 'a');
  buf.append(chunk);
  buf.consume(chunk.size() - 10);
  buf.append(std::string(1000, 'b'));  // fits once the 10 live bytes move to the front
  EXPECT_EQ(buf.capacity(), Buffer::kBlockSize);
  EXPECT_EQ(buf.size(), 1010u);
}

TEST(BufferTest, ReadFromRespectsLimit) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  Fd a(sv[0]);
  Fd b(sv[1]);
  ASSERT_EQ(::write(b.get(), "0123456789", 10), 10);
  Buffer buf;
  EXPECT_EQ(buf.readFrom(a.get(), 4), 4);
  EXPECT_EQ(buf.view(), "0123");
  EXPECT_EQ(buf.readFrom(a.get(), 4), -1);  // full
  buf.consume(4);
  EXPECT_EQ(buf.readFrom(a.get(), 100), 6);
  EXPECT_EQ(buf.view(), "456789");
}

TEST(AddressTest, ParsesAndPrints) {
  auto v4 = SocketAddress::parse("127.0.0.1:8080");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->port(), 8080);
  EXPECT_EQ(v4->toString(), "127.0.0.1:8080");
  auto v6 = SocketAddress::parse("[::1]:443");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->family(), AF_INET6);
  EXPECT_EQ(v6->toString(), "[::1]:443");
  EXPECT_FALSE(SocketAddress::parse("localhost:80"));
  EXPECT_FALSE(SocketAddress::parse("127.0.0.1"));
  EXPECT_FALSE(SocketAddress::parse("127.0.0.1:65536"));
  EXPECT_FALSE(SocketAddress::parse("127.0.0.1:-1"));
  EXPECT_FALSE(SocketAddress::parse("127.0.0.1:80x"));
  EXPECT_FALSE(SocketAddress::parse("::1:80"));
  EXPECT_FALSE(SocketAddress::parse("[127.0.0.1]:80"));
}

TEST(AddressTest, PrefixMatch) {
  auto ip = IpAddress::parse("10.1.2.3");
  auto net = IpAddress::parse("10.0.0.0");
  ASSERT_TRUE(ip && net);
  EXPECT_TRUE(ip->inPrefix(*net, 8));
  EXPECT_FALSE(ip->inPrefix(*net, 16));
  EXPECT_TRUE(ip->inPrefix(*net, 0));
  auto v6 = IpAddress::parse("2001:db8::1");
  EXPECT_FALSE(v6->inPrefix(*net, 0));  // families never match
  EXPECT_TRUE(v6->inPrefix(*IpAddress::parse("2001:db8::"), 32));
}

}  // namespace
}  // namespace fulcrum::core
