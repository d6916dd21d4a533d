#include "site/child.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <vector>

#include "core/fd.h"

namespace fulcrum::site {

namespace {

// In the child, between fork and exec: async-signal-safe calls only.
[[noreturn]] void execChild(char* const* argv, int log_fd, int netns_fd, pid_t parent) {
  ::setpgid(0, 0);
  // The death signal follows the thread that forked: `up` forks from its only thread.
  if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) {
    ::_exit(kExecFailed);  // no death signal, or `up` died before it was armed
  }
  int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0) {
    ::dup2(null_fd, STDIN_FILENO);
  }
  ::dup2(log_fd, STDOUT_FILENO);
  ::dup2(log_fd, STDERR_FILENO);
  if (netns_fd >= 0 && ::setns(netns_fd, CLONE_NEWNET) != 0) {
    const char msg[] = "fulcrum up: cannot enter the network namespace\n";
    ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(kExecFailed);
  }
  // `up` blocks and ignores signals for its signalfd; the child must start with the defaults.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2}) {
    ::signal(sig, SIG_DFL);
  }
  ::execv(argv[0], argv);
  const char* reason = std::strerror(errno);
  const char prefix[] = "fulcrum up: cannot execute ";
  ssize_t ignored = ::write(STDERR_FILENO, prefix, sizeof prefix - 1);
  ignored = ::write(STDERR_FILENO, argv[0], std::strlen(argv[0]));
  ignored = ::write(STDERR_FILENO, ": ", 2);
  ignored = ::write(STDERR_FILENO, reason, std::strlen(reason));
  ignored = ::write(STDERR_FILENO, "\n", 1);
  (void)ignored;
  ::_exit(kExecFailed);
}

std::string nowText() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

std::string startedBanner(const ChildSpec& spec, pid_t pid) {
  return "---- " + nowText() + " fulcrum up: started " + spec.name + " (pid " + std::to_string(pid) +
         ") ----\n";
}

pid_t spawnChild(const ChildSpec& spec, std::string& error, int output_fd) {
  core::Fd log;
  if (output_fd < 0) {
    log.reset(::open(spec.log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    if (!log) {
      error = "cannot open " + spec.log.string() + ": " + std::strerror(errno);
      return -1;
    }
  }
  core::Fd netns;
  if (!spec.netns.empty()) {
    const std::string path = "/run/netns/" + spec.netns;
    netns.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!netns) {
      error = "cannot open network namespace " + path + ": " + std::strerror(errno);
      return -1;
    }
  }
  // Built before fork: the child must not allocate.
  std::vector<char*> argv;
  for (const auto& arg : spec.argv) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    error = std::string("fork: ") + std::strerror(errno);
    return -1;
  }
  if (pid == 0) {
    execChild(argv.data(), output_fd >= 0 ? output_fd : log.get(), netns.get(), parent);
  }
  ::setpgid(pid, pid);  // also here, so the group exists before `up` may signal it
  if (log) {
    std::string banner = startedBanner(spec, pid);
    ssize_t ignored = ::write(log.get(), banner.data(), banner.size());
    (void)ignored;
  }
  return pid;
}

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) {
    return "exit code " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "killed by signal " + std::to_string(sig) + (name != nullptr ? std::string(" (") + name + ")" : "");
  }
  return "wait status " + std::to_string(status);
}

int runToCompletion(const ChildSpec& spec, const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                    std::string& error) {
  ChildSpec once = spec;
  once.argv = argv;
  const pid_t pid = spawnChild(once, error);
  if (pid < 0) {
    return -1;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      return status;
    }
    if (done < 0 && errno != EINTR) {
      error = std::string("waitpid: ") + std::strerror(errno);
      return -1;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return status;
    }
    ::usleep(2000);  // bounded: `timeout` at most
  }
}

}  // namespace fulcrum::site
