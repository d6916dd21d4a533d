#pragma once
// What the dashboard remembers on the stats side (main thread only): a bounded ring of samples
// for the 15-minute charts, a bounded log of node state changes with flapping detection, and the
// one-line summary of what is wrong. No clock of its own: every call takes the time (Unix ms), so
// tests run on made-up time.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fulcrum::lb {

// A fixed-capacity ring: push() overwrites the oldest entry once full; [0] is the oldest.
template <class T>
class Ring {
 public:
  explicit Ring(size_t capacity) : items_(capacity == 0 ? 1 : capacity) {}
  void push(T item) {
    items_[(start_ + size_) % items_.size()] = std::move(item);
    if (size_ < items_.size()) {
      ++size_;
    } else {
      start_ = (start_ + 1) % items_.size();
    }
  }
  size_t size() const { return size_; }
  size_t capacity() const { return items_.size(); }
  bool empty() const { return size_ == 0; }
  const T& operator[](size_t i) const { return items_[(start_ + i) % items_.size()]; }
  const T& back() const { return (*this)[size_ - 1]; }

 private:
  std::vector<T> items_;
  size_t start_ = 0;
  size_t size_ = 0;
};

// One point of the site's charts: what happened during the interval ending at t_ms.
struct SitePoint {
  int64_t t_ms = 0;
  double rps = 0;           // client requests per second
  double errors_per_s = 0;  // 5xx answers to clients per second
  double p99_ms = 0;        // of the requests' total time (0: none in the interval)
};

// How a node looks: "ok" and "warn" are normal or degraded, "down" is a failure, "unknown" is
// not checked yet. The dashboard colours by it; `state` is the word shown ("up", "replica").
enum class NodeStatus : uint8_t { Unknown, Ok, Warn, Down };
std::string_view nodeStatusName(NodeStatus status);

struct StateChange {
  int64_t t_ms = 0;
  std::string node;
  std::string from;  // "" on a node's first sighting
  std::string to;
  std::string reason;
  bool flapping = false;  // this change made the node count as flapping
};

class StateLog {
 public:
  // A node flaps when it changed state at least `flap_changes` times in the last `flap_window_ms`.
  StateLog(size_t capacity, size_t flap_changes, int64_t flap_window_ms);

  // Records a node's current state; a change (or a first sighting that is not Ok) enters the log.
  // Returns true when this call logged a change.
  bool observe(std::string_view node, std::string_view state, NodeStatus status, std::string_view reason,
               int64_t now_ms);
  bool flapping(std::string_view node, int64_t now_ms) const;
  // Changes within the flap window (what flapping() counts).
  size_t recentChanges(std::string_view node, int64_t now_ms) const;
  // Since when the node is in its current state (its first sighting for a node never changed).
  int64_t since(std::string_view node) const;
  const Ring<StateChange>& changes() const { return log_; }
  size_t flapChanges() const { return flap_changes_; }
  int64_t flapWindowMs() const { return flap_window_ms_; }

 private:
  struct Node {
    std::string state;
    int64_t since_ms = 0;
    std::deque<int64_t> changes;  // times within the window, oldest first
  };
  void forget(Node& node, int64_t now_ms) const;

  Ring<StateChange> log_;
  size_t flap_changes_;
  int64_t flap_window_ms_;
  mutable std::map<std::string, Node, std::less<>> nodes_;
};

// A node as the summary sees it.
struct NodeView {
  std::string name;
  std::string state;
  NodeStatus status = NodeStatus::Unknown;
  std::string detail;  // "HTTP 500", "lag 3 MB"
  int64_t since_ms = 0;
  bool flapping = false;
};

// "all healthy", or what is wrong in words, worst first: "web-02 down for 40 s (connect: Connection
// refused); web-01 flapping".
std::string summarize(const std::vector<NodeView>& nodes, int64_t now_ms);
// "40 s", "3 min", "2 h 5 min".
std::string durationText(int64_t ms);

}  // namespace fulcrum::lb
