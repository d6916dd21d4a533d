#include "site/admin_client.h"

#include <fstream>

#include "tls/client_context.h"

namespace fulcrum::site {

std::optional<AdminClient> adminClient(const config::Site& site, std::string& error) {
  AdminClient out;
  if (site.security.internal_tls) {
    std::string tls_error;
    out.tls = tls::ClientContext::forHolder(site, "operator", tls_error);
    if (!out.tls) {
      error = "internal_tls: no operator certificate: " + tls_error;
      return std::nullopt;
    }
  }
  const std::filesystem::path token_path = site.site.state_dir / "admin.token";
  std::ifstream token_file(token_path);
  std::string token;
  if (!token_file || !std::getline(token_file, token) || token.empty()) {
    error = "cannot read the admin token in " + token_path.string() + " (run this where the site runs, as its user)";
    return std::nullopt;
  }
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) {
    token.pop_back();
  }
  out.headers = "Authorization: Bearer " + token + "\r\n";
  return out;
}

}  // namespace fulcrum::site
