#include "config/features.h"

#include <sys/socket.h>

#include <string>

namespace fulcrum::config {

std::vector<ConfigError> lbNotBuiltYet(const Site& site, const LbNode* only) {
  std::vector<ConfigError> out;
  auto refuse = [&](const std::string& key, const std::string& what) {
    out.push_back(site.errorAt(key, what + " is not supported yet by this build"));
  };
  (void)only;
  if (site.lb.vip && site.lb.vip->ip.family != AF_INET) {
    refuse("lb.vip.address", "an IPv6 virtual IP (VRRPv3 over IPv6)");
  }
  return out;
}

std::vector<ConfigError> dbNotBuiltYet(const Site& site) {
  std::vector<ConfigError> out;
  // Every [db] setting is built (synchronous replication included): nothing to refuse.
  (void)site;
  return out;
}

std::vector<ConfigError> notBuiltYet(const Site& site) {
  std::vector<ConfigError> out = lbNotBuiltYet(site, nullptr);
  for (auto& error : dbNotBuiltYet(site)) {
    out.push_back(std::move(error));
  }
  return out;
}

}  // namespace fulcrum::config
