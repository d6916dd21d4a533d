#pragma once
// A running role takes its renewed or reissued internal_tls pair without a restart: every
// NodeTlsWatch::kInterval (and at check(), on SIGHUP) it looks at its files and, when they
// changed and check, hands them to `apply`, which loads them into the role's TLS contexts (new
// handshakes use them; open connections keep theirs). One log line says what happened.
#include <functional>
#include <optional>
#include <string>

#include "config/config.h"
#include "core/event_loop.h"
#include "tls/site_pki.h"

namespace fulcrum::tls {

class NodeTlsReloader {
 public:
  // Loads `files` into the role's contexts; false with `error` leaves the previous ones in use.
  using Apply = std::function<bool(const NodeTls& files, std::string& error)>;

  // `what` names what takes the pair in the log line ("its listener", "etcd and its API").
  NodeTlsReloader(core::EventLoop& loop, const config::Site& site, std::string node, std::string what, Apply apply);
  NodeTlsReloader(const NodeTlsReloader&) = delete;
  NodeTlsReloader& operator=(const NodeTlsReloader&) = delete;

  // Looks now (SIGHUP: `up` may have just reissued the pair).
  void check();

 private:
  NodeTlsWatch watch_;
  std::string what_;
  Apply apply_;
  core::Timer timer_;
};

}  // namespace fulcrum::tls
