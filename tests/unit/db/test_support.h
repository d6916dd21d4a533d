#pragma once
// Helpers shared by the db tests that run real etcd and PostgreSQL processes.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <string>
#include <thread>

#include "core/address.h"
#include "core/fd.h"
#include "core/socket.h"

// A test that cannot run here (no etcd, no PostgreSQL) is skipped on a developer's machine, but
// fails under CI=true: a green CI always means it ran.
#define FULCRUM_SKIP_UNLESS_CI(message)                                                    \
  do {                                                                                     \
    if (::fulcrum::db::testing::underCi()) {                                               \
      GTEST_FAIL() << "required under CI=true, but: " << message;                          \
    }                                                                                      \
    GTEST_SKIP() << message;                                                               \
  } while (false)

namespace fulcrum::db::testing {

inline bool underCi() {
  const char* ci = std::getenv("CI");
  const std::string_view value = ci == nullptr ? "" : ci;
  return value == "true" || value == "1" || value == "yes";
}

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
