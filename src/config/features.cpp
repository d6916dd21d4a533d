#include "config/features.h"

namespace fulcrum::config {

std::vector<ConfigError> notBuiltYet(const Site& site) {
  std::vector<ConfigError> out;
  if (!site.lb.nodes.empty()) {
    out.push_back(site.errorAt("lb", "the load balancer (`fulcrum lb`) is not built yet"));
  }
  if (site.web.present && site.web.app == "guestbook") {
    out.push_back(site.errorAt("web.app", "the guestbook application is not built yet; only app = \"none\" runs"));
  }
  if (!site.db.nodes.empty()) {
    out.push_back(site.errorAt("db", "the database agent (`fulcrum db`) is not built yet"));
  }
  if (site.etcd.present && site.etcd.managed) {
    out.push_back(site.errorAt("etcd.managed", "a managed etcd needs `fulcrum up`, which is not built yet"));
  }
  return out;
}

}  // namespace fulcrum::config
