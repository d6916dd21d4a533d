#pragma once
// Small HTTP helpers shared by servers and the proxy: status text, dates, percent-decoding,
// and appending response heads.
#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>

namespace fulcrum::http {

std::string_view reasonPhrase(int status);  // "OK", "Not Found", ...; "Unknown" otherwise

// IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 §5.6.7).
std::string formatHttpDate(std::time_t t);
// Accepts IMF-fixdate, and the obsolete RFC 850 and asctime forms as RFC 9110 requires.
std::optional<std::time_t> parseHttpDate(std::string_view text);

// Decodes %XX escapes in a path. Returns nullopt for a bad escape or a decoded NUL.
// '+' is left as is (it is not a space in paths).
std::optional<std::string> percentDecodePath(std::string_view path);

// Appends "HTTP/1.1 <status> <reason>\r\n".
void appendStatusLine(std::string& out, int status);
// Appends "name: value\r\n".
void appendHeader(std::string& out, std::string_view name, std::string_view value);

}  // namespace fulcrum::http
