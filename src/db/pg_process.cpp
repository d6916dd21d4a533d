#include "db/pg_process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "core/fd.h"

namespace fulcrum::db {

namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr size_t kMaxCapture = 1 << 20;  // per stream; the rest is read and dropped

std::string errnoText(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

// argv/envp as execve wants them, built before fork (the child may only call async-signal-safe
// functions: no allocation after fork in a multi-threaded process).
struct ExecArgs {
  std::vector<std::string> storage_argv;
  std::vector<std::string> storage_env;
  std::vector<char*> argv;
  std::vector<char*> envp;

  ExecArgs(const OsUser& user, const std::vector<std::string>& args, const std::vector<std::string>& env)
      : storage_argv(args) {
    std::string program_dir = std::filesystem::path(args.at(0)).parent_path().string();
    storage_env = {"PATH=" + program_dir + ":/usr/bin:/bin",
                   "HOME=" + user.home,
                   "USER=" + user.name,
                   "LOGNAME=" + user.name,
                   "LC_ALL=C",
                   "LANG=C"};
    storage_env.insert(storage_env.end(), env.begin(), env.end());
    for (std::string& arg : storage_argv) {
      argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    for (std::string& var : storage_env) {
      envp.push_back(var.data());
    }
    envp.push_back(nullptr);
  }
};

// In the child, after fork: drops to `user` and execs. Reports errno on `error_fd` (CLOEXEC, so
// a successful exec closes it and the parent reads EOF). Async-signal-safe calls only.
[[noreturn]] void execAs(const OsUser& user, const ExecArgs& args, const char* cwd, int error_fd,
                         pid_t parent, int death_signal) {
  auto fail = [&](int err) {
    ssize_t ignored = ::write(error_fd, &err, sizeof err);
    (void)ignored;
    ::_exit(127);
  };
  if (user.switch_user) {
    if (::setgroups(user.groups.size(), user.groups.data()) != 0 || ::setgid(user.gid) != 0 ||
        ::setuid(user.uid) != 0) {
      fail(errno);
    }
  }
  // After setuid: a change of credentials clears the parent-death signal.
  if (death_signal != 0 && ::prctl(PR_SET_PDEATHSIG, death_signal) != 0) {
    fail(errno);
  }
  if (::getppid() != parent) {
    ::_exit(127);  // the parent died before the death signal was armed
  }
  if (::chdir(cwd) != 0) {
    fail(errno);
  }
  // Signals ignored or blocked by the agent must not stay so in PostgreSQL (it relies on them).
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2}) {
    ::signal(sig, SIG_DFL);
  }
  ::execve(args.argv[0], args.argv.data(), args.envp.data());
  fail(errno);
  ::_exit(127);  // not reached: fail() exits
}

// Reads the errno a child reported before exec, if any (blocks until exec or _exit).
std::optional<int> readExecError(int fd) {
  int err = 0;
  for (;;) {
    ssize_t n = ::read(fd, &err, sizeof err);
    if (n == static_cast<ssize_t>(sizeof err)) {
      return err;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    return std::nullopt;
  }
}

std::string lastLines(const std::string& text, size_t max_lines) {
  std::string trimmed = text;
  while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == ' ')) {
    trimmed.pop_back();
  }
  size_t pos = trimmed.size();
  for (size_t i = 0; i < max_lines && pos != std::string::npos && pos > 0; ++i) {
    pos = trimmed.rfind('\n', pos - 1);
  }
  return pos == std::string::npos || pos == 0 ? trimmed : trimmed.substr(pos + 1);
}

// Processes whose parent is `parent` (from /proc/PID/stat: "pid (comm) state ppid ...").
std::vector<pid_t> childrenOf(pid_t parent) {
  std::vector<pid_t> children;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    core::Fd fd(::open((entry.path() / "stat").c_str(), O_RDONLY | O_CLOEXEC));
    char buf[512];
    ssize_t n = fd ? ::read(fd.get(), buf, sizeof buf - 1) : -1;
    if (n <= 0) {
      continue;
    }
    std::string stat(buf, static_cast<size_t>(n));
    size_t close = stat.rfind(')');  // comm may itself contain ") "
    long ppid = 0;
    if (close != std::string::npos && std::sscanf(stat.c_str() + close + 1, " %*c %ld", &ppid) == 1 &&
        ppid == parent) {
      children.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return children;
}

void setNonBlocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

}  // namespace

Result<OsUser> resolveOsUser(const std::string& name) {
  using R = Result<OsUser>;
  const bool root = ::geteuid() == 0;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  int rc = root ? ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found)
                : ::getpwuid_r(::geteuid(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) {
    return R::failure(root
                          ? "OS user '" + name + "' does not exist (the Debian package postgresql creates it)"
                          : "cannot look up the current user");
  }
  OsUser user;
  user.name = pw.pw_name;
  user.uid = pw.pw_uid;
  user.gid = pw.pw_gid;
  user.home = pw.pw_dir != nullptr ? pw.pw_dir : "/";
  user.switch_user = root;
  if (root && user.uid == 0) {
    return R::failure("PostgreSQL cannot run as root: OS user '" + name + "' has uid 0");
  }
  int count = 64;
  std::vector<gid_t> groups(static_cast<size_t>(count));
  while (::getgrouplist(user.name.c_str(), user.gid, groups.data(), &count) < 0) {
    groups.resize(static_cast<size_t>(count));
  }
  groups.resize(static_cast<size_t>(count));
  user.groups = std::move(groups);
  return R::success(std::move(user));
}

Status checkTraversable(const OsUser& user, const std::filesystem::path& dir) {
  if (!user.switch_user) {
    return Status::success();  // we run the tools as ourselves: what we can reach, they can
  }
  std::filesystem::path current = "/";
  std::filesystem::path absolute = std::filesystem::absolute(dir).lexically_normal();
  for (const auto& part : absolute.parent_path().relative_path()) {
    current /= part;
    struct stat st {};
    if (::stat(current.c_str(), &st) != 0) {
      break;  // not created yet: preparePrivateDir creates it searchable
    }
    bool in_group = std::find(user.groups.begin(), user.groups.end(), st.st_gid) != user.groups.end();
    mode_t bit = st.st_uid == user.uid ? S_IXUSR : in_group ? S_IXGRP : S_IXOTH;
    if ((st.st_mode & bit) == 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return Status::failure("directory " + current.string() + " (mode " + mode +
                             ") is not searchable by OS user " + user.name +
                             ", which runs PostgreSQL: move the data elsewhere or allow it (chmod o+x)");
    }
  }
  return Status::success();
}

Status preparePrivateDir(const OsUser& user, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::failure("create " + dir.string() + ": " + ec.message());
  }
  if (user.switch_user && ::chown(dir.c_str(), user.uid, user.gid) != 0) {
    return Status::failure(errnoText("chown " + dir.string(), errno));
  }
  if (::chmod(dir.c_str(), 0700) != 0) {
    return Status::failure(errnoText("chmod " + dir.string(), errno));
  }
  return checkTraversable(user, dir);
}

Status writeFileAs(const OsUser& user, const std::filesystem::path& path, const std::string& content,
                   mode_t mode) {
  std::string tmp = path.string() + ".tmp";
  core::Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) {
    return Status::failure(errnoText("create " + tmp, errno));
  }
  if (::fchmod(fd.get(), mode) != 0 || (user.switch_user && ::fchown(fd.get(), user.uid, user.gid) != 0)) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::failure(errnoText("set owner/mode of " + tmp, err));
  }
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return Status::failure(errnoText("write " + tmp, err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::failure(errnoText("write " + path.string(), err));
  }
  return Status::success();
}

Result<std::unique_ptr<ToolJob>> ToolJob::start(const OsUser& user, ToolRun run) {
  using R = Result<std::unique_ptr<ToolJob>>;
  if (run.argv.empty()) {
    return R::failure("no program to run");
  }
  ExecArgs args(user, run.argv, run.env);
  // stdin is a socket so that writing to a tool that exited early gives EPIPE, not SIGPIPE.
  int in_pair[2];
  int out_pipe[2];
  int err_pipe[2];
  int exec_pipe[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pair) != 0) {
    return R::failure(errnoText("socketpair", errno));
  }
  core::Fd in_ours(in_pair[0]), in_theirs(in_pair[1]);
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return R::failure(errnoText("pipe", errno));
  }
  core::Fd out_ours(out_pipe[0]), out_theirs(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return R::failure(errnoText("pipe", errno));
  }
  core::Fd err_ours(err_pipe[0]), err_theirs(err_pipe[1]);
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    return R::failure(errnoText("pipe", errno));
  }
  core::Fd exec_ours(exec_pipe[0]), exec_theirs(exec_pipe[1]);
  const std::string cwd = run.cwd.string();
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) {
    return R::failure(errnoText("fork", errno));
  }
  if (pid == 0) {
    ::setpgid(0, 0);  // its own group: a timeout kills the tool and whatever it forked
    ::dup2(in_theirs.get(), STDIN_FILENO);
    ::dup2(out_theirs.get(), STDOUT_FILENO);
    ::dup2(err_theirs.get(), STDERR_FILENO);
    execAs(user, args, cwd.c_str(), exec_theirs.get(), parent, SIGKILL);
  }
  ::setpgid(pid, pid);  // also from here, so the group exists before we might kill it
  in_theirs.reset();
  out_theirs.reset();
  err_theirs.reset();
  exec_theirs.reset();
  if (auto err = readExecError(exec_ours.get())) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return R::failure(errnoText("cannot run " + run.argv[0] + " as " + user.name, *err));
  }
  std::unique_ptr<ToolJob> job(new ToolJob());
  job->pid_ = pid;
  job->deadline_ = SteadyClock::now() + run.timeout;
  setNonBlocking(in_ours.get());
  setNonBlocking(out_ours.get());
  setNonBlocking(err_ours.get());
  if (!run.input.empty()) {
    job->in_ = std::move(in_ours);
  }
  job->out_ = std::move(out_ours);
  job->err_ = std::move(err_ours);
  job->run_ = std::move(run);
  return R::success(std::move(job));
}

ToolJob::~ToolJob() {
  if (pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

bool ToolJob::pump() {
  char buf[16384];
  bool progressed = false;
  if (in_) {
    ssize_t w = ::send(in_.get(), run_.input.data() + written_, run_.input.size() - written_, MSG_NOSIGNAL);
    if (w > 0) {
      written_ += static_cast<size_t>(w);
      progressed = true;
    }
    if ((w < 0 && errno != EAGAIN && errno != EINTR) || written_ == run_.input.size()) {
      in_.reset();  // done, or the tool stopped reading: EOF either way
    }
  }
  for (core::Fd* source : {&out_, &err_}) {
    std::string& sink = source == &out_ ? output_.out : output_.err;
    while (*source) {
      ssize_t r = ::read(source->get(), buf, sizeof buf);
      if (r > 0) {
        sink.append(buf, std::min(static_cast<size_t>(r), kMaxCapture - std::min(kMaxCapture, sink.size())));
        progressed = true;
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        source->reset();
      } else {
        break;
      }
    }
  }
  return progressed;
}

std::optional<ToolOutput> ToolJob::poll() {
  if (pid_ <= 0) {
    return output_;
  }
  pump();
  const bool late = SteadyClock::now() >= deadline_;
  if ((out_ || err_) && !late) {
    return std::nullopt;  // the tool (or something it forked) still holds its output open
  }
  int status = 0;
  pid_t reaped = late ? 0 : ::waitpid(pid_, &status, WNOHANG);
  if (reaped == 0 && !late) {
    return std::nullopt;  // closed its output, not exited yet
  }
  if (late) {
    output_.timed_out = true;
    ::kill(-pid_, SIGKILL);
  }
  if (reaped == 0) {
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  // Descendants that outlive the tool (none expected) must not keep running unsupervised.
  ::kill(-pid_, SIGKILL);
  pid_ = -1;
  out_.reset();
  err_.reset();
  in_.reset();
  output_.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return output_;
}

ToolOutput ToolJob::wait() {
  for (;;) {
    if (auto done = poll()) {
      return *done;
    }
    std::vector<pollfd> fds;
    if (in_) {
      fds.push_back({in_.get(), POLLOUT, 0});
    }
    if (out_) {
      fds.push_back({out_.get(), POLLIN, 0});
    }
    if (err_) {
      fds.push_back({err_.get(), POLLIN, 0});
    }
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - SteadyClock::now()).count();
    // With the output closed, the tool's exit is waited for in short steps (no SIGCHLD here).
    const int64_t step = fds.empty() ? 10 : std::max<int64_t>(left, 0);
    ::poll(fds.data(), fds.size(), static_cast<int>(std::min<int64_t>(step, 1 << 30)));
  }
}

Result<ToolOutput> runTool(const OsUser& user, const ToolRun& run) {
  auto job = ToolJob::start(user, run);
  if (!job.ok) {
    return Result<ToolOutput>::failure(job.error);
  }
  return Result<ToolOutput>::success(job.value->wait());
}

std::string describeFailure(const ToolRun& run, const ToolOutput& output) {
  std::string name = run.argv.empty() ? "?" : std::filesystem::path(run.argv[0]).filename().string();
  std::string text = name + ": ";
  if (output.timed_out) {
    text += "timed out after " + std::to_string(run.timeout.count()) + " ms";
  } else {
    text += "exit " + std::to_string(output.exit_code);
  }
  std::string detail = lastLines(output.err.empty() ? output.out : output.err, 4);
  if (!detail.empty()) {
    text += ": " + detail;
  }
  return text;
}

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) {
    return "exit " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status));
  }
  return "wait status " + std::to_string(status);
}

ChildProcess::~ChildProcess() {
  kill();
}

Status ChildProcess::spawn(const OsUser& user, const std::vector<std::string>& argv,
                           const std::vector<std::string>& env, const std::filesystem::path& log,
                           const std::filesystem::path& cwd, int parent_death_signal) {
  if (pid_ > 0) {
    return Status::failure("already running (pid " + std::to_string(pid_) + ")");
  }
  ExecArgs args(user, argv, env);
  core::Fd log_fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log_fd) {
    return Status::failure(errnoText("open " + log.string(), errno));
  }
  if (user.switch_user && ::fchown(log_fd.get(), user.uid, user.gid) != 0) {
    return Status::failure(errnoText("chown " + log.string(), errno));
  }
  core::Fd null_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int exec_pipe[2];
  if (!null_fd || ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    return Status::failure(errnoText("open /dev/null or pipe", errno));
  }
  core::Fd exec_ours(exec_pipe[0]), exec_theirs(exec_pipe[1]);
  const std::string cwd_text = cwd.string();
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    return Status::failure(errnoText("fork", errno));
  }
  if (pid == 0) {
    ::setsid();
    ::dup2(null_fd.get(), STDIN_FILENO);
    ::dup2(log_fd.get(), STDOUT_FILENO);
    ::dup2(log_fd.get(), STDERR_FILENO);
    execAs(user, args, cwd_text.c_str(), exec_theirs.get(), parent, parent_death_signal);
  }
  exec_theirs.reset();
  pid_ = pid;
  if (auto err = readExecError(exec_ours.get())) {
    waitExit(std::chrono::milliseconds(5000));
    pid_ = -1;
    return Status::failure(errnoText("cannot run " + argv.at(0) + " as " + user.name, *err));
  }
  return Status::success();
}

std::optional<int> ChildProcess::poll() {
  if (pid_ <= 0) {
    return std::nullopt;
  }
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    pid_ = -1;
    return r == -1 ? 0 : status;
  }
  return std::nullopt;
}

void ChildProcess::signal(int sig, bool group) const {
  if (pid_ > 0) {
    ::kill(group ? -pid_ : pid_, sig);
  }
}

std::optional<int> ChildProcess::waitExit(std::chrono::milliseconds limit) {
  const auto until = SteadyClock::now() + limit;
  auto pause = std::chrono::milliseconds(2);
  for (;;) {
    if (auto status = poll()) {
      return status;
    }
    if (pid_ <= 0 || SteadyClock::now() >= until) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

void ChildProcess::kill() {
  if (pid_ <= 0) {
    return;
  }
  // A postmaster's children lead sessions of their own, so a group kill would miss them: freeze
  // the postmaster (it forks no more), kill its children, then it.
  ::kill(pid_, SIGSTOP);
  for (pid_t child : childrenOf(pid_)) {
    ::kill(child, SIGKILL);
  }
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

}  // namespace fulcrum::db
