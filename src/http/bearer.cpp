#include "http/bearer.h"

#include <optional>

namespace fulcrum::http {

bool sameSecret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

bool hasBearerToken(const RequestHead& head, std::string_view token) {
  constexpr std::string_view kBearer = "Bearer ";
  // Exactly one Authorization field: with two, which one a check reads is a guess an attacker
  // can steer (RFC 9110 §11.6.2 allows only one credential).
  std::optional<std::string_view> auth;
  for (const Header& h : head.headers) {
    if (equalsIgnoreCase(h.name, "authorization")) {
      if (auth) {
        return false;
      }
      auth = h.value;
    }
  }
  return !token.empty() && auth && auth->size() > kBearer.size() &&
         equalsIgnoreCase(auth->substr(0, kBearer.size()), kBearer) &&
         sameSecret(auth->substr(kBearer.size()), token);
}

}  // namespace fulcrum::http
