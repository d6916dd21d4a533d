#pragma once
// A contiguous byte buffer with a read and a write position. Storage comes from a per-thread
// pool of fixed-size blocks so the request path does not call malloc, and an idle
// connection gives its block back (no memory held by idle keep-alive connections).
#include <sys/types.h>

#include <cstddef>
#include <cstring>
#include <string_view>

namespace fulcrum::core {

class Buffer {
 public:
  static constexpr size_t kBlockSize = 16384;

  Buffer() = default;
  ~Buffer() { release(); }
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  std::string_view view() const { return {data_ + read_, write_ - read_}; }
  const char* data() const { return data_ + read_; }
  size_t size() const { return write_ - read_; }
  bool empty() const { return write_ == read_; }
  size_t capacity() const { return capacity_; }

  char* mutableData() { return data_ + read_; }

  void consume(size_t n);
  // Removes `n` bytes starting `offset` bytes after the read position; later bytes move down.
  void erase(size_t offset, size_t n);
  void append(std::string_view bytes);
  void append(const char* p, size_t n) { append(std::string_view(p, n)); }
  // Space to write into, at least `min` bytes (grows or compacts as needed).
  char* prepare(size_t min);
  size_t writable() const { return capacity_ - write_; }
  void commit(size_t n) { write_ += n; }

  // Reads once from a non-blocking fd into free space (at most `max_total` buffered bytes).
  // Returns read(2)'s result: >0 bytes, 0 on EOF, -1 with errno (EAGAIN when drained).
  ssize_t readFrom(int fd, size_t max_total);
  // Writes buffered bytes once; returns bytes written or -1 with errno.
  ssize_t writeTo(int fd);

  void clear() { read_ = write_ = 0; }
  // Gives storage back to the pool when empty.
  void releaseIfEmpty() {
    if (empty()) {
      release();
    }
  }
  void release();

 private:
  void reserveTotal(size_t total);

  char* data_ = nullptr;
  size_t capacity_ = 0;
  size_t read_ = 0;
  size_t write_ = 0;
};

}  // namespace fulcrum::core
