// uri: the request path picks the server on the consistent-hash ring shared with `source`
// (HAProxy's "balance uri"), so each resource stays on one server and its caches stay warm.
// The path is hashed as given: the proxy decides what it holds (e.g. whether the query is part).
// With [lb] hash_balance_factor a hot path spills over to the next servers on the ring while its
// own is full (hash_ring.h: BoundedHashRing).
#include <memory>
#include <span>

#include "lb/balance/algorithms.h"
#include "lb/balance/hash_ring.h"

namespace fulcrum::lb {

namespace {

class UriHash final : public Balancer {
 public:
  explicit UriHash(uint32_t balance_factor) : ring_(balance_factor) {}
  void setServers(std::span<const ServerEntry> servers) override { ring_.setServers(servers); }
  int pick(const PickContext& context) override { return ring_.pick(hashBytes(context.uri), context.exclude); }
  void onRequestStart(uint32_t id) override { ring_.start(id); }
  void onRequestEnd(uint32_t id) override { ring_.end(id); }

 private:
  BoundedHashRing ring_;
};

}  // namespace

std::unique_ptr<Balancer> makeUriHash(uint32_t balance_factor) {
  return std::make_unique<UriHash>(balance_factor);
}

}  // namespace fulcrum::lb
