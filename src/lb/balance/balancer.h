#pragma once
// How a load balancer picks a server: one small interface, one file per algorithm, chosen by
// name (HAProxy's struct lb_ops; Envoy's load_balancing_policies). Each worker thread owns its
// own Balancer instance: nothing here is shared or locked.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/random.h"

namespace fulcrum::lb {

// A server that may take traffic now. `id` is the server's stable index in the pool (its
// position among [[web.node]]), the same in every worker and across setServers() calls.
struct ServerEntry {
  uint32_t id = 0;
  uint32_t weight = 1;    // 1..256
  std::string_view name;  // stable key for consistent hashing (the node name)
};

struct PickContext {
  uint64_t client_hash = 0;  // hash of the client address (algorithms "source" and "maglev")
  std::string_view uri;      // request path (algorithm "uri")
  // Servers already tried for this request (retries): avoid them while another is available.
  std::span<const uint32_t> exclude;
};

inline constexpr int kNoServer = -1;

class Balancer {
 public:
  virtual ~Balancer() = default;
  // Replaces the set of usable servers (after a health or admin change). Servers keep their
  // in-flight counts across calls (by id). Names are read during the call only. May allocate
  // and take milliseconds (a hash ring or Maglev table is rebuilt); pick() does neither.
  virtual void setServers(std::span<const ServerEntry> servers) = 0;
  // Returns the chosen server's id, or kNoServer when the set is empty or all are excluded.
  virtual int pick(const PickContext& context) = 0;
  // A request was sent to / finished on server `id` (leastconn, random2 count in-flight requests).
  virtual void onRequestStart(uint32_t /*id*/) {}
  virtual void onRequestEnd(uint32_t /*id*/) {}
};

struct BalancerOptions {
  // Bounded loads for source and uri ([lb] hash_balance_factor, as HAProxy's and Envoy's): a
  // server takes at most factor/100 times its weighted share of the requests in flight (plus
  // one); a key whose server is full goes on along the ring. 0: off.
  uint32_t hash_balance_factor = 0;
};

// The algorithm names of the topology file: roundrobin | static-rr | leastconn | source | uri |
// random2 | maglev. Returns nullptr for an unknown name. `random` is used by random2 (and to
// break ties where an algorithm says so).
std::unique_ptr<Balancer> makeBalancer(std::string_view algorithm, core::Random random,
                                       const BalancerOptions& options = {});
const std::vector<std::string_view>& balancerNames();

// 64-bit hashes used by the hashing algorithms (stable across processes and versions).
uint64_t hashBytes(std::string_view bytes, uint64_t seed = 0);

}  // namespace fulcrum::lb
