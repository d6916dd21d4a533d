#pragma once
// Serves files under a document root: GET and HEAD, index.html, MIME types, ETag and
// Last-Modified with 304s, single byte ranges (206/416). No request can name a file outside
// the root: paths are decoded and checked segment by segment, then opened with
// openat2(RESOLVE_BENEATH), which the kernel enforces through symlinks too.
#include <filesystem>
#include <string>

#include "core/fd.h"
#include "http/server.h"

namespace fulcrum::web {

class StaticFiles {
 public:
  // Opens the root directory; throws std::runtime_error when it cannot.
  explicit StaticFiles(const std::filesystem::path& docroot);
  void serve(const http::Request& request, http::Response& response) const;

 private:
  core::Fd openBeneath(int dir_fd, const std::string& relative, int& error) const;
  core::Fd root_;
};

// Parses a single "bytes=..." range against a file of `size` bytes. Returns false when the
// header should be ignored (malformed or several ranges: serve the whole file); sets
// `satisfiable` false for a 416.
bool parseByteRange(std::string_view header, uint64_t size, uint64_t& first, uint64_t& length,
                    bool& satisfiable);
// RFC 9110 §13.1.2: If-None-Match with weak comparison against `etag`.
bool etagMatchesAny(std::string_view if_none_match, std::string_view etag);

}  // namespace fulcrum::web
