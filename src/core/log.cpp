#include "core/log.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

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
  // A name replaced (`lab` then `up` in one process) stays alive, reachable: a thread may be
  // formatting a line with it. A process sets its name a handful of times at most.
  static std::mutex retired_lock;
  static std::vector<std::unique_ptr<const std::string>> retired;
  const std::string* old = g_component.exchange(new std::string(std::move(name)), std::memory_order_acq_rel);
  if (old != nullptr) {
    std::lock_guard<std::mutex> hold(retired_lock);
    retired.emplace_back(old);
  }
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

std::string formatLine(Level level, std::string_view message);

// A text field's value as one token: "-" when empty; quoted with JSON escapes when it holds a
// space, a quote, a backslash or a control byte, so a request line can never forge a field or a
// log line of its own.
void appendTextValue(std::string& out, std::string_view text) {
  if (text.empty()) {
    out += '-';
    return;
  }
  bool plain = true;
  for (unsigned char c : text) {
    if (c <= ' ' || c == '"' || c == '\\' || c == 0x7f) {
      plain = false;
      break;
    }
  }
  if (plain) {
    out += text;
    return;
  }
  out += '"';
  appendJsonEscaped(out, text);
  out += '"';
}

// Counts as integers ("bytes=1234567", never "1.23457e+06"), anything else with three decimals
// (milliseconds to the microsecond).
void appendNumber(std::string& out, double value) {
  if (value < 9e15 && value > -9e15 && value == static_cast<double>(static_cast<int64_t>(value))) {
    fmt::format_to(std::back_inserter(out), "{}", static_cast<int64_t>(value));
  } else {
    fmt::format_to(std::back_inserter(out), "{:.3f}", value);
  }
}

// Writes all of `data` to `fd`, waiting while it is full (only the sink's thread waits here).
void writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 1000);
    } else if (!(n < 0 && errno == EINTR)) {
      return;  // the stream is gone: nothing to report it to
    }
  }
}

enum class Stream { Events, Access };

// Lines reach their outputs from a thread of their own, so a slow or stalled output (a full pipe
// nobody reads, a paused terminal, a slow disk) never blocks a worker: lines wait in a bounded
// queue per stream and, when it is full, are dropped and counted; the count is written once the
// output takes lines again. A forked child (no sink thread there) writes directly.
class Sink {
 public:
  static constexpr size_t kMaxQueued = 1 << 20;  // bytes waiting per stream before lines are dropped

  ~Sink() {
    std::unique_lock lock(mutex_);
    if (!started_ || pid_ != ::getpid()) {
      return;
    }
    stopping_ = true;
    wake_.notify_all();
    // At exit, what is queued gets two seconds to be written; a stalled output cannot hold the
    // process (the thread is then left to the exit).
    bool drained = idle_.wait_for(lock, std::chrono::seconds(2), [this] { return done_; });
    lock.unlock();
    if (drained) {
      thread_.join();
    } else {
      thread_.detach();
    }
  }

  void push(Stream stream, std::string line) {
    // A forked child has no sink thread, and may have been forked while another thread held the
    // mutex: it writes directly, without touching the lock.
    pid_t owner = owner_.load(std::memory_order_acquire);
    if (owner != 0 && owner != ::getpid()) {
      if (stream == Stream::Events) {
        writeAll(STDERR_FILENO, line);
      }
      return;
    }
    std::unique_lock lock(mutex_);
    if (!started_) {
      start();
    }
    Output& out = output(stream);
    if (out.queued.size() + line.size() > kMaxQueued) {
      ++out.dropped;
      return;
    }
    out.queued += line;
    wake_.notify_one();
  }

  // Called at start (the thread may already run): the files change under io_mutex_, which the
  // thread holds while writing.
  bool setFile(Stream stream, const std::filesystem::path& path, std::string& error) {
    core::LogFile file;
    if (!path.empty() && !file.open(path, rotation_, error)) {
      return false;
    }
    std::lock_guard io(io_mutex_);
    output(stream).file = std::move(file);
    return true;
  }

  void setRotation(core::LogRotation rotation) {
    std::lock_guard io(io_mutex_);
    rotation_ = rotation;
  }

  void requestReopen() {
    reopen_.store(true, std::memory_order_release);
    std::lock_guard lock(mutex_);
    if (!started_) {
      start();
    }
    wake_.notify_one();
  }

  uint64_t dropped() {
    std::lock_guard lock(mutex_);
    return events_.dropped_total + events_.dropped + access_.dropped_total + access_.dropped;
  }

  void flush() {
    std::unique_lock lock(mutex_);
    if (!started_ || pid_ != ::getpid()) {
      return;
    }
    idle_.wait_for(lock, std::chrono::seconds(2), [this] {
      return events_.queued.empty() && access_.queued.empty() && !writing_ &&
             !reopen_.load(std::memory_order_acquire);
    });
  }

 private:
  struct Output {
    int std_fd;
    core::LogFile file;  // when open, instead of std_fd
    std::string queued;
    uint64_t dropped = 0;        // since the last report
    uint64_t dropped_total = 0;  // reported
  };

  Output& output(Stream stream) { return stream == Stream::Events ? events_ : access_; }

  // With mutex_ held.
  void start() {
    started_ = true;
    pid_ = ::getpid();
    owner_.store(pid_, std::memory_order_release);
    // With every signal blocked, which the thread keeps: a process's signals go to its own
    // threads (its signalfd), even when the first line is logged before it blocks them.
    sigset_t all;
    sigset_t before;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before);
    thread_ = std::thread([this] { run(); });
    pthread_sigmask(SIG_SETMASK, &before, nullptr);
  }

  // With io_mutex_ held. A file's trouble is said on stderr, once per distinct message: the file
  // may be the event log itself.
  void writeTo(Output& out, std::string_view data) {
    if (!out.file.isOpen()) {
      writeAll(out.std_fd, data);
      return;
    }
    std::string error;
    if (!out.file.write(data, error) && error != last_error_) {
      last_error_ = error;
      writeAll(STDERR_FILENO, formatLine(Level::Error, "log: " + error));
    }
  }

  void reopenFiles() {
    for (Output* out : {&events_, &access_}) {
      std::string error;
      if (out->file.isOpen() && !out->file.reopen(error)) {
        writeAll(STDERR_FILENO, formatLine(Level::Error, "log: " + error + "; writing on to the old file"));
      }
    }
  }

  void run() {
    std::string events;
    std::string access;
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] {
        return stopping_ || !events_.queued.empty() || !access_.queued.empty() ||
               reopen_.load(std::memory_order_acquire);
      });
      bool reopen = reopen_.exchange(false, std::memory_order_acq_rel);
      if (events_.queued.empty() && access_.queued.empty() && !reopen && stopping_) {
        break;
      }
      events.swap(events_.queued);
      access.swap(access_.queued);
      writing_ = true;
      uint64_t events_dropped = std::exchange(events_.dropped, 0);
      uint64_t access_dropped = std::exchange(access_.dropped, 0);
      events_.dropped_total += events_dropped;
      access_.dropped_total += access_dropped;
      lock.unlock();
      {
        std::lock_guard io(io_mutex_);
        if (reopen) {
          reopenFiles();
        }
        if (events_dropped > 0) {
          writeTo(events_,
                  formatLine(Level::Warn,
                             fmt::format("log: {} line(s) dropped: the event log was not taking them",
                                         events_dropped)));
        }
        if (access_dropped > 0) {
          writeTo(events_, formatLine(Level::Warn,
                                      fmt::format("log: {} access line(s) dropped: the access log was not "
                                                  "taking them",
                                                  access_dropped)));
        }
        writeTo(events_, events);
        writeTo(access_, access);
      }
      events.clear();
      access.clear();
      lock.lock();
      writing_ = false;
      idle_.notify_all();
    }
    done_ = true;
    idle_.notify_all();
  }

  std::mutex mutex_;  // the queues and the thread's state
  std::condition_variable wake_;
  std::condition_variable idle_;
  Output events_{STDERR_FILENO};
  Output access_{STDOUT_FILENO};
  std::mutex io_mutex_;  // the files, held by the thread while it writes
  core::LogRotation rotation_;
  std::string last_error_;
  std::atomic<bool> reopen_{false};
  std::thread thread_;
  pid_t pid_ = 0;
  std::atomic<pid_t> owner_{0};  // pid_, readable without the mutex
  bool started_ = false;
  bool stopping_ = false;
  bool done_ = false;
  bool writing_ = false;
};

Sink& sink() {
  static Sink instance;
  return instance;
}

void writeLine(std::string line) {
  sink().push(Stream::Events, std::move(line));
}

// Off until a role opens its access log (run::openLogs): no other command writes access lines.
std::atomic<AccessFormat> g_access_format{AccessFormat::Off};

}  // namespace

uint64_t droppedLines() {
  return sink().dropped();
}

void flush() {
  sink().flush();
}

bool setEventFile(const std::filesystem::path& path, std::string& error) {
  return sink().setFile(Stream::Events, path, error);
}

bool parseAccessFormat(std::string_view text, AccessFormat& out) {
  if (text == "off") {
    out = AccessFormat::Off;
  } else if (text == "text") {
    out = AccessFormat::Text;
  } else if (text == "json") {
    out = AccessFormat::Json;
  } else {
    return false;
  }
  return true;
}

bool setAccessLog(AccessFormat format, const std::filesystem::path& path, std::string& error) {
  if (format != AccessFormat::Off && !sink().setFile(Stream::Access, path, error)) {
    return false;
  }
  g_access_format.store(format, std::memory_order_relaxed);
  return true;
}

bool accessEnabled() {
  return g_access_format.load(std::memory_order_relaxed) != AccessFormat::Off;
}

void setRotation(core::LogRotation rotation) {
  sink().setRotation(rotation);
}

void reopen() {
  sink().requestReopen();
}

namespace {

// " key=value ..." (text lines).
void appendTextFields(std::string& out, std::initializer_list<Field> fields) {
  for (const Field& f : fields) {
    out += ' ';
    out += f.key;
    out += '=';
    if (f.is_number) {
      appendNumber(out, f.number);
    } else {
      appendTextValue(out, f.text);
    }
  }
}

// ',"key":value ...' (JSON lines).
void appendJsonFields(std::string& out, std::initializer_list<Field> fields) {
  for (const Field& f : fields) {
    out += ",\"";
    appendJsonEscaped(out, f.key);
    out += "\":";
    if (f.is_number) {
      appendNumber(out, f.number);
    } else {
      out += '"';
      appendJsonEscaped(out, f.text);
      out += '"';
    }
  }
}

}  // namespace

void event(Level level, std::string_view name, std::initializer_list<Field> fields) {
  if (!enabled(level)) {
    return;
  }
  if (format() == Format::Text) {
    std::string message(name);
    appendTextFields(message, fields);
    write(level, message);
    return;
  }
  std::string line;
  line.reserve(256);
  appendJsonHead(line, level);
  line += ",\"event\":\"";
  appendJsonEscaped(line, name);
  line += "\"";
  appendJsonFields(line, fields);
  line += "}\n";
  writeLine(line);
}

void access(std::initializer_list<Field> fields) {
  AccessFormat format = g_access_format.load(std::memory_order_relaxed);
  if (format == AccessFormat::Off) {
    return;
  }
  std::string line;
  line.reserve(320);
  std::string_view node = component();
  if (format == AccessFormat::Text) {
    line += timestamp();
    if (!node.empty()) {
      line += " [";
      line += node;
      line += ']';
    }
    line += " access";
    appendTextFields(line, fields);
    line += '\n';
  } else {
    line += "{\"ts\":\"";
    line += timestamp();
    line += '"';
    if (!node.empty()) {
      line += ",\"node\":\"";
      appendJsonEscaped(line, node);
      line += '"';
    }
    line += ",\"event\":\"access\"";
    appendJsonFields(line, fields);
    line += "}\n";
  }
  sink().push(Stream::Access, std::move(line));
}

void write(Level level, std::string_view message) {
  writeLine(formatLine(level, message));
}

namespace {
std::string formatLine(Level level, std::string_view message) {
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
  return line;
}
}  // namespace

}  // namespace fulcrum::log
