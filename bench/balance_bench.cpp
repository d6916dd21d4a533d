// pick() of every balancing algorithm with 3 and 100 servers (weights 1..4), on requests with
// varying client addresses and paths; alone, and with the request's start and end as the proxy
// calls them (16 in flight). Reports; nothing judges the numbers.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "lb/balance/balancer.h"

namespace {

using namespace fulcrum;

struct Requests {
  std::vector<std::string> uris;
  std::vector<uint64_t> clients;
};

const Requests& requests() {
  static const Requests built = [] {
    Requests r;
    for (int i = 0; i < 1024; ++i) {
      r.uris.push_back("/assets/img/product-" + std::to_string(i * 7919 % 100000) + ".jpg");
      r.clients.push_back(lb::hashBytes("10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256)));
    }
    return r;
  }();
  return built;
}

std::unique_ptr<lb::Balancer> makeWith(std::string_view algorithm, size_t n,
                                       std::vector<std::string>& names) {
  names.reserve(n);
  std::vector<lb::ServerEntry> servers;
  for (size_t i = 0; i < n; ++i) {
    names.push_back("web-" + std::to_string(i));
    servers.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(1 + i % 4), names.back()});
  }
  auto balancer = lb::makeBalancer(algorithm, core::Random(1));
  balancer->setServers(servers);
  return balancer;
}

// pick() alone.
void BM_Pick(benchmark::State& state, std::string_view algorithm) {
  std::vector<std::string> names;
  auto balancer = makeWith(algorithm, static_cast<size_t>(state.range(0)), names);
  const Requests& r = requests();
  size_t i = 0;
  for (auto _ : state) {
    size_t k = i++ % 1024;
    benchmark::DoNotOptimize(balancer->pick(lb::PickContext{r.clients[k], r.uris[k], {}}));
  }
}

// pick() + onRequestStart() + onRequestEnd() of a request started 16 picks earlier.
void BM_Request(benchmark::State& state, std::string_view algorithm) {
  std::vector<std::string> names;
  auto balancer = makeWith(algorithm, static_cast<size_t>(state.range(0)), names);
  const Requests& r = requests();
  uint32_t inflight[16] = {};
  size_t i = 0;
  for (auto _ : state) {
    size_t k = i % 1024;
    int id = balancer->pick(lb::PickContext{r.clients[k], r.uris[k], {}});
    balancer->onRequestEnd(inflight[i % 16]);
    balancer->onRequestStart(static_cast<uint32_t>(id));
    inflight[i % 16] = static_cast<uint32_t>(id);
    ++i;
  }
}

#define FULCRUM_BALANCE_BENCH(fn)                                    \
  BENCHMARK_CAPTURE(fn, roundrobin, "roundrobin")->Arg(3)->Arg(100); \
  BENCHMARK_CAPTURE(fn, static_rr, "static-rr")->Arg(3)->Arg(100);   \
  BENCHMARK_CAPTURE(fn, leastconn, "leastconn")->Arg(3)->Arg(100);   \
  BENCHMARK_CAPTURE(fn, source, "source")->Arg(3)->Arg(100);         \
  BENCHMARK_CAPTURE(fn, uri, "uri")->Arg(3)->Arg(100);               \
  BENCHMARK_CAPTURE(fn, random2, "random2")->Arg(3)->Arg(100);       \
  BENCHMARK_CAPTURE(fn, maglev, "maglev")->Arg(3)->Arg(100)

FULCRUM_BALANCE_BENCH(BM_Pick);
FULCRUM_BALANCE_BENCH(BM_Request);

void BM_HashUri(benchmark::State& state) {
  const Requests& r = requests();
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(lb::hashBytes(r.uris[i++ % 1024]));
  }
}
BENCHMARK(BM_HashUri);

}  // namespace
