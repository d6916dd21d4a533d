#pragma once
// JSON request bodies of the admin APIs (the lb's stats/admin address, the agents'
// /switchover and /failover), parsed strictly: a body over its limit, not JSON, or with a key
// repeated in one object (`{"to":"db-02","to":"db-03"}`: which one did the caller mean?) is
// refused with the reason, never guessed at.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace fulcrum::http {

// Admin bodies are a few fields: anything larger is refused (413) before it is parsed.
constexpr size_t kMaxAdminBodyBytes = 4096;

// The parsed document, or nullopt with `error` set ("not JSON", "duplicate key 'to'").
std::optional<nlohmann::json> parseStrictJson(std::string_view text, std::string& error);

}  // namespace fulcrum::http
