#pragma once
// Where this host's PostgreSQL programs are: the database agent runs them, `fulcrum up` checks
// for them before it starts a site.
#include <filesystem>

#include "core/result.h"

namespace fulcrum::pg {

// pg_bin from the topology file when set (it must hold `postgres`), else the newest
// <root>/<version>/bin, as Debian installs them.
core::Result<std::filesystem::path> findPgBin(const std::filesystem::path& configured,
                                              const std::filesystem::path& root = "/usr/lib/postgresql");

}  // namespace fulcrum::pg
