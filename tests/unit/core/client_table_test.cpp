#include "core/client_table.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <thread>
#include <vector>

#include "core/random.h"

#if defined(__SANITIZE_ADDRESS__)
// From <sanitizer/allocator_interface.h>, which GCC does not install.
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace fulcrum::core {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uint64_t kSeed = 0x5eed;

IpAddress ip(const char* text) {
  return *IpAddress::parse(text);
}

// The n-th address of 10.0.0.0/8 and of 2001:db8::/32, built without a string so that making
// one allocates nothing.
IpAddress nthIpv4(uint32_t n) {
  IpAddress a;
  a.family = AF_INET;
  a.bytes = {10, static_cast<uint8_t>(n >> 16), static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)};
  return a;
}

// An address in the n-th /64 of 2001:db8::/32 (IPv6 clients are counted per /64); its host part
// varies too, which must not matter.
IpAddress nthIpv6(uint32_t n) {
  IpAddress a;
  a.family = AF_INET6;
  a.bytes[0] = 0x20;
  a.bytes[1] = 0x01;
  a.bytes[2] = 0x0d;
  a.bytes[3] = 0xb8;
  for (size_t i = 0; i < 4; ++i) {
    a.bytes[7 - i] = static_cast<uint8_t>(n >> (8 * i));
    a.bytes[15 - i] = static_cast<uint8_t>((n * 2654435761u) >> (8 * i));
  }
  return a;
}

IpAddress nthAddress(uint64_t n) {
  return n % 2 == 0 ? nthIpv4(static_cast<uint32_t>(n / 2)) : nthIpv6(n / 2);
}

// Bytes the heap holds right now, asked of whichever allocator the build uses.
size_t heapInUse() {
#if defined(__SANITIZE_ADDRESS__)
  return __sanitizer_get_current_allocated_bytes();
#else
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
#endif
}

int allowedInARow(ClientTable& table, const IpAddress& client, TimePoint now) {
  int allowed = 0;
  while (table.admitRequest(client, now).allowed) {
    ++allowed;
  }
  return allowed;
}

TEST(ClientTable, BurstThenRefusalSaysHowLongUntilTheNextRequest) {
  ManualClock clock;
  ClientTable table(64, {.rate_per_sec = 10, .burst = 5}, 16, kSeed);
  const IpAddress client = ip("192.0.2.1");
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(table.admitRequest(client, clock.now()).allowed) << i;
  }
  ClientTable::Admission refused = table.admitRequest(client, clock.now());
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after, milliseconds(100));  // one interval of 1 s / 10
  clock.advance(milliseconds(30));
  refused = table.admitRequest(client, clock.now());
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after, milliseconds(70));
  EXPECT_EQ(retryAfterSeconds(refused.retry_after), 1);
  EXPECT_EQ(table.refusedRequests(), 2u);
}

TEST(ClientTable, RefillsOneRequestPerIntervalUpToTheBurst) {
  ManualClock clock;
  ClientTable table(64, {.rate_per_sec = 10, .burst = 5}, 16, kSeed);
  const IpAddress client = ip("2001:db8::1");
  EXPECT_EQ(allowedInARow(table, client, clock.now()), 5);
  clock.advance(milliseconds(100));
  EXPECT_EQ(allowedInARow(table, client, clock.now()), 1);
  clock.advance(milliseconds(250));
  EXPECT_EQ(allowedInARow(table, client, clock.now()), 2);
  clock.advance(seconds(60));  // a long quiet spell earns no more than the burst
  EXPECT_EQ(allowedInARow(table, client, clock.now()), 5);
}

TEST(ClientTable, BurstDefaultsToTheRate) {
  ManualClock clock;
  ClientTable table(64, {.rate_per_sec = 3}, 16, kSeed);
  EXPECT_EQ(allowedInARow(table, ip("192.0.2.1"), clock.now()), 3);
  ClientTable one(64, {.rate_per_sec = 1}, 16, kSeed);
  EXPECT_EQ(allowedInARow(one, ip("192.0.2.1"), clock.now()), 1);
}

TEST(ClientTable, AddressesAreLimitedIndependently) {
  ManualClock clock;
  ClientTable table(64, {.rate_per_sec = 2, .conn_per_ip = 1}, 16, kSeed);
  EXPECT_EQ(allowedInARow(table, ip("192.0.2.1"), clock.now()), 2);
  EXPECT_EQ(allowedInARow(table, ip("192.0.2.2"), clock.now()), 2);
  EXPECT_EQ(allowedInARow(table, ip("2001:db8::1"), clock.now()), 2);
  EXPECT_TRUE(table.openConnection(ip("192.0.2.1")));
  EXPECT_TRUE(table.openConnection(ip("192.0.2.2")));
  EXPECT_FALSE(table.openConnection(ip("192.0.2.1")));
  EXPECT_EQ(table.size(), 3u);
}

TEST(ClientTable, MappedIpv4SharesTheEntryOfIpv4) {
  // A client reaching a dual-stack [::] listener shows up as ::ffff:a.b.c.d.
  ManualClock clock;
  ClientTable table(64, {.rate_per_sec = 2, .conn_per_ip = 1}, 16, kSeed);
  EXPECT_EQ(allowedInARow(table, ip("::ffff:192.0.2.1"), clock.now()), 2);
  EXPECT_FALSE(table.admitRequest(ip("192.0.2.1"), clock.now()).allowed);
  EXPECT_TRUE(table.openConnection(ip("192.0.2.1")));
  EXPECT_FALSE(table.openConnection(ip("::ffff:192.0.2.1")));
  table.closeConnection(ip("::ffff:192.0.2.1"));
  EXPECT_TRUE(table.openConnection(ip("192.0.2.1")));
  EXPECT_EQ(table.size(), 1u);
}

TEST(ClientTable, Ipv6IsCountedPerSlash64) {
  // A subscriber picks any of the 2^64 addresses of its /64: they are one client.
  ManualClock clock;
  ClientTable table(64, {.rate_per_sec = 2, .conn_per_ip = 1}, 16, kSeed);
  EXPECT_EQ(allowedInARow(table, ip("2001:db8:1:2::1"), clock.now()), 2);
  EXPECT_FALSE(table.admitRequest(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"), clock.now()).allowed);
  EXPECT_TRUE(table.admitRequest(ip("2001:db8:1:3::1"), clock.now()).allowed);  // the next /64
  EXPECT_TRUE(table.openConnection(ip("2001:db8:1:2::7")));
  EXPECT_FALSE(table.openConnection(ip("2001:db8:1:2::8")));
  EXPECT_EQ(table.size(), 2u);
}

TEST(ClientTable, ConnectionCapRefusesTheOneOverAndAdmitsAfterAClose) {
  ClientTable table(64, {.conn_per_ip = 3}, 16, kSeed);
  const IpAddress client = ip("192.0.2.1");
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(table.openConnection(client)) << i;
  }
  EXPECT_FALSE(table.openConnection(client));
  EXPECT_EQ(table.refusedConnections(), 1u);
  EXPECT_EQ(table.pinned(), 1u);
  table.closeConnection(client);
  EXPECT_TRUE(table.openConnection(client));
  EXPECT_FALSE(table.openConnection(client));
  EXPECT_EQ(table.refusedConnections(), 2u);
  for (int i = 0; i < 3; ++i) {
    table.closeConnection(client);
  }
  EXPECT_EQ(table.pinned(), 0u);
  EXPECT_EQ(table.size(), 1u);
}

TEST(ClientTable, LimitsThatAreOffTouchNothing) {
  ManualClock clock;
  ClientTable table(64, {}, 16, kSeed);
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(table.admitRequest(ip("192.0.2.1"), clock.now()).allowed);
    EXPECT_TRUE(table.openConnection(ip("192.0.2.1")));
  }
  table.closeConnection(ip("192.0.2.1"));  // untracked: nothing to close
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.refusedRequests() + table.refusedConnections() + table.tableFull(), 0u);
}

TEST(ClientTable, EvictsTheLeastRecentlySeenAddressWhichStartsAfreshWhenBack) {
  ManualClock clock;
  ClientTable table(2, {.rate_per_sec = 1}, 1, kSeed);
  const IpAddress a = ip("192.0.2.1");
  const IpAddress b = ip("192.0.2.2");
  EXPECT_EQ(allowedInARow(table, a, clock.now()), 1);
  EXPECT_EQ(allowedInARow(table, b, clock.now()), 1);
  EXPECT_FALSE(table.admitRequest(a, clock.now()).allowed);  // a is now the more recent
  EXPECT_TRUE(table.admitRequest(ip("192.0.2.3"), clock.now()).allowed);
  EXPECT_EQ(table.evictions(), 1u);
  EXPECT_FALSE(table.admitRequest(a, clock.now()).allowed);  // kept its state
  EXPECT_TRUE(table.admitRequest(b, clock.now()).allowed);   // forgotten: a whole burst again
  EXPECT_EQ(table.size(), 2u);
}

TEST(ClientTable, PinnedAddressesSurviveAFlood) {
  ManualClock clock;
  ClientTable table(256, {.rate_per_sec = 1, .conn_per_ip = 1}, 16, kSeed);
  const IpAddress holders[] = {ip("192.0.2.1"), ip("2001:db8::1"), ip("192.0.2.2")};
  for (const IpAddress& holder : holders) {
    ASSERT_TRUE(table.openConnection(holder));
    EXPECT_EQ(allowedInARow(table, holder, clock.now()), 1);
  }
  for (uint32_t n = 0; n < 100'000; ++n) {
    table.admitRequest(nthIpv4(n), clock.now());
  }
  EXPECT_EQ(table.evictions(), 100'003u - table.size());
  for (const IpAddress& holder : holders) {
    EXPECT_FALSE(table.openConnection(holder));  // its one connection is still counted
    EXPECT_FALSE(table.admitRequest(holder, clock.now()).allowed);
    table.closeConnection(holder);
    EXPECT_TRUE(table.openConnection(holder));
  }
}

TEST(ClientTable, EveryEntryPinnedRefusesNewConnectionsAndLetsRequestsPass) {
  ManualClock clock;
  ClientTable table(8, {.rate_per_sec = 1, .conn_per_ip = 4}, 1, kSeed);
  for (uint32_t n = 0; n < 8; ++n) {
    ASSERT_TRUE(table.openConnection(nthIpv4(n)));
  }
  const IpAddress newcomer = ip("198.51.100.1");
  EXPECT_FALSE(table.openConnection(newcomer));
  EXPECT_EQ(table.tableFull(), 1u);
  EXPECT_EQ(table.refusedConnections(), 0u);
  // Fail open for the rate: with no entry there is no state to refuse on.
  EXPECT_TRUE(table.admitRequest(newcomer, clock.now()).allowed);
  EXPECT_TRUE(table.admitRequest(newcomer, clock.now()).allowed);
  EXPECT_EQ(table.tableFull(), 3u);
  EXPECT_TRUE(table.openConnection(nthIpv4(0)));  // a held address still has its entry
  table.closeConnection(nthIpv4(3));
  EXPECT_TRUE(table.openConnection(newcomer));  // takes the entry that was unpinned
  EXPECT_EQ(table.evictions(), 1u);
  EXPECT_EQ(table.size(), 8u);
}

// A million addresses, half IPv4 and half IPv6, each sending a request and opening and closing a
// connection, 100 µs apart. Meanwhile a heavy user sends at twice its rate, once every 500 of
// them (50 ms). That is far fewer new addresses than its shard holds (256), so it is never the
// least recently seen and keeps its state: starting with its burst spent, GCRA refuses every
// other request of its throughout. Were it evicted, it would come back with a whole burst of 10.
TEST(ClientTable, AMillionAddressesPassInFixedMemoryAndAHeavyUserStaysLimited) {
  ManualClock clock;
  ClientTable table(4096, {.rate_per_sec = 10, .conn_per_ip = 2}, 16, kSeed);
  const IpAddress heavy = ip("203.0.113.9");
  EXPECT_EQ(allowedInARow(table, heavy, clock.now()), 10);
  const size_t memory = table.memoryBytes();
  const size_t heap = heapInUse();
  constexpr uint64_t kFlood = 1'000'000;
  uint64_t heavy_allowed = 0;
  uint64_t heavy_refused = 0;
  bool last_allowed = false;
  bool twice_in_a_row = false;
  for (uint64_t n = 0; n < kFlood; ++n) {
    const IpAddress client = nthAddress(n);
    table.admitRequest(client, clock.now());
    if (table.openConnection(client)) {
      table.closeConnection(client);
    }
    if (n % 500 == 0) {
      const bool allowed = table.admitRequest(heavy, clock.now()).allowed;
      twice_in_a_row = twice_in_a_row || (allowed && last_allowed);
      last_allowed = allowed;
      ++(allowed ? heavy_allowed : heavy_refused);
    }
    clock.advance(std::chrono::microseconds(100));
  }
  EXPECT_EQ(heapInUse(), heap);
  EXPECT_EQ(table.memoryBytes(), memory);
  EXPECT_EQ(table.size(), table.capacity());  // entries are reused, never freed: it only grew to this
  EXPECT_EQ(table.evictions(), kFlood + 1 - table.size());  // every address but the heavy one was new
  EXPECT_EQ(table.pinned(), 0u);
  EXPECT_FALSE(twice_in_a_row);
  EXPECT_EQ(heavy_allowed + heavy_refused, kFlood / 500);
  EXPECT_EQ(heavy_allowed, kFlood / 1000 - 1);  // every other one, but for the first two
}

// Four workers share one table and hammer a pool of addresses larger than it (IPv4, IPv6 and
// IPv4-mapped forms of the same IPv4 ones), each holding up to 8 connections at a time.
TEST(ClientTable, WorkersSharingOneTableLeaveItConsistent) {
  constexpr int kWorkers = 4;
  constexpr int kOps = 40'000;
  constexpr uint32_t kPool = 3000;
  ClientTable table(2048, {.rate_per_sec = 50, .conn_per_ip = 1}, 16, kSeed);
  const TimePoint start = ManualClock().now();
  std::atomic<uint64_t> opened{0};
  std::atomic<uint64_t> attempts{0};
  auto work = [&](uint64_t seed) {
    Random random(seed);
    std::vector<IpAddress> held;
    for (int op = 0; op < kOps; ++op) {
      const uint32_t n = static_cast<uint32_t>(random.below(kPool));
      IpAddress client = nthAddress(n);
      if (n % 2 == 0 && random.below(2) == 0) {
        client = ip(("::ffff:" + client.toString()).c_str());
      }
      table.admitRequest(client, start + milliseconds(op));
      attempts.fetch_add(1, std::memory_order_relaxed);
      if (table.openConnection(client)) {
        opened.fetch_add(1, std::memory_order_relaxed);
        held.push_back(client);
      }
      if (held.size() > 8 || (!held.empty() && random.below(3) == 0)) {
        const size_t victim = random.below(held.size());
        table.closeConnection(held[victim]);
        held[victim] = held.back();
        held.pop_back();
      }
    }
    for (const IpAddress& client : held) {
      table.closeConnection(client);
    }
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back(work, kSeed + w);
  }
  for (std::thread& worker : workers) {
    worker.join();
  }
  EXPECT_EQ(table.pinned(), 0u);
  EXPECT_LE(table.size(), table.capacity());
  EXPECT_GT(table.evictions(), 0u);
  // At most 4 x 9 pinned addresses, far below a shard's 128 entries: no address went without one.
  EXPECT_EQ(table.tableFull(), 0u);
  EXPECT_EQ(opened + table.refusedConnections(), attempts);
  // Every count is back to 0: each address of the pool may open exactly its one connection.
  for (uint32_t n = 0; n < kPool; ++n) {
    EXPECT_TRUE(table.openConnection(nthAddress(n))) << n;
    EXPECT_FALSE(table.openConnection(nthAddress(n))) << n;
    table.closeConnection(nthAddress(n));
  }
}

TEST(ClientTable, RetryAfterIsWholeSecondsRoundedUpAndAtLeastOne) {
  EXPECT_EQ(retryAfterSeconds(Duration(0)), 1);
  EXPECT_EQ(retryAfterSeconds(Duration(1)), 1);
  EXPECT_EQ(retryAfterSeconds(seconds(1)), 1);
  EXPECT_EQ(retryAfterSeconds(seconds(1) + Duration(1)), 2);
  EXPECT_EQ(retryAfterSeconds(milliseconds(2500)), 3);
  EXPECT_EQ(retryAfterSeconds(-seconds(5)), 1);
}

}  // namespace
}  // namespace fulcrum::core
