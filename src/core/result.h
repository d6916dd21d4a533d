#pragma once
// Outcome of a control-plane call (etcd, PostgreSQL, an HTTP exchange): a value, or a message
// saying what failed. Nothing below the roles throws across its API; callers decide what an
// error means.
#include <string>
#include <utility>

namespace fulcrum::core {

struct Status {
  bool ok = true;
  std::string error;  // set when !ok: "connect 127.0.0.1:2379: Connection refused"

  static Status success() { return Status{}; }
  static Status failure(std::string message) { return Status{false, std::move(message)}; }
};

template <typename T>
struct Result {
  bool ok = false;
  std::string error;  // set when !ok
  T value{};          // meaningful when ok

  static Result success(T value) { return Result{true, {}, std::move(value)}; }
  static Result failure(std::string message) { return Result{false, std::move(message), T{}}; }
};

}  // namespace fulcrum::core
