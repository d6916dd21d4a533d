#pragma once
// Internal to the loader: checks that span sections (unique names and addresses, paths that
// must exist, settings that come in pairs), run after every key has been read.
#include "config/reader.h"

namespace fulcrum::config::detail {

void validateSite(Diagnostics& diag);

}  // namespace fulcrum::config::detail
