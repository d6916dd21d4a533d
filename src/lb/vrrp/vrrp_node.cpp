#include "lb/vrrp/vrrp_node.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "lb/vrrp/link.h"

namespace fulcrum::lb::vrrp {

namespace {

constexpr int kGarpPerBurst = 3;
constexpr int kGarpBursts = 2;  // one at once, one a second later (a switch that missed the first)
constexpr auto kGarpRepeat = std::chrono::seconds(1);

sockaddr_in ipv4(uint32_t ip) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(ip);
  return a;
}

}  // namespace

std::unique_ptr<Node> Node::create(core::EventLoop& loop, NodeOptions options, std::string& error) {
  int ifindex = interfaceIndex(options.interface, error);
  if (ifindex == 0) {
    return nullptr;
  }
  if (options.router.primary_ip == 0) {
    options.router.primary_ip = primaryAddress(options.interface, options.vip);
    if (options.router.primary_ip == 0) {
      error = "interface " + options.interface + " has no IPv4 address of its own (the adverts' source)";
      return nullptr;
    }
  }
  // One peer list serves every member of the site: each leaves itself out.
  std::erase(options.unicast_peers, options.router.primary_ip);
  core::Fd fd(::socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, kIpProtoVrrp));
  if (!fd) {
    error = std::string("raw socket for VRRP (needs root or CAP_NET_RAW): ") + std::strerror(errno);
    return nullptr;
  }
  auto fail = [&](const char* what) {
    error = std::string(what) + " on " + options.interface + ": " + std::strerror(errno);
    return nullptr;
  };
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_BINDTODEVICE, options.interface.c_str(),
                   static_cast<socklen_t>(options.interface.size())) != 0) {
    return fail("SO_BINDTODEVICE");
  }
  int ttl = kVrrpTtl;
  int off = 0;
  ip_mreqn group{};
  group.imr_multiaddr.s_addr = htonl(kVrrpGroup);
  group.imr_ifindex = ifindex;
  if (::setsockopt(fd.get(), IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) != 0 ||
      ::setsockopt(fd.get(), IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) != 0 ||
      ::setsockopt(fd.get(), IPPROTO_IP, IP_MULTICAST_LOOP, &off, sizeof off) != 0 ||
      ::setsockopt(fd.get(), IPPROTO_IP, IP_MULTICAST_IF, &group, sizeof group) != 0) {
    return fail("VRRP socket options");
  }
  if (options.unicast_peers.empty() &&
      ::setsockopt(fd.get(), IPPROTO_IP, IP_ADD_MEMBERSHIP, &group, sizeof group) != 0) {
    return fail("joining 224.0.0.18");
  }
  auto node = std::unique_ptr<Node>(new Node(loop, std::move(options), ifindex, std::move(fd)));
  if (!loop.add(node->fd_.get(), EPOLLIN, node.get())) {
    error = std::string("epoll: ") + std::strerror(errno);
    return nullptr;
  }
  return node;
}

Node::Node(core::EventLoop& loop, NodeOptions options, int ifindex, core::Fd fd)
    : loop_(loop),
      options_(std::move(options)),
      ifindex_(ifindex),
      fd_(std::move(fd)),
      router_(options_.router),
      timer_(loop, [this] { onTimer(); }),
      garp_timer_(loop, [this] { announce(); }) {
  counts_.configured_priority = options_.router.priority;
  counts_.primary_ip = options_.router.primary_ip;
}

Node::~Node() {
  loop_.remove(fd_.get());
}

void Node::start(const NodeHealth& health) {
  std::string error;
  if (hasAddress(options_.interface, options_.vip)) {
    log::warn("vrrp: {} was still on {} (a previous run was killed): removing it before the election",
              ipv4Text(options_.vip), options_.interface);
  }
  // Always, even when not seen: a stale address must never make two holders.
  if (!setAddress(ifindex_, options_.vip, options_.prefix_len, false, error)) {
    ++counts_.address_errors;
    log::error("vrrp: {}", error);
  }
  loop_.updateTime();
  router_.setPriority(loop_.now(), trackedPriority(options_.router.priority, health));
  router_.start(loop_.now());
  log::info(
      "vrrp: vrid {} on {} from {}, virtual IP {}/{}, priority {} (configured {}), advert every {} ms, {}",
      options_.router.vrid, options_.interface, ipv4Text(options_.router.primary_ip), ipv4Text(options_.vip),
      options_.prefix_len, router_.priority(), options_.router.priority,
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.router.advert_interval).count(),
      options_.unicast_peers.empty() ? std::string("multicast 224.0.0.18")
                                     : fmt::format("unicast to {} peer(s)", options_.unicast_peers.size()));
  apply();
}

void Node::setHealth(const NodeHealth& health) {
  uint8_t priority = trackedPriority(options_.router.priority, health);
  if (priority == router_.priority() || router_.state() == State::Initialize) {
    return;
  }
  log::warn("vrrp: priority {} -> {} ({}{})", router_.priority(), priority,
            health.servers_up ? "servers up" : "no server up",
            health.workers_alive ? "" : ", a worker is stalled");
  router_.setPriority(loop_.now(), priority);
  apply();
}

void Node::stop() {
  router_.shutdown(loop_.now());
  apply();
  timer_.disarm();
  garp_timer_.disarm();
}

NodeStatus Node::status() const {
  NodeStatus s = counts_;
  s.state = router_.state();
  s.priority = router_.priority();
  s.master_ip = router_.masterIp();
  s.holds_vip = holds_vip_;
  s.freezes = router_.freezes();
  return s;
}

void Node::onIoEvents(uint32_t) {
  std::array<uint8_t, 2048> buf;
  for (int i = 0; i < 64; ++i) {
    ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
    if (n < 0) {
      break;  // EAGAIN, or an error the next wake-up sees again
    }
    Decoded d = decodeDatagram(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)),
                               static_cast<uint8_t>(options_.router.vrid));
    if (d.error != DecodeError::None) {
      ++counts_.invalid[static_cast<size_t>(d.error)];
      continue;
    }
    if (d.source == options_.router.primary_ip) {
      continue;
    }
    ++counts_.adverts_received;
    loop_.updateTime();
    router_.receive(loop_.now(), d.source, d.advert);
    apply();
  }
}

void Node::onTimer() {
  loop_.updateTime();
  router_.tick(loop_.now());
  apply();
}

void Node::apply() {
  for (const Action& a : router_.takeActions()) {
    switch (a.kind) {
      case Action::SendAdvert:
        send(a);
        break;
      case Action::TakeVip:
        takeVip();
        break;
      case Action::ReleaseVip:
        releaseVip();
        break;
      case Action::Announce:
        if (holds_vip_ && garp_bursts_left_ <= 0) {  // not again while a burst series runs
          garp_bursts_left_ = kGarpBursts;
          announce();
        }
        break;
    }
  }
  for (const Transition& t : router_.takeTransitions()) {
    if (t.to == State::Master) {
      ++counts_.master_transitions;
    }
    auto line = fmt::format("vrrp: vrid {} {} -> {} (priority {}): {}", options_.router.vrid,
                            stateName(t.from), stateName(t.to), router_.priority(), t.reason);
    if (t.from == State::Master || t.to == State::Master) {
      log::warn("{}", line);
    } else {
      log::info("{}", line);
    }
  }
  // Never sleep longer than an advert interval: a late wake-up is how a freeze is seen.
  core::TimePoint due = loop_.now() + options_.router.advert_interval;
  if (auto next = router_.nextDeadline(); next && *next < due) {
    due = *next;
  }
  if (router_.state() == State::Initialize) {
    timer_.disarm();
  } else {
    timer_.armAt(due);
  }
}

void Node::send(const Action& action) {
  Advert advert{
      static_cast<uint8_t>(options_.router.vrid), action.priority, action.interval_cs, {options_.vip}};
  std::vector<uint32_t> destinations = options_.unicast_peers;
  if (destinations.empty()) {
    destinations.push_back(kVrrpGroup);
  }
  for (uint32_t to : destinations) {
    std::vector<uint8_t> bytes = encodeAdvert(advert, options_.router.primary_ip, to);
    sockaddr_in dest = ipv4(to);
    // The source is the interface's primary address (the checksum covers it), set per packet:
    // binding the raw socket would filter what it receives by destination.
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in_pktinfo))] = {};
    iovec iov{bytes.data(), bytes.size()};
    msghdr msg{};
    msg.msg_name = &dest;
    msg.msg_namelen = sizeof dest;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
    in_pktinfo info{};
    info.ipi_ifindex = ifindex_;
    info.ipi_spec_dst.s_addr = htonl(options_.router.primary_ip);
    std::memcpy(CMSG_DATA(c), &info, sizeof info);
    if (::sendmsg(fd_.get(), &msg, 0) < 0) {
      log::warn("vrrp: advert to {}: {}", ipv4Text(to), std::strerror(errno));
    } else {
      ++counts_.adverts_sent;
    }
  }
}

void Node::takeVip() {
  std::string error;
  if (!setAddress(ifindex_, options_.vip, options_.prefix_len, true, error)) {
    ++counts_.address_errors;
    log::error("vrrp: {}", error);
    return;
  }
  holds_vip_ = true;
  garp_bursts_left_ = kGarpBursts;
  announce();
}

void Node::announce() {
  if (!holds_vip_ || garp_bursts_left_ <= 0) {
    return;
  }
  --garp_bursts_left_;
  for (int i = 0; i < kGarpPerBurst; ++i) {
    std::string error;
    if (!sendGratuitousArp(options_.interface, ifindex_, options_.vip, error)) {
      ++counts_.address_errors;
      log::warn("vrrp: {}", error);
      break;
    }
  }
  if (garp_bursts_left_ > 0) {
    garp_timer_.armAfter(kGarpRepeat);
  }
}

void Node::releaseVip() {
  garp_timer_.disarm();
  std::string error;
  if (!setAddress(ifindex_, options_.vip, options_.prefix_len, false, error)) {
    ++counts_.address_errors;
    log::error("vrrp: {}", error);
  }
  holds_vip_ = false;
}

}  // namespace fulcrum::lb::vrrp
