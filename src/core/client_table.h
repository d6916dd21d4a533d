#pragma once
// Per-client-address state for the lb's [lb.limits]: rate_per_ip (requests per second; over it a
// 429 with Retry-After) and conn_per_ip (open connections; over it the connection is refused).
//
// One table is shared by every worker, because SO_REUSEPORT spreads one client's connections over
// them; it is split into shards by a keyed hash of the address, each behind its own mutex, so a
// lock is held for one lookup and is rarely contended. An IPv4 client on a dual-stack listener
// (::ffff:a.b.c.d) shares the entry of a.b.c.d; IPv6 clients are counted per /64, the block one
// subscriber is given.
//
// Memory is fixed at construction, so a flood of new source addresses cannot grow it: a full
// shard gives a new address the entry of its least recently seen address with no open
// connection (forgetting that address's rate state). An address with open connections is pinned,
// so its count stays exact. When every entry of a shard is pinned a new address gets no entry:
// its connection is refused (closed for conn_per_ip) and its requests pass (open for
// rate_per_ip); both count as tableFull(). Size the table well above the lb's max_connections.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/address.h"
#include "core/clock.h"

namespace fulcrum::core {

struct ClientLimits {
  uint32_t rate_per_sec = 0;  // requests per second per address; 0 = no rate limit
  uint32_t burst = 0;         // requests at once after a quiet spell; 0 = rate_per_sec
  uint32_t conn_per_ip = 0;   // open connections per address; 0 = no cap
};

class ClientTable {
 public:
  struct Admission {
    bool allowed = true;
    Duration retry_after{0};  // when refused: the wait until one more request would pass
  };

  // `capacity` addresses split over `shards` (a power of two), rounded up to a whole number per
  // shard. `hash_seed` keys the address hash so a flood cannot be aimed at one hash chain: the lb
  // passes a random one, tests a fixed one.
  ClientTable(size_t capacity, ClientLimits limits, size_t shards = 16, uint64_t hash_seed = 0);
  ~ClientTable();
  ClientTable(const ClientTable&) = delete;
  ClientTable& operator=(const ClientTable&) = delete;

  // A connection from `ip` opens. False (and counted) when it would be the conn_per_ip+1-th from
  // that address, or when the address can have no entry. Always true when conn_per_ip is 0.
  bool openConnection(const IpAddress& ip);
  // Every connection openConnection admitted closes exactly once through this.
  void closeConnection(const IpAddress& ip);
  // A request from `ip` arrives at `now`; a refusal is counted. Always allowed when rate_per_sec
  // is 0, without touching the table.
  Admission admitRequest(const IpAddress& ip, TimePoint now);

  const ClientLimits& limits() const { return limits_; }
  size_t size() const;      // addresses held
  size_t pinned() const;    // addresses with open connections
  size_t capacity() const;  // addresses the table can hold (the constructor's, rounded up)
  size_t memoryBytes() const;

  uint64_t evictions() const;
  uint64_t refusedConnections() const;  // over conn_per_ip
  uint64_t refusedRequests() const;     // over rate_per_sec
  uint64_t tableFull() const;           // an address got no entry: every entry of its shard pinned

 private:
  struct Entry;
  struct Shard;
  struct Key;

  Key keyOf(const IpAddress& peer) const;
  Shard& shardOf(const Key& key) const;
  // GCRA: spends one request of the budget `tat` stands for, or says how long until there is one.
  Admission spend(TimePoint& tat, TimePoint now) const;
  template <typename Read>
  uint64_t sum(Read read) const;

  const ClientLimits limits_;
  const Duration emission_interval_;  // T = 1 s / rate: one request's worth of time
  const Duration tolerance_;          // tau = (burst - 1) * T: how far ahead of now a client may run
  const uint64_t hash_seed_;
  const size_t shard_count_;
  const size_t shard_capacity_;
  std::unique_ptr<Shard[]> shards_;
};

// Retry-After for an HTTP response: whole seconds, rounded up, at least 1.
int retryAfterSeconds(Duration wait);

}  // namespace fulcrum::core
