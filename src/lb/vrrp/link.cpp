#include "lb/vrrp/link.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/fd.h"

namespace fulcrum::lb::vrrp {

namespace {

std::string errnoText(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

void addAttribute(nlmsghdr* h, size_t capacity, uint16_t type, const void* data, size_t len) {
  size_t at = NLMSG_ALIGN(h->nlmsg_len);
  size_t size = RTA_LENGTH(len);
  if (at + RTA_ALIGN(size) > capacity) {
    return;
  }
  auto* rta = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(h) + at);
  rta->rta_type = type;
  rta->rta_len = static_cast<uint16_t>(size);
  std::memcpy(RTA_DATA(rta), data, len);
  h->nlmsg_len = static_cast<uint32_t>(at + RTA_ALIGN(size));
}

}  // namespace

std::string ipv4Text(uint32_t ip) {
  in_addr a{htonl(ip)};
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, text, sizeof text);
  return text;
}

int interfaceIndex(const std::string& name, std::string& error) {
  unsigned index = if_nametoindex(name.c_str());
  if (index == 0) {
    error = "interface " + name + ": " + std::strerror(errno);
  }
  return static_cast<int>(index);
}

uint32_t primaryAddress(const std::string& name, uint32_t except) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return 0;
  }
  uint32_t found = 0;
  for (ifaddrs* i = list; i != nullptr && found == 0; i = i->ifa_next) {
    if (i->ifa_addr != nullptr && i->ifa_addr->sa_family == AF_INET && name == i->ifa_name) {
      uint32_t ip = ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
      if (ip != except) {
        found = ip;
      }
    }
  }
  freeifaddrs(list);
  return found;
}

bool hasAddress(const std::string& name, uint32_t ip) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return false;
  }
  bool found = false;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr != nullptr && i->ifa_addr->sa_family == AF_INET && name == i->ifa_name &&
        ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr) == ip) {
      found = true;
    }
  }
  freeifaddrs(list);
  return found;
}

bool setAddress(int index, uint32_t ip, uint8_t prefix_len, bool add, std::string& error) {
  core::Fd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) {
    error = errnoText("netlink socket");
    return false;
  }
  alignas(nlmsghdr) char buf[256] = {};
  auto* h = reinterpret_cast<nlmsghdr*>(buf);
  h->nlmsg_len = NLMSG_LENGTH(sizeof(ifaddrmsg));
  h->nlmsg_type = add ? RTM_NEWADDR : RTM_DELADDR;
  h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_EXCL : 0);
  h->nlmsg_seq = 1;
  auto* ifa = static_cast<ifaddrmsg*>(NLMSG_DATA(h));
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = prefix_len;
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = static_cast<uint32_t>(index);
  uint32_t net = htonl(ip);
  addAttribute(h, sizeof buf, IFA_LOCAL, &net, sizeof net);
  addAttribute(h, sizeof buf, IFA_ADDRESS, &net, sizeof net);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd.get(), buf, h->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    error = errnoText("netlink send");
    return false;
  }
  alignas(nlmsghdr) char reply[1024];
  ssize_t n = ::recv(fd.get(), reply, sizeof reply, 0);
  if (n < static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr)))) {
    error = errnoText("netlink reply");
    return false;
  }
  auto* r = reinterpret_cast<nlmsghdr*>(reply);
  if (r->nlmsg_type != NLMSG_ERROR) {
    error = "netlink: unexpected reply";
    return false;
  }
  int code = -static_cast<nlmsgerr*>(NLMSG_DATA(r))->error;
  if (code == 0 || (add && code == EEXIST) || (!add && code == EADDRNOTAVAIL)) {
    return true;
  }
  error = std::string(add ? "adding " : "removing ") + ipv4Text(ip) + ": " + std::strerror(code);
  return false;
}

bool sendGratuitousArp(const std::string& name, int index, uint32_t ip, std::string& error) {
  core::Fd fd(::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP)));
  if (!fd) {
    error = errnoText("packet socket");
    return false;
  }
  ifreq req{};
  std::strncpy(req.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(fd.get(), SIOCGIFHWADDR, &req) != 0) {
    error = errnoText("SIOCGIFHWADDR");
    return false;
  }
  // An ARP request (what keepalived sends): sender and target both the address.
  uint8_t packet[28] = {0, 1, 8, 0, 6, 4, 0, 1};
  std::memcpy(packet + 8, req.ifr_hwaddr.sa_data, 6);
  uint32_t net = htonl(ip);
  std::memcpy(packet + 14, &net, 4);
  std::memset(packet + 18, 0, 6);
  std::memcpy(packet + 24, &net, 4);
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = index;
  to.sll_halen = 6;
  std::memset(to.sll_addr, 0xff, 6);
  if (::sendto(fd.get(), packet, sizeof packet, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) {
    error = errnoText("gratuitous ARP");
    return false;
  }
  return true;
}

}  // namespace fulcrum::lb::vrrp
