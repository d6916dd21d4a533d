#pragma once
// What a VRRP master does to its interface, by hand over the kernel's interfaces: the virtual
// address added or removed with rtnetlink (RTM_NEWADDR / RTM_DELADDR), gratuitous ARP over an
// AF_PACKET socket, and the interface's own primary IPv4 address. Each returns false with
// `error` on failure.
#include <cstdint>
#include <string>

namespace fulcrum::lb::vrrp {

// The interface's index, 0 (with `error`) if there is none.
int interfaceIndex(const std::string& name, std::string& error);
// The interface's first IPv4 address other than `except` (host order), 0 if none.
uint32_t primaryAddress(const std::string& name, uint32_t except);
// Adds (`add`) or removes `ip`/`prefix_len` on interface `index`. Adding an address already
// there, or removing one that is not, succeeds.
bool setAddress(int index, uint32_t ip, uint8_t prefix_len, bool add, std::string& error);
// Whether `ip` is on interface `name` now.
bool hasAddress(const std::string& name, uint32_t ip);
// One gratuitous ARP request for `ip` (sender and target both `ip`) broadcast on `name`.
bool sendGratuitousArp(const std::string& name, int index, uint32_t ip, std::string& error);
std::string ipv4Text(uint32_t ip);

}  // namespace fulcrum::lb::vrrp
