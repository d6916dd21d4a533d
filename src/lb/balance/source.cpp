// source: the client address picks the server on a consistent-hash ring (HAProxy's "balance
// source" with "hash-type consistent"), so a client keeps its server while the set is stable,
// and a server's leaving or return moves only that server's share of clients. Every process
// builds the same ring from the same names, so an active/standby pair of balancers agree. With
// [lb] hash_balance_factor the ring's loads are bounded (hash_ring.h: BoundedHashRing).
#include <memory>
#include <span>

#include "lb/balance/algorithms.h"
#include "lb/balance/hash_ring.h"

namespace fulcrum::lb {

namespace {

class SourceHash final : public Balancer {
 public:
  explicit SourceHash(uint32_t balance_factor) : ring_(balance_factor) {}
  void setServers(std::span<const ServerEntry> servers) override { ring_.setServers(servers); }
  int pick(const PickContext& context) override { return ring_.pick(mixKey(context.client_hash), context.exclude); }
  void onRequestStart(uint32_t id) override { ring_.start(id); }
  void onRequestEnd(uint32_t id) override { ring_.end(id); }

 private:
  BoundedHashRing ring_;
};

}  // namespace

std::unique_ptr<Balancer> makeSourceHash(uint32_t balance_factor) {
  return std::make_unique<SourceHash>(balance_factor);
}

}  // namespace fulcrum::lb
