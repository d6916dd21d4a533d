#include "pg/connection_policy.h"

#include <fmt/format.h>

#include "pg/pg_format.h"

namespace fulcrum::pg {

namespace {

constexpr int kKeepaliveIdleSeconds = 5;
constexpr int kKeepaliveIntervalSeconds = 2;
constexpr int kKeepaliveCount = 3;
constexpr int kUserTimeoutMs = 5000;
constexpr int kClientCheckIntervalMs = 1000;
constexpr int kConnectTimeoutSeconds = 2;  // libpq ignores anything shorter

bool plain(const std::string& value) {
  if (value.empty()) {
    return false;
  }
  for (char c : value) {
    bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                c == '-' || c == '.';
    if (!word) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string conninfoText(const ConnParams& params) {
  std::string text;
  for (const auto& [keyword, value] : params) {
    if (!text.empty()) {
      text += ' ';
    }
    text += keyword + "=" + (plain(value) ? value : conninfoValue(value));
  }
  return text;
}

void addTlsPolicy(ConnParams& params, const ClientTls& tls) {
  params.emplace_back("sslmode", "verify-full");
  params.emplace_back("sslrootcert", tls.root_cert.string());
  params.emplace_back("sslcert", tls.cert.string());
  params.emplace_back("sslkey", tls.key.string());
}

void addReceiverPolicy(ConnParams& params) {
  params.emplace_back("connect_timeout", std::to_string(kConnectTimeoutSeconds));
  params.emplace_back("keepalives", "1");
  params.emplace_back("keepalives_idle", std::to_string(kKeepaliveIdleSeconds));
  params.emplace_back("keepalives_interval", std::to_string(kKeepaliveIntervalSeconds));
  params.emplace_back("keepalives_count", std::to_string(kKeepaliveCount));
}

void addSessionPolicy(ConnParams& params, std::chrono::milliseconds statement_timeout,
                      const std::optional<ClientTls>& tls) {
  if (tls) {
    addTlsPolicy(params, *tls);
  } else {
    params.emplace_back("sslmode", "disable");
  }
  params.emplace_back("gssencmode", "disable");
  addReceiverPolicy(params);
  params.emplace_back("tcp_user_timeout", std::to_string(kUserTimeoutMs));
  params.emplace_back(
      "options",
      fmt::format("-c statement_timeout={} -c client_connection_check_interval={} -c tcp_keepalives_idle={} "
                  "-c tcp_keepalives_interval={} -c tcp_keepalives_count={} -c tcp_user_timeout={}",
                  statement_timeout.count(), kClientCheckIntervalMs, kKeepaliveIdleSeconds,
                  kKeepaliveIntervalSeconds, kKeepaliveCount, kUserTimeoutMs));
}

}  // namespace fulcrum::pg
