#include "db/elector.h"

#include <utility>

#include "db/agent_state.h"

namespace fulcrum::db {

namespace {

// Caps the client's calls for one scope.
class DeadlineCap {
 public:
  DeadlineCap(EtcdClient& client, std::optional<std::chrono::steady_clock::time_point> cap)
      : client_(client) {
    client_.capDeadline(cap);
  }
  ~DeadlineCap() { client_.capDeadline(std::nullopt); }
  DeadlineCap(const DeadlineCap&) = delete;
  DeadlineCap& operator=(const DeadlineCap&) = delete;

 private:
  EtcdClient& client_;
};

}  // namespace

std::string leaderKey(std::string_view site_name) {
  return sitePrefix(site_name) + "leader";
}

Elector::Elector(EtcdClient& client, const core::Clock& clock, ElectorOptions options)
    : client_(client), clock_(clock), options_(std::move(options)), lease_(clock, options_.timing) {}

Result<bool> Elector::tryAcquire() {
  if (lease_.held()) {
    return Result<bool>::success(true);
  }
  // The lease's life starts when etcd handles the grant, which is after this instant.
  const core::TimePoint sent = clock_.now();
  Result<etcd::Lease> grant =
      client_.grantLease(std::chrono::ceil<std::chrono::milliseconds>(options_.timing.ttl));
  if (!grant.ok) {
    return Result<bool>::failure(grant.error);
  }
  const LeaseId id = grant.value.id;
  Result<bool> created = client_.createIfAbsent(options_.key, options_.node, id);
  if (!created.ok) {
    // The txn may have been applied with its answer lost: our lease on the key says so.
    Result<std::optional<KeyValue>> kv = client_.get(options_.key);
    if (!(kv.ok && kv.value && kv.value->lease == id)) {
      client_.revoke(id);  // best effort: an unused lease also expires on its own
      return Result<bool>::failure(created.error);
    }
  } else if (!created.value) {
    client_.revoke(id);
    return Result<bool>::success(false);
  }
  lease_id_ = id;
  lease_.acquired(sent, std::chrono::seconds(grant.value.ttl_seconds));
  last_error_.clear();
  return Result<bool>::success(true);
}

Status Elector::renew() {
  if (!lease_.held()) {
    return Status::failure("not the leader");
  }
  Status status = renewOnce();
  ++(status.ok ? renewals_ok_ : renewals_failed_);
  return status;
}

Status Elector::renewOnce() {
  const core::TimePoint sent = clock_.now();
  // While writes are allowed, no call may outlast the fence deadline: the caller must get control
  // back in time to act on it. (The lease clock is injected; the socket deadlines are steady_clock.)
  std::optional<std::chrono::steady_clock::time_point> cap;
  if (sent < lease_.fenceDeadline()) {
    cap = std::chrono::steady_clock::now() + (lease_.fenceDeadline() - sent);
  }
  DeadlineCap capped(client_, cap);
  Result<std::chrono::milliseconds> ttl = client_.keepAlive(lease_id_);
  if (!ttl.ok) {
    lease_.renewFailed();
    return Status::failure(ttl.error);
  }
  if (ttl.value.count() == 0) {
    lose();
    return Status::failure("leader lease expired");
  }
  // A live lease does not prove the key is ours: it may have been deleted and taken by another.
  Result<std::optional<KeyValue>> kv = client_.get(options_.key);
  if (!kv.ok) {
    lease_.renewFailed();
    return Status::failure(kv.error);
  }
  if (kv.value && kv.value->value == options_.node && kv.value->lease == 0) {
    // Rewritten without its lease (by hand): nobody else can have held it meanwhile, since it
    // never left; bind it to our lease again before anyone treats it as free (others wait a
    // whole TTL, see site_keys.h).
    Result<bool> rebound =
        client_.putIfUnchanged(options_.key, kv.value->mod_revision, options_.node, lease_id_);
    if (!rebound.ok) {
      lease_.renewFailed();
      return Status::failure(rebound.error);
    }
    if (rebound.value) {
      lease_.renewed(sent, ttl.value);
      return Status::success();
    }
    kv = client_.get(options_.key);  // changed meanwhile: judge what it holds now
    if (!kv.ok) {
      lease_.renewFailed();
      return Status::failure(kv.error);
    }
  }
  if (!kv.value || kv.value->lease != lease_id_ || kv.value->value != options_.node) {
    std::string holder = kv.value ? kv.value->value : std::string("nobody");
    LeaseId id = lease_id_;
    lose();
    client_.revoke(id);
    return Status::failure("leadership lost: " + options_.key + " is held by " + holder);
  }
  lease_.renewed(sent, ttl.value);
  return Status::success();
}

LeaseDecision Elector::tick() {
  LeaseDecision decision = lease_.decide();
  if (decision.should_renew) {
    Status status = renew();
    last_error_ = status.ok ? std::string() : status.error;
    decision = lease_.decide();
  }
  return decision;
}

Status Elector::release() {
  if (!lease_.held()) {
    return Status::success();
  }
  LeaseId id = lease_id_;
  lose();  // no write is accepted from here on, before the key can go to anyone else
  return client_.revoke(id);
}

Result<std::optional<std::string>> Elector::currentLeader() {
  using R = Result<std::optional<std::string>>;
  Result<std::optional<KeyValue>> kv = client_.get(options_.key);
  if (!kv.ok) {
    return R::failure(kv.error);
  }
  if (!kv.value) {
    return R::success(std::nullopt);
  }
  return R::success(std::move(kv.value->value));
}

void Elector::lose() {
  lease_.lost();
  lease_id_ = 0;
}

}  // namespace fulcrum::db
