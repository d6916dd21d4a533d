#include "db/backup_catalog.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <set>

namespace fulcrum::db {

const char* backupTypeName(BackupType type) {
  switch (type) {
    case BackupType::Full:
      return "full";
    case BackupType::Diff:
      return "diff";
    case BackupType::Incr:
      return "incr";
  }
  return "full";
}

std::optional<BackupType> parseBackupType(std::string_view text) {
  if (text == "full") {
    return BackupType::Full;
  }
  if (text == "diff") {
    return BackupType::Diff;
  }
  if (text == "incr") {
    return BackupType::Incr;
  }
  return std::nullopt;
}

namespace {

using json = nlohmann::json;

std::string stringAt(const json& j, const char* a, const char* b = nullptr) {
  const json* at = &j;
  for (const char* key : {a, b}) {
    if (key == nullptr) {
      break;
    }
    if (!at->is_object() || !at->contains(key)) {
      return "";
    }
    at = &(*at)[key];
  }
  return at->is_string() ? at->get<std::string>() : "";
}

int64_t intAt(const json& j, const char* a, const char* b = nullptr, const char* c = nullptr) {
  const json* at = &j;
  for (const char* key : {a, b, c}) {
    if (key == nullptr) {
      break;
    }
    if (!at->is_object() || !at->contains(key)) {
      return 0;
    }
    at = &(*at)[key];
  }
  return at->is_number_integer() || at->is_number_unsigned() ? at->get<int64_t>() : 0;
}

}  // namespace

Result<BackupCatalog> parseBackupInfo(std::string_view text) {
  using R = Result<BackupCatalog>;
  json parsed = json::parse(text, nullptr, false);
  if (!parsed.is_array() || parsed.empty() || !parsed[0].is_object()) {
    return R::failure("pgbackrest info: not an array of stanzas");
  }
  const json& stanza = parsed[0];
  BackupCatalog out;
  out.status_code = static_cast<int>(intAt(stanza, "status", "code"));
  out.status_message = stringAt(stanza, "status", "message");
  out.stanza_ok = out.status_code == 0 || out.status_code == 2;
  if (stanza.contains("status") && stanza["status"].is_object() && stanza["status"].contains("lock")) {
    const json& lock = stanza["status"]["lock"];
    out.locked = lock.is_object() && lock.contains("backup") && lock["backup"].is_object() &&
                 lock["backup"].value("held", false);
  }
  if (stanza.contains("backup") && stanza["backup"].is_array()) {
    for (const json& b : stanza["backup"]) {
      if (!b.is_object()) {
        continue;
      }
      BackupSet set;
      set.label = stringAt(b, "label");
      auto type = parseBackupType(stringAt(b, "type"));
      if (set.label.empty() || !type) {
        continue;
      }
      set.type = *type;
      set.start = intAt(b, "timestamp", "start");
      set.stop = intAt(b, "timestamp", "stop");
      set.wal_start = stringAt(b, "archive", "start");
      set.wal_stop = stringAt(b, "archive", "stop");
      set.prior = stringAt(b, "prior");
      set.size = static_cast<uint64_t>(intAt(b, "info", "size"));
      set.repo_size = static_cast<uint64_t>(intAt(b, "info", "repository", "size"));
      set.repo_delta = static_cast<uint64_t>(intAt(b, "info", "repository", "delta"));
      set.error = b.value("error", false);
      out.backups.push_back(std::move(set));
    }
  }
  std::sort(out.backups.begin(), out.backups.end(),
            [](const BackupSet& a, const BackupSet& b) { return a.stop < b.stop || (a.stop == b.stop && a.label < b.label); });
  // The archive of the newest database (a stanza-upgrade starts another; one here).
  int64_t newest_db = -1;
  if (stanza.contains("archive") && stanza["archive"].is_array()) {
    for (const json& a : stanza["archive"]) {
      if (!a.is_object()) {
        continue;
      }
      const int64_t id = intAt(a, "database", "id");
      if (id > newest_db) {
        newest_db = id;
        out.wal_min = stringAt(a, "min");
        out.wal_max = stringAt(a, "max");
        out.archive_id = stringAt(a, "id");
      }
    }
  }
  return R::success(std::move(out));
}

namespace {

bool isHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

// "TTTTTTTTLLLLLLLLSSSSSSSS": the segment's number across timelines (16 MiB segments: 256 per
// log id), and its timeline.
std::optional<std::pair<uint64_t, uint32_t>> segmentNumber(std::string_view name) {
  if (name.size() < 24 || !isHex(name.substr(0, 24))) {
    return std::nullopt;
  }
  const uint64_t tli = std::stoull(std::string(name.substr(0, 8)), nullptr, 16);
  const uint64_t log = std::stoull(std::string(name.substr(8, 8)), nullptr, 16);
  const uint64_t seg = std::stoull(std::string(name.substr(16, 8)), nullptr, 16);
  if (seg > 0xFF) {
    return std::nullopt;
  }
  return std::make_pair(log * 256 + seg, static_cast<uint32_t>(tli));
}

}  // namespace

ArchiveGaps findArchiveGaps(const BackupCatalog& catalog, std::string_view listing) {
  ArchiveGaps gaps;
  const BackupSet* full = newestFull(catalog);
  if (full == nullptr) {
    return gaps;
  }
  auto from = segmentNumber(full->wal_start);
  auto to = segmentNumber(catalog.wal_max);
  if (!from || !to || to->first < from->first) {
    return gaps;
  }
  std::set<uint64_t> have;
  uint32_t tli = to->second;
  size_t start = 0;
  while (start < listing.size()) {
    size_t end = listing.find('\n', start);
    if (end == std::string_view::npos) {
      end = listing.size();
    }
    std::string_view line = listing.substr(start, end - start);
    start = end + 1;
    const size_t slash = line.rfind('/');
    std::string_view file = slash == std::string_view::npos ? line : line.substr(slash + 1);
    // "<segment>-<sha1>[.lz4]"; history files ("00000002.history") and .backup/.partial ones
    // count too when they carry a segment name (a .partial covers its segment's start only,
    // but the next timeline's copy of that segment is archived too).
    if (auto n = segmentNumber(file); n && file.size() > 24 && file[24] == '-') {
      have.insert(n->first);
    }
  }
  const uint64_t kMaxScan = 1u << 20;  // 16 TiB of WAL: a corrupt name must not spin us
  for (uint64_t n = from->first; n <= to->first && n - from->first < kMaxScan; ++n) {
    if (have.count(n) == 0) {
      ++gaps.missing;
      if (gaps.first.size() < 5) {
        gaps.first.push_back(fmt::format("{:08X}{:08X}{:08X}", tli, n / 256, n % 256));
      }
    }
  }
  return gaps;
}

const BackupSet* newestBackup(const BackupCatalog& catalog) {
  return catalog.backups.empty() ? nullptr : &catalog.backups.back();
}

const BackupSet* newestFull(const BackupCatalog& catalog) {
  for (auto it = catalog.backups.rbegin(); it != catalog.backups.rend(); ++it) {
    if (it->type == BackupType::Full) {
      return &*it;
    }
  }
  return nullptr;
}

std::optional<BackupType> dueBackup(const BackupCatalog& catalog, const config::DbBackup& schedule, int64_t now) {
  const BackupSet* full = newestFull(catalog);
  if (full == nullptr || now - full->start >= int64_t{schedule.full_every_hours} * 3600) {
    return BackupType::Full;
  }
  const BackupSet* newest = newestBackup(catalog);
  if (schedule.diff_every_hours != 0 && now - newest->start >= int64_t{schedule.diff_every_hours} * 3600) {
    return BackupType::Diff;
  }
  return std::nullopt;
}

Result<RestorePlan> planRestore(const BackupCatalog& catalog, const RestoreTarget& target, int64_t now) {
  using R = Result<RestorePlan>;
  if (!catalog.stanza_ok) {
    return R::failure("the repository has no stanza for this site (" + catalog.status_message + ")");
  }
  if (catalog.backups.empty()) {
    return R::failure("the repository holds no backup yet: nothing to restore from");
  }
  if (!target.backup.empty()) {
    for (const BackupSet& b : catalog.backups) {
      if (b.label == target.backup) {
        if (b.error) {
          return R::failure("backup " + b.label + " was taken with page checksum errors; choose another");
        }
        return R::success(RestorePlan{b, std::nullopt});
      }
    }
    return R::failure("no backup labelled '" + target.backup + "' (fulcrum backup SITE --list shows them)");
  }
  if (!target.time) {
    return R::failure("a restore needs a time (--to) or a backup (--to-backup)");
  }
  const int64_t t = *target.time;
  if (t > now) {
    return R::failure("the target " + formatUtc(t) + " is in the future (now " + formatUtc(now) + ")");
  }
  // The newest good backup that was consistent by the target; the archive replays the rest.
  const BackupSet* from = nullptr;
  for (const BackupSet& b : catalog.backups) {
    if (!b.error && b.stop <= t) {
      from = &b;
    }
  }
  if (from == nullptr) {
    return R::failure("the target " + formatUtc(t) + " is before the oldest backup ended (" +
                      formatUtc(catalog.backups.front().stop) + "): nothing can restore to it");
  }
  return R::success(RestorePlan{*from, t});
}

std::string formatUtc(int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S+00", &tm);
  return buf;
}

std::optional<int64_t> parseTime(std::string_view text) {
  std::string s(text);
  if (!s.empty() && s[0] == '@') {
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str() + 1, &end, 10);
    if (end == s.c_str() + 1 || *end != '\0' || v < 0) {
      return std::nullopt;
    }
    return static_cast<int64_t>(v);
  }
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, used = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2d%*1[ T]%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute, &second,
                  &used) != 6) {
    return std::nullopt;
  }
  std::string_view rest = std::string_view(s).substr(static_cast<size_t>(used));
  if (!rest.empty() && rest[0] == '.') {  // fractional seconds: dropped
    size_t i = 1;
    while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') {
      ++i;
    }
    rest.remove_prefix(i);
  }
  int64_t offset = 0;
  if (rest == "Z" || rest == "z" || rest.empty()) {
    offset = 0;
  } else if (rest[0] == '+' || rest[0] == '-') {
    int oh = 0, om = 0, n = 0;
    const std::string tail(rest.substr(1));
    if (std::sscanf(tail.c_str(), "%2d%n", &oh, &n) != 1) {
      return std::nullopt;
    }
    std::string_view after = std::string_view(tail).substr(static_cast<size_t>(n));
    if (!after.empty() && after[0] == ':') {
      after.remove_prefix(1);
    }
    if (!after.empty()) {
      int m = 0;
      const std::string mm(after);
      if (std::sscanf(mm.c_str(), "%2d%n", &om, &m) != 1 || static_cast<size_t>(m) != mm.size()) {
        return std::nullopt;
      }
    }
    if (oh > 14 || om > 59) {
      return std::nullopt;
    }
    offset = (oh * 3600 + om * 60) * (rest[0] == '-' ? -1 : 1);
  } else {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  const std::time_t utc = timegm(&tm);
  return static_cast<int64_t>(utc) - offset;
}

}  // namespace fulcrum::db
