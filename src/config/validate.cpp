#include "config/validate.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <tuple>

#include "config/values.h"

namespace fulcrum::config::detail {

namespace {

bool before(const SourcePos& a, const SourcePos& b) {
  return std::tie(a.line, a.column) < std::tie(b.line, b.column);
}

struct Named {
  std::string key;  // "web.node[0].name"
  std::string_view name;
  SourcePos pos;
};

struct Listener {
  std::string key;  // "web.node[0].listen"
  core::SocketAddress address;
  SourcePos pos;
};

// Node names are unique across the whole site: they name processes, log lines and admin URLs.
void checkNames(Diagnostics& diag) {
  const Site& site = diag.site();
  std::vector<Named> names;
  auto add = [&](const std::string& role, size_t i, const std::string& name) {
    if (!name.empty()) {
      std::string key = role + ".node[" + std::to_string(i) + "].name";
      SourcePos pos = site.positionOf(key);
      names.push_back({std::move(key), name, pos});
    }
  };
  for (size_t i = 0; i < site.lb.nodes.size(); ++i) {
    add("lb", i, site.lb.nodes[i].name);
  }
  for (size_t i = 0; i < site.web.nodes.size(); ++i) {
    add("web", i, site.web.nodes[i].name);
  }
  for (size_t i = 0; i < site.db.nodes.size(); ++i) {
    add("db", i, site.db.nodes[i].name);
  }
  std::stable_sort(names.begin(), names.end(),
                   [](const Named& a, const Named& b) { return before(a.pos, b.pos); });
  std::map<std::string_view, const Named*> first;
  for (const Named& n : names) {
    auto [it, inserted] = first.emplace(n.name, &n);
    if (!inserted) {
      diag.error(n.key, "duplicate node name '" + std::string(n.name) + "': already used by " +
                            it->second->key.substr(0, it->second->key.rfind('.')));
    }
  }
}

// No two sockets of the site may bind the same address, or the same port under a wildcard.
void checkListeners(Diagnostics& diag) {
  const Site& site = diag.site();
  std::vector<Listener> listeners;
  auto add = [&](std::string key, const core::SocketAddress& address) {
    if (address.family() != AF_UNSPEC) {  // unset: missing or bad, already reported
      SourcePos pos = site.positionOf(key);
      listeners.push_back({std::move(key), address, pos});
    }
  };
  auto addOptional = [&](std::string key, const std::optional<core::SocketAddress>& address) {
    if (address) {
      add(std::move(key), *address);
    }
  };
  // [lb.vip]: every lb node listens on the virtual IP (only its holder answers), so one
  // address there is shared by the lb nodes, counted once against everything else.
  std::vector<std::string> on_vip;
  auto addLb = [&](std::string key, const std::optional<core::SocketAddress>& address) {
    if (address && site.lb.vip && address->ip() == site.lb.vip->ip) {
      std::string text = address->toString();
      if (std::find(on_vip.begin(), on_vip.end(), text) != on_vip.end()) {
        return;
      }
      on_vip.push_back(std::move(text));
    }
    addOptional(std::move(key), address);
  };
  for (size_t i = 0; i < site.lb.nodes.size(); ++i) {
    const LbNode& n = site.lb.nodes[i];
    std::string base = "lb.node[" + std::to_string(i) + "].";
    addLb(base + "http", n.http);
    addLb(base + "https", n.https);
    addLb(base + "stats", n.stats);
    addLb(base + "db_write", n.db_write);
    addLb(base + "db_read", n.db_read);
  }
  for (size_t i = 0; i < site.web.nodes.size(); ++i) {
    add("web.node[" + std::to_string(i) + "].listen", site.web.nodes[i].listen);
  }
  for (size_t i = 0; i < site.db.nodes.size(); ++i) {
    std::string base = "db.node[" + std::to_string(i) + "].";
    add(base + "pg", site.db.nodes[i].pg);
    add(base + "agent", site.db.nodes[i].agent);
  }
  if (site.etcd.managed) {  // `fulcrum up` binds them for the local etcd
    for (size_t i = 0; i < site.etcd.endpoints.size(); ++i) {
      add("etcd.endpoints[" + std::to_string(i) + "]", site.etcd.endpoints[i]);
    }
  }
  if (site.monitoring.present && site.monitoring.managed) {  // `fulcrum up` runs them here too
    add("monitoring.prometheus", site.monitoring.prometheus);
    addOptional("monitoring.alertmanager", site.monitoring.alertmanager);
  }
  std::stable_sort(listeners.begin(), listeners.end(),
                   [](const Listener& a, const Listener& b) { return before(a.pos, b.pos); });
  // Each listener is compared with the earliest earlier one it clashes with (listenersClash),
  // found through what each port has seen so far rather than by comparing every pair: a site
  // of 40,000 nodes is checked in n log n.
  struct PortSeen {
    std::map<std::string, size_t, std::less<>> by_ip;  // first listener on each exact address
    std::optional<size_t> any, v4, wild4, wild6;         // first listener of each kind
  };
  std::map<uint16_t, PortSeen> ports;
  for (size_t j = 0; j < listeners.size(); ++j) {
    const Listener& later = listeners[j];
    const core::IpAddress ip = later.address.ip();
    const bool v4 = ip.family == AF_INET;
    const bool zero = isZeroAddress(ip);
    std::string ip_key(reinterpret_cast<const char*>(ip.bytes.data()), ip.length());
    PortSeen& seen = ports[later.address.port()];
    std::optional<size_t> clash;
    auto consider = [&](std::optional<size_t> i) {
      if (i && (!clash || *i < *clash)) {
        clash = i;
      }
    };
    if (auto it = seen.by_ip.find(ip_key); it != seen.by_ip.end()) {
      consider(it->second);
    }
    consider(seen.wild6);
    if (zero && !v4) {
      consider(seen.any);
    }
    if (v4) {
      consider(seen.wild4);
    }
    if (zero && v4) {
      consider(seen.v4);
    }
    seen.by_ip.emplace(std::move(ip_key), j);
    auto first = [j](std::optional<size_t>& slot) {
      if (!slot) {
        slot = j;
      }
    };
    first(seen.any);
    if (v4) {
      first(seen.v4);
    }
    if (zero) {
      first(v4 ? seen.wild4 : seen.wild6);
    }
    if (!clash) {
      continue;
    }
    const Listener& earlier = listeners[*clash];
    std::string here = later.address.toString();
    std::string there = earlier.address.toString();
    if (here == there) {
      diag.error(later.key, "address " + here + " is already used by " + earlier.key);
    } else {
      diag.error(later.key, "address " + here + " clashes with " + there + " (" + earlier.key +
                                "): same port, and a wildcard address covers both");
    }
  }
}

void checkTls(Diagnostics& diag) {
  const LbTls& tls = diag.site().lb.tls;
  if (!tls.cert.empty() && tls.key.empty()) {
    diag.error("lb.tls.key", "must be set when lb.tls.cert is set");
  }
  if (tls.cert.empty() && !tls.key.empty()) {
    diag.error("lb.tls.cert", "must be set when lb.tls.key is set");
  }
  // A file that is missing now is named here rather than at the lb's start.
  auto exists = [&](const std::string& key, const std::filesystem::path& path) {
    std::error_code ec;
    if (!path.empty() && !diag.hasErrorFor(key) && !std::filesystem::is_regular_file(path, ec)) {
      diag.error(key, "no such file: " + path.string());
    }
  };
  if (!tls.cert.empty() && !tls.key.empty()) {
    exists("lb.tls.cert", tls.cert);
    exists("lb.tls.key", tls.key);
  }
  for (size_t i = 0; i < tls.certs.size(); ++i) {
    exists("lb.tls.certs[" + std::to_string(i) + "].cert", tls.certs[i].cert);
    exists("lb.tls.certs[" + std::to_string(i) + "].key", tls.certs[i].key);
  }
  const Site& site = diag.site();
  if (site.lb.acme) {
    const LbAcme& acme = *site.lb.acme;
    if (!acme.directory.starts_with("https://")) {
      diag.error("lb.acme.directory", "must be the https URL of an ACME directory");
    }
    if (acme.challenge != "http-01" && acme.challenge != "tls-alpn-01") {
      diag.error("lb.acme.challenge", "must be \"http-01\" or \"tls-alpn-01\"");
    }
    if (acme.domains.empty()) {
      diag.error("lb.acme.domains", "must name at least one domain to certify");
    }
    for (size_t i = 0; i < site.lb.nodes.size(); ++i) {
      if (!site.lb.nodes[i].https) {
        diag.error("lb.acme", "lb.node[" + std::to_string(i) + "] has no https listener for the certificate");
        break;
      }
    }
  }
  if (tls.redirect_http) {
    for (size_t i = 0; i < site.lb.nodes.size(); ++i) {
      if (!site.lb.nodes[i].https) {
        diag.error("lb.tls.redirect_http",
                   "lb.node[" + std::to_string(i) + "] has no https listener to redirect to");
        break;
      }
    }
  }
}

// Web nodes serve from docroot; without it every static request would fail at run time.
void checkDocroot(Diagnostics& diag) {
  const Site& site = diag.site();
  if (site.web.nodes.empty() || diag.hasErrorFor("web.docroot")) {
    return;
  }
  std::error_code ec;
  auto status = std::filesystem::status(site.web.docroot, ec);
  if (!std::filesystem::exists(status)) {
    diag.error("web.docroot", "no such directory: " + site.web.docroot.string());
  } else if (!std::filesystem::is_directory(status)) {
    diag.error("web.docroot", "not a directory: " + site.web.docroot.string());
  }
}

}  // namespace

void validateSite(Diagnostics& diag) {
  checkNames(diag);
  checkListeners(diag);
  checkTls(diag);
  checkDocroot(diag);
}

}  // namespace fulcrum::config::detail
