#pragma once
// Process-wide logging: one line per event on stderr, text or JSON. Lines are queued whole and
// written by a thread of the log's own, so lines from different threads never interleave and a
// stalled stderr never blocks a worker (lines beyond a 1 MiB queue are dropped and counted).
#include <fmt/format.h>

#include <atomic>
#include <initializer_list>
#include <string>
#include <string_view>

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

// Lines dropped so far because stderr did not take them (see above).
uint64_t droppedLines();
// Waits (at most 2 s) until every line queued so far is written: before a fork or an exit that
// skips destructors, and in tests reading stderr.
void flush();

// Appends `text` to `out` as the inside of a JSON string literal.
void appendJsonEscaped(std::string& out, std::string_view text);

}  // namespace fulcrum::log
