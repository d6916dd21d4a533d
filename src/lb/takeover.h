#pragma once
// Handing a running lb's listening sockets to a new process (a binary upgrade) without a refused
// connection, as HAProxy's `-x` and nginx's USR2 do: the sockets themselves move, so connections
// waiting in their backlogs are accepted by the new process.
//
// The running lb serves STATE_DIR/run/NODE.sock (a unix SOCK_SEQPACKET socket, 0600, the same
// user only). `fulcrum lb --takeover` connects and sends "takeover"; the old one answers with a
// JSON description of its listeners and their descriptors (SCM_RIGHTS, in the same order). The
// new process serves them and says "serving"; only then does the old one stop accepting, finish
// its requests and tunnels (its drain) and exit. If the new process dies before "serving", the
// old one has changed nothing and keeps serving.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/event_loop.h"
#include "core/fd.h"

namespace fulcrum::lb {

// One listening socket: "http", "https" (one per worker thread, in order) or "stats".
struct HandedListener {
  std::string kind;
  std::string address;
  int fd = -1;  // the sender's: not owned
};

struct TakenListener {
  std::string kind;
  std::string address;
  core::Fd fd;
};

// The old process's side, on its main loop.
class TakeoverServer : public core::IoHandler {
 public:
  // Called once a new process serves the listeners (its pid): stop accepting and drain.
  using OnTaken = std::function<void(pid_t pid)>;
  static std::unique_ptr<TakeoverServer> create(core::EventLoop& loop, std::filesystem::path path,
                                                std::vector<HandedListener> listeners, OnTaken on_taken,
                                                std::string& error);
  ~TakeoverServer() override;
  void onIoEvents(uint32_t events) override;

 private:
  class Peer;
  TakeoverServer(core::EventLoop& loop, std::filesystem::path path, core::Fd fd, std::vector<HandedListener> l,
                 OnTaken on_taken);
  void accept();
  void peerDone(Peer* peer);

  core::EventLoop& loop_;
  std::filesystem::path path_;
  core::Fd fd_;
  std::vector<HandedListener> listeners_;
  OnTaken on_taken_;
  std::vector<std::unique_ptr<Peer>> peers_;
  bool taken_ = false;
  ino_t inode_ = 0;  // of our socket file: removed at the end only while it is still ours
};

// The new process's side: connects to `path`, receives the listeners. The connection stays open
// in `channel` until confirmServing(). False with `error` when there is nothing to take over.
bool receiveListeners(const std::filesystem::path& path, std::vector<TakenListener>& out, core::Fd& channel,
                      std::chrono::milliseconds timeout, std::string& error);
// Tells the old process the listeners are served (it then drains and exits).
bool confirmServing(core::Fd& channel, std::string& error);

}  // namespace fulcrum::lb
