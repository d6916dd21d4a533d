#pragma once
// How every libpq connection Fulcrum opens behaves on the network, in one place: the agent's
// sessions (db/pg_session.h) and its replicas' WAL receivers (primary_conninfo), the web workers'
// pool (web/pg_conn.h). A peer that vanished is found in about 10 s from either end (keepalives
// after 5 s idle, 2 s apart, 3 probes; data left unacknowledged for 5 s ends the connection), and
// a backend whose client went away notices within a second while a statement runs.
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace fulcrum::pg {

// libpq connection keywords and values, in order (PQconnectStartParams' form).
using ConnParams = std::vector<std::pair<std::string, std::string>>;

// The same as conninfo text, "host=10.0.0.1 port=5432 user='my role' ...": a value is quoted
// (conninfoValue) unless it is a plain word or number.
std::string conninfoText(const ConnParams& params);

// A client's identity on the site's internal links ([security] internal_tls): the CA a server's
// certificate must come from, and the client's own pair (its CN is what pg_ident.conf maps).
struct ClientTls {
  std::filesystem::path root_cert;
  std::filesystem::path cert;
  std::filesystem::path key;
};

// What a client adds under internal_tls: sslmode=verify-full (the server's certificate from the
// site CA and naming the host dialled; libpq matches IP SANs) and its own certificate. No other
// mode: verify-full never retries in clear, so the connection keeps one socket throughout.
void addTlsPolicy(ConnParams& params, const ClientTls& tls);

// What a replica's WAL receiver adds to its keywords (primary_conninfo): libpq's shortest
// connect timeout and the client's keepalives (a stream that stalls is wal_receiver_timeout's).
void addReceiverPolicy(ConnParams& params);

// What every session adds to its own keywords (host, port, user, dbname, password,
// application_name): with `tls`, addTlsPolicy, else no TLS negotiation, and never GSS (either way
// one socket from start to end, which PgConn watches); libpq's shortest connect timeout, the
// client's keepalives and tcp_user_timeout, and in `options` the server's side of the same:
// `statement_timeout`, a check every second that the client is still there, the same keepalives
// and user timeout. Over a Unix socket (the agent's own server) the TCP settings are ignored by
// both ends.
void addSessionPolicy(ConnParams& params, std::chrono::milliseconds statement_timeout,
                      const std::optional<ClientTls>& tls);

}  // namespace fulcrum::pg
