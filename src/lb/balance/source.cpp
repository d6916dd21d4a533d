// source: the client address picks the server on a consistent-hash ring (HAProxy's "balance
// source" with "hash-type consistent"), so a client keeps its server while the set is stable,
// and a server's leaving or return moves only that server's share of clients. Every process
// builds the same ring from the same names, so an active/standby pair of balancers agree.
#include <memory>
#include <span>

#include "lb/balance/algorithms.h"
#include "lb/balance/hash_ring.h"

namespace fulcrum::lb {

namespace {

class SourceHash final : public Balancer {
 public:
  void setServers(std::span<const ServerEntry> servers) override { ring_.build(usableServers(servers)); }
  int pick(const PickContext& context) override {
    return ring_.lookup(mixKey(context.client_hash), context.exclude);
  }

 private:
  HashRing ring_;
};

}  // namespace

std::unique_ptr<Balancer> makeSourceHash() {
  return std::make_unique<SourceHash>();
}

}  // namespace fulcrum::lb
