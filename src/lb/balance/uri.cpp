// uri: the request path picks the server on the consistent-hash ring shared with `source`
// (HAProxy's "balance uri"), so each resource stays on one server and its caches stay warm.
// The path is hashed as given: the proxy decides what it holds (e.g. whether the query is part).
#include <memory>
#include <span>

#include "lb/balance/algorithms.h"
#include "lb/balance/hash_ring.h"

namespace fulcrum::lb {

namespace {

class UriHash final : public Balancer {
 public:
  void setServers(std::span<const ServerEntry> servers) override { ring_.build(usableServers(servers)); }
  int pick(const PickContext& context) override {
    return ring_.lookup(hashBytes(context.uri), context.exclude);
  }

 private:
  HashRing ring_;
};

}  // namespace

std::unique_ptr<Balancer> makeUriHash() {
  return std::make_unique<UriHash>();
}

}  // namespace fulcrum::lb
