#pragma once
// What every listener of a worker does the same way, in one place: accept (core::Acceptor:
// batches, the firewall, descriptor exhaustion), cap the connections (max_connections and a
// per-address cap), make room at the cap by closing the oldest idle connection, and drain. The
// lb's HTTP proxy and TCP frontends, web nodes, the stats listener and the agents all keep their
// connections in one of these, so a fix to any of it lands once.
//
// T is a connection class with public `T* prev` and `T* next` (the intrusive list), and:
//   bool idle() const;            nothing in progress: closing it loses no work
//   void evict();                 close now (to make room)
//   void drain();                 graceful stop: close if idle, else after the current exchange
//   core::IpAddress peerIp() const;
// and may have `void start()`, called once it is in the set (it may close inside). A connection
// calls remove(this) exactly once as it closes.
#include <functional>
#include <string>
#include <utility>

#include "core/acceptor.h"
#include "core/client_table.h"
#include "core/connection_list.h"
#include "core/counter.h"
#include "core/event_loop.h"

namespace fulcrum::core {

struct ConnectionLimits {
  size_t max_connections = 20000;
  // Open connections per client address (its conn_per_ip), and any other per-address state
  // the owner keeps there; null: no cap. Not owned; may be shared by several workers.
  ClientTable* per_address = nullptr;
  // At max_connections, close the oldest idle connection for a new one (HTTP: an idle
  // keep-alive connection is cheap to lose), or refuse the new one (a database session is not).
  bool evict_idle = true;
  Counter* refused = nullptr;  // counted when a connection is closed at accept for a cap
  Counter* evicted = nullptr;  // counted when an idle connection made room
};

template <typename T>
class ConnectionSet {
 public:
  // `make` builds the connection for an admitted peer (and links nothing: the set does), or
  // returns null when it cannot (the descriptor is then closed, counted as refused).
  using Make = std::function<T*(Fd fd, const SocketAddress& peer)>;

  ConnectionSet(EventLoop& loop, Fd listener, std::string what, ConnectionLimits limits, Make make)
      : loop_(loop),
        acceptor_(loop, std::move(listener), std::move(what),
                  [this](Fd fd, const SocketAddress& peer) { accept(std::move(fd), peer); }),
        limits_(limits),
        make_(std::move(make)) {}

  ~ConnectionSet() { closeAll(); }
  ConnectionSet(const ConnectionSet&) = delete;
  ConnectionSet& operator=(const ConnectionSet&) = delete;

  Acceptor& acceptor() { return acceptor_; }
  size_t size() const { return list_.size(); }
  bool draining() const { return draining_; }

  // `c` is closing: it leaves the set, its address's count drops and the listener may resume.
  void remove(T* c) {
    list_.unlink(c, loop_);
    if (limits_.per_address != nullptr) {
      limits_.per_address->closeConnection(c->peerIp());
    }
    acceptor_.connectionClosed();
  }

  // Stops accepting and asks every connection to finish; `on_idle` runs (posted) once none is left.
  void drain(std::function<void()> on_idle) {
    draining_ = true;
    acceptor_.close();
    list_.forEach([](T* c) { c->drain(); });
    list_.whenEmpty(loop_, std::move(on_idle));
  }

  // At shutdown, with the loop no longer running: stops listening and deletes every connection
  // still open. Owners call it first in their destructor, while what the connections use lives.
  void closeAll() {
    acceptor_.close();
    list_.deleteAll();
  }

  template <typename F>
  void forEach(F&& fn) {
    list_.forEach(std::forward<F>(fn));
  }

 private:
  // The oldest connections looked at for an idle one: bounded, whatever the set's size.
  static constexpr size_t kEvictionScan = 64;

  void accept(Fd fd, const SocketAddress& peer) {
    if (limits_.per_address != nullptr && !limits_.per_address->openConnection(peer.ip())) {
      count(limits_.refused);
      return;  // closed by fd's destructor, before a byte is read
    }
    if (list_.size() >= limits_.max_connections && !makeRoom()) {
      if (limits_.per_address != nullptr) {
        limits_.per_address->closeConnection(peer.ip());
      }
      count(limits_.refused);
      return;
    }
    T* c = make_(std::move(fd), peer);
    if (c == nullptr) {
      if (limits_.per_address != nullptr) {
        limits_.per_address->closeConnection(peer.ip());
      }
      count(limits_.refused);
      return;
    }
    list_.link(c);
    if constexpr (requires { c->start(); }) {
      c->start();
    }
  }

  bool makeRoom() {
    if (!limits_.evict_idle) {
      return false;
    }
    T* victim = list_.oldestWhere([](T* c) { return c->idle(); }, kEvictionScan);
    if (victim == nullptr) {
      return false;
    }
    count(limits_.evicted);
    victim->evict();  // calls remove()
    return true;
  }

  static void count(Counter* counter) {
    if (counter != nullptr) {
      counter->add();
    }
  }

  EventLoop& loop_;
  Acceptor acceptor_;
  ConnectionLimits limits_;
  Make make_;
  ConnectionList<T> list_;
  bool draining_ = false;
};

}  // namespace fulcrum::core
