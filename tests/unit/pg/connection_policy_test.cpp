// The connection policy and conninfo text: what libpq reads back is what was meant.
#include "pg/connection_policy.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <string>

namespace fulcrum::pg {
namespace {

// libpq's own reading of a conninfo string: the keywords it sets, in the order asked.
ConnParams parsedByLibpq(const std::string& text, const ConnParams& asked) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(text.c_str(), &error);
  EXPECT_NE(options, nullptr) << (error != nullptr ? error : "");
  PQfreemem(error);
  ConnParams out;
  for (const auto& [keyword, value] : asked) {
    for (PQconninfoOption* o = options; o != nullptr && o->keyword != nullptr; ++o) {
      if (keyword == o->keyword && o->val != nullptr) {
        out.emplace_back(keyword, o->val);
      }
    }
  }
  PQconninfoFree(options);
  return out;
}

TEST(ConnectionPolicyTest, ConninfoTextQuotesWhatNeedsIt) {
  ConnParams params = {{"host", "127.0.0.1"}, {"port", "5432"},
                       {"user", "my role"},   {"password", "it's a\\b"},
                       {"host", "::1"},       {"passfile", "/run/x/.pgpass"},
                       {"dbname", ""},        {"application_name", "fulcrum-db_01.a"}};
  const std::string text = conninfoText(params);
  EXPECT_EQ(text,
            "host=127.0.0.1 port=5432 user='my role' password='it\\'s a\\\\b' host='::1' "
            "passfile='/run/x/.pgpass' dbname='' application_name=fulcrum-db_01.a");
  ConnParams expected = params;
  expected.erase(expected.begin());  // libpq keeps the last of a repeated keyword
  ConnParams got = parsedByLibpq(text, expected);
  std::sort(got.begin(), got.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(got, expected);
}

TEST(ConnectionPolicyTest, SessionsAndReceivers) {
  ConnParams session = {{"host", "10.0.0.1"}};
  addSessionPolicy(session, std::chrono::milliseconds(1800), std::nullopt);
  const std::string text = conninfoText(session);
  EXPECT_EQ(
      text,
      "host=10.0.0.1 sslmode=disable gssencmode=disable connect_timeout=2 keepalives=1 keepalives_idle=5 "
      "keepalives_interval=2 keepalives_count=3 tcp_user_timeout=5000 options='-c statement_timeout=1800 "
      "-c client_connection_check_interval=1000 -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
      "-c tcp_keepalives_count=3 -c tcp_user_timeout=5000'");
  EXPECT_EQ(parsedByLibpq(text, session), session);

  ConnParams receiver = {{"host", "10.0.0.2"}};
  addReceiverPolicy(receiver);
  EXPECT_EQ(conninfoText(receiver),
            "host=10.0.0.2 connect_timeout=2 keepalives=1 keepalives_idle=5 keepalives_interval=2 "
            "keepalives_count=3");
}

TEST(ConnectionPolicyTest, InternalTlsVerifiesTheServerAndPresentsTheNodesCertificate) {
  const ClientTls tls{"/var/lib/fulcrum/tls/ca.crt", "/var/lib/fulcrum/tls/web 1.crt",
                      "/var/lib/fulcrum/tls/web 1.key"};
  ConnParams session = {{"host", "10.0.0.1"}};
  addSessionPolicy(session, std::chrono::milliseconds(1800), tls);
  const std::string text = conninfoText(session);
  EXPECT_EQ(
      text.substr(0, text.find(" connect_timeout=")),
      "host=10.0.0.1 sslmode=verify-full sslrootcert='/var/lib/fulcrum/tls/ca.crt' "
      "sslcert='/var/lib/fulcrum/tls/web 1.crt' sslkey='/var/lib/fulcrum/tls/web 1.key' gssencmode=disable");
  EXPECT_EQ(parsedByLibpq(text, session), session);

  ConnParams receiver = {{"host", "10.0.0.2"}};
  addTlsPolicy(receiver, tls);
  addReceiverPolicy(receiver);
  EXPECT_EQ(parsedByLibpq(conninfoText(receiver), receiver), receiver);
  EXPECT_EQ(receiver[1], (std::pair<std::string, std::string>{"sslmode", "verify-full"}));
}

}  // namespace
}  // namespace fulcrum::pg
