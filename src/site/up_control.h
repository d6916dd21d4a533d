#pragma once
// The control socket of a running `fulcrum up`, state_dir/up.sock (mode 0600): `fulcrum
// stop|start|restart NODE` and `fulcrum status` ask `up` to act on one child or to list them.
// One request per connection: a JSON object on one line, answered with one JSON object on one
// line, {"ok": true, ...} or {"ok": false, "error": "..."}, after which `up` closes it.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/event_loop.h"
#include "core/fd.h"

namespace fulcrum::site {

enum class ControlOp { List, Stop, Start, Restart };
std::string_view controlOpName(ControlOp op);

struct ControlRequest {
  ControlOp op = ControlOp::List;
  std::string node;  // every op but List names one
};

// A request line is at most this long; a longer one is refused and its connection closed.
inline constexpr size_t kMaxControlRequest = 4096;

// Parses one request line (without its '\n'): {"op": "list"} or {"op": "stop", "node": "db-1"}.
// False with `error` for anything else.
bool parseControlRequest(std::string_view line, ControlRequest& out, std::string& error);

std::filesystem::path controlSocketPath(const std::filesystem::path& state_dir);

// Sends the answer to one request, once; may be called long after the request (a stop answers
// when the node has exited). Does nothing when the client has gone meanwhile.
using ControlReply = std::function<void(const nlohmann::json& answer)>;

// The server side, on `up`'s event loop: never blocks it. A client has kRequestTimeout to send
// its request line and to take its answer; garbage, an oversized line or a stall closes that
// connection and nothing else.
class ControlServer final : public core::IoHandler {
 public:
  using Handler = std::function<void(const ControlRequest&, ControlReply)>;
  static constexpr std::chrono::milliseconds kRequestTimeout{5000};
  static constexpr size_t kMaxConnections = 32;

  ControlServer(core::EventLoop& loop, Handler handler);
  ~ControlServer() override;
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds `path` (a stale socket there is removed: the caller holds the site lock). False with
  // `error` when it cannot.
  bool listen(const std::filesystem::path& path, std::string& error);
  // Answers every request still waiting with `error`, closes every connection and removes the
  // socket. Not from inside a reply.
  void close(const std::string& error);

  void onIoEvents(uint32_t events) override;

 private:
  class Connection;
  void finish(uint64_t id);

  core::EventLoop& loop_;
  Handler handler_;
  core::Fd fd_;
  std::filesystem::path path_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::unique_ptr<Connection>> connections_;
};

// The client side (`fulcrum stop`, `status`): connects to `socket`, sends `request` and waits at
// most `timeout` for the answer. False with `error` when no `up` answers: `refused` is then true
// when none listens there (no socket, or nobody behind it).
bool askUp(const std::filesystem::path& socket, const nlohmann::json& request,
           std::chrono::milliseconds timeout, nlohmann::json& answer, std::string& error, bool& refused);

}  // namespace fulcrum::site
