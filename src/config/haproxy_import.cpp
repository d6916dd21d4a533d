#include "config/haproxy_import.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/haproxy_config.h"
#include "config/values.h"

namespace fulcrum::config {

namespace {

using haproxy::Address;
using haproxy::Kind;
using haproxy::Line;
using haproxy::parseAddress;
using haproxy::parseCount;
using haproxy::parseMillis;
using haproxy::Section;

// clang-format off
// Server and default-server keywords that take no argument; every other keyword takes one.
constexpr std::string_view kFlagServerOptions[] = {
    "backup", "no-backup", "check", "no-check", "check-ssl", "no-check-ssl", "ssl", "no-ssl", "disabled",
    "enabled", "send-proxy", "no-send-proxy", "send-proxy-v2", "no-send-proxy-v2", "send-proxy-v2-ssl",
    "send-proxy-v2-ssl-cn", "check-send-proxy", "non-stick", "stick", "tfo", "no-tfo", "allow-0rtt",
    "agent-check", "no-agent-check", "no-verifyhost", "ssl-reuse", "no-ssl-reuse", "no-tls-tickets",
    "tls-tickets", "no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13", "force-sslv3",
    "force-tlsv10", "force-tlsv11", "force-tlsv12", "force-tlsv13", "check-via-socks4", "check-reuse-pool",
    "no-renegotiate", "renegotiate"};

// Bind keywords that take no argument.
constexpr std::string_view kBindFlags[] = {
    "ssl", "v4v6", "v6only", "transparent", "accept-proxy", "defer-accept", "tfo", "strict-sni", "no-sslv3",
    "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13", "prefer-client-ciphers", "no-ca-names", "allow-0rtt",
    "generate-certificates", "quic-force-retry", "no-alpn", "no-tls-tickets", "force-tlsv12", "force-tlsv13",
    "ssl-skip-self-issued-ca", "tls-tickets"};
// clang-format on

template <size_t N>
bool oneOf(std::string_view word, const std::string_view (&list)[N]) {
  return std::find(std::begin(list), std::end(list), word) != std::end(list);
}

// A node name the loader takes: 1-63 of [A-Za-z0-9._-], starting with a letter or digit.
std::string nodeName(std::string_view raw) {
  std::string out;
  for (char c : raw) {
    out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c : '-';
  }
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.front()))) {
    out.erase(out.begin());
  }
  if (out.size() > 60) {
    out.resize(60);
  }
  return out.empty() ? "server" : out;
}

std::string tomlString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string joined(const std::vector<std::string>& words, size_t from) {
  std::string out;
  for (size_t i = from; i < words.size(); ++i) {
    out += (i > from ? " " : "") + words[i];
  }
  return out;
}

// A server option and the line it came from (the server's own, or a default-server line).
struct Option {
  std::string name;
  std::string arg;
  const Line* line = nullptr;
};

struct Server {
  const Line* line = nullptr;
  std::string name;
  std::string address;
  std::vector<Option> options;  // default-server's first, then the server's own
};

enum class Role { kUnused, kWebFront, kRedirectFront, kWebBackend, kStats, kDbWrite, kDbRead };

// One proxy section with its defaults applied: the lines HAProxy would act on, in order.
struct Proxy {
  const Section* section = nullptr;
  std::vector<const Line*> lines;  // inherited first, then its own
  std::string mode = "tcp";        // HAProxy's default mode
  bool stats = false;
  bool redirects_to_https = false;
  std::string default_backend;
  std::string check_path;  // httpchk path ("" = none), query removed
  bool has_check_port = false;
  std::vector<const Line*> servers;
  Role role = Role::kUnused;
  std::string unused_why;
  const Proxy* backend = nullptr;  // where its traffic goes (itself for a listen with servers)
};

bool isRedirectToHttps(const std::vector<std::string>& w, size_t at) {
  // redirect scheme https [code N] [if|unless COND]: only the plain "not over TLS" condition.
  if (w.size() < at + 2 || w[at] != "scheme" || w[at + 1] != "https") {
    return false;
  }
  size_t i = at + 2;
  if (i + 1 < w.size() && w[i] == "code") {
    i += 2;
  }
  if (i == w.size()) {
    return true;
  }
  std::string cond = joined(w, i + 1);
  cond.erase(std::remove(cond.begin(), cond.end(), ' '), cond.end());
  return (w[i] == "if" && (cond == "!{ssl_fc}" || cond == "{!ssl_fc}")) ||
         (w[i] == "unless" && cond == "{ssl_fc}");
}

class Importer {
 public:
  Importer(std::string_view text, const HaproxyImportOptions& options) : text_(text), options_(options) {}

  HaproxyImport run() {
    HaproxyImport result;
    if (!haproxy::parseConfig(text_, options_.source_name, sections_, result.error)) {
      return result;
    }
    for (const Section& s : sections_) {
      for (const Line& l : s.lines) {
        if (s.kind == Kind::kGlobal && l.words[0] == "crt-base" && l.words.size() >= 2) {
          crt_base_ = l.words[1];
        }
      }
    }
    buildProxies();
    classify();
    if (web_front_ == nullptr && db_write_ == nullptr && db_read_ == nullptr) {
      result.error =
          options_.source_name +
          ": no frontend, listen or backend Fulcrum can translate: it needs an HTTP frontend (mode http) "
          "with servers, or Patroni-checked PostgreSQL listeners (option httpchk /primary or /replica "
          "with check port)";
      return result;
    }
    translate();
    if (!checkClashes(result.error)) {
      return result;
    }
    if (!web_.empty() && !web_checked_ && settings_.count("health.path") != 0) {
      note("no server had 'check': Fulcrum checks every web node (the [lb.health] path above)");
    }
    if (accept_proxy_slots_.size() == 1 && listeners_.count("http") != 0 && listeners_.count("https") != 0) {
      note("accept-proxy on one of the http and https binds: Fulcrum's [lb] accept_proxy applies to both");
    }
    result.ok = true;
    result.source_name = options_.source_name;
    result.untranslated = untranslated();
    result.toml = render(result.untranslated);
    return result;
  }

 private:
  void inheritedLines(const Section* d, std::vector<const Line*>& out, int depth = 0) {
    if (d == nullptr || depth > 16) {
      return;
    }
    inheritedLines(d->defaults, out, depth + 1);
    for (const Line& l : d->lines) {
      out.push_back(&l);
    }
  }

  void buildProxies() {
    for (const Section& s : sections_) {
      if (s.kind == Kind::kGlobal) {
        global_ = &s;
      }
      if (s.kind != Kind::kFrontend && s.kind != Kind::kBackend && s.kind != Kind::kListen) {
        continue;
      }
      Proxy& p = proxies_.emplace_back();
      p.section = &s;
      inheritedLines(s.defaults, p.lines);
      for (const Line& l : s.lines) {
        p.lines.push_back(&l);
      }
      for (const Line* l : p.lines) {
        const auto& w = l->words;
        if (w[0] == "mode" && w.size() >= 2) {
          p.mode = w[1];
        } else if (w[0] == "stats" && w.size() >= 2 && (w[1] == "enable" || w[1] == "uri")) {
          p.stats = true;
        } else if (w[0] == "default_backend" && w.size() >= 2) {
          p.default_backend = w[1];
        } else if (w[0] == "server" && s.kind != Kind::kFrontend) {
          p.servers.push_back(l);
        } else if (w[0] == "option" && w.size() >= 2 && w[1] == "httpchk") {
          p.check_path = w.size() == 3 ? w[2] : w.size() >= 4 ? w[3] : "/";
        } else if (w[0] == "http-check" && w.size() >= 2 && w[1] == "send") {
          for (size_t i = 2; i + 1 < w.size(); ++i) {
            if (w[i] == "uri") {
              p.check_path = w[i + 1];
            }
          }
        } else if ((w[0] == "redirect" && isRedirectToHttps(w, 1)) ||
                   (w[0] == "http-request" && w.size() >= 2 && w[1] == "redirect" &&
                    isRedirectToHttps(w, 2))) {
          p.redirects_to_https = true;
        }
        if (w[0] == "server" || w[0] == "default-server") {
          for (size_t i = w[0] == "server" ? 3 : 1; i < w.size(); ++i) {
            if (w[i] == "port" && i + 1 < w.size()) {
              p.has_check_port = true;
            }
          }
        }
      }
      p.check_path = p.check_path.substr(0, p.check_path.find('?'));
    }
  }

  Proxy* findBackend(const std::string& name) {
    for (Proxy& p : proxies_) {
      if (p.section->kind != Kind::kFrontend && p.section->name == name) {
        return &p;
      }
    }
    return nullptr;
  }

  static bool isEntry(const Proxy& p) { return p.section->kind != Kind::kBackend; }

  // Which proxy becomes which part of the topology; the rest is named with a reason.
  void classify() {
    static const std::set<std::string> kPrimary = {"/", "/master", "/primary", "/leader", "/read-write"};
    static const std::set<std::string> kReplica = {"/replica", "/read-only", "/async", "/sync"};
    for (Proxy& p : proxies_) {
      if (!isEntry(p)) {
        continue;
      }
      Proxy* target = !p.servers.empty()          ? &p
                      : p.default_backend.empty() ? nullptr
                                                  : findBackend(p.default_backend);
      if (p.mode == "http" && p.stats && target == nullptr) {
        if (stats_ == nullptr) {
          assign(p, Role::kStats);
          stats_ = &p;
        } else {
          unused(p, "Fulcrum's lb node has one stats listener (line " +
                        std::to_string(stats_->section->header.number) + "'s)");
        }
        continue;
      }
      if (p.mode == "tcp") {
        const Proxy* servers = target;
        bool patroni = servers != nullptr && servers->has_check_port && !servers->servers.empty();
        if (patroni && kPrimary.count(servers->check_path) != 0) {
          assignDb(p, target, Role::kDbWrite, db_write_, "db_write");
        } else if (patroni && kReplica.count(servers->check_path) != 0) {
          assignDb(p, target, Role::kDbRead, db_read_, "db_read");
        } else {
          unused(p,
                 "mode tcp: Fulcrum proxies TCP only to its own PostgreSQL nodes (db_write, db_read: "
                 "Patroni-style "
                 "checks with option httpchk /primary or /replica and check port)");
        }
        continue;
      }
      if (p.mode != "http") {
        unused(p, "mode " + p.mode + " is not supported");
        continue;
      }
      if (target != nullptr && target->mode == "http" && !target->servers.empty() && web_front_ == nullptr) {
        assign(p, Role::kWebFront);
        web_front_ = &p;
        p.backend = target;
        if (target != &p) {
          assign(*target, Role::kWebBackend);
        }
        continue;
      }
      if (target == nullptr && p.redirects_to_https && redirect_front_ == nullptr) {
        assign(p, Role::kRedirectFront);
        redirect_front_ = &p;
        continue;
      }
      unused(p, web_front_ != nullptr ? "Fulcrum has one set of web nodes per site, from line " +
                                            std::to_string(web_front_->section->header.number) + "'s " +
                                            web_front_->section->keyword
                                      : "no servers or default_backend to translate");
    }
    for (Proxy& p : proxies_) {
      if (p.section->kind == Kind::kBackend && p.role == Role::kUnused && p.unused_why.empty()) {
        unused(p,
               "no translated frontend sends its traffic here (Fulcrum has one set of web nodes per site)");
      }
    }
  }

  void assign(Proxy& p, Role role) { p.role = role; }

  void assignDb(Proxy& p, Proxy* target, Role role, Proxy*& slot, const char* what) {
    if (slot != nullptr) {
      unused(p, std::string("Fulcrum's lb node has one ") + what + " frontend (line " +
                    std::to_string(slot->section->header.number) + "'s)");
      return;
    }
    slot = &p;
    p.role = role;
    p.backend = target;
    if (target != &p) {
      target->role = role;
    }
  }

  void unused(Proxy& p, std::string why) {
    p.role = Role::kUnused;
    p.unused_why = std::move(why);
  }

  // ---- outcomes per line ----

  struct Outcome {
    bool translated = false;
    bool partial = false;  // translated, but with parts that are not: listed all the same
    std::vector<std::string> reasons;
  };

  void done(const Line* l) { outcomes_[l->number].translated = true; }
  void notDone(const Line* l, const std::string& why) {
    auto& o = outcomes_[l->number];
    if (std::find(o.reasons.begin(), o.reasons.end(), why) == o.reasons.end()) {
      o.reasons.push_back(why);
    }
  }
  void partly(const Line* l, const std::string& why) {
    notDone(l, why);
    outcomes_[l->number].translated = true;
    outcomes_[l->number].partial = true;
  }
  void note(const std::string& text) {
    if (std::find(notes_.begin(), notes_.end(), text) == notes_.end()) {
      notes_.push_back(text);
    }
  }

  // A [lb] key: the first value wins; a different one later is named (the site has one [lb]).
  struct Setting {
    std::string value;  // TOML value text
    uint32_t line = 0;
  };
  void set(const std::string& key, const std::string& value, const Line* l) {
    auto [it, inserted] = settings_.emplace(key, Setting{value, l->number});
    if (inserted || it->second.value == value) {
      done(l);
    } else {
      notDone(l, "conflicts with line " + std::to_string(it->second.line) + " (" + key + " = " +
                     it->second.value + "): the site has one [lb] setting for every listener");
    }
  }
  void setPartly(const std::string& key, const std::string& value, const Line* l, const std::string& what) {
    auto [it, inserted] = settings_.emplace(key, Setting{value, l->number});
    if (!inserted && it->second.value != value) {
      partly(l, what + ": conflicts with line " + std::to_string(it->second.line) + " (" + key + " = " +
                    it->second.value + ")");
    }
  }

  void setDuration(const std::string& key, const std::string& text, const Line* l) {
    auto ms = parseMillis(text);
    if (!ms || *ms < 1 || *ms > 86'400'000) {
      notDone(l, "'" + text + "' is not a time of 1 ms to 1 day");
      return;
    }
    set(key, std::to_string(*ms), l);
  }

  // ---- translation ----

  void translate() {
    for (Proxy& p : proxies_) {
      switch (p.role) {
        case Role::kUnused:
          for (const Line* l : ownLines(p)) {
            notDone(l, p.section->keyword + " " + p.section->name + ": " + p.unused_why);
          }
          notDone(&p.section->header, p.unused_why);
          break;
        case Role::kStats:
          translateStats(p);
          break;
        default:
          translateProxy(p);
          break;
      }
    }
    translateGlobal();
    for (const Section& s : sections_) {
      if (s.kind == Kind::kOther) {
        std::string why = "a " + s.keyword + " section has no counterpart in the topology file";
        notDone(&s.header, why);
        for (const Line& l : s.lines) {
          notDone(&l, why);
        }
      } else if (s.kind == Kind::kDefaults) {
        done(&s.header);
      }
    }
  }

  std::vector<const Line*> ownLines(const Proxy& p) {
    std::vector<const Line*> out;
    for (const Line& l : p.section->lines) {
      out.push_back(&l);
    }
    return out;
  }

  void translateStats(Proxy& p) {
    done(&p.section->header);
    for (const Line* l : p.lines) {
      const auto& w = l->words;
      if (w[0] == "bind") {
        translateBind(p, l);
      } else if (w[0] == "mode") {
        if (w.size() >= 2 && w[1] == p.mode) {
          done(l);
        }
      } else if (w[0] == "stats") {
        if (w.size() >= 2 && (w[1] == "enable" || (w[1] == "uri" && w.size() >= 3 && w[2] == "/"))) {
          done(l);
        } else if (w.size() >= 2 && w[1] == "uri") {
          notDone(l, "the dashboard is at / on the stats listener (JSON and /metrics beside it)");
        } else if (w.size() >= 2 && w[1] == "auth") {
          notDone(l, "the stats listener has no password: keep it on a private address (or [lb.firewall])");
        } else {
          notDone(l, "the dashboard has no such setting");
        }
      } else if (isTimeoutLike(w[0]) || w[0] == "log" || w[0] == "option" || w[0] == "retries" ||
                 w[0] == "maxconn" || w[0] == "default-server" || w[0] == "balance") {
        // Inherited settings that only matter for proxied traffic: the other sections decide.
      } else {
        notDone(l, "the stats listener has no such setting");
      }
    }
  }

  static bool isTimeoutLike(const std::string& word) {
    return word == "timeout" || word == "contimeout" || word == "srvtimeout" || word == "clitimeout";
  }

  void translateProxy(Proxy& p) {
    done(&p.section->header);
    const bool db = p.role == Role::kDbWrite || p.role == Role::kDbRead;
    // A listen section is both the frontend and the backend; settings of the other kind, inherited
    // from defaults, do nothing in HAProxy either.
    const bool front = p.section->kind != Kind::kBackend;
    const bool back = p.section->kind != Kind::kFrontend;
    for (const Line* l : p.lines) {
      const auto& w = l->words;
      const std::string& k = w[0];
      if (k == "mode") {
        if (w.size() >= 2 && w[1] == p.mode) {
          done(l);
        }
      } else if (k == "bind" && front) {
        translateBind(p, l);
      } else if (k == "default_backend" && front) {
        if (p.backend != nullptr && p.backend->section->name == (w.size() >= 2 ? w[1] : "")) {
          done(l);
        }
      } else if (k == "use_backend" && front) {
        notDone(l,
                "Fulcrum has one set of web nodes per site and no request routing: requests go to the "
                "default backend");
      } else if (k == "acl" && front) {
        notDone(l, "ACLs: Fulcrum has no request routing rules");
      } else if ((k == "redirect" && isRedirectToHttps(w, 1)) ||
                 (k == "http-request" && w.size() >= 2 && w[1] == "redirect" && isRedirectToHttps(w, 2))) {
        if (front) {
          translateRedirect(l);
        }
      } else if (k == "http-request" && w.size() >= 4 && (w[1] == "set-header" || w[1] == "add-header") &&
                 (w[2] == "X-Forwarded-Proto" || w[2] == "x-forwarded-proto")) {
        done(l);
        note("X-Forwarded-Proto (line " + std::to_string(l->number) + "): the lb sets it on every request");
      } else if (k == "http-response" && w.size() >= 4 && (w[1] == "set-header" || w[1] == "add-header") &&
                 (w[2] == "Strict-Transport-Security" || w[2] == "strict-transport-security")) {
        set("tls.hsts", "true", l);
        note("hsts (line " + std::to_string(l->number) +
             "): Fulcrum sends its own Strict-Transport-Security value, "
             "HAProxy sent '" +
             (w.size() >= 4 ? w[3] : "") + "'");
      } else if (k == "server" && back) {
        db ? translateDbServer(p, l) : translateWebServer(p, l);
      } else if (k == "default-server" && back) {
        // Its options are read with each server.
        if (p.servers.empty()) {
          done(l);
        }
      } else if (k == "balance" && back && !db) {
        translateBalance(l);
      } else if (k == "balance" && back && db) {
        done(l);  // db_write has one server; db_read balances replicas its own way
      } else if (k == "hash-type" && back) {
        if (w.size() >= 2 && w[1] == "consistent") {
          done(l);
        } else {
          notDone(l, "Fulcrum's source and uri hashing is consistent (as hash-type consistent)");
        }
      } else if (k == "option" && w.size() >= 2) {
        translateOption(p, l, back, db);
      } else if (k == "no" && w.size() >= 3 && w[1] == "option") {
        notDone(l, "'no option " + w[2] + "' has no counterpart");
      } else if (k == "http-check" && back) {
        translateHttpCheck(l, db);
      } else if (k == "timeout" && w.size() >= 3) {
        translateTimeout(l, front, back);
      } else if (k == "retries" && back && w.size() >= 2) {
        auto n = parseCount(w[1]);
        if (n && *n <= 10) {
          set("retries", std::to_string(*n), l);
        } else {
          notDone(l, "Fulcrum takes 0 to 10 retries");
        }
      } else if (k == "maxconn" && front && w.size() >= 2) {
        auto n = parseCount(w[1]);
        if (n && *n >= 1 && *n <= 10'000'000) {
          set("limits.max_connections", std::to_string(*n), l);
        } else {
          notDone(l, "Fulcrum takes 1 to 10000000 connections");
        }
      } else if (k == "cookie" && back && !db) {
        translateCookie(l);
      } else if (k == "stick-table" || k == "stick") {
        notDone(l,
                "stick tables: not in Fulcrum (balance source keeps a client on one server; [lb.limits] "
                "rate_per_ip and conn_per_ip limit clients)");
      } else if (k == "log") {
        notDone(l, "logging: Fulcrum logs to stderr (--log-format text|json)");
      } else if (k == "stats") {
        notDone(l, "the dashboard is on the lb node's stats listener");
      } else if (k == "http-request" || k == "http-response" || k == "tcp-request" || k == "tcp-response" ||
                 k == "http-after-response") {
        notDone(l, "request and response rules: Fulcrum has none");
      } else if ((k == "bind" || k == "default_backend" || k == "use_backend" || k == "acl" ||
                  k == "maxconn") &&
                 !front) {
        // A frontend keyword inherited by a backend: HAProxy ignores it there too.
      } else if ((k == "server" || k == "default-server" || k == "balance" || k == "hash-type" ||
                  k == "http-check" || k == "retries") &&
                 !back) {
        // A backend keyword inherited by a frontend.
      } else {
        notDone(l, "no counterpart in the topology file");
      }
    }
  }

  void translateBind(Proxy& p, const Line* l) {
    const auto& w = l->words;
    std::string first = w[1].substr(0, w[1].find(','));
    std::vector<std::string> extra;
    if (first.size() != w[1].size()) {
      extra.push_back("more addresses in one bind ('" + w[1].substr(first.size() + 1) +
                      "') are not translated");
    }
    Address address = parseAddress(first, /*bind=*/true, options_.wildcard_ip);
    if (address.text.empty()) {
      notDone(l, address.why);
      return;
    }
    bool ssl = false;
    bool accept_proxy = false;
    std::vector<std::string> crts;
    std::optional<bool> h2;
    for (size_t i = 2; i < w.size(); ++i) {
      if (w[i] == "ssl") {
        ssl = true;
      } else if (w[i] == "accept-proxy") {
        accept_proxy = true;
      } else if (w[i] == "crt" && i + 1 < w.size()) {
        crts.push_back(w[++i]);
      } else if (w[i] == "alpn" && i + 1 < w.size()) {
        h2 = w[++i].find("h2") != std::string::npos;
      } else if (w[i] == "name" && i + 1 < w.size()) {
        ++i;  // a label for HAProxy's logs
      } else if (oneOf(w[i], kBindFlags)) {
        extra.push_back(w[i]);
      } else if (i + 1 < w.size()) {
        extra.push_back(w[i] + " " + w[i + 1]);
        ++i;
      } else {
        extra.push_back(w[i]);
      }
    }
    std::string slot;
    Role role = p.role;
    if (role == Role::kStats) {
      slot = "stats";
    } else if (role == Role::kDbWrite) {
      slot = "db_write";
    } else if (role == Role::kDbRead) {
      slot = "db_read";
    } else {
      slot = ssl ? "https" : "http";
    }
    if (ssl && slot != "https") {
      notDone(l, "TLS on the " + slot + " listener is not supported");
      return;
    }
    if (listeners_.count(slot) != 0) {
      notDone(l, "Fulcrum's lb node has one " + slot + " listener (line " +
                     std::to_string(listeners_[slot].line) + "'s)");
      return;
    }
    listeners_[slot] = Listener{address.text, l->number, address.implicit};
    done(l);
    if (accept_proxy) {
      if (slot == "http" || slot == "https") {
        settings_.emplace("accept_proxy", Setting{"true", l->number});
        accept_proxy_slots_.insert(slot);
      } else {
        extra.push_back("accept-proxy");  // the database frontends and stats take no PROXY header
      }
    }
    if (ssl) {
      translateCerts(l, crts);
      if (h2) {
        set("tls.http2", *h2 ? "true" : "false", l);
      }
    }
    for (const std::string& e : extra) {
      partly(l, e == "v4v6" || e == "v6only" ? e + ": the address decides the family"
                                             : "bind option '" + e + "' has no counterpart");
    }
  }

  void translateCerts(const Line* l, const std::vector<std::string>& crts) {
    if (crts.empty()) {
      partly(l,
             "ssl without crt: Fulcrum makes a self-signed certificate in state_dir (set [lb.tls] cert and "
             "key)");
      return;
    }
    for (std::string crt : crts) {
      if (crt.ends_with("/")) {
        partly(l, "crt " + crt + ": a directory of certificates: list each pair in [[lb.tls.certs]]");
        continue;
      }
      if (!crt.starts_with("/") && !crt_base_.empty()) {
        crt = crt_base_ + (crt_base_.ends_with("/") ? "" : "/") + crt;
      }
      if (!crt.starts_with("/")) {
        note("crt " + crt + " (line " + std::to_string(l->number) +
             "): a relative path is read from the topology file's directory");
      }
      certs_.push_back({crt, l->number});
    }
  }

  void translateRedirect(const Line* l) {
    const auto& w = l->words;
    auto code = std::find(w.begin(), w.end(), "code");
    if (code != w.end() && code + 1 != w.end() && *(code + 1) != "308") {
      partly(l, "code " + *(code + 1) + ": Fulcrum redirects with 308 (the method and body are kept)");
    }
    set("tls.redirect_http", "true", l);
  }

  void translateBalance(const Line* l) {
    const auto& w = l->words;
    if (w.size() < 2) {
      notDone(l, "balance needs an algorithm");
      return;
    }
    std::string algo = w[1];
    if (algo == "roundrobin" || algo == "static-rr" || algo == "leastconn" || algo == "source") {
      set("algorithm", tomlString(algo), l);
    } else if (algo == "uri") {
      set("algorithm", tomlString("uri"), l);
      if (w.size() > 2) {
        partly(l, "uri options '" + joined(w, 2) + "': Fulcrum hashes the path without the query");
      }
    } else if (algo == "random" || algo == "random(2)") {
      set("algorithm", tomlString("random2"), l);  // HAProxy's random draws two by default
    } else {
      notDone(l, "balance " + algo +
                     ": Fulcrum has roundrobin, static-rr, leastconn, source, uri, random2 and maglev");
    }
  }

  void translateOption(const Proxy& p, const Line* l, bool back, bool db) {
    const auto& w = l->words;
    const std::string& o = w[1];
    if ((o == "httpchk" || o == "tcp-check" || o == "redispatch") && !back) {
      return;  // a backend option inherited by a frontend: the backend translates it
    }
    if (o == "httpchk") {
      if (db) {
        done(l);
        note(
            "option httpchk of the database listeners: the db frontends ask each node's agent GET /primary "
            "(db_write) and /replica (db_read)");
        translateLag(l, w.back());
        return;
      }
      std::string method = w.size() >= 4 ? w[2] : "";
      std::string path = w.size() == 3 ? w[2] : w.size() >= 4 ? w[3] : "/";
      if (sendsUri(p)) {
        done(l);  // http-check send ... uri (HAProxy 2.2's form) gives the path
        return;
      }
      if (path.empty() || path.front() != '/' || path.find_first_of(" \t\r\n") != std::string::npos) {
        notDone(l, "the check path must start with '/'");
        return;
      }
      set("health.path", tomlString(path), l);
      if (!method.empty() && method != "GET" && method != "HEAD") {
        partly(l, "method " + method + ": Fulcrum's checks send GET");
      }
      if (w.size() >= 5) {
        partly(l, "the check's HTTP version and headers: Fulcrum sends HTTP/1.1 with Host");
      }
    } else if (o == "tcp-check") {
      if (db) {
        notDone(l, "the db frontends check each node's agent");
      } else {
        set("health.path", "\"\"", l);
      }
    } else if (o == "forwardfor") {
      done(l);
      note("option forwardfor (line " + std::to_string(l->number) + "): the lb always adds X-Forwarded-For");
    } else if (o == "redispatch") {
      done(l);  // a failed attempt goes to another server: what [lb] retries does
    } else if (o == "httplog" || o == "tcplog" || o == "dontlognull" || o == "log-health-checks" ||
               o == "dontlog-normal" || o == "logasap" || o == "log-separate-errors") {
      notDone(l, "logging: Fulcrum logs to stderr (--log-format text|json)");
    } else if (o == "http-server-close" || o == "http-keep-alive" || o == "httpclose" || o == "forceclose" ||
               o == "http-pretend-keepalive") {
      notDone(l,
              "connection handling: Fulcrum keeps client and server connections alive (timeouts in "
              "[lb.timeouts])");
    } else {
      notDone(l, "option " + o + " has no counterpart");
    }
  }

  // Patroni's /replica?lag=N (bytes, or with kB, MB, GB, TB as PostgreSQL counts them) is
  // Fulcrum's [db] max_lag_bytes: replicas further behind leave db_read.
  void translateLag(const Line* l, const std::string& uri) {
    size_t at = uri.find("lag=");
    if (at == std::string::npos || (at > 0 && uri[at - 1] != '?' && uri[at - 1] != '&')) {
      return;
    }
    std::string value = uri.substr(at + 4, uri.find('&', at) - at - 4);
    size_t digits = 0;
    while (digits < value.size() && std::isdigit(static_cast<unsigned char>(value[digits]))) {
      ++digits;
    }
    std::string unit = value.substr(digits);
    uint64_t scale = unit.empty() || unit == "B" ? 1
                     : unit == "kB"              ? 1ull << 10
                     : unit == "MB"              ? 1ull << 20
                     : unit == "GB"              ? 1ull << 30
                     : unit == "TB"              ? 1ull << 40
                                                 : 0;
    auto n = parseCount(value.substr(0, digits));
    if (!n || scale == 0 || *n > (uint64_t{1} << 40) / scale) {
      partly(l, "lag=" + value + ": not a size of up to 1 TB ([db] max_lag_bytes)");
      return;
    }
    auto [it, inserted] =
        settings_.emplace("db.max_lag_bytes", Setting{std::to_string(*n * scale), l->number});
    if (!inserted && it->second.value != std::to_string(*n * scale)) {
      partly(l, "lag=" + value + ": conflicts with line " + std::to_string(it->second.line) +
                    " ([db] max_lag_bytes = " + it->second.value + ")");
    }
  }

  static bool sendsUri(const Proxy& p) {
    for (const Line* l : p.lines) {
      const auto& w = l->words;
      if (w[0] == "http-check" && w.size() >= 2 && w[1] == "send" &&
          std::find(w.begin(), w.end(), "uri") != w.end()) {
        return true;
      }
    }
    return false;
  }

  void translateHttpCheck(const Line* l, bool db) {
    const auto& w = l->words;
    if (w.size() >= 2 && w[1] == "send") {
      if (db) {
        done(l);
        for (size_t i = 2; i + 1 < w.size(); ++i) {
          if (w[i] == "uri") {
            translateLag(l, w[i + 1]);
          }
        }
        return;
      }
      for (size_t i = 2; i + 1 < w.size(); ++i) {
        if (w[i] == "uri") {
          set("health.path", tomlString(w[i + 1]), l);
        } else if (w[i] == "meth" && w[i + 1] != "GET" && w[i + 1] != "HEAD") {
          partly(l, "meth " + w[i + 1] + ": Fulcrum's checks send GET");
        } else if (w[i] == "hdr" && i + 2 < w.size()) {
          partly(l, "hdr " + w[i + 1] + ": Fulcrum's checks send Host and User-Agent only");
          ++i;
        } else if (w[i] != "meth" && w[i] != "ver") {
          partly(l, w[i] + " " + w[i + 1] + ": Fulcrum's checks send a GET without a body");
        }
        ++i;
      }
      if (outcomes_.count(l->number) == 0) {
        notDone(l, "no uri to check");
      }
      return;
    }
    if (w.size() >= 3 && w[1] == "expect") {
      bool status_200 = w.size() == 4 && w[2] == "status" && w[3] == "200";
      if (db && status_200) {
        done(l);  // the agents answer 200 when the node is what is asked for
        return;
      }
      notDone(l, "Fulcrum counts any 2xx or 3xx answer as up");
      return;
    }
    if (w.size() >= 2 && w[1] == "connect") {
      done(l);
      return;
    }
    notDone(l, "http-check " + (w.size() >= 2 ? w[1] : "") + " has no counterpart");
  }

  void translateTimeout(const Line* l, bool front, bool back) {
    const auto& w = l->words;
    const std::string& t = w[1];
    const bool backend_side = t == "connect" || t == "server" || t == "check";
    const bool frontend_side = t == "client" || t == "http-request";
    if ((backend_side && !back) || (frontend_side && !front)) {
      return;  // inherited by the other side, where HAProxy ignores it too
    }
    if (t == "connect") {
      setDuration("timeouts.connect_ms", w[2], l);
    } else if (t == "server") {
      setDuration("timeouts.server_ms", w[2], l);
    } else if (t == "check") {
      setDuration("health.timeout_ms", w[2], l);
    } else if (t == "client") {
      setDuration("timeouts.client_ms", w[2], l);
    } else if (t == "http-request") {
      setDuration("timeouts.http_request_ms", w[2], l);
    } else if (t == "queue") {
      setDuration("queue_timeout_ms", w[2], l);
    } else if (t == "http-keep-alive") {
      notDone(l, "Fulcrum's client_ms covers idle keep-alive connections");
    } else {
      notDone(l, "timeout " + t + " has no counterpart");
    }
  }

  // Options of a server line, default-server options first.
  Server serverOf(const Proxy& p, const Line* l) {
    Server s;
    s.line = l;
    s.name = l->words[1];
    s.address = l->words[2];
    auto add = [&](const Line* from, size_t start) {
      const auto& w = from->words;
      for (size_t i = start; i < w.size(); ++i) {
        Option o{w[i], "", from};
        if (!oneOf(w[i], kFlagServerOptions) && i + 1 < w.size()) {
          o.arg = w[++i];
        }
        s.options.push_back(std::move(o));
      }
    };
    for (const Line* d : p.lines) {
      if (d == l) {
        break;
      }
      if (d->words[0] == "default-server") {
        add(d, 1);
      }
    }
    add(l, 3);
    return s;
  }

  // Names are unique across the site; a repeat gets "-2", "-3"...
  std::string uniqueName(const std::string& raw) {
    std::string base = nodeName(raw);
    std::string name = base;
    for (int n = 2; names_.count(name) != 0; ++n) {
      name = base + "-" + std::to_string(n);
    }
    names_.insert(name);
    return name;
  }

  void healthOption(const Option& o, const std::string& key, bool duration) {
    std::optional<uint64_t> v = duration ? parseMillis(o.arg) : parseCount(o.arg);
    uint64_t max = duration ? 86'400'000 : 100;
    if (!v || *v < 1 || *v > max) {
      partly(o.line, o.name + " " + o.arg + ": out of range");
      return;
    }
    auto [it, inserted] = settings_.emplace(key, Setting{std::to_string(*v), o.line->number});
    if (!inserted && it->second.value != std::to_string(*v)) {
      partly(o.line, o.name + " " + o.arg + ": every server shares [lb.health] (line " +
                         std::to_string(it->second.line) + " gave " + it->second.value + ")");
    }
  }

  // A server's check timing (into [lb.health]), the same for web and database servers; a database
  // server's connection limit (none in the database frontends). False for any other option.
  bool checkOrLimitOption(const Option& o) {
    if (o.name == "inter") {
      healthOption(o, "health.interval_ms", true);
    } else if (o.name == "rise") {
      healthOption(o, "health.rise", false);
    } else if (o.name == "fall") {
      healthOption(o, "health.fall", false);
    } else if (o.name == "maxconn") {
      partly(o.line, "maxconn " + o.arg + ": the database frontends have no per-server connection limit");
    } else {
      return false;
    }
    return true;
  }

  // cookie NAME insert [indirect] [nocache] ...: [lb] sticky = "cookie" with that name.
  void translateCookie(const Line* l) {
    const auto& w = l->words;
    const bool valid_name = w.size() >= 2 && !w[1].empty() && w[1].size() <= 64 &&
                            w[1].find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.") ==
                                std::string::npos;
    if (!valid_name || w.size() < 3 || w[2] != "insert") {
      notDone(l, "only `cookie NAME insert` (Fulcrum's [lb] sticky = \"cookie\") has a counterpart; rewrite and "
                 "prefix modes do not");
      return;
    }
    set("sticky", "\"cookie\"", l);
    set("sticky_cookie", tomlString(w[1]), l);
    std::string rest;
    for (size_t i = 3; i < w.size(); ++i) {
      rest += (rest.empty() ? "" : " ") + w[i];
    }
    if (!rest.empty()) {
      partly(l, rest + ": Fulcrum's cookie is set with Path=/; HttpOnly; SameSite=Lax, passed on to the server and "
                       "sent with no Cache-Control of its own");
    }
  }

  void translateWebServer(const Proxy& p, const Line* l) {
    Server s = serverOf(p, l);
    Address address = parseAddress(s.address, /*bind=*/false, options_.wildcard_ip);
    if (address.text.empty()) {
      notDone(l, address.why);
      return;
    }
    done(l);
    WebOut node{uniqueName(s.name), address.text, 1, false, 0, l->number, {}};
    for (const Option& o : s.options) {
      if (o.line != l) {
        done(o.line);
      }
      if (o.name == "weight") {
        auto w = parseCount(o.arg);
        if (w && *w >= 1 && *w <= 256) {
          node.weight = static_cast<uint32_t>(*w);
        } else {
          partly(o.line, "weight " + o.arg + ": Fulcrum takes 1 to 256 (drain a server with the admin API)");
        }
      } else if (o.name == "backup") {
        node.backup = true;
      } else if (o.name == "no-backup") {
        node.backup = false;
      } else if (o.name == "check") {
        web_checked_ = true;
      } else if (o.name == "maxconn") {
        auto n = parseCount(o.arg);
        if (n && *n <= 1'000'000) {
          node.max_conn = static_cast<uint32_t>(*n);
        } else {
          partly(o.line, "maxconn " + o.arg + ": Fulcrum takes 0 to 1000000");
        }
      } else if (checkOrLimitOption(o)) {
      } else if (o.name == "cookie") {
        if (o.arg != node.name) {
          partly(o.line, "cookie " + o.arg + ": Fulcrum's sticky cookie names the node (" + node.name + ")");
        }
      } else if (o.name == "port" || o.name == "addr") {
        partly(o.line, o.name + " " + o.arg + ": Fulcrum checks the address it sends requests to");
      } else if (o.name == "ssl" || o.name == "verify" || o.name == "ca-file" || o.name == "sni") {
        partly(o.line, o.name + (o.arg.empty() ? "" : " " + o.arg) +
                           ": TLS to servers comes from [security] internal_tls (Fulcrum's own web nodes)");
      } else if (o.name == "send-proxy") {
        node.send_proxy = "v1";
      } else if (o.name == "send-proxy-v2") {
        node.send_proxy = "v2";
      } else if (o.name == "send-proxy-v2-ssl" || o.name == "send-proxy-v2-ssl-cn") {
        node.send_proxy = "v2";
        partly(o.line, o.name + ": sent as send-proxy-v2, without the TLS details");
      } else if (o.name == "no-send-proxy" || o.name == "no-send-proxy-v2") {
        node.send_proxy.clear();
      } else if (o.name == "check-send-proxy") {
        // Fulcrum's checks of a send_proxy server open with a PROXY header (LOCAL) anyway.
      } else {
        partly(o.line, o.name + (o.arg.empty() ? "" : " " + o.arg) + ": no counterpart");
      }
    }
    web_.push_back(std::move(node));
  }

  void translateDbServer(const Proxy& p, const Line* l) {
    Server s = serverOf(p, l);
    Address address = parseAddress(s.address, /*bind=*/false, options_.wildcard_ip);
    if (address.text.empty()) {
      notDone(l, address.why);
      return;
    }
    std::string check_port;
    std::string check_addr;
    for (const Option& o : s.options) {
      if (o.name == "port") {
        check_port = o.arg;
      } else if (o.name == "addr") {
        check_addr = o.arg;
      }
    }
    std::string host = address.text.substr(0, address.text.rfind(':'));
    Address agent = parseAddress((check_addr.empty() ? host : check_addr) + ":" + check_port, false,
                                 options_.wildcard_ip);
    if (agent.text.empty()) {
      notDone(l, "the Patroni REST API address: " + agent.why);
      return;
    }
    done(l);
    for (const Option& o : s.options) {
      if (o.line != l) {
        done(o.line);
      }
      if (o.name == "check" || o.name == "port" || o.name == "addr") {
      } else if (o.name == "on-marked-down" && o.arg == "shutdown-sessions") {
        // The db frontends cut a node's sessions when its checks mark it down.
      } else if (checkOrLimitOption(o)) {
      } else {
        partly(o.line, o.name + (o.arg.empty() ? "" : " " + o.arg) + ": no counterpart");
      }
    }
    for (const DbOut& d : db_) {
      if (d.pg == address.text) {
        return;  // the same node behind db_write and db_read
      }
    }
    db_.push_back(DbOut{uniqueName(s.name), address.text, agent.text, l->number});
  }

  void translateGlobal() {
    if (global_ == nullptr) {
      return;
    }
    done(&global_->header);
    for (const Line& line : global_->lines) {
      const Line* l = &line;
      const auto& w = l->words;
      const std::string& k = w[0];
      if (k == "maxconn" && w.size() >= 2) {
        auto n = parseCount(w[1]);
        if (!n || *n < 1 || *n > 10'000'000) {
          notDone(l, "Fulcrum takes 1 to 10000000 connections");
        } else if (settings_.count("limits.max_connections") == 0 ||
                   settings_["limits.max_connections"].value == w[1]) {
          set("limits.max_connections", w[1], l);
        } else {
          notDone(l, "the frontend's maxconn (line " +
                         std::to_string(settings_["limits.max_connections"].line) +
                         ") is the lb's [lb.limits] max_connections");
        }
      } else if (k == "nbthread" && w.size() >= 2) {
        auto n = parseCount(w[1]);
        if (n && *n <= 256) {
          threads_ = std::to_string(*n);
          done(l);
        } else {
          notDone(l, "Fulcrum takes 0 to 256 threads");
        }
      } else if (k == "crt-base" && w.size() >= 2) {
        done(l);  // read before the binds, see run()
      } else if (k == "log") {
        notDone(l, "logging: Fulcrum logs to stderr (--log-format text|json)");
      } else if (k == "user" || k == "group" || k == "uid" || k == "gid" || k == "chroot" || k == "daemon" ||
                 k == "pidfile" || k == "master-worker") {
        notDone(l, "process set-up: `fulcrum up` or your service manager runs the lb");
      } else if (k == "stats") {
        notDone(l, "the runtime API is the admin API on the lb node's stats listener");
      } else if (k.starts_with("ssl-default-") || k.starts_with("ssl-dh") || k == "ssl-server-verify") {
        notDone(l, "TLS versions and ciphers: Fulcrum chooses them (TLS 1.2 and 1.3, modern ciphers)");
      } else {
        notDone(l, "global setting with no counterpart in the topology file");
      }
    }
  }

  struct Listener {
    std::string address;
    uint32_t line = 0;
    bool from_wildcard = false;  // '*' or an empty host became wildcard_ip
  };
  struct WebOut {
    std::string name;
    std::string listen;
    uint32_t weight = 1;
    bool backup = false;
    uint32_t max_conn = 0;
    uint32_t line = 0;
    std::string send_proxy;  // "v1", "v2" or empty
  };
  struct DbOut {
    std::string name;
    std::string pg;
    std::string agent;
    uint32_t line = 0;
  };

  // The loader refuses two listeners of the site on one address, or on one port under a
  // wildcard: say so here, with both source lines, rather than print a file that fails.
  bool checkClashes(std::string& error) {
    ensureHttpListener();
    struct Named {
      std::string what;
      std::string address;
      uint32_t line;
    };
    std::vector<Named> all;
    for (const auto& [slot, listener] : listeners_) {
      all.push_back({"bind " + listener.address + " (" + slot + ")", listener.address, listener.line});
    }
    for (const WebOut& w : web_) {
      all.push_back({"server " + w.name + " " + w.listen, w.listen, w.line});
    }
    for (const DbOut& d : db_) {
      all.push_back({"server " + d.name + " " + d.pg, d.pg, d.line});
      all.push_back({"server " + d.name + "'s check port " + d.agent, d.agent, d.line});
    }
    for (size_t i = 0; i < all.size(); ++i) {
      for (size_t j = i + 1; j < all.size(); ++j) {
        std::string ignored;
        auto a = parseSiteAddress(all[i].address, ignored);
        auto b = parseSiteAddress(all[j].address, ignored);
        if (!a || !b || (!listenersClash(*a, *b) && a->toString() != b->toString())) {
          continue;
        }
        if (a->toString() == b->toString() && all[i].line == all[j].line) {
          continue;
        }
        error = where(std::min(all[i].line, all[j].line)) + all[i].what + " and " + all[j].what + " (line " +
                std::to_string(std::max(all[i].line, all[j].line)) +
                ") would share a port in one topology file, which checks every listener of the site "
                "against the others: give the lb's own address for wildcard binds with --bind-ip";
        return false;
      }
    }
    return true;
  }

  // Every lb node has an http listener; HAProxy may have had none (TLS only, or only databases).
  void ensureHttpListener() {
    if (listeners_.count("http") != 0) {
      return;
    }
    std::string ip = options_.wildcard_ip;
    for (const char* slot : {"https", "db_write", "db_read", "stats"}) {
      if (auto it = listeners_.find(slot); it != listeners_.end()) {
        ip = it->second.address.substr(0, it->second.address.rfind(':'));
        break;
      }
    }
    invented_http_ = true;
    listeners_["http"] = Listener{ip + ":80", 0, false};
  }

  std::vector<UntranslatedLine> untranslated() {
    // A line no translated section used (defaults settings nobody inherits, for instance).
    for (const Section& s : sections_) {
      if (outcomes_.count(s.header.number) == 0) {
        notDone(&s.header, "no counterpart in the topology file");
      }
      for (const Line& l : s.lines) {
        if (outcomes_.count(l.number) == 0) {
          notDone(&l, "not used by any translated section");
        }
      }
    }
    std::map<uint32_t, const Line*> by_number;
    for (const Section& s : sections_) {
      by_number[s.header.number] = &s.header;
      for (const Line& l : s.lines) {
        by_number[l.number] = &l;
      }
    }
    std::vector<UntranslatedLine> out;
    for (const auto& [number, o] : outcomes_) {
      if (o.reasons.empty() || (o.translated && !o.partial)) {
        continue;
      }
      std::string why;
      for (const std::string& r : o.reasons) {
        why += (why.empty() ? "" : "; ") + r;
      }
      out.push_back({number, by_number.count(number) != 0 ? by_number[number]->text : "", why});
    }
    return out;
  }

  std::string render(const std::vector<UntranslatedLine>& lines) {
    std::string out = "# Imported from " + options_.source_name + " by `fulcrum import`.\n";
    if (!lines.empty()) {
      out += "#\n# Not translated (" + std::to_string(lines.size()) + " line" +
             (lines.size() == 1 ? "" : "s") + "):\n";
      for (const UntranslatedLine& u : lines) {
        out += "#   " + std::to_string(u.line) + ": " + oneLine(u.directive) + ": " + oneLine(u.why) + "\n";
      }
    }
    if (!notes_.empty()) {
      out += "#\n# Translated, with a difference:\n";
      for (const std::string& n : notes_) {
        out += "#   " + oneLine(n) + "\n";
      }
    }
    out += "\n[site]\nname = " + tomlString(options_.site_name) + "\nstate_dir = \"var\"\n";
    auto emit = [&](const std::string& table, const std::vector<std::pair<std::string, std::string>>& keys) {
      std::string body;
      for (const auto& [key, toml_key] : keys) {
        if (auto it = settings_.find(key); it != settings_.end()) {
          body += toml_key + " = " + it->second.value + comment(key, it->second.line) + "\n";
        }
      }
      if (!body.empty() || table == "lb") {
        out += "\n[" + table + "]\n" + body;
      }
    };
    emit("lb", {{"algorithm", "algorithm"},
                {"retries", "retries"},
                {"queue_timeout_ms", "queue_timeout_ms"},
                {"sticky", "sticky"},
                {"sticky_cookie", "sticky_cookie"},
                {"accept_proxy", "accept_proxy"}});
    if (!web_.empty() && settings_.count("health.path") == 0) {
      // HAProxy's "check" alone connects; Fulcrum's default would ask /healthz.
      settings_["health.path"] = Setting{"\"\"", 0};
    }
    emit("lb.health", {{"health.path", "path"},
                       {"health.interval_ms", "interval_ms"},
                       {"health.timeout_ms", "timeout_ms"},
                       {"health.rise", "rise"},
                       {"health.fall", "fall"}});
    emit("lb.timeouts", {{"timeouts.connect_ms", "connect_ms"},
                         {"timeouts.client_ms", "client_ms"},
                         {"timeouts.server_ms", "server_ms"},
                         {"timeouts.http_request_ms", "http_request_ms"}});
    emit("lb.limits", {{"limits.max_connections", "max_connections"}});
    if (!certs_.empty() || settings_.count("tls.redirect_http") != 0 || settings_.count("tls.hsts") != 0 ||
        settings_.count("tls.http2") != 0) {
      out += "\n[lb.tls]\n";
      if (!certs_.empty()) {
        out +=
            "# HAProxy's crt file holds the certificate, its chain and the key: cert and key name it both.\n";
        out += "cert = " + tomlString(certs_[0].path) + "  # line " + std::to_string(certs_[0].line) + "\n";
        out += "key = " + tomlString(certs_[0].path) + "\n";
      }
      for (const auto& [key, toml_key] : std::vector<std::pair<std::string, std::string>>{
               {"tls.redirect_http", "redirect_http"}, {"tls.hsts", "hsts"}, {"tls.http2", "http2"}}) {
        if (auto it = settings_.find(key); it != settings_.end()) {
          out += toml_key + " = " + it->second.value + "  # line " + std::to_string(it->second.line) + "\n";
        }
      }
      if (certs_.size() > 1) {
        out += "certs = [\n";
        for (size_t i = 1; i < certs_.size(); ++i) {
          out += "  { cert = " + tomlString(certs_[i].path) + ", key = " + tomlString(certs_[i].path) +
                 " },  # line " + std::to_string(certs_[i].line) + "\n";
        }
        out += "]\n";
      }
    }
    out += "\n[[lb.node]]\nname = \"lb-01\"\n";
    for (const char* slot : {"http", "https", "stats", "db_write", "db_read"}) {
      auto it = listeners_.find(slot);
      if (it == listeners_.end()) {
        continue;
      }
      const Listener& l = it->second;
      out += std::string(slot) + " = " + tomlString(l.address);
      if (std::string(slot) == "http" && invented_http_) {
        out += "  # HAProxy had no plain HTTP bind; every lb node needs one: change it as you like";
      } else if (l.from_wildcard) {
        out += "  # line " + std::to_string(l.line) +
               ": every address ('*' or none); the file needs one written out";
      } else {
        out += "  # line " + std::to_string(l.line);
      }
      out += "\n";
    }
    if (!threads_.empty()) {
      out += "threads = " + threads_ + "\n";
    }
    if (!web_.empty()) {
      out +=
          "\n# The servers: your own HTTP servers, or Fulcrum's web role (`fulcrum web`), which serves\n"
          "# [web] docroot (\"www\" beside this file by default: it must exist).\n[web]\napp = \"none\"\n";
      for (const WebOut& w : web_) {
        out += "\n[[web.node]]\nname = " + tomlString(w.name) + "  # line " + std::to_string(w.line) +
               "\nlisten = " + tomlString(w.listen) + "\n";
        if (w.weight != 1) {
          out += "weight = " + std::to_string(w.weight) + "\n";
        }
        if (w.backup) {
          out += "backup = true\n";
        }
        if (w.max_conn != 0) {
          out += "max_conn = " + std::to_string(w.max_conn) + "\n";
        }
        if (!w.send_proxy.empty()) {
          out += "send_proxy = " + tomlString(w.send_proxy) + "\n";
        }
      }
    }
    if (auto lag = settings_.find("db.max_lag_bytes"); lag != settings_.end() && !db_.empty()) {
      out += "\n[db]\nmax_lag_bytes = " + lag->second.value + comment(lag->first, lag->second.line) + "\n";
    }
    if (!db_.empty()) {
      out +=
          "\n# The PostgreSQL nodes: `fulcrum db` runs PostgreSQL on each and answers the lb's checks on\n"
          "# agent (Patroni's REST API port); the leader lease lives in etcd: add [etcd] endpoints.\n";
      for (const DbOut& d : db_) {
        out += "\n[[db.node]]\nname = " + tomlString(d.name) + "  # line " + std::to_string(d.line) +
               "\npg = " + tomlString(d.pg) + "\nagent = " + tomlString(d.agent) + "\n";
      }
    }
    return out;
  }

  std::string comment(const std::string& key, uint32_t line) const {
    if (line != 0) {
      return "  # line " + std::to_string(line);
    }
    if (key == "health.path") {
      return web_checked_ ? "  # check without option httpchk: a TCP connect"
                          : "  # HAProxy did not check these servers; Fulcrum always does: a TCP connect";
    }
    return "";
  }

  static std::string oneLine(std::string s) {
    std::replace_if(
        s.begin(), s.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
    return s;
  }

  std::string where(uint32_t line) const { return options_.source_name + ":" + std::to_string(line) + ": "; }

  std::string_view text_;
  const HaproxyImportOptions& options_;
  std::vector<Section> sections_;  // never grows after parse(): Line and Section pointers stay valid
  const Section* global_ = nullptr;
  std::vector<Proxy> proxies_;
  Proxy* web_front_ = nullptr;
  Proxy* redirect_front_ = nullptr;
  Proxy* stats_ = nullptr;
  Proxy* db_write_ = nullptr;
  Proxy* db_read_ = nullptr;

  std::map<uint32_t, Outcome> outcomes_;
  std::vector<std::string> notes_;
  std::map<std::string, Setting> settings_;
  std::map<std::string, Listener> listeners_;
  struct Cert {
    std::string path;
    uint32_t line = 0;
  };
  std::vector<Cert> certs_;
  std::string crt_base_;
  std::string threads_;
  bool web_checked_ = false;
  bool invented_http_ = false;
  std::set<std::string> names_;
  std::vector<WebOut> web_;
  std::set<std::string> accept_proxy_slots_;  // the http/https binds with accept-proxy
  std::vector<DbOut> db_;
};

}  // namespace

std::vector<std::string> HaproxyImport::messages() const {
  std::vector<std::string> out;
  for (const UntranslatedLine& u : untranslated) {
    out.push_back(source_name + ":" + std::to_string(u.line) + ": " + u.directive +
                  ": not translated: " + u.why);
  }
  return out;
}

std::string siteNameFromPath(std::string_view path) {
  std::string_view base = path.substr(path.rfind('/') == std::string_view::npos ? 0 : path.rfind('/') + 1);
  if (size_t dot = base.rfind('.'); dot != std::string_view::npos && dot > 0) {
    base = base.substr(0, dot);
  }
  std::string name = nodeName(base);
  return name;
}

HaproxyImport importHaproxy(std::string_view text, const HaproxyImportOptions& options) {
  Importer importer(text, options);
  return importer.run();
}

}  // namespace fulcrum::config
