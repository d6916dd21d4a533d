#include "site/backup_command.h"

#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "site/admin_client.h"
#include "site/probe.h"

namespace fulcrum::site {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kTimeout{5000};
constexpr std::chrono::milliseconds kPoll{1000};

// The leader's agent and what every call to it needs.
struct LeaderAgent {
  std::string node;
  core::SocketAddress address;
  std::shared_ptr<core::ClientTransportFactory> tls;
  std::string headers;  // Authorization
};

std::optional<LeaderAgent> findLeader(const config::Site& site, std::string& error) {
  if (!site.db.present || site.db.nodes.empty()) {
    error = "the site has no [db] nodes";
    return std::nullopt;
  }
  if (!site.db.backup) {
    error = "the site has no [db.backup]: no archiving, no backups (add the table, restart the db nodes)";
    return std::nullopt;
  }
  auto admin = adminClient(site, error);
  if (!admin) {
    return std::nullopt;
  }
  LeaderAgent out;
  out.tls = admin->tls;
  out.headers = admin->headers;
  std::string leader;
  std::string reasons;
  for (const config::DbNode& n : site.db.nodes) {
    ProbeResult r = fetch(n.agent, "/status", kTimeout, {}, out.tls);
    if (r.status == 0) {
      reasons += fmt::format("\n  {} ({}): {}", n.name, n.agent.toString(), r.error);
      continue;
    }
    json j = json::parse(r.body, nullptr, false);
    if (j.is_object() && j.contains("leader") && j["leader"].is_string()) {
      leader = j["leader"].get<std::string>();
      break;
    }
    reasons += fmt::format("\n  {}: sees no leader", n.name);
  }
  for (const config::DbNode& n : site.db.nodes) {
    if (n.name == leader) {
      out.node = n.name;
      out.address = n.agent;
      return out;
    }
  }
  error = leader.empty() ? "no db agent names a leader:" + reasons : "the leader '" + leader + "' is not in the file";
  return std::nullopt;
}

std::string bytes(uint64_t n) {
  if (n >= (uint64_t{1} << 30)) {
    return fmt::format("{:.1f} GiB", static_cast<double>(n) / (1 << 30));
  }
  if (n >= (uint64_t{1} << 20)) {
    return fmt::format("{:.1f} MiB", static_cast<double>(n) / (1 << 20));
  }
  return fmt::format("{:.1f} KiB", static_cast<double>(n) / 1024);
}

std::string errorOf(const ProbeResult& r) {
  json j = json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    return j["error"].get<std::string>();
  }
  return r.error.empty() ? r.body : r.error;
}

std::string text(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

void printList(const json& j) {
  const json& backups = j["backups"];
  std::printf("%-34s %-5s %-22s %-22s %10s %10s\n", "LABEL", "TYPE", "STARTED (UTC)", "CONSISTENT FROM", "SIZE",
              "STORED");
  for (const json& b : backups) {
    // STORED: what this backup added to the repository (a differential stores changed files only).
    std::printf("%-34s %-5s %-22s %-22s %10s %10s%s\n", text(b, "label").c_str(), text(b, "type").c_str(),
                text(b, "start").c_str(), text(b, "stop").c_str(), bytes(b.value("size", uint64_t{0})).c_str(),
                bytes(b.value("repo_delta", uint64_t{0})).c_str(), b.value("error", false) ? "  (checksum errors)" : "");
  }
  if (backups.empty()) {
    std::printf("(no backup yet)\n");
  }
  if (j.contains("wal") && j["wal"].is_object()) {
    std::printf("WAL archive: %s .. %s\n", text(j["wal"], "min").c_str(), text(j["wal"], "max").c_str());
  }
  if (j.contains("wal") && j["wal"].is_object() && j["wal"].value("missing", uint64_t{0}) > 0) {
    const json& first = j["wal"]["first_missing"];
    std::printf("WARNING: %llu WAL segment(s) missing from the archive since the newest full backup (first %s):\n"
                "  restores cannot go past it; take a full backup (fulcrum backup --full) to restore later moments\n",
                static_cast<unsigned long long>(j["wal"].value("missing", uint64_t{0})),
                first.is_array() && !first.empty() && first[0].is_string() ? first[0].get<std::string>().c_str() : "?");
  }
  if (j.contains("recoverable") && j["recoverable"].is_object()) {
    std::printf("restorable to any moment from %s to %s (fulcrum restore SITE --to TIME)\n",
                text(j["recoverable"], "from").c_str(), text(j["recoverable"], "to").c_str());
  }
  if (j.contains("archive") && j["archive"].is_object()) {
    const json& a = j["archive"];
    std::printf("archiving: %s, %llu archived, %llu failed, %llu segments waiting; last archived %s\n",
                a.value("ok", false) ? "ok" : "FAILING", static_cast<unsigned long long>(a.value("archived", uint64_t{0})),
                static_cast<unsigned long long>(a.value("failed", uint64_t{0})),
                static_cast<unsigned long long>(a.value("ready_segments", uint64_t{0})),
                text(a, "last_archived_wal").c_str());
  }
  if (j.contains("last_error") && j["last_error"].is_string()) {
    std::printf("last error: %s\n", j["last_error"].get<std::string>().c_str());
  }
}

}  // namespace

int runBackupCommand(const config::Site& site, const BackupOptions& options) {
  std::string error;
  auto leader = findLeader(site, error);
  if (!leader) {
    std::fprintf(stderr, "fulcrum backup: %s\n", error.c_str());
    return 1;
  }
  if (options.list) {
    ProbeResult r = fetch(leader->address, "/backup", kTimeout, {}, leader->tls);
    if (!r.ok) {
      std::fprintf(stderr, "fulcrum backup: %s: %s\n", leader->node.c_str(), errorOf(r).c_str());
      return 1;
    }
    if (options.json) {
      std::printf("%s\n", r.body.c_str());
      return 0;
    }
    json j = json::parse(r.body, nullptr, false);
    if (!j.is_object()) {
      std::fprintf(stderr, "fulcrum backup: %s answered something that is not JSON\n", leader->node.c_str());
      return 1;
    }
    printList(j);
    return 0;
  }
  const int64_t asked_at = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count() -
                          1;
  const std::string body = json{{"type", options.type}}.dump();
  ProbeResult r = fetch(leader->address, "/backup", kTimeout, body, leader->tls, leader->headers);
  if (r.status != 202) {
    std::fprintf(stderr, "fulcrum backup: %s: %s\n", leader->node.c_str(), errorOf(r).c_str());
    return 1;
  }
  json accepted = json::parse(r.body, nullptr, false);
  std::printf("%s backup requested on %s\n", text(accepted, "type").c_str(), leader->node.c_str());
  std::fflush(stdout);
  const auto deadline = Clock::now() + options.wait;
  bool seen_running = false;
  int failures = 0;
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(kPoll);
    ProbeResult s = fetch(leader->address, "/backup", kTimeout, {}, leader->tls);
    json j = json::parse(s.body, nullptr, false);
    if (!s.ok || !j.is_object()) {
      if (++failures > 10) {
        std::fprintf(stderr, "fulcrum backup: %s: %s (is it still the leader?)\n", leader->node.c_str(),
                     errorOf(s).c_str());
        return 1;
      }
      continue;
    }
    failures = 0;
    if (!seen_running && j["running"].is_object() && text(j["running"], "what") == "backup") {
      seen_running = true;
      std::printf("copying from %s\n", text(j["running"], "from").c_str());
      std::fflush(stdout);
    }
    // Done once the last backup finished after we asked, and its label is known.
    const json& last = j["last"];
    if (!last.is_object() || last.value("finished_unix", int64_t{0}) < asked_at || !j["requested"].is_null() ||
        (j["running"].is_object() && text(j["running"], "what") == "backup")) {
      continue;
    }
    if (!last.value("ok", false)) {
      std::fprintf(stderr, "fulcrum backup: %s backup from %s failed: %s\n", text(last, "type").c_str(),
                   text(last, "from").c_str(), text(last, "error").c_str());
      return 1;
    }
    if (!last["label"].is_string()) {
      continue;  // the catalog is read again first
    }
    std::string sizes;
    for (const json& b : j["backups"]) {
      if (text(b, "label") == text(last, "label")) {
        sizes = ": " + bytes(b.value("size", uint64_t{0})) + " of database, " +
                bytes(b.value("repo_delta", uint64_t{0})) + " stored";
      }
    }
    std::printf("backup %s (%s, from %s) done in %.1f s%s\n", text(last, "label").c_str(), text(last, "type").c_str(),
                text(last, "from").c_str(), last.value("seconds", 0.0), sizes.c_str());
    return 0;
  }
  std::fprintf(stderr, "fulcrum backup: not finished after %lld s (it goes on; fulcrum backup --list shows it)\n",
               static_cast<long long>(options.wait.count()));
  return 1;
}

int runRestoreCommand(const config::Site& site, const RestoreOptions& options) {
  if (options.to.empty() == options.to_backup.empty()) {
    std::fprintf(stderr, "fulcrum restore: give exactly one of --to TIME and --to-backup LABEL\n");
    return 1;
  }
  std::string error;
  auto leader = findLeader(site, error);
  if (!leader) {
    std::fprintf(stderr, "fulcrum restore: %s\n", error.c_str());
    return 1;
  }
  json request = json::object();
  if (!options.to.empty()) {
    request["to"] = options.to;
  } else {
    request["backup"] = options.to_backup;
  }
  request["dry_run"] = options.dry_run;
  ProbeResult r = fetch(leader->address, "/restore", kTimeout, request.dump(), leader->tls, leader->headers);
  json answer = json::parse(r.body, nullptr, false);
  if (!(r.status == 200 || r.status == 202) || !answer.is_object()) {
    std::fprintf(stderr, "fulcrum restore: %s: %s\n", leader->node.c_str(), errorOf(r).c_str());
    return 1;
  }
  if (answer.contains("plan") && answer["plan"].is_array()) {
    std::printf("%s:\n", options.dry_run ? "would do (dry run, nothing changed)" : "restoring");
    int i = 1;
    for (const json& step : answer["plan"]) {
      std::printf("  %d. %s\n", i++, step.is_string() ? step.get<std::string>().c_str() : step.dump().c_str());
    }
  }
  if (options.dry_run) {
    return 0;
  }
  const std::string id = text(answer, "id");
  const auto started = Clock::now();
  const auto deadline = started + options.wait;
  size_t printed = 0;
  int failures = 0;
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(kPoll);
    ProbeResult s = fetch(leader->address, "/restore", kTimeout, {}, leader->tls);
    json j = json::parse(s.body, nullptr, false);
    if (!s.ok || !j.is_object()) {
      // The agent is busy stopping and starting PostgreSQL, never itself: a few misses are fine.
      if (++failures > 30) {
        std::fprintf(stderr, "fulcrum restore: %s stopped answering: %s\n", leader->node.c_str(), errorOf(s).c_str());
        return 1;
      }
      continue;
    }
    failures = 0;
    if (text(j, "id") != id) {
      std::fprintf(stderr, "fulcrum restore: %s no longer knows restore %s\n", leader->node.c_str(), id.c_str());
      return 1;
    }
    if (j["log"].is_array()) {
      for (; printed < j["log"].size(); ++printed) {
        std::printf("  %s\n", j["log"][printed].is_string() ? j["log"][printed].get<std::string>().c_str() : "");
      }
      std::fflush(stdout);
    }
    const std::string state = text(j, "state");
    if (state == "done") {
      std::printf("restored in %.0f s: %s leads on timeline %lld\n",
                  std::chrono::duration<double>(Clock::now() - started).count(), leader->node.c_str(),
                  static_cast<long long>(j.value("timeline", int64_t{0})));
      return 0;
    }
    if (state == "failed") {
      std::fprintf(stderr, "fulcrum restore: failed: %s\n", text(j, "error").c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "fulcrum restore: not finished after %lld s\n", static_cast<long long>(options.wait.count()));
  return 1;
}

}  // namespace fulcrum::site
