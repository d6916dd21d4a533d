#pragma once
// The small text formats PostgreSQL reads and writes, kept pure so they are unit-tested without a
// server: WAL positions (LSNs), SQL quoting, libpq connection strings, .pgpass lines,
// configuration lines, SCRAM-SHA-256 password verifiers, secrets.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "core/address.h"
#include "core/result.h"

namespace fulcrum::pg {

// A WAL position, "16/B374D848" in PostgreSQL's text form.
using Lsn = uint64_t;
std::optional<Lsn> parseLsn(std::string_view text);
std::string formatLsn(Lsn lsn);
// Bytes `behind` trails `ahead`; 0 when it does not trail.
inline uint64_t lagBytes(Lsn ahead, Lsn behind) {
  return ahead > behind ? ahead - behind : 0;
}

// "my ""role""": an SQL identifier, always quoted (so case and keywords are kept as given).
std::string quoteIdent(std::string_view name);
// 'it''s': an SQL string literal (standard_conforming_strings is on since 9.1).
std::string quoteLiteral(std::string_view text);
// A database system identifier (pg_controldata's "Database system identifier"), in decimal; never
// 0. Every node of one cluster shares it: initdb draws it, clones and rewinds keep it.
std::optional<uint64_t> parseSysid(std::string_view text);
// A value in a libpq key=value connection string: 'a b\'c' (always quoted).
std::string conninfoValue(std::string_view value);
// A value in postgresql.conf / postgresql.auto.conf: 'it''s'.
std::string confValue(std::string_view value);
// One field of a .pgpass line, with ':' and '\' escaped.
std::string pgpassField(std::string_view field);

// A physical replication slot name for a node: lower case letters, digits and '_' only, at most
// 63 bytes ("db-01" -> "db_01").
std::string slotNameFor(std::string_view node);

// listen_addresses / host= text for an address: "127.0.0.1", "::1".
std::string hostText(const core::SocketAddress& address);

// What PostgreSQL stores for a password under password_encryption = scram-sha-256:
// "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>". Sending this instead of the password
// keeps the password itself out of the server (its logs, pg_stat_activity). Nullopt for a
// password SASLprep could change (non-ASCII or control characters): send those as they are.
std::optional<std::string> scramVerifier(std::string_view password);
// Same, with a given salt and iteration count (tests compare with known values).
std::string scramVerifier(std::string_view password, std::string_view salt, int iterations);

// A random password: 32 characters of [A-Za-z0-9], 190 bits.
std::string generatePassword();
// The secret in `path` (first line), or a new password written there with mode 0600
// (core::loadOrCreateSecretFile: racing processes all end up with the same secret).
core::Result<std::string> loadOrCreateSecret(const std::filesystem::path& path);

}  // namespace fulcrum::pg
