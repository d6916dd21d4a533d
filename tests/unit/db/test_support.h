#pragma once
// Helpers shared by the db tests that run real etcd and PostgreSQL processes.
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "core/address.h"
#include "core/fd.h"
#include "core/socket.h"

namespace fulcrum::db::testing {

using SteadyClock = std::chrono::steady_clock;

// Polls `done` every 20 ms until it holds or `limit` passes; returns the final answer.
template <typename Predicate>
bool waitFor(Predicate done, SteadyClock::duration limit) {
  auto until = SteadyClock::now() + limit;
  for (;;) {
    if (done()) {
      return true;
    }
    if (SteadyClock::now() >= until) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// A loopback port nobody listens on right now (bound, read, released).
inline uint16_t freePort() {
  std::string error;
  core::Fd fd =
      core::listenTcp(*core::SocketAddress::parse("127.0.0.1:0"), core::ListenOptions{false, 1}, error);
  return fd ? core::localAddress(fd.get()).port() : 0;
}

}  // namespace fulcrum::db::testing
