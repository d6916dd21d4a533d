#include "http/bearer.h"

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
  auto auth = head.find("Authorization");
  return !token.empty() && auth && auth->size() > kBearer.size() &&
         equalsIgnoreCase(auth->substr(0, kBearer.size()), kBearer) &&
         sameSecret(auth->substr(kBearer.size()), token);
}

}  // namespace fulcrum::http
