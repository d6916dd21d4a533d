#pragma once
// The agent's calls answer with the Result and Status every layer below the roles uses.
#include "core/result.h"

namespace fulcrum::db {

using core::Result;
using core::Status;

}  // namespace fulcrum::db
