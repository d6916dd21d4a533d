#pragma once
// Parsers for the value forms of the topology file, each with a message a user can act on.
// The loader uses them; so may any code that takes the same forms elsewhere (admin API, tests).
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "config/config.h"
#include "core/address.h"

namespace fulcrum::config {

// "127.0.0.1:8080" or "[::1]:8080": an IP address (never a host name) and a port 1..65535.
// Port 0 is refused: every address in a topology file must be one a peer can reach.
// On failure returns nullopt and sets `error` to a message naming the problem.
std::optional<core::SocketAddress> parseSiteAddress(std::string_view text, std::string& error);

// "10.0.0.0/8", "::1/128", or a bare address (/32, /128). Host bits past the prefix are refused.
std::optional<Cidr> parseCidr(std::string_view text, std::string& error);

// "10.77.0.100/24": an interface address with its prefix (host bits are the point); prefix required.
std::optional<Cidr> parseInterfaceAddress(std::string_view text, std::string& error);

// True when two listening sockets could not both bind: the same port and the same address, or
// a wildcard (0.0.0.0 covers IPv4; :: covers both families on Linux's default dual stack).
bool listenersClash(const core::SocketAddress& a, const core::SocketAddress& b);
// True for 0.0.0.0 and ::, the wildcard addresses.
bool isZeroAddress(const core::IpAddress& ip);

// Optimal-string-alignment edit distance (insertions, deletions, substitutions, transpositions).
size_t editDistance(std::string_view a, std::string_view b);

// The candidate closest to `word` if it is close enough to be a plausible typo, else "".
std::string_view closestMatch(std::string_view word, std::span<const std::string_view> candidates);

}  // namespace fulcrum::config
