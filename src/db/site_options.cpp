#include "db/site_options.h"

#include <algorithm>
#include <string>

namespace fulcrum::db {

EtcdClientOptions etcdClientOptions(const config::Site& site,
                                    std::shared_ptr<core::ClientTransportFactory> tls) {
  using std::chrono::milliseconds;
  EtcdClientOptions options;
  options.endpoints = site.etcd.endpoints;
  options.request_timeout =
      std::clamp(milliseconds(site.db.leader_ttl_ms / 4), milliseconds(200), milliseconds(2000));
  options.connect_timeout = std::min(milliseconds(500), options.request_timeout / 2);
  options.tls = std::move(tls);
  return options;
}

ElectorOptions electorOptions(const config::Site& site, std::string_view node) {
  ElectorOptions options;
  options.key = leaderKey(site.site.name);
  options.node = std::string(node);
  options.timing = LeaseTiming::forTtl(std::chrono::milliseconds(site.db.leader_ttl_ms));
  return options;
}

}  // namespace fulcrum::db
