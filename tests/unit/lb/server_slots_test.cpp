// Server slots and the queue ([[web.node]] max_conn, [lb] queue_timeout_ms): a limit holds across
// threads, waiters are served in arrival order on whichever usable server frees a slot, a
// newcomer never jumps the queue, and a waiter that gave up passes its slot on.
#include "lb/server_slots.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace fulcrum::lb {
namespace {

struct Delivery {
  uint32_t worker;
  uint64_t ticket;
  uint32_t server;
};

class ServerSlotsTest : public ::testing::Test {
 protected:
  void make(std::vector<SlotLimits> servers, size_t max_queue = 100) {
    slots_ = std::make_unique<ServerSlots>(servers, max_queue, [this](uint32_t worker, uint64_t ticket, uint32_t server) {
      delivered_.push_back(Delivery{worker, ticket, server});
    });
  }
  std::unique_ptr<ServerSlots> slots_;
  std::vector<Delivery> delivered_;
};

TEST_F(ServerSlotsTest, ALimitedServerTakesNoMoreThanItsLimit) {
  make({{2, false, false}, {0, false, false}});
  EXPECT_TRUE(slots_->limited(0));
  EXPECT_FALSE(slots_->limited(1));
  EXPECT_TRUE(slots_->anyLimited());
  EXPECT_TRUE(slots_->tryAcquire(0));
  EXPECT_TRUE(slots_->tryAcquire(0));
  EXPECT_FALSE(slots_->tryAcquire(0));
  EXPECT_EQ(slots_->active(0), 2u);
  slots_->release(0);
  EXPECT_TRUE(slots_->tryAcquire(0));
}

TEST_F(ServerSlotsTest, WaitersAreServedInArrivalOrderAsSlotsFree) {
  make({{1, false, false}});
  ASSERT_TRUE(slots_->tryAcquire(0));
  uint64_t a = slots_->enqueue(0);
  uint64_t b = slots_->enqueue(1);
  uint64_t c = slots_->enqueue(0);
  ASSERT_NE(a, 0u);
  EXPECT_TRUE(delivered_.empty());
  EXPECT_EQ(slots_->queued(), 3u);
  // A newcomer does not jump the queue, even at the moment a slot is free.
  slots_->release(0);
  ASSERT_EQ(delivered_.size(), 1u);
  EXPECT_EQ(delivered_[0].ticket, a);
  EXPECT_EQ(delivered_[0].worker, 0u);
  EXPECT_EQ(slots_->active(0), 1u) << "the slot went to the waiter without dropping";
  EXPECT_FALSE(slots_->tryAcquire(0));
  slots_->release(0);
  ASSERT_EQ(delivered_.size(), 2u);
  EXPECT_EQ(delivered_[1].ticket, b);
  EXPECT_EQ(delivered_[1].worker, 1u);
  slots_->release(0);
  ASSERT_EQ(delivered_.size(), 3u);
  EXPECT_EQ(delivered_[2].ticket, c);
  slots_->release(0);
  EXPECT_EQ(slots_->active(0), 0u);
  EXPECT_EQ(slots_->queued(), 0u);
  EXPECT_TRUE(slots_->tryAcquire(0));
}

TEST_F(ServerSlotsTest, ACancelledWaiterLeavesTheQueueAndALateOneLearnsItsSlotIsOnTheWay) {
  make({{1, false, false}});
  ASSERT_TRUE(slots_->tryAcquire(0));
  uint64_t a = slots_->enqueue(0);
  uint64_t b = slots_->enqueue(0);
  EXPECT_TRUE(slots_->cancel(a));
  EXPECT_FALSE(slots_->cancel(a));
  slots_->release(0);
  ASSERT_EQ(delivered_.size(), 1u);
  EXPECT_EQ(delivered_[0].ticket, b);
  EXPECT_FALSE(slots_->cancel(b)) << "its slot was already delivered";
}

TEST_F(ServerSlotsTest, TheQueueIsBounded) {
  make({{1, false, false}}, 2);
  ASSERT_TRUE(slots_->tryAcquire(0));
  EXPECT_NE(slots_->enqueue(0), 0u);
  EXPECT_NE(slots_->enqueue(0), 0u);
  EXPECT_EQ(slots_->enqueue(0), 0u);
  slots_->setMaxQueue(3);
  EXPECT_NE(slots_->enqueue(0), 0u);
}

TEST_F(ServerSlotsTest, WaitersGoToUsableServersOnlyAndBackupsOnlyWithoutActiveOnes) {
  make({{1, false, false}, {1, false, false}, {1, true, false}});
  ASSERT_TRUE(slots_->tryAcquire(0));
  ASSERT_TRUE(slots_->tryAcquire(1));
  slots_->setUp(1, false);
  uint64_t a = slots_->enqueue(0);
  EXPECT_TRUE(delivered_.empty()) << "the backup waits while an active server is up";
  slots_->release(1);  // down: its slot frees but takes no waiter
  EXPECT_TRUE(delivered_.empty());
  slots_->setUp(1, true);  // back: its free slot goes to the waiter
  ASSERT_EQ(delivered_.size(), 1u);
  EXPECT_EQ(delivered_[0].ticket, a);
  EXPECT_EQ(delivered_[0].server, 1u);
  slots_->setEjected(1, true);
  uint64_t b = slots_->enqueue(0);
  slots_->release(1);  // a's slot frees on an ejected server: b does not get it
  EXPECT_EQ(delivered_.size(), 1u);
  slots_->setInRotation(0, false);
  ASSERT_EQ(delivered_.size(), 2u) << "no active server left: the backup takes the waiter";
  EXPECT_EQ(delivered_[1].ticket, b);
  EXPECT_EQ(delivered_[1].server, 2u);
}

TEST_F(ServerSlotsTest, ARaisedOrLiftedLimitServesTheWaiters) {
  make({{1, false, false}});
  ASSERT_TRUE(slots_->tryAcquire(0));
  slots_->enqueue(0);
  slots_->enqueue(0);
  slots_->enqueue(0);
  slots_->setServers({{2, false, false}});
  EXPECT_EQ(delivered_.size(), 1u);
  slots_->setServers({{0, false, false}});
  EXPECT_EQ(delivered_.size(), 3u);
  EXPECT_FALSE(slots_->anyLimited());
  EXPECT_EQ(slots_->active(0), 4u) << "slots given out are counted until released";
}

TEST_F(ServerSlotsTest, AServerAReloadAddsStartsDown) {
  make({{1, false, false}});
  ASSERT_TRUE(slots_->tryAcquire(0));
  slots_->enqueue(0);
  slots_->setServers({{1, false, false}, {1, false, false}});
  EXPECT_TRUE(delivered_.empty());
  slots_->setUp(1, true);
  ASSERT_EQ(delivered_.size(), 1u);
  EXPECT_EQ(delivered_[0].server, 1u);
}

// Threads take slots, queue when full and give slots back, as workers do: the limit holds at
// every moment, and no waiter is forgotten (a slot freed while one queues reaches it).
TEST(ServerSlotsThreads, TheLimitHoldsAcrossThreadsAndNoWaiterIsForgotten) {
  constexpr uint32_t kLimit = 1;
  constexpr int kThreads = 4;
  constexpr int kRounds = 20000;
  std::mutex mu;
  std::vector<std::deque<Delivery>> inbox(kThreads);
  ServerSlots slots({{kLimit, false, false}, {kLimit, false, false}}, 1000000,
                    [&](uint32_t worker, uint64_t ticket, uint32_t server) {
                      std::lock_guard lock(mu);
                      inbox[worker].push_back(Delivery{worker, ticket, server});
                    });
  std::atomic<int> over_limit{0};
  std::atomic<int> holding[2] = {0, 0};
  std::atomic<int> from_queue{0};
  std::vector<int> left(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      int pending = 0;
      std::deque<uint32_t> held;  // each thread keeps its last slot while it asks for the next
      auto letGo = [&](size_t keep) {
        while (held.size() > keep) {
          uint32_t server = held.front();
          held.pop_front();
          holding[server].fetch_sub(1);
          slots.release(server);
        }
      };
      auto take = [&](uint32_t server) {
        if (holding[server].fetch_add(1) + 1 > static_cast<int>(kLimit)) {
          over_limit.fetch_add(1);
        }
        held.push_back(server);
        letGo(1);
      };
      auto drain = [&] {
        std::deque<Delivery> mine;
        {
          std::lock_guard lock(mu);
          mine.swap(inbox[t]);
        }
        for (const Delivery& d : mine) {
          --pending;
          from_queue.fetch_add(1);
          take(d.server);
        }
      };
      for (int i = 0; i < kRounds; ++i) {
        auto server = static_cast<uint32_t>((i + t) % 2);
        if (slots.tryAcquire(server)) {
          take(server);
        } else if (slots.enqueue(static_cast<uint32_t>(t)) != 0) {
          ++pending;
        }
        drain();
      }
      letGo(0);
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (pending > 0 && std::chrono::steady_clock::now() < deadline) {
        drain();
        letGo(0);
        std::this_thread::yield();
      }
      left[static_cast<size_t>(t)] = pending;
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(over_limit.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(left[static_cast<size_t>(t)], 0) << "thread " << t << " has waiters never served";
  }
  EXPECT_GT(from_queue.load(), 0) << "the test never made anyone wait";
  EXPECT_EQ(slots.active(0), 0u);
  EXPECT_EQ(slots.active(1), 0u);
  EXPECT_EQ(slots.queued(), 0u);
}

}  // namespace
}  // namespace fulcrum::lb
