#include "web/pg_cancel.h"

#include <gtest/gtest.h>

#include <future>
#include <memory>

namespace fulcrum::web {
namespace {

TEST(BoundedThreads, RunsAtMostTheLimitAtOnceAndDropsTheRest) {
  BoundedThreads threads(2);
  std::promise<void> release;
  std::shared_future<void> go = release.get_future().share();
  auto ran = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(threads.run([go, ran] {
      go.wait();
      ran->fetch_add(1);
    }));
  }
  EXPECT_EQ(threads.running(), 2u);
  // A third is refused, and what it holds is released at once (a dropped cancel is freed).
  auto held = std::make_shared<int>(7);
  std::weak_ptr<int> watch = held;
  EXPECT_FALSE(threads.run([held = std::move(held)] {}));
  EXPECT_TRUE(watch.expired());
  release.set_value();
  threads.waitBelow(1);
  EXPECT_EQ(threads.running(), 0u);
  EXPECT_EQ(ran->load(), 2);
  // Slots are free again.
  std::promise<void> done;
  std::future<void> finished = done.get_future();
  EXPECT_TRUE(threads.run([&done] { done.set_value(); }));
  finished.wait();
  threads.waitBelow(1);
}

TEST(BoundedThreads, ATaskMayOutliveItsRunner) {
  std::promise<void> release;
  std::shared_future<void> go = release.get_future().share();
  std::promise<void> finished;
  std::future<void> end = finished.get_future();
  {
    BoundedThreads threads(1);
    EXPECT_TRUE(threads.run([go, &finished] {
      go.wait();
      finished.set_value();
    }));
  }
  release.set_value();
  end.wait();
}

TEST(CancelThenFinish, NothingToCancelWithoutAConnection) {
  EXPECT_FALSE(cancelThenFinish(nullptr));
}

}  // namespace
}  // namespace fulcrum::web
