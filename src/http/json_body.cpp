#include "http/json_body.h"

#include <set>
#include <vector>

namespace fulcrum::http {

std::optional<nlohmann::json> parseStrictJson(std::string_view text, std::string& error) {
  using Event = nlohmann::json::parse_event_t;
  std::vector<std::set<std::string>> keys;  // the keys seen so far in each open object
  std::optional<std::string> duplicate;
  auto check = [&](int, Event event, nlohmann::json& parsed) {
    if (event == Event::object_start) {
      keys.emplace_back();
    } else if (event == Event::object_end && !keys.empty()) {
      keys.pop_back();
    } else if (event == Event::key && !keys.empty() && parsed.is_string() &&
               !keys.back().insert(parsed.get<std::string>()).second && !duplicate) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  nlohmann::json doc = nlohmann::json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    error = "the body is not valid JSON";
    return std::nullopt;
  }
  if (duplicate) {
    error = "duplicate key '" + *duplicate + "'";
    return std::nullopt;
  }
  return doc;
}

}  // namespace fulcrum::http
