// maglev: the lookup table's shape, and that picks read it by client address.
#include "lb/balance/maglev.h"

#include <gtest/gtest.h>

#include <map>

#include "balance_test_util.h"
#include "lb/balance/balancer.h"

namespace fulcrum::lb {
namespace {

using testing::TestPool;

std::map<uint32_t, int> slotCounts(const MaglevTable& table) {
  std::map<uint32_t, int> counts;
  for (uint32_t id : table.slots()) {
    ++counts[id];
  }
  return counts;
}

TEST(MaglevTest, TableSizeIsPrime) {
  static_assert(MaglevTable::kSize == 65537);
  for (uint32_t d = 2; d * d <= MaglevTable::kSize; ++d) {
    ASSERT_NE(MaglevTable::kSize % d, 0u) << d;
  }
}

TEST(MaglevTest, EmptySetGivesEmptyTable) {
  MaglevTable table;
  table.build({});
  EXPECT_TRUE(table.slots().empty());
  EXPECT_EQ(table.lookup(1, {}), kNoServer);
}

TEST(MaglevTest, EverySlotBelongsToAServerOfTheSet) {
  TestPool pool = TestPool::withIds({4, 9, 2});
  MaglevTable table;
  table.build(pool.entries());
  ASSERT_EQ(table.slots().size(), MaglevTable::kSize);
  std::map<uint32_t, int> counts = slotCounts(table);
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts.count(4) + counts.count(9) + counts.count(2), 3u);
}

TEST(MaglevTest, EqualServersGetEqualSlots) {
  for (size_t n : {2, 3, 7, 10, 50, 100}) {
    TestPool pool = TestPool::equal(n);
    MaglevTable table;
    table.build(pool.entries());
    double ideal = static_cast<double>(MaglevTable::kSize) / static_cast<double>(n);
    for (auto [id, count] : slotCounts(table)) {
      EXPECT_NEAR(count, ideal, ideal * 0.01) << n << " servers, server " << id;  // measured < 0.1%
    }
  }
}

TEST(MaglevTest, HeavierServersGetMoreSlots) {
  TestPool pool({1, 2, 3, 4});
  MaglevTable table;
  table.build(pool.entries());
  for (auto [id, count] : slotCounts(table)) {
    double ideal = MaglevTable::kSize * (id + 1) / 10.0;
    EXPECT_NEAR(count, ideal, ideal * 0.02) << "server " << id;
  }
}

TEST(MaglevTest, TableDependsOnlyOnTheServers) {
  TestPool pool({1, 3, 2, 2});
  std::vector<ServerEntry> reversed(pool.entries().rbegin(), pool.entries().rend());
  MaglevTable first;
  MaglevTable second;
  first.build(pool.entries());
  second.build(reversed);
  EXPECT_TRUE(
      std::equal(first.slots().begin(), first.slots().end(), second.slots().begin(), second.slots().end()));
}

TEST(MaglevTest, KeyIsTheClientAddress) {
  TestPool pool = TestPool::equal(6);
  auto maglev = makeBalancer("maglev", core::Random(1));
  maglev->setServers(pool.entries());
  MaglevTable table;
  table.build(pool.entries());
  for (uint64_t client = 0; client < 5000; ++client) {
    ASSERT_EQ(maglev->pick(PickContext{client, "/any", {}}), table.lookup(client, {}));
    ASSERT_EQ(maglev->pick(PickContext{client, "/other", {}}), table.lookup(client, {}));
  }
}

TEST(MaglevTest, RetryTakesTheNextSlotsServer) {
  TestPool pool = TestPool::equal(3);
  MaglevTable table;
  table.build(pool.entries());
  const uint32_t tried[] = {0, 1};
  for (uint64_t client = 0; client < 1000; ++client) {
    ASSERT_EQ(table.lookup(client, tried), 2);
  }
  const uint32_t all[] = {0, 1, 2};
  EXPECT_EQ(table.lookup(7, all), kNoServer);
}

}  // namespace
}  // namespace fulcrum::lb
