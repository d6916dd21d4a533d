#pragma once
// The guestbook's pure parts: validating a posted message, parsing ?limit=, and the JSON the API
// answers with. No database and no I/O here, so every rule is unit-tested on its own; the HTTP
// handler and the PostgreSQL routing call these.
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace fulcrum::web::guestbook {

struct Message {
  int64_t id = 0;
  std::string author;
  std::string text;
  std::string created_at;  // ISO 8601 UTC, e.g. 2026-11-27T14:30:00.123Z
};

struct NewMessage {
  std::string author;  // trimmed, 1..kMaxAuthorChars code points, no control characters
  std::string text;    // trimmed, CRLF → LF, 1..kMaxTextChars code points, only \n and \t as controls
};

// A request the API refuses: 400 (bad JSON or field), 413 (body too large), 415 (not JSON).
struct Invalid {
  int status;
  std::string message;
};

inline constexpr size_t kMaxAuthorChars = 64;  // Unicode code points
inline constexpr size_t kMaxTextChars = 2000;  // Unicode code points
inline constexpr size_t kMaxBodyBytes = 16 * 1024;
inline constexpr int kDefaultLimit = 20;
inline constexpr int kMaxLimit = 200;

// Body of POST /api/messages: a JSON object {"author": "...", "text": "..."}; other fields are
// ignored. Checks size (413), content type (415), then JSON, UTF-8 and the field rules (400).
std::variant<NewMessage, Invalid> parseNewMessage(std::string_view content_type, std::string_view body);

// The query string of GET /api/messages (with or without the leading '?'): "limit=N" among other
// parameters, N digits only, 1..200; absent → 20. Anything else → 400.
std::variant<int, Invalid> parseLimit(std::string_view query);

// {"id":..,"author":..,"text":..,"created_at":..,"web_node":..,"db_node":..}
std::string messageJson(const Message& m, std::string_view web_node, std::string_view db_node);
// {"messages":[{"id","author","text","created_at"}...],"web_node":..,"db_node":..}
std::string messagesJson(const std::vector<Message>& rows, std::string_view web_node,
                         std::string_view db_node);
// {"error":"..."}
std::string errorJson(std::string_view message);

// Number of code points in `s`, or nullopt when `s` is not well-formed UTF-8 (overlong forms,
// surrogates, code points above U+10FFFF and truncated sequences are all refused).
std::optional<size_t> utf8Length(std::string_view s);

// Copies `s` with every character found in `table` replaced by its string (escaping).
struct CharReplacement {
  char from;
  std::string_view to;
};
std::string replaceChars(std::string_view s, std::initializer_list<CharReplacement> table);

// One statement, safe to run on every start (through the primary). The CHECKs repeat the
// validation rules so no other writer can store what the API would refuse. Every web node (and
// worker) runs it at start: two CREATE TABLE IF NOT EXISTS at once both see no table, and the
// second fails on pg_type's unique index, an ERROR in PostgreSQL's log. The transaction-scoped
// advisory lock (the key spells "fulcrgb1") makes them take turns: the later one sees the table.
inline constexpr std::string_view kSchemaSql =
    "DO $$ BEGIN "
    "PERFORM pg_advisory_xact_lock(7382926338520736305); "
    "CREATE TABLE IF NOT EXISTS guestbook_messages ("
    "id bigserial PRIMARY KEY, "
    "author text NOT NULL CHECK (char_length(author) BETWEEN 1 AND 64), "
    "text text NOT NULL CHECK (char_length(text) BETWEEN 1 AND 2000), "
    "created_at timestamptz NOT NULL DEFAULT now()); "
    "END $$";

// Suggested statements (extended protocol, text parameters). Both return id, author, text,
// created_at (ISO 8601 UTC text) in that order. Insert: $1 author, $2 text. Latest: $1 limit,
// newest first by id (bigserial order is insertion order).
inline constexpr std::string_view kInsertSql =
    "INSERT INTO guestbook_messages (author, text) VALUES ($1, $2) RETURNING id, author, text, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
inline constexpr std::string_view kSelectLatestSql =
    "SELECT id, author, text, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
    "FROM guestbook_messages ORDER BY id DESC LIMIT $1";

}  // namespace fulcrum::web::guestbook
