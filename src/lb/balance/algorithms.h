#pragma once
// One factory per algorithm (one file each); makeBalancer() maps the topology names onto them.
#include <memory>

#include "core/random.h"
#include "lb/balance/balancer.h"

namespace fulcrum::lb {

std::unique_ptr<Balancer> makeRoundRobin();                    // roundrobin.cpp
std::unique_ptr<Balancer> makeStaticRoundRobin();              // static_rr.cpp
std::unique_ptr<Balancer> makeLeastConn();                     // leastconn.cpp
// `balance_factor`: BalancerOptions::hash_balance_factor (0: plain consistent hashing).
std::unique_ptr<Balancer> makeSourceHash(uint32_t balance_factor);  // source.cpp
std::unique_ptr<Balancer> makeUriHash(uint32_t balance_factor);     // uri.cpp
std::unique_ptr<Balancer> makeRandomTwo(core::Random random);  // random2.cpp
std::unique_ptr<Balancer> makeMaglev();                        // maglev.cpp

}  // namespace fulcrum::lb
