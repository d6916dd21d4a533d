#include "config/values.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace fulcrum::config {

namespace {

bool allDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

bool hasLetter(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return std::isalpha(c); });
}

std::string quoted(std::string_view s) {
  return "'" + std::string(s) + "'";
}

bool isZero(const core::IpAddress& ip) {
  return std::all_of(ip.bytes.begin(), ip.bytes.begin() + static_cast<std::ptrdiff_t>(ip.length()),
                     [](uint8_t b) { return b == 0; });
}

core::IpAddress maskTo(core::IpAddress ip, uint8_t prefix_len) {
  for (size_t i = 0; i < ip.length(); ++i) {
    size_t bit = i * 8;
    if (bit >= prefix_len) {
      ip.bytes[i] = 0;
    } else if (prefix_len - bit < 8) {
      ip.bytes[i] &= static_cast<uint8_t>(0xff << (8 - (prefix_len - bit)));
    }
  }
  return ip;
}

// Shared by parseCidr and parseInterfaceAddress; `what` names the form in messages.
std::optional<Cidr> parsePrefixed(std::string_view text, std::string& error, std::string_view what,
                                  bool require_prefix, bool allow_host_bits) {
  std::string bad = "bad " + std::string(what) + " " + quoted(text) + ": ";
  auto slash = text.find('/');
  std::string_view addr = text.substr(0, slash);
  if (text.empty()) {
    error = bad + "expected ADDRESS/PREFIX, e.g. 10.0.0.0/8";
    return std::nullopt;
  }
  auto ip = core::IpAddress::parse(addr);
  if (!ip) {
    error = bad + (hasLetter(addr) && addr.find(':') == std::string_view::npos
                       ? "host names are not allowed, use an IP address"
                       : quoted(addr) + " is not an IP address");
    return std::nullopt;
  }
  const unsigned max_len = static_cast<unsigned>(ip->length() * 8);
  const char* family = ip->family == AF_INET ? "IPv4" : "IPv6";
  const unsigned min_len = require_prefix ? 1 : 0;
  unsigned prefix_len = max_len;
  if (slash == std::string_view::npos) {
    if (require_prefix) {
      error = bad + "expected ADDRESS/PREFIX, e.g. 10.77.0.100/24";
      return std::nullopt;
    }
  } else {
    std::string_view digits = text.substr(slash + 1);
    if (!allDigits(digits) || digits.size() > 3 || std::stoul(std::string(digits)) > max_len ||
        std::stoul(std::string(digits)) < min_len) {
      error = bad + "prefix length must be " + std::to_string(min_len) + ".." + std::to_string(max_len) +
              " for " + family;
      return std::nullopt;
    }
    prefix_len = static_cast<unsigned>(std::stoul(std::string(digits)));
  }
  Cidr cidr;
  cidr.text = std::string(text);
  cidr.prefix_len = static_cast<uint8_t>(prefix_len);
  cidr.network = *ip;
  core::IpAddress network = maskTo(*ip, cidr.prefix_len);
  if (!allow_host_bits && !(network == *ip)) {
    error = bad + "host bits are set; did you mean '" + network.toString() + "/" +
            std::to_string(prefix_len) + "'?";
    return std::nullopt;
  }
  return cidr;
}

}  // namespace

std::optional<core::SocketAddress> parseSiteAddress(std::string_view text, std::string& error) {
  std::string bad = "bad address " + quoted(text) + ": ";
  if (text.empty()) {
    error = "bad address '': expected IP:port, e.g. 127.0.0.1:8080";
    return std::nullopt;
  }
  std::string_view host;
  std::string_view port;
  std::optional<core::IpAddress> ip;
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) {
      error = bad + "missing ']' after the IPv6 address";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      error = bad + "expected [IPv6]:port, e.g. [::1]:8080";
      return std::nullopt;
    }
    port = rest.substr(1);
    ip = core::IpAddress::parse(host);
    if (!ip || ip->family != AF_INET6) {
      error = bad + quoted(host) + " is not an IPv6 address";
      return std::nullopt;
    }
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      error = bad + "expected IP:port, e.g. 127.0.0.1:8080";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      error = bad + "an IPv6 address needs brackets, e.g. [::1]:8080";
      return std::nullopt;
    }
    ip = core::IpAddress::parse(host);
    if (!ip) {
      error = bad + (hasLetter(host) ? "host names are not allowed, use an IP address"
                                     : quoted(host) + " is not an IP address");
      return std::nullopt;
    }
  }
  if (port.empty()) {
    error = bad + "missing port";
    return std::nullopt;
  }
  if (!allDigits(port)) {
    error = bad + "port " + quoted(port) + " is not a number";
    return std::nullopt;
  }
  if (port.size() > 5 || std::stoul(std::string(port)) > 65535) {
    error = "port out of range in " + quoted(text) + ": must be 1..65535";
    return std::nullopt;
  }
  auto number = static_cast<uint16_t>(std::stoul(std::string(port)));
  if (number == 0) {
    error = "port 0 not allowed in " + quoted(text) + ": a topology file needs fixed ports";
    return std::nullopt;
  }
  return core::SocketAddress(*ip, number);
}

std::optional<Cidr> parseCidr(std::string_view text, std::string& error) {
  return parsePrefixed(text, error, "CIDR", /*require_prefix=*/false, /*allow_host_bits=*/false);
}

std::optional<Cidr> parseInterfaceAddress(std::string_view text, std::string& error) {
  return parsePrefixed(text, error, "address", /*require_prefix=*/true, /*allow_host_bits=*/true);
}

bool isZeroAddress(const core::IpAddress& ip) {
  return isZero(ip);
}

bool listenersClash(const core::SocketAddress& a, const core::SocketAddress& b) {
  if (a.port() != b.port()) {
    return false;
  }
  core::IpAddress ia = a.ip();
  core::IpAddress ib = b.ip();
  if (ia == ib) {
    return true;
  }
  auto wild6 = [](const core::IpAddress& ip) { return ip.family == AF_INET6 && isZero(ip); };
  auto wild4 = [](const core::IpAddress& ip) { return ip.family == AF_INET && isZero(ip); };
  if (wild6(ia) || wild6(ib)) {
    return true;
  }
  return (wild4(ia) && ib.family == AF_INET) || (wild4(ib) && ia.family == AF_INET);
}

size_t editDistance(std::string_view a, std::string_view b) {
  const size_t n = a.size();
  const size_t m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) {
    d[i][0] = i;
  }
  for (size_t j = 0; j <= m; ++j) {
    d[0][j] = j;
  }
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

std::string_view closestMatch(std::string_view word, std::span<const std::string_view> candidates) {
  auto lower = [](std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
  };
  std::string w = lower(word);
  std::string_view best;
  size_t best_distance = SIZE_MAX;
  for (std::string_view candidate : candidates) {
    std::string c = lower(candidate);
    size_t distance = editDistance(w, c);
    // About one typo per three letters ("algoritm" -> "algorithm", but "x" suggests nothing), or
    // a shortened name ("redirect" -> "redirect_http").
    size_t limit = std::max<size_t>(1, std::max(w.size(), c.size()) / 3);
    bool shortened = w.size() >= 3 && (c.starts_with(w) || w.starts_with(c));
    if ((distance <= limit || shortened) && distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace fulcrum::config
