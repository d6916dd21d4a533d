#include "tls/node_tls_reloader.h"

#include "core/log.h"

namespace fulcrum::tls {

NodeTlsReloader::NodeTlsReloader(core::EventLoop& loop, const config::Site& site, std::string node, std::string what,
                                 Apply apply)
    : watch_(site, std::move(node)), what_(std::move(what)), apply_(std::move(apply)), timer_(loop, [this] {
        check();
        timer_.armAfter(NodeTlsWatch::kInterval);
      }) {
  timer_.armAfter(NodeTlsWatch::kInterval);
}

void NodeTlsReloader::check() {
  std::optional<NodeTls> files = watch_.changed();
  if (!files) {
    return;
  }
  std::string error;
  if (!apply_(*files, error)) {
    log::error("internal_tls: the new certificate of {} not loaded: {}; the previous one stays in use",
               watch_.node(), error);
    return;
  }
  log::info("internal_tls: {} takes its new certificate ({}): {}", watch_.node(), files->cert.string(), what_);
}

}  // namespace fulcrum::tls
