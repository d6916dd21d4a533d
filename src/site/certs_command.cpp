#include "site/certs_command.h"

#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/exit_codes.h"
#include "core/log.h"
#include "tls/site_pki.h"

namespace fulcrum::site {

bool ensureCertificates(const config::Site& site, std::string& error) {
  auto made = tls::ensureSiteCertificates(site);
  if (!made.ok) {
    error = made.error;
    return false;
  }
  const tls::SitePaths paths = tls::sitePaths(site);
  if (made.value.ca_created) {
    log::info("internal_tls: made the site CA {} (its key {} is 0600: keep it on this host)", paths.ca_cert.string(),
              paths.ca_key.string());
  }
  for (const std::string& name : made.value.issued) {
    log::info("internal_tls: issued the certificate of {} ({})", name, paths.nodeCert(name).string());
  }
  for (const std::string& name : made.value.renewed) {
    log::info("internal_tls: renewed the certificate of {} ({})", name, paths.nodeCert(name).string());
  }
  return true;
}

int runCertsCommand(const config::Site& site, bool json) {
  auto made = tls::ensureSiteCertificates(site);
  if (!made.ok) {
    std::fprintf(stderr, "fulcrum certs: %s\n", made.error.c_str());
    return core::kExitRuntime;
  }
  const tls::SitePaths paths = tls::sitePaths(site);
  const auto identities = tls::siteIdentities(site);
  auto what = [&](const std::string& name) {
    for (const auto* list : {&made.value.issued, &made.value.renewed}) {
      if (std::find(list->begin(), list->end(), name) != list->end()) {
        return list == &made.value.issued ? "issued" : "renewed";
      }
    }
    return "kept";
  };
  if (json) {
    nlohmann::json out = {{"ca", {{"cert", paths.ca_cert.string()},
                                  {"key", paths.ca_key.string()},
                                  {"created", made.value.ca_created}}},
                          {"nodes", nlohmann::json::array()}};
    for (const auto& who : identities) {
      out["nodes"].push_back({{"name", who.name},
                              {"hosts", who.hosts},
                              {"cert", paths.nodeCert(who.name).string()},
                              {"key", paths.nodeKey(who.name).string()},
                              {"action", what(who.name)}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return core::kExitOk;
  }
  std::printf("site CA: %s (%s)\n", paths.ca_cert.string().c_str(), made.value.ca_created ? "made now" : "kept");
  for (const auto& who : identities) {
    std::string hosts;
    for (const auto& host : who.hosts) {
      hosts += (hosts.empty() ? "" : ", ") + host;
    }
    std::printf("%-12s %-7s %s  [%s]\n", who.name.c_str(), what(who.name), paths.nodeCert(who.name).string().c_str(),
                hosts.empty() ? "client only" : hosts.c_str());
  }
  std::printf("each node loads the CA certificate, %s.crt and %s.key from %s; on other hosts copy them there\n",
              "<node>", "<node>", paths.dir.string().c_str());
  return core::kExitOk;
}

}  // namespace fulcrum::site
