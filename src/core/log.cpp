#include "core/log.h"

#include <unistd.h>

#include <chrono>
#include <ctime>

namespace fulcrum::log {

std::atomic<int> g_level{static_cast<int>(Level::Info)};

namespace {

std::atomic<Format> g_format{Format::Text};
// Set once at start (before worker threads exist), read by every log line without a lock.
// A replaced name is deliberately not freed: a line being written may still hold it.
std::atomic<const std::string*> g_component{nullptr};

std::string_view component() {
  const std::string* c = g_component.load(std::memory_order_acquire);
  return c == nullptr ? std::string_view() : std::string_view(*c);
}

constexpr std::string_view levelName(Level level) {
  switch (level) {
    case Level::Error:
      return "error";
    case Level::Warn:
      return "warn";
    case Level::Info:
      return "info";
    case Level::Debug:
      return "debug";
  }
  return "info";
}

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
}

}  // namespace

void setLevel(Level level) {
  g_level.store(static_cast<int>(level));
}
void setFormat(Format format) {
  g_format.store(format);
}
void setComponent(std::string name) {
  g_component.store(new std::string(std::move(name)), std::memory_order_release);
}

bool parseLevel(std::string_view text, Level& out) {
  if (text == "error") {
    out = Level::Error;
  } else if (text == "warn") {
    out = Level::Warn;
  } else if (text == "info") {
    out = Level::Info;
  } else if (text == "debug") {
    out = Level::Debug;
  } else {
    return false;
  }
  return true;
}

bool parseFormat(std::string_view text, Format& out) {
  if (text == "text") {
    out = Format::Text;
  } else if (text == "json") {
    out = Format::Json;
  } else {
    return false;
  }
  return true;
}

void appendJsonEscaped(std::string& out, std::string_view text) {
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

Format format() {
  return g_format.load(std::memory_order_relaxed);
}

namespace {

// `{"ts":"…","level":"…"[,"node":"…"]` — the start of every JSON line.
void appendJsonHead(std::string& line, Level level) {
  line += "{\"ts\":\"";
  line += timestamp();
  line += "\",\"level\":\"";
  line += levelName(level);
  line += "\"";
  std::string_view node = component();
  if (!node.empty()) {
    line += ",\"node\":\"";
    appendJsonEscaped(line, node);
    line += "\"";
  }
}

void writeLine(const std::string& line) {
  // One write per line; a short write to a pipe this small does not happen in practice.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace

void event(Level level, std::string_view name, std::initializer_list<Field> fields) {
  if (!enabled(level)) {
    return;
  }
  if (format() == Format::Text) {
    std::string message(name);
    for (const Field& f : fields) {
      message += ' ';
      message += f.key;
      message += '=';
      if (f.is_number) {
        fmt::format_to(std::back_inserter(message), "{:g}", f.number);
      } else {
        message += f.text;
      }
    }
    write(level, message);
    return;
  }
  std::string line;
  line.reserve(256);
  appendJsonHead(line, level);
  line += ",\"event\":\"";
  appendJsonEscaped(line, name);
  line += "\"";
  for (const Field& f : fields) {
    line += ",\"";
    appendJsonEscaped(line, f.key);
    line += "\":";
    if (f.is_number) {
      fmt::format_to(std::back_inserter(line), "{:g}", f.number);
    } else {
      line += '"';
      appendJsonEscaped(line, f.text);
      line += '"';
    }
  }
  line += "}\n";
  writeLine(line);
}

void write(Level level, std::string_view message) {
  std::string line;
  line.reserve(message.size() + 64);
  if (format() == Format::Json) {
    appendJsonHead(line, level);
    line += ",\"msg\":\"";
    appendJsonEscaped(line, message);
    line += "\"}\n";
  } else {
    line += timestamp();
    line += ' ';
    line += levelName(level);
    std::string_view node = component();
    if (!node.empty()) {
      line += " [";
      line += node;
      line += ']';
    }
    line += ' ';
    line += message;
    line += '\n';
  }
  writeLine(line);
}

}  // namespace fulcrum::log
