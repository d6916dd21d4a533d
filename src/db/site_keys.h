#pragma once
// What the database agents keep in etcd, read back and checked before anything is believed.
// Anyone who can write to etcd can put anything under a site's prefix (an operator's typo, a
// stale key from an older build, an attacker): every key and value is validated here, pure and
// unit-tested, and whatever is ignored is reported with its key and why, so the agent logs it.
//
// Keys under sitePrefix(site):
//   initialize           the cluster's identity (InitRecord), permanent
//   leader               the leader's node name, bound to its lease
//   sync                 synchronous mode's promotable set (sync_state.h), permanent
//   switchover           a switchover intent (switchover.h), bound to the old leader's member lease
//   restore              a point-in-time restore under way (RestoreHold), bound to the restoring
//                        leader's member lease
//   pause                maintenance mode (PauseRecord), permanent until `fulcrum db resume`
//   scheduled            a switchover planned for later (ScheduledSwitchover), permanent until
//                        carried out, cancelled, or dropped by a leader that did not plan it
//   members/<node>       one record per [[db.node]], bound to that node's own lease
//   history              when and why each timeline began (cluster_history.h), permanent; read
//                        only on request (`fulcrum db history`) and by a new leader adding its line
// Only these exact keys are read (one txn), so garbage under other keys costs nothing.
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "db/agent_state.h"
#include "db/etcd_codec.h"
#include "db/switchover.h"
#include "db/sync_state.h"

namespace fulcrum::db {

// The initialize key. Created before initdb (Initializing, by the node that runs it), then set to
// the new cluster's system identifier (Initialized). Once it exists no node ever runs initdb again:
// a node without data clones the leader, and a node, leader or data directory of another system
// identifier is refused (Patroni stores the identifier the same way).
struct InitRecord {
  enum class State {
    Initializing,  // `node` runs initdb; nobody else may
    Initialized,   // the cluster exists; `sysid` is its identifier
    Unknown,       // a value from an older build (a bare node name) or unreadable: the cluster
                   // exists, its identifier is not recorded yet (the leader records it)
  };
  State state = State::Unknown;
  std::string node;               // who initialized it ("" when unknown)
  std::optional<uint64_t> sysid;  // Initialized only
};
std::string encodeInit(const InitRecord& record);
// Never fails: anything that is not a well-formed record reads as Unknown (the cluster exists).
InitRecord decodeInit(std::string_view value);

// The restore key (`fulcrum restore`, agent_restore.cpp). While it says Switching, every other
// agent keeps its PostgreSQL stopped and takes no part in elections (the restoring node holds the
// leader key throughout); Done: they clone the restored leader; Failed: they carry on as before.
struct RestoreHold {
  enum class State { Switching, Done, Failed };
  std::string id;    // the restore's id, as the operator's command saw it
  std::string node;  // the restoring node (the leader)
  State state = State::Switching;
  uint32_t timeline = 0;  // Done: the restored primary's new timeline
  bool operator==(const RestoreHold&) const = default;
};
std::string restoreKey(std::string_view site);
std::string encodeRestoreHold(const RestoreHold& hold);
std::optional<RestoreHold> decodeRestoreHold(std::string_view value);

// The pause key (`fulcrum db pause`): while it exists no replica takes the leader key by itself
// (Patroni's maintenance mode); switchovers and manual failovers still work.
struct PauseRecord {
  std::string by;     // who paused it ("operator", a host name)
  int64_t since = 0;  // unix seconds
  bool operator==(const PauseRecord&) const = default;
};
std::string pauseKey(std::string_view site);
std::string encodePause(const PauseRecord& record);
std::optional<PauseRecord> decodePause(std::string_view value);

// The scheduled key (`fulcrum db switchover --at TIME`): the leader `from` hands over to `to`
// ("" any healthy replica) once `at` (unix seconds) has come, if it still leads then; a new
// leader drops a schedule it did not make (Patroni's scheduled switchover).
struct ScheduledSwitchover {
  std::string from;
  std::string to;
  int64_t at = 0;
  bool operator==(const ScheduledSwitchover&) const = default;
};
std::string scheduledKey(std::string_view site);
std::string encodeScheduled(const ScheduledSwitchover& scheduled);
std::optional<ScheduledSwitchover> decodeScheduled(std::string_view value);

// Values larger than these are ignored unread (a record is a few hundred bytes; etcd accepts up
// to 1.5 MB, which would cost every agent a parse per tick).
inline constexpr size_t kMaxMemberBytes = 4096;
inline constexpr size_t kMaxSmallValueBytes = 1024;  // leader, initialize, switchover
inline constexpr size_t kMaxSyncBytes = 8192;

// The exact keys read every tick, in the order readSite() expects their values.
std::vector<std::string> siteKeys(std::string_view site, const std::set<std::string>& nodes);

struct IgnoredKey {
  std::string key;
  std::string why;
  bool operator==(const IgnoredKey&) const = default;
};

// The leader key as read.
struct LeaderKey {
  enum class State {
    Free,      // absent
    Held,      // a configured node's name, bound to a lease: `name` leads
    Unleased,  // present without a lease (written by hand): counts as free once it has stayed
               // unchanged for a whole lease TTL (the named leader, if alive, re-binds it
               // before; if not, its own lease has expired by then)
    Foreign,   // bound to a lease but naming no configured node: nobody leads, and the key is
               // not free until that lease expires
  };
  State state = State::Free;
  std::string name;
  etcd::LeaseId lease = 0;
  int64_t mod_revision = 0;
};

// One consistent read of a site's keys, validated.
struct SiteView {
  LeaderKey leader;
  std::vector<MemberRecord> members;  // only configured nodes, each under its own key
  std::optional<SyncState> sync;
  std::optional<SwitchoverIntent> intent;
  std::optional<RestoreHold> restore;
  std::optional<PauseRecord> pause;
  std::optional<ScheduledSwitchover> scheduled;
  std::string scheduled_value;  // as stored (compare-and-delete target)
  std::optional<InitRecord> init;
  int64_t init_mod_revision = 0;
  std::string init_value;  // as stored (compare-and-put target)
  std::vector<IgnoredKey> ignored;
};

// `values[i]` is the value of siteKeys(site, nodes)[i] (nullopt: absent).
SiteView readSite(std::string_view site, const std::set<std::string>& nodes,
                  const std::vector<std::optional<etcd::KeyValue>>& values);

// A member record under `key` as the watch delivers it: nullopt unless `key` is members/<node> of
// a configured node, the value is small enough, decodes, and names that node.
std::optional<MemberRecord> checkedMember(std::string_view site, const std::set<std::string>& nodes,
                                          std::string_view key, std::string_view value, std::string* why);

}  // namespace fulcrum::db
