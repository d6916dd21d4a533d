#include "site/child_logs.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"

namespace fulcrum::site {

namespace {

// Room for a burst while `up` is busy elsewhere (a child's write blocks only when this is full).
constexpr int kPipeBytes = 1 << 20;
// A line longer than this is written in pieces rather than held back whole.
constexpr size_t kMaxPartialLine = 64 * 1024;

}  // namespace

struct ChildLogs::Pipe final : core::IoHandler {
  core::Fd read_end;
  core::Fd write_end;
  core::LogFile file;
  std::string partial;  // the start of a line not yet ended: a rotation never splits a line

  void onIoEvents(uint32_t) override { drain(); }

  void drain() {
    char buf[64 * 1024];
    for (;;) {
      ssize_t n = ::read(read_end.get(), buf, sizeof buf);
      if (n > 0) {
        partial.append(buf, static_cast<size_t>(n));
        size_t end = partial.rfind('\n');
        if (end != std::string::npos) {
          write(std::string_view(partial).substr(0, end + 1));
          partial.erase(0, end + 1);
        } else if (partial.size() > kMaxPartialLine) {
          write(partial);
          partial.clear();
        }
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return;  // EAGAIN: all read (the pipe never ends: `up` holds its write end)
      }
    }
  }

  void write(std::string_view data) {
    std::string error;
    if (!file.write(data, error)) {
      log::error("{}", error);
    }
  }
};

ChildLogs::ChildLogs(core::EventLoop& loop, core::LogRotation rotation) : loop_(loop), rotation_(rotation) {}

ChildLogs::~ChildLogs() {
  for (auto& [path, pipe] : pipes_) {
    loop_.remove(pipe->read_end.get());
    pipe->drain();
    if (!pipe->partial.empty()) {
      pipe->partial += '\n';  // a last line without its end
      pipe->write(pipe->partial);
    }
  }
}

int ChildLogs::writerFor(const std::filesystem::path& path, std::string& error) {
  auto found = pipes_.find(path);
  if (found != pipes_.end()) {
    return found->second->write_end.get();
  }
  auto pipe = std::make_unique<Pipe>();
  if (!pipe->file.open(path, rotation_, error)) {
    return -1;
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    error = std::string("pipe: ") + std::strerror(errno);
    return -1;
  }
  pipe->read_end.reset(fds[0]);
  pipe->write_end.reset(fds[1]);
  ::fcntl(fds[1], F_SETPIPE_SZ, kPipeBytes);  // at most /proc/sys/fs/pipe-max-size; the default else
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);       // the read end only: the children write blocking
  if (!loop_.add(fds[0], EPOLLIN, pipe.get())) {
    error = "cannot watch the log pipe of " + path.string();
    return -1;
  }
  int writer = fds[1];
  pipes_.emplace(path, std::move(pipe));
  return writer;
}

void ChildLogs::note(const std::filesystem::path& path, std::string_view line) {
  auto found = pipes_.find(path);
  if (found != pipes_.end()) {
    found->second->drain();
    found->second->write(line);
  }
}

void ChildLogs::reopenAll() {
  for (auto& [path, pipe] : pipes_) {
    pipe->drain();  // what was written before the signal stays with the old file
    std::string error;
    if (!pipe->file.reopen(error)) {
      log::error("{}; writing on to the old file", error);
    }
  }
}

void ChildLogs::drainAll() {
  for (auto& [path, pipe] : pipes_) {
    pipe->drain();
  }
}

}  // namespace fulcrum::site
