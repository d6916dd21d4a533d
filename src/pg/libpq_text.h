#pragma once
// What the agent's PgSession and the web workers' PgConn both read out of libpq, in one place.
#include <string>
#include <vector>

struct pg_result;

namespace fulcrum::pg {

// libpq's messages span lines ("...\n\tThis probably means..."): one line, runs of white space
// collapsed, for logs and error strings; "unknown libpq error" when empty.
std::string libpqMessage(const char* message);

// Appends a result's rows as text fields (NULL reads as "").
void appendRows(const pg_result* result, std::vector<std::vector<std::string>>& rows);

}  // namespace fulcrum::pg
