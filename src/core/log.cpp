#include "core/log.h"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <mutex>

namespace fulcrum::log {

std::atomic<int> g_level{static_cast<int>(Level::Info)};

namespace {

std::atomic<Format> g_format{Format::Text};
std::mutex g_component_mutex;  // only taken when the component is set or read for a log line
std::string g_component;

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
void setComponent(std::string component) {
  std::lock_guard lock(g_component_mutex);
  g_component = std::move(component);
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

Format format() { return g_format.load(std::memory_order_relaxed); }

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
  std::string component;
  {
    std::lock_guard lock(g_component_mutex);
    component = g_component;
  }
  std::string line;
  line.reserve(256);
  line += "{\"ts\":\"";
  line += timestamp();
  line += "\",\"level\":\"";
  line += levelName(level);
  line += "\"";
  if (!component.empty()) {
    line += ",\"node\":\"";
    appendJsonEscaped(line, component);
    line += "\"";
  }
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
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

void write(Level level, std::string_view message) {
  std::string component;
  {
    std::lock_guard lock(g_component_mutex);
    component = g_component;
  }
  std::string line;
  line.reserve(message.size() + 64);
  if (g_format.load(std::memory_order_relaxed) == Format::Json) {
    line += "{\"ts\":\"";
    line += timestamp();
    line += "\",\"level\":\"";
    line += levelName(level);
    line += "\"";
    if (!component.empty()) {
      line += ",\"node\":\"";
      appendJsonEscaped(line, component);
      line += "\"";
    }
    line += ",\"msg\":\"";
    appendJsonEscaped(line, message);
    line += "\"}\n";
  } else {
    line += timestamp();
    line += ' ';
    line += levelName(level);
    if (!component.empty()) {
      line += " [";
      line += component;
      line += ']';
    }
    line += ' ';
    line += message;
    line += '\n';
  }
  // One write per line; a short write to a pipe this small does not happen in practice.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace fulcrum::log
