#include "pg/libpq_text.h"

#include <libpq-fe.h>

namespace fulcrum::pg {

std::string libpqMessage(const char* message) {
  std::string s;
  for (const char* p = message == nullptr ? "" : message; *p != '\0'; ++p) {
    bool space = *p == '\n' || *p == '\t' || *p == ' ';
    if (!space || (!s.empty() && s.back() != ' ')) {
      s += space ? ' ' : *p;
    }
  }
  while (!s.empty() && s.back() == ' ') {
    s.pop_back();
  }
  return s.empty() ? "unknown libpq error" : s;
}

void appendRows(const pg_result* result, std::vector<std::vector<std::string>>& rows) {
  const int count = PQntuples(result);
  const int fields = PQnfields(result);
  for (int i = 0; i < count; ++i) {
    std::vector<std::string> row;
    row.reserve(static_cast<size_t>(fields));
    for (int j = 0; j < fields; ++j) {
      row.emplace_back(PQgetvalue(result, i, j), static_cast<size_t>(PQgetlength(result, i, j)));
    }
    rows.push_back(std::move(row));
  }
}

}  // namespace fulcrum::pg
