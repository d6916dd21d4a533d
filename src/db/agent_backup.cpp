// [db.backup] in the agent: the BackupManager is told every tick whether this node leads with a
// writable primary (only then does it call pgBackRest), what the primary's archiver says, and
// which replicas on this host a backup may copy from. GET and POST /backup answer the operator.
#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "db/agent.h"
#include "db/agent_http.h"
#include "http/json_body.h"

namespace fulcrum::db {

namespace {

constexpr auto kArchiverEvery = std::chrono::seconds(2);

int64_t epochOf(const std::string& text) {
  int64_t v = 0;
  std::from_chars(text.data(), text.data() + text.size(), v);
  return v;
}

uint64_t countReady(const std::filesystem::path& archive_status) {
  std::error_code ec;
  uint64_t n = 0;
  for (std::filesystem::directory_iterator it(archive_status, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() > 6 && name.compare(name.size() - 6, 6, ".ready") == 0) {
      ++n;
    }
  }
  return n;
}

}  // namespace

std::optional<ArchiverStatus> DbAgent::readArchiver() {
  auto rows = pg_->query(
      "SELECT archived_count, failed_count, coalesce(last_archived_wal, ''),"
      " coalesce(extract(epoch FROM last_archived_time)::bigint, 0), coalesce(last_failed_wal, ''),"
      " coalesce(extract(epoch FROM last_failed_time)::bigint, 0),"
      " CASE WHEN last_failed_time IS NULL THEN false WHEN last_archived_time IS NULL THEN true"
      "  ELSE last_failed_time > last_archived_time END FROM pg_stat_archiver");
  if (!rows.ok || rows.value.size() != 1 || rows.value[0].size() != 7) {
    return std::nullopt;
  }
  const auto& r = rows.value[0];
  ArchiverStatus a;
  a.archived_count = static_cast<uint64_t>(epochOf(r[0]));
  a.failed_count = static_cast<uint64_t>(epochOf(r[1]));
  a.last_archived_wal = r[2];
  a.last_archived_time = epochOf(r[3]);
  a.last_failed_wal = r[4];
  a.last_failed_time = epochOf(r[5]);
  a.failing = r[6] == "t";
  a.ready_segments = countReady(pg_->options().data_dir / "pg_wal" / "archive_status");
  return a;
}

std::vector<LocalStandby> DbAgent::localStandbys() const {
  std::vector<LocalStandby> out;
  const std::filesystem::path state_dir = site_.site.state_dir;
  for (const config::DbNode& n : site_.db.nodes) {
    if (n.name == node_.name) {
      continue;
    }
    const MemberRecord* m = findMember(members_, n.name);
    if (m == nullptr || m->role != "replica" || m->receiver != "streaming" || m->timeline != pg_status_.timeline) {
      continue;
    }
    // Its files must be here: pgBackRest copies them (a remote standby needs its repository
    // host set up for SSH or its TLS server, which Fulcrum does not do).
    const std::filesystem::path data = state_dir / n.name / "data";
    std::error_code ec;
    if (!std::filesystem::exists(data / "standby.signal", ec)) {
      continue;
    }
    out.push_back(LocalStandby{n.name, data, n.pg.port(), state_dir / n.name / "run"});
  }
  return out;
}

void DbAgent::tickBackup() {
  const bool leading = phase_ == Phase::Running && identity_verified_ && elector_.isLeader() &&
                       elector_.mayWrite() && pg_->isRunning() && status_ok_ && !pg_status_.in_recovery &&
                       !switchover_ && !checkpoint_pending_ &&
                       !(restore_ && restore_->step != RestoreStep::Done && restore_->step != RestoreStep::Failed);
  if (backup_leading_ && !leading && !elector_.isLeader()) {
    backup_->stopJobs("this node no longer leads");
  }
  backup_leading_ = leading;
  const core::TimePoint now = loop_.clock().now();
  if (!leading) {
    archiver_.reset();
  } else if (now >= next_archiver_read_) {
    next_archiver_read_ = now + kArchiverEvery;
    archiver_ = readArchiver();
  }
  backup_->tick(leading, archiver_, leading ? localStandbys() : std::vector<LocalStandby>{},
                std::chrono::system_clock::now());
}

void DbAgent::handleBackup(const http::Request& request, http::Response& response) {
  const http::Method method = request.head.method;
  if (!backup_) {
    answerJson(response, 404, {{"error", "this site has no [db.backup]: no archiving, no backups"}});
    return;
  }
  if (method == http::Method::Get || method == http::Method::Head) {
    if (!elector_.isLeader() && leader_name_ && *leader_name_ != node_.name) {
      // Only the leader reads the repository; its agent answers.
      answerJson(response, 409, {{"error", node_.name + " does not lead: ask the leader"}, {"leader", *leader_name_}});
      return;
    }
    answerJson(response, 200, backup_->json(std::chrono::system_clock::now()));
    return;
  }
  if (method != http::Method::Post) {
    response.addHeader("Allow", "GET, POST");
    answerJson(response, 405, {{"error", "use GET or POST"}});
    return;
  }
  if (refuseUnauthorized(request, response)) {
    return;
  }
  std::string error;
  BackupType type = BackupType::Diff;
  std::optional<nlohmann::json> body =
      request.body.empty() ? std::optional<nlohmann::json>(nlohmann::json::object())
                           : http::parseStrictJson(request.body, error);
  if (!body || !body->is_object()) {
    answerJson(response, 400, {{"error", (error.empty() ? "the body must be a JSON object" : error) +
                                         ": expected {\"type\":\"full\"|\"diff\"|\"incr\"}"}});
    return;
  }
  for (const auto& [name, value] : body->items()) {
    std::optional<BackupType> parsed = value.is_string() ? parseBackupType(value.get<std::string>()) : std::nullopt;
    if (name != "type" || !parsed) {
      answerJson(response, 400, {{"error", "expected {\"type\":\"full\"|\"diff\"|\"incr\"}"}});
      return;
    }
    type = *parsed;
  }
  if (!elector_.isLeader() && leader_name_ && *leader_name_ != node_.name) {
    forwardAdmin(request, response, *leader_name_);
    return;
  }
  if (!backup_leading_) {
    answerJson(response, 503, {{"error", node_.name + " is not a leader with a running primary: no backup now"}});
    return;
  }
  const BackupCatalog* catalog = backup_->catalog() ? &*backup_->catalog() : nullptr;
  if (type != BackupType::Full && (catalog == nullptr || newestFull(*catalog) == nullptr)) {
    log::info("backup: a {} backup asked for, but the repository holds no full one: taking a full one",
              backupTypeName(type));
    type = BackupType::Full;
  }
  if (Status queued = backup_->requestBackup(type); !queued.ok) {
    answerJson(response, 409, {{"error", queued.error}});
    return;
  }
  log::info("backup: a {} backup requested by the operator", backupTypeName(type));
  wake();
  answerJson(response, 202, {{"type", backupTypeName(type)}, {"node", node_.name}});
}

}  // namespace fulcrum::db
