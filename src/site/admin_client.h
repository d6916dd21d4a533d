#pragma once
// What an operator's command needs to call the site's admin APIs from this host: the admin token
// (state_dir/admin.token) and, under [security] internal_tls, the operator's client certificate.
#include <memory>
#include <optional>
#include <string>

#include "config/config.h"
#include "core/transport.h"

namespace fulcrum::site {

struct AdminClient {
  std::shared_ptr<core::ClientTransportFactory> tls;  // null: plain http
  std::string headers;                                // "Authorization: Bearer ...\r\n"
};

// Nullopt with `error` set when the token cannot be read or the certificate is missing.
std::optional<AdminClient> adminClient(const config::Site& site, std::string& error);

}  // namespace fulcrum::site
