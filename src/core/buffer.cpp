#include "core/buffer.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>
#include <vector>

namespace fulcrum::core {

namespace {

// Per-thread free list of kBlockSize blocks; bounded so a burst does not pin memory forever.
struct BlockPool {
  std::vector<char*> free;
  ~BlockPool() {
    for (char* p : free) {
      std::free(p);
    }
  }
  char* get() {
    if (!free.empty()) {
      char* p = free.back();
      free.pop_back();
      return p;
    }
    return static_cast<char*>(std::malloc(Buffer::kBlockSize));
  }
  void put(char* p) {
    if (free.size() < 1024) {
      free.push_back(p);
    } else {
      std::free(p);
    }
  }
};

thread_local BlockPool t_pool;

}  // namespace

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)),
      read_(std::exchange(other.read_, 0)),
      write_(std::exchange(other.write_, 0)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
    read_ = std::exchange(other.read_, 0);
    write_ = std::exchange(other.write_, 0);
  }
  return *this;
}

void Buffer::release() {
  if (data_ != nullptr) {
    if (capacity_ == kBlockSize) {
      t_pool.put(data_);
    } else {
      std::free(data_);
    }
  }
  data_ = nullptr;
  capacity_ = read_ = write_ = 0;
}

void Buffer::consume(size_t n) {
  read_ += n;
  if (read_ >= write_) {
    read_ = write_ = 0;
  }
}

void Buffer::erase(size_t offset, size_t n) {
  if (n == 0) {
    return;
  }
  char* at = data_ + read_ + offset;
  std::memmove(at, at + n, size() - offset - n);
  write_ -= n;
}

void Buffer::reserveTotal(size_t total) {
  if (data_ == nullptr && total <= kBlockSize) {
    data_ = t_pool.get();
    capacity_ = kBlockSize;
    return;
  }
  size_t live = write_ - read_;
  if (total <= capacity_) {
    // Enough room once the unread bytes move to the front.
    std::memmove(data_, data_ + read_, live);
    read_ = 0;
    write_ = live;
    return;
  }
  size_t cap = kBlockSize;
  while (cap < total) {
    cap *= 2;
  }
  char* p = static_cast<char*>(std::malloc(cap));
  if (live > 0) {
    std::memcpy(p, data_ + read_, live);
  }
  release();
  data_ = p;
  capacity_ = cap;
  read_ = 0;
  write_ = live;
}

char* Buffer::prepare(size_t min) {
  if (capacity_ - write_ < min) {
    reserveTotal(size() + min);
  }
  return data_ + write_;
}

void Buffer::append(std::string_view bytes) {
  if (bytes.empty()) {
    return;
  }
  char* p = prepare(bytes.size());
  std::memcpy(p, bytes.data(), bytes.size());
  write_ += bytes.size();
}

ssize_t Buffer::readFrom(int fd, size_t max_total) {
  size_t have = size();
  if (have >= max_total) {
    errno = ENOBUFS;
    return -1;
  }
  size_t want = max_total - have;
  if (want > kBlockSize) {
    want = kBlockSize;
  }
  // Read into the free tail when there is room; grow only when the tail is small.
  if (data_ == nullptr || capacity_ - write_ < 1024) {
    prepare(want);
  }
  size_t room = capacity_ - write_;
  if (room > want) {
    room = want;
  }
  ssize_t n = ::recv(fd, data_ + write_, room, 0);
  if (n > 0) {
    write_ += static_cast<size_t>(n);
  }
  return n;
}

ssize_t Buffer::writeTo(int fd) {
  if (empty()) {
    return 0;
  }
  ssize_t n = ::send(fd, data_ + read_, size(), MSG_NOSIGNAL);
  if (n > 0) {
    consume(static_cast<size_t>(n));
  }
  return n;
}

}  // namespace fulcrum::core
