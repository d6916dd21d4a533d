#pragma once
// `fulcrum certs SITE`: the site CA and every node's certificate for [security] internal_tls
// (tls/site_pki.h), made or renewed in state_dir/tls. `fulcrum up` and `lab up` do the same at
// each start; on a multi-host site one host runs this and the files are copied to the others.
#include <string>

#include "config/config.h"

namespace fulcrum::site {

// Makes what is missing or due, logging each CA or certificate made. False with `error`.
bool ensureCertificates(const config::Site& site, std::string& error);

// The command: prints what it made and, per identity, where its pair is. Exit code.
int runCertsCommand(const config::Site& site, bool json);

}  // namespace fulcrum::site
