#pragma once
// What the agent's API handlers (agent*.cpp) share to answer.
#include <nlohmann/json.hpp>

#include "http/server.h"

namespace fulcrum::db {

inline void answerJson(http::Response& response, int status, const nlohmann::json& body) {
  response.setBody(status, "application/json", body.dump());
}

}  // namespace fulcrum::db
