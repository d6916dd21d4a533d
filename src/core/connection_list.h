#pragma once
// What every listener of a worker does the same way: keep the live connections in an
// intrusive list and, when draining, learn when the last one is gone (accepting them is
// core/acceptor.h).
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <utility>

#include "core/address.h"
#include "core/event_loop.h"
#include "core/log.h"
#include "core/socket.h"

namespace fulcrum::core {

// An intrusive list of live connections, newest first; T has public `T* prev` and `T* next`
// members.
template <typename T>
class ConnectionList {
 public:
  void link(T* c) {
    c->next = head_;
    c->prev = nullptr;
    if (head_ != nullptr) {
      head_->prev = c;
    } else {
      tail_ = c;
    }
    head_ = c;
    ++size_;
  }

  // Unlinks `c`; when a drain is waiting and this was the last connection, its callback is
  // posted to `loop` (never run from inside a connection's own callback).
  void unlink(T* c, EventLoop& loop) {
    if (c->prev != nullptr) {
      c->prev->next = c->next;
    } else {
      head_ = c->next;
    }
    if (c->next != nullptr) {
      c->next->prev = c->prev;
    } else {
      tail_ = c->prev;
    }
    c->prev = c->next = nullptr;
    --size_;
    notifyIfEmpty(loop);
  }

  // Calls `fn(T*)` for every connection; `fn` may unlink the one it is given.
  template <typename F>
  void forEach(F&& fn) {
    for (T* c = head_; c != nullptr;) {
      T* next = c->next;
      fn(c);
      c = next;
    }
  }

  // The first connection from the oldest for which `pred(T*)` holds, looking at no more than
  // `limit` of them (a bounded walk, whatever the list's length); null if none.
  template <typename P>
  T* oldestWhere(P&& pred, size_t limit) const {
    T* c = tail_;
    for (size_t i = 0; c != nullptr && i < limit; ++i, c = c->prev) {
      if (pred(c)) {
        return c;
      }
    }
    return nullptr;
  }

  // Runs `on_empty` (posted to `loop`) once the list is empty: now, if it already is.
  void whenEmpty(EventLoop& loop, std::function<void()> on_empty) {
    on_empty_ = std::move(on_empty);
    notifyIfEmpty(loop);
  }

  // Deletes every connection still listed (at shutdown, with the loop no longer running).
  void deleteAll() {
    while (head_ != nullptr) {
      T* c = head_;
      head_ = c->next;
      --size_;
      delete c;
    }
    tail_ = nullptr;
  }

  size_t size() const { return size_; }

 private:
  void notifyIfEmpty(EventLoop& loop) {
    if (size_ == 0 && on_empty_) {
      loop.post(std::exchange(on_empty_, nullptr));
    }
  }

  T* head_ = nullptr;
  T* tail_ = nullptr;
  size_t size_ = 0;
  std::function<void()> on_empty_;
};

}  // namespace fulcrum::core
