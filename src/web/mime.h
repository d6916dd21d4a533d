#pragma once
#include <string_view>

namespace fulcrum::web {

// The Content-Type for a file name, by extension (case-insensitive);
// "application/octet-stream" when unknown.
std::string_view mimeTypeFor(std::string_view file_name);

}  // namespace fulcrum::web
