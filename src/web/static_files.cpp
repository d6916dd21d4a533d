#include "web/static_files.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>

#include "http/util.h"
#include "web/mime.h"

namespace fulcrum::web {

namespace {

void setError(http::Response& response, int status) {
  response.setBody(status, "text/plain; charset=utf-8", std::string(http::reasonPhrase(status)) + "\n");
}

// Splits a decoded path into a relative path under the root. Empty and "." segments are
// dropped; ".." anywhere is refused (never resolved upward).
bool relativePath(std::string_view decoded, std::string& out) {
  out.clear();
  size_t pos = 0;
  while (pos <= decoded.size()) {
    size_t next = decoded.find('/', pos);
    if (next == std::string_view::npos) {
      next = decoded.size();
    }
    std::string_view seg = decoded.substr(pos, next - pos);
    if (seg == "..") {
      return false;
    }
    if (!seg.empty() && seg != ".") {
      if (!out.empty()) {
        out += '/';
      }
      out.append(seg);
    }
    pos = next + 1;
  }
  if (out.empty()) {
    out = ".";
  }
  return true;
}

std::string makeEtag(const struct stat& st) {
  char buf[64];
  auto n = std::snprintf(buf, sizeof buf, "\"%lx-%lx\"", static_cast<unsigned long>(st.st_mtim.tv_sec),
                         static_cast<unsigned long>(st.st_size));
  return std::string(buf, static_cast<size_t>(n));
}

bool parseUint(std::string_view text, uint64_t& out) {
  if (text.empty()) {
    return false;
  }
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string_view opaqueTag(std::string_view tag) {
  if (tag.size() > 2 && tag[0] == 'W' && tag[1] == '/') {
    tag.remove_prefix(2);
  }
  return tag;
}

}  // namespace

bool etagMatchesAny(std::string_view if_none_match, std::string_view etag) {
  if (trim(if_none_match) == "*") {
    return true;
  }
  size_t pos = 0;
  while (pos < if_none_match.size()) {
    size_t comma = if_none_match.find(',', pos);
    if (comma == std::string_view::npos) {
      comma = if_none_match.size();
    }
    std::string_view tag = trim(if_none_match.substr(pos, comma - pos));
    if (!tag.empty() && opaqueTag(tag) == opaqueTag(etag)) {
      return true;
    }
    pos = comma + 1;
  }
  return false;
}

bool parseByteRange(std::string_view header, uint64_t size, uint64_t& first, uint64_t& length,
                    bool& satisfiable) {
  satisfiable = true;
  header = trim(header);
  constexpr std::string_view kPrefix = "bytes=";
  if (header.size() <= kPrefix.size() || !http::equalsIgnoreCase(header.substr(0, kPrefix.size()), kPrefix)) {
    return false;
  }
  std::string_view spec = trim(header.substr(kPrefix.size()));
  if (spec.find(',') != std::string_view::npos) {
    return false;  // several ranges: answering with the whole file is allowed (RFC 9110 §14.2)
  }
  auto dash = spec.find('-');
  if (dash == std::string_view::npos) {
    return false;
  }
  std::string_view a = trim(spec.substr(0, dash));
  std::string_view b = trim(spec.substr(dash + 1));
  uint64_t start = 0;
  uint64_t end = 0;
  if (a.empty()) {
    // Suffix range: the last N bytes.
    uint64_t suffix = 0;
    if (!parseUint(b, suffix)) {
      return false;
    }
    if (suffix == 0 || size == 0) {
      satisfiable = false;
      return true;
    }
    if (suffix > size) {
      suffix = size;
    }
    first = size - suffix;
    length = suffix;
    return true;
  }
  if (!parseUint(a, start)) {
    return false;
  }
  if (b.empty()) {
    end = size == 0 ? 0 : size - 1;
  } else if (!parseUint(b, end) || end < start) {
    return false;
  }
  if (start >= size) {
    satisfiable = false;
    return true;
  }
  if (end >= size) {
    end = size - 1;
  }
  first = start;
  length = end - start + 1;
  return true;
}

StaticFiles::StaticFiles(const std::filesystem::path& docroot) {
  root_.reset(::open(docroot.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root_) {
    throw std::runtime_error("docroot " + docroot.string() + ": " + std::strerror(errno));
  }
}

core::Fd StaticFiles::openBeneath(int dir_fd, const std::string& relative, int& error) const {
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  long fd = ::syscall(SYS_openat2, dir_fd, relative.c_str(), &how, sizeof how);
  if (fd < 0) {
    error = errno;
    return core::Fd();
  }
  return core::Fd(static_cast<int>(fd));
}

void StaticFiles::serve(const http::Request& request, http::Response& response) const {
  const http::RequestHead& head = request.head;
  if (head.method != http::Method::Get && head.method != http::Method::Head) {
    setError(response, 405);
    response.addHeader("Allow", "GET, HEAD");
    return;
  }
  std::string_view path = head.path;
  if (path.empty() || path.front() != '/') {
    setError(response, 400);
    return;
  }
  auto decoded = http::percentDecodePath(path);
  if (!decoded) {
    // A bad escape or an encoded NUL: nothing under the root can have that name.
    setError(response, 404);
    return;
  }
  std::string relative;
  if (!relativePath(*decoded, relative)) {
    setError(response, 404);
    return;
  }
  int error = 0;
  core::Fd fd = openBeneath(root_.get(), relative, error);
  if (!fd) {
    setError(response, (error == EACCES || error == EPERM) ? 403 : 404);
    return;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    setError(response, 404);
    return;
  }
  std::string_view name = relative;
  if (S_ISDIR(st.st_mode)) {
    if (decoded->back() != '/') {
      std::string location(path);
      location += '/';
      if (!head.query.empty()) {
        location += '?';
        location += head.query;
      }
      setError(response, 301);
      response.addHeader("Location", location);
      return;
    }
    core::Fd index = openBeneath(fd.get(), "index.html", error);
    if (!index || ::fstat(index.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      setError(response, index || error != ENOENT ? 403 : 404);
      return;
    }
    fd = std::move(index);
    name = "index.html";
  } else if (!S_ISREG(st.st_mode)) {
    setError(response, 403);
    return;
  }

  std::string etag = makeEtag(st);
  std::string last_modified = http::formatHttpDate(st.st_mtim.tv_sec);
  auto add_validators = [&] {
    response.addHeader("ETag", etag);
    response.addHeader("Last-Modified", last_modified);
  };

  // Every field below is read across all its lines (RFC 9110 §5.3). If-None-Match is a list;
  // the others are single values, which a second line turns into an invalid list that does
  // not parse: If-Modified-Since and Range are then ignored, If-Range does not match.
  auto inm = head.findList("If-None-Match");
  bool not_modified = false;
  if (inm) {
    not_modified = etagMatchesAny(*inm, etag);
  } else if (auto ims = head.findList("If-Modified-Since")) {
    auto since = http::parseHttpDate(*ims);
    not_modified = since && st.st_mtim.tv_sec <= *since;
  }
  if (not_modified) {
    response.status = 304;
    add_validators();
    return;
  }

  uint64_t size = static_cast<uint64_t>(st.st_size);
  response.status = 200;
  response.addHeader("Content-Type", mimeTypeFor(name));
  response.addHeader("Accept-Ranges", "bytes");
  add_validators();
  response.file_offset = 0;
  response.file_length = size;

  auto range = head.findList("Range");
  if (range && head.method == http::Method::Get) {
    bool use_range = true;
    if (auto if_range = head.findList("If-Range")) {
      // A strong ETag or the exact Last-Modified date must match, else send the whole file.
      std::string_view v = trim(*if_range);
      use_range = (v == etag) || (v == last_modified);
    }
    uint64_t first = 0;
    uint64_t length = 0;
    bool satisfiable = true;
    if (use_range && parseByteRange(*range, size, first, length, satisfiable)) {
      if (!satisfiable) {
        response.headers.clear();
        setError(response, 416);
        response.addHeader("Content-Range", "bytes */" + std::to_string(size));
        return;
      }
      response.status = 206;
      response.addHeader("Content-Range", "bytes " + std::to_string(first) + "-" +
                                              std::to_string(first + length - 1) + "/" +
                                              std::to_string(size));
      response.file_offset = first;
      response.file_length = length;
    }
  }
  response.file = std::move(fd);
}

}  // namespace fulcrum::web
