#include "db/fence_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <string>

#include "core/fd.h"
#include "db/pg_process.h"

// The library's bytes, placed in .rodata by the generated fence_library_blob.cpp (an .incbin of
// the built fulcrum_fence.so, see CMakeLists.txt).
extern "C" {
extern const char fulcrum_fence_library_begin[];
extern const char fulcrum_fence_library_end[];
}

namespace fulcrum::db {

namespace {

static_assert(sizeof(FulcrumFenceLayout) == 32 && FULCRUM_FENCE_FILE_SIZE >= sizeof(FulcrumFenceLayout));
static_assert(std::atomic_ref<int64_t>::is_always_lock_free &&
              std::atomic_ref<uint64_t>::is_always_lock_free);

std::string errnoText(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

int64_t clockNs(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

template <typename T>
void storeField(T& field, T value) {
  std::atomic_ref<T>(field).store(value, std::memory_order_release);
}

template <typename T>
T loadField(T& field) {
  return std::atomic_ref<T>(field).load(std::memory_order_acquire);
}

}  // namespace

Result<std::unique_ptr<FenceFile>> FenceFile::open(const std::filesystem::path& path) {
  using R = Result<std::unique_ptr<FenceFile>>;
  core::Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) {
    return R::failure(errnoText("open fence file " + path.string(), errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return R::failure(errnoText("stat " + path.string(), errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return R::failure("fence file " + path.string() + " is not a regular file");
  }
  // Readable by the PostgreSQL OS user whatever our umask; grown, never shrunk.
  if ((st.st_mode & 07777) != 0644 && ::fchmod(fd.get(), 0644) != 0) {
    return R::failure(errnoText("chmod " + path.string(), errno));
  }
  if (st.st_size < FULCRUM_FENCE_FILE_SIZE && ::ftruncate(fd.get(), FULCRUM_FENCE_FILE_SIZE) != 0) {
    return R::failure(errnoText("size " + path.string(), errno));
  }
  void* map = ::mmap(nullptr, FULCRUM_FENCE_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (map == MAP_FAILED) {
    return R::failure(errnoText("mmap " + path.string(), errno));
  }
  auto* layout = static_cast<FulcrumFenceLayout*>(map);
  if (loadField(layout->magic) != FULCRUM_FENCE_MAGIC ||
      loadField(layout->version) != FULCRUM_FENCE_VERSION) {
    // Deadlines first: a reader that sees the magic sees them disarmed.
    storeField<int64_t>(layout->deadline_boottime_ns, 0);
    storeField<int64_t>(layout->deadline_realtime_ns, 0);
    storeField<uint64_t>(layout->version, FULCRUM_FENCE_VERSION);
    storeField<uint64_t>(layout->magic, FULCRUM_FENCE_MAGIC);
  }
  return R::success(std::unique_ptr<FenceFile>(new FenceFile(path, layout)));
}

FenceFile::FenceFile(std::filesystem::path path, FulcrumFenceLayout* map)
    : path_(std::move(path)), map_(map) {}

FenceFile::~FenceFile() {
  ::munmap(map_, FULCRUM_FENCE_FILE_SIZE);  // the deadlines stay in the file
}

void FenceFile::arm(core::TimePoint deadline) {
  // Both conversions are taken at one instant; the clocks tick at the same rate from there on
  // (BOOTTIME also across a suspend, which only makes the fence hold earlier).
  const int64_t left =
      std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - std::chrono::steady_clock::now())
          .count();
  const int64_t boot = clockNs(CLOCK_BOOTTIME) + left;
  const int64_t real = clockNs(CLOCK_REALTIME) + left;
  // A deadline already past must still read as fenced, never as "0 = disarmed" by accident.
  store(std::max<int64_t>(boot, 1), std::max<int64_t>(real, 1));
  deadline_ = deadline;
}

void FenceFile::disarm() {
  store(0, 0);
  deadline_.reset();
}

void FenceFile::store(int64_t boottime_ns, int64_t realtime_ns) {
  // Readers fence when either clock passed its deadline, so a reader between the two stores
  // sees one old and one new deadline: at worst fenced a moment early, never late.
  storeField(map_->deadline_boottime_ns, boottime_ns);
  storeField(map_->deadline_realtime_ns, realtime_ns);
}

FulcrumFenceLayout FenceFile::read() const {
  FulcrumFenceLayout copy{};
  copy.magic = loadField(map_->magic);
  copy.version = loadField(map_->version);
  copy.deadline_boottime_ns = loadField(map_->deadline_boottime_ns);
  copy.deadline_realtime_ns = loadField(map_->deadline_realtime_ns);
  return copy;
}

std::string_view fenceLibraryBytes() {
  return std::string_view(fulcrum_fence_library_begin,
                          static_cast<size_t>(fulcrum_fence_library_end - fulcrum_fence_library_begin));
}

int fenceLibraryPgMajor() {
  return FULCRUM_FENCE_PG_MAJOR;
}

Status writeFenceLibrary(const std::filesystem::path& path) {
  // Owned by whoever runs the agent (OsUser{}: no chown), readable by the PostgreSQL OS user.
  return writeFileAs(OsUser{}, path, std::string(fenceLibraryBytes()), 0644);
}

Status checkFenceLibraryFits(std::string_view server_version) {
  // "postgres (PostgreSQL) 15.18 (Debian ...)": the major is the number after ") ".
  const std::string expected = std::to_string(fenceLibraryPgMajor());
  const size_t at = server_version.find(") ");
  int major = 0;
  if (at != std::string_view::npos) {
    const char* begin = server_version.data() + at + 2;
    std::from_chars(begin, server_version.data() + server_version.size(), major);
  }
  if (major == fenceLibraryPgMajor()) {
    return Status::success();
  }
  std::string_view line = server_version.substr(0, server_version.find('\n'));
  return Status::failure("this Fulcrum build's fence library (fulcrum_fence.so) is for PostgreSQL " +
                         expected + ", but the server reports '" + std::string(line) +
                         "': set [db] pg_bin to PostgreSQL " + expected +
                         "'s bin directory, or build Fulcrum against that server's headers");
}

}  // namespace fulcrum::db
