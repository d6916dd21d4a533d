#pragma once
// Process-wide logging, two streams: events (one line per event, text or JSON; stderr or a file)
// and access lines (one per request, off, text or JSON; stdout or a file). Lines are queued whole
// and written by a thread of the log's own, so lines from different threads never interleave and a
// stalled output never blocks a worker (lines beyond a 1 MiB queue per stream are dropped and
// counted). Files are reopened on reopen() (SIGUSR1) and rotated by size when asked.
#include <fmt/format.h>

#include <atomic>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>

#include "core/log_file.h"

namespace fulcrum::log {

enum class Level : int { Error = 0, Warn = 1, Info = 2, Debug = 3 };
enum class Format { Text, Json };

void setLevel(Level level);
void setFormat(Format format);
// A name attached to every line (the node name), so merged logs of `fulcrum up` stay readable.
void setComponent(std::string component);
bool parseLevel(std::string_view text, Level& out);
bool parseFormat(std::string_view text, Format& out);

extern std::atomic<int> g_level;
inline bool enabled(Level level) {
  return static_cast<int>(level) <= g_level.load(std::memory_order_relaxed);
}

void write(Level level, std::string_view message);
Format format();
// Writes one structured event. Text: "TS info [node] EVENT key=value ...". JSON: one object with
// ts, level, node, event and each field as its own member (numbers stay numbers).
struct Field {
  std::string_view key;
  std::string_view text;  // used when !is_number
  double number = 0;
  bool is_number = false;
};
void event(Level level, std::string_view name, std::initializer_list<Field> fields);

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Error))
    write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Warn))
    write(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Info))
    write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Debug))
    write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}

// Event lines go to this file instead of stderr. False with `error` when it cannot be opened.
bool setEventFile(const std::filesystem::path& path, std::string& error);

enum class AccessFormat { Off, Text, Json };
bool parseAccessFormat(std::string_view text, AccessFormat& out);
// The access stream: `path` empty writes to stdout. Text: "TS [node] access key=value ...";
// JSON: {"ts","node","event":"access", each field}. False with `error` when `path` cannot be opened.
bool setAccessLog(AccessFormat format, const std::filesystem::path& path, std::string& error);
bool accessEnabled();
// One access line (nothing when the access log is off; the log level does not apply).
void access(std::initializer_list<Field> fields);

// Size rotation of the files set after this call (0 bytes: none; logrotate then owns them).
void setRotation(core::LogRotation rotation);
// Asks the writer thread to open every log file again at its path (SIGUSR1, after logrotate moved
// them); lines queued meanwhile go to the new files. Safe from any thread, returns at once.
void reopen();

// Lines dropped so far because their output did not take them (see above).
uint64_t droppedLines();
// Waits (at most 2 s) until every line queued so far is written: before a fork or an exit that
// skips destructors, and in tests reading stderr.
void flush();

// Appends `text` to `out` as the inside of a JSON string literal.
void appendJsonEscaped(std::string& out, std::string_view text);

}  // namespace fulcrum::log
