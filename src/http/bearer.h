#pragma once
// Bearer-token checks for admin APIs (the load balancer's stats API, the database agent's
// switchover): `Authorization: Bearer TOKEN`, compared in constant time.
#include <string_view>

#include "http/message.h"

namespace fulcrum::http {

// Constant-time comparison: a secret must not leak through timing.
bool sameSecret(std::string_view a, std::string_view b);

// True when `head` carries exactly one Authorization field, `Bearer <token>` (scheme
// case-insensitive).
bool hasBearerToken(const RequestHead& head, std::string_view token);

}  // namespace fulcrum::http
