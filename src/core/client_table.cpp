#include "core/client_table.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstring>
#include <limits>
#include <mutex>

#include "core/counter.h"
#include "core/hash_mix.h"
#include "core/ip_filter.h"

namespace fulcrum::core {

namespace {

constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();


Duration emissionInterval(const ClientLimits& limits) {
  return limits.rate_per_sec == 0 ? Duration(0) : Duration(std::chrono::seconds(1)) / limits.rate_per_sec;
}

Duration tolerance(const ClientLimits& limits) {
  const uint32_t burst = std::max<uint32_t>(limits.burst == 0 ? limits.rate_per_sec : limits.burst, 1);
  return emissionInterval(limits) * (burst - 1);
}

}  // namespace

struct ClientTable::Key {
  IpAddress ip;
  uint64_t hash = 0;  // high half picks the shard, low half the bucket
};

struct ClientTable::Entry {
  // GCRA's theoretical arrival time; min() is a fresh address with its whole burst.
  TimePoint tat = TimePoint::min();
  IpAddress ip;
  uint32_t hash =
      0;  // low half of the key's hash: spares most address comparisons, finds the bucket on eviction
  uint32_t open = 0;  // open connections; above 0 the entry is pinned, out of the LRU list
  uint32_t chain_next = kNone;
  uint32_t lru_prev = kNone;
  uint32_t lru_next = kNone;
};

// Cache-line aligned so two workers locking neighbouring shards do not share a line.
struct alignas(64) ClientTable::Shard {
  std::mutex mutex;
  std::unique_ptr<Entry[]> entries;
  std::unique_ptr<uint32_t[]> buckets;  // first entry of each hash chain
  uint32_t capacity = 0;
  uint32_t used = 0;  // entries [0, used) hold an address; once full, new ones come by eviction
  uint32_t bucket_mask = 0;
  uint32_t lru_head = kNone;  // least recently seen unpinned entry: the next to go
  uint32_t lru_tail = kNone;
  uint32_t lru_size = 0;
  // Written under the mutex, read without it.
  Counter evictions;
  Counter refused_connections;
  Counter refused_requests;
  Counter table_full;

  void allocate(uint32_t entry_count);
  uint32_t find(const Key& key) const;
  // The entry of `key`, now the most recently seen; a new one if need be. kNone when all are pinned.
  uint32_t touch(const Key& key);
  uint32_t takeFree();
  void pin(uint32_t i);
  void unpin(uint32_t i);
  void unchain(uint32_t i);
  void unlinkLru(uint32_t i);
  void pushLru(uint32_t i);
};

void ClientTable::Shard::allocate(uint32_t entry_count) {
  capacity = entry_count;
  entries = std::make_unique<Entry[]>(entry_count);
  const uint32_t bucket_count = std::bit_ceil(entry_count);  // chains of one entry on average
  buckets = std::make_unique<uint32_t[]>(bucket_count);
  std::fill_n(buckets.get(), bucket_count, kNone);
  bucket_mask = bucket_count - 1;
}

uint32_t ClientTable::Shard::find(const Key& key) const {
  const auto hash = static_cast<uint32_t>(key.hash);
  for (uint32_t i = buckets[hash & bucket_mask]; i != kNone; i = entries[i].chain_next) {
    if (entries[i].hash == hash && entries[i].ip == key.ip) {
      return i;
    }
  }
  return kNone;
}

uint32_t ClientTable::Shard::touch(const Key& key) {
  uint32_t i = find(key);
  if (i != kNone) {
    if (entries[i].open == 0) {
      unlinkLru(i);
      pushLru(i);
    }
    return i;
  }
  i = takeFree();
  if (i == kNone) {
    return kNone;
  }
  Entry& entry = entries[i];
  entry = Entry{};
  entry.ip = key.ip;
  entry.hash = static_cast<uint32_t>(key.hash);
  entry.chain_next = buckets[entry.hash & bucket_mask];
  buckets[entry.hash & bucket_mask] = i;
  pushLru(i);
  return i;
}

uint32_t ClientTable::Shard::takeFree() {
  if (used < capacity) {
    return used++;
  }
  const uint32_t victim = lru_head;
  if (victim != kNone) {
    unlinkLru(victim);
    unchain(victim);
    evictions.add();
  }
  return victim;
}

void ClientTable::Shard::pin(uint32_t i) {
  if (entries[i].open++ == 0) {
    unlinkLru(i);
  }
}

void ClientTable::Shard::unpin(uint32_t i) {
  if (--entries[i].open == 0) {
    pushLru(i);
  }
}

void ClientTable::Shard::unchain(uint32_t i) {
  uint32_t* link = &buckets[entries[i].hash & bucket_mask];
  while (*link != i) {
    assert(*link != kNone);
    link = &entries[*link].chain_next;
  }
  *link = entries[i].chain_next;
}

void ClientTable::Shard::unlinkLru(uint32_t i) {
  Entry& entry = entries[i];
  (entry.lru_prev == kNone ? lru_head : entries[entry.lru_prev].lru_next) = entry.lru_next;
  (entry.lru_next == kNone ? lru_tail : entries[entry.lru_next].lru_prev) = entry.lru_prev;
  entry.lru_prev = kNone;
  entry.lru_next = kNone;
  --lru_size;
}

void ClientTable::Shard::pushLru(uint32_t i) {
  Entry& entry = entries[i];
  entry.lru_prev = lru_tail;
  entry.lru_next = kNone;
  (lru_tail == kNone ? lru_head : entries[lru_tail].lru_next) = i;
  lru_tail = i;
  ++lru_size;
}

ClientTable::ClientTable(size_t capacity, ClientLimits limits, size_t shards, uint64_t hash_seed)
    : limits_(limits),
      emission_interval_(emissionInterval(limits)),
      tolerance_(tolerance(limits)),
      hash_seed_(hash_seed),
      shard_count_(shards),
      shard_capacity_((capacity + shards - 1) / shards),
      shards_(std::make_unique<Shard[]>(shards)) {
  assert(capacity > 0 && std::has_single_bit(shards));
  assert(shard_capacity_ < kNone);  // entries are named by uint32_t indices
  for (size_t s = 0; s < shard_count_; ++s) {
    shards_[s].allocate(static_cast<uint32_t>(shard_capacity_));
  }
}

ClientTable::~ClientTable() = default;

ClientTable::Key ClientTable::keyOf(const IpAddress& peer) const {
  Key key{unmapIpv4(peer)};
  if (key.ip.family == AF_INET6) {
    // One IPv6 subscriber gets a whole /64 (RFC 6177) and picks any address in it: counted per
    // address, one client could open connections and spend rate budgets without limit.
    std::fill(key.ip.bytes.begin() + 8, key.ip.bytes.end(), uint8_t{0});
  }
  uint64_t words[2];
  std::memcpy(words, key.ip.bytes.data(), sizeof words);
  key.hash = mixKey(mixKey(hash_seed_ ^ static_cast<uint64_t>(key.ip.family) ^ words[0]) ^ words[1]);
  return key;
}

ClientTable::Shard& ClientTable::shardOf(const Key& key) const {
  return shards_[(key.hash >> 32) & (shard_count_ - 1)];
}

bool ClientTable::openConnection(const IpAddress& peer) {
  if (limits_.conn_per_ip == 0) {
    return true;
  }
  const Key key = keyOf(peer);
  Shard& shard = shardOf(key);
  std::lock_guard lock(shard.mutex);
  const uint32_t i = shard.touch(key);
  if (i == kNone) {
    shard.table_full.add();
    return false;
  }
  if (shard.entries[i].open >= limits_.conn_per_ip) {
    shard.refused_connections.add();
    return false;
  }
  shard.pin(i);
  return true;
}

void ClientTable::closeConnection(const IpAddress& peer) {
  if (limits_.conn_per_ip == 0) {
    return;
  }
  const Key key = keyOf(peer);
  Shard& shard = shardOf(key);
  std::lock_guard lock(shard.mutex);
  const uint32_t i = shard.find(key);
  // A pinned entry is never evicted, so an admitted connection's entry is still here.
  assert(i != kNone && shard.entries[i].open > 0);
  if (i != kNone && shard.entries[i].open > 0) {
    shard.unpin(i);
  }
}

ClientTable::Admission ClientTable::admitRequest(const IpAddress& peer, TimePoint now) {
  if (limits_.rate_per_sec == 0) {
    return {};
  }
  const Key key = keyOf(peer);
  Shard& shard = shardOf(key);
  std::lock_guard lock(shard.mutex);
  const uint32_t i = shard.touch(key);
  if (i == kNone) {
    shard.table_full.add();
    return {};
  }
  Admission admission = spend(shard.entries[i].tat, now);
  if (!admission.allowed) {
    shard.refused_requests.add();
  }
  return admission;
}

// The generic cell rate algorithm: `tat` is when the client's budget would be back to full
// burst; each request pushes it one interval T later, and a request is refused while that
// would put it more than tau ahead of now. A token bucket in one integer.
ClientTable::Admission ClientTable::spend(TimePoint& tat, TimePoint now) const {
  const TimePoint start = std::max(tat, now);
  if (start - now > tolerance_) {
    return {false, start - tolerance_ - now};
  }
  tat = start + emission_interval_;
  return {};
}

template <typename Read>
uint64_t ClientTable::sum(Read read) const {
  uint64_t total = 0;
  for (size_t s = 0; s < shard_count_; ++s) {
    total += read(shards_[s]);
  }
  return total;
}

size_t ClientTable::size() const {
  return sum([](Shard& shard) {
    std::lock_guard lock(shard.mutex);
    return shard.used;
  });
}

size_t ClientTable::pinned() const {
  return sum([](Shard& shard) {
    std::lock_guard lock(shard.mutex);
    return shard.used - shard.lru_size;
  });
}

size_t ClientTable::capacity() const {
  return shard_count_ * shard_capacity_;
}

size_t ClientTable::memoryBytes() const {
  const size_t buckets = std::bit_ceil(shard_capacity_);
  return shard_count_ * (sizeof(Shard) + shard_capacity_ * sizeof(Entry) + buckets * sizeof(uint32_t));
}

uint64_t ClientTable::evictions() const {
  return sum([](const Shard& shard) { return shard.evictions.get(); });
}

uint64_t ClientTable::refusedConnections() const {
  return sum([](const Shard& shard) { return shard.refused_connections.get(); });
}

uint64_t ClientTable::refusedRequests() const {
  return sum([](const Shard& shard) { return shard.refused_requests.get(); });
}

uint64_t ClientTable::tableFull() const {
  return sum([](const Shard& shard) { return shard.table_full.get(); });
}

int retryAfterSeconds(Duration wait) {
  const auto seconds = std::chrono::ceil<std::chrono::seconds>(wait).count();
  return static_cast<int>(std::clamp<decltype(seconds)>(seconds, 1, std::numeric_limits<int>::max()));
}

}  // namespace fulcrum::core
