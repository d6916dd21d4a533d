#include "db/etcd_client.h"

#include <thread>
#include <utility>
#include <vector>

namespace fulcrum::db {

namespace {

using etcd::TxnCompare;
using etcd::TxnOp;

TxnCompare valueIs(std::string_view key, std::string_view value) {
  TxnCompare c;
  c.target = TxnCompare::Target::Value;
  c.key = key;
  c.value = value;
  return c;
}

TxnOp putOp(std::string_view key, std::string_view value, LeaseId lease) {
  TxnOp op;
  op.kind = TxnOp::Kind::Put;
  op.key = key;
  op.value = value;
  op.lease = lease;
  return op;
}

// Asks etcd to refuse the call at once ("etcdserver: no leader") when the member has no leader,
// instead of holding it until etcd's own request timeout (5 s and more) expires: the gRPC
// metadata `hasleader: true` (clientv3's WithRequireLeader), which the JSON gateway forwards from
// a Grpc-Metadata- header.
constexpr std::string_view kRequireLeader = "Grpc-Metadata-hasleader: true\r\n";
// Between two rounds over the members that answered "no leader".
constexpr std::chrono::milliseconds kNoLeaderPause{50};

template <typename T>
Result<T> forward(const Result<std::string>& failed) {
  return Result<T>::failure(failed.error);
}

}  // namespace

EtcdClient::EtcdClient(EtcdClientOptions options) : options_(std::move(options)) {
  http::ClientOptions client;
  client.connect_timeout = options_.connect_timeout;
  client.tls = options_.tls;
  for (const core::SocketAddress& endpoint : options_.endpoints) {
    endpoints_.emplace_back(endpoint, client);
  }
}

uint64_t EtcdClient::connectionsOpened() const {
  uint64_t total = 0;
  for (const http::BlockingClient& endpoint : endpoints_) {
    total += endpoint.connectionsOpened();
  }
  return total;
}

void EtcdClient::answeredBy(size_t index) {
  preferred_ = index;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    if (i != index) {
      endpoints_[i].close();
    }
  }
}

Result<std::string> EtcdClient::call(std::string_view path, const std::string& body, Replay replay,
                                     bool not_found_ok) {
  using R = Result<std::string>;
  using SteadyClock = std::chrono::steady_clock;
  const std::string what = "etcd " + std::string(path);
  const size_t count = options_.endpoints.size();
  if (count == 0) {
    return R::failure(what + ": no endpoints configured");
  }
  auto deadline = SteadyClock::now() + options_.request_timeout;
  if (cap_ && *cap_ < deadline) {
    deadline = *cap_;
  }
  const size_t first = preferred_;
  std::string errors;
  auto note = [&](const std::string& error) { errors += (errors.empty() ? "" : "; ") + error; };
  auto failed = [&](size_t index, const std::string& why) {
    preferred_ = (index + 1) % count;  // the next call starts with the next endpoint
    if (on_endpoint_failed_) {
      on_endpoint_failed_(options_.endpoints[index], why);
    }
  };
  // The endpoints this call still tries, in order. One that answered "no leader" is tried again
  // after a pause while the deadline allows (the cluster may be electing a leader: half a second
  // with `up`'s timing); one that failed otherwise is not.
  std::vector<size_t> order;
  for (size_t i = 0; i < count; ++i) {
    order.push_back((first + i) % count);
  }
  for (bool first_round = true; !order.empty(); first_round = false) {
    std::vector<size_t> no_leader;
    for (size_t k = 0; k < order.size(); ++k) {
      const auto now = SteadyClock::now();
      if (now >= deadline) {
        note("deadline passed");
        return R::failure(what + ": no endpoint answered: " + errors);
      }
      const size_t index = order[k];
      // An endpoint that accepts but never answers (a frozen member) may take only its share of
      // what is left, so the others still get a turn within the call's deadline.
      http::ClientRequest request;
      request.method = http::Method::Post;
      request.path = path;
      request.body = body;
      request.replay = replay;
      request.headers = kRequireLeader;
      http::ClientOutcome outcome = endpoints_[index].exchange(
          request, now + (deadline - now) / static_cast<int64_t>(order.size() - k));
      if (!outcome.response.ok) {
        failed(index, outcome.response.error);
        if (outcome.request_sent && replay == Replay::OnlyIfUnsent) {
          return R::failure(what + ": " + outcome.response.error + " (the request may have been applied)");
        }
        note(outcome.response.error);
        continue;
      }
      http::ClientResponse& reply = outcome.response.value;
      if (reply.status == 200) {
        answeredBy(index);
        return R::success(std::move(reply.body));
      }
      etcd::GatewayError error = etcd::parseGatewayError(reply.status, reply.body);
      if (not_found_ok && error.grpc_code == etcd::kGrpcNotFound) {
        answeredBy(index);
        return R::success(std::string());
      }
      // A member without a leader (cut off from the quorum, or during an election) refuses at
      // once, having proposed nothing: another member may do better, for a write too.
      if (etcd::isNoLeader(error)) {
        preferred_ = (index + 1) % count;
        no_leader.push_back(index);
        if (first_round) {
          note(options_.endpoints[index].toString() + ": " + error.message);
        }
        continue;
      }
      // Another Unavailable (a read timed out inside etcd) may be answered elsewhere. A write that
      // timed out inside etcd may still be applied: no replay then.
      if (error.grpc_code == etcd::kGrpcUnavailable && replay == Replay::Safe) {
        failed(index, error.message);
        note(options_.endpoints[index].toString() + ": " + error.message);
        continue;
      }
      answeredBy(index);
      return R::failure(what + ": " + error.message);
    }
    if (no_leader.empty() || SteadyClock::now() + kNoLeaderPause >= deadline) {
      break;
    }
    std::this_thread::sleep_for(kNoLeaderPause);
    order = std::move(no_leader);
  }
  return R::failure(what + ": no endpoint answered: " + errors);
}

Result<bool> EtcdClient::txn(const std::string& body) {
  Result<std::string> reply = call("/v3/kv/txn", body, Replay::OnlyIfUnsent);
  if (!reply.ok) {
    return forward<bool>(reply);
  }
  return etcd::parseTxnResponse(reply.value);
}

Result<etcd::Lease> EtcdClient::grantLease(std::chrono::milliseconds ttl) {
  int64_t seconds = (ttl.count() + 999) / 1000;
  if (seconds < 1) {
    seconds = 1;
  }
  // Not replayed: a grant that reached etcd made a lease we would never hear of (it would only
  // expire unused, but one lease per attempt is easier to reason about).
  Result<std::string> reply = call("/v3/lease/grant", etcd::leaseGrantRequest(seconds), Replay::OnlyIfUnsent);
  if (!reply.ok) {
    return forward<etcd::Lease>(reply);
  }
  return etcd::parseLeaseGrantResponse(reply.value);
}

Result<std::chrono::milliseconds> EtcdClient::keepAlive(LeaseId lease) {
  using R = Result<std::chrono::milliseconds>;
  Result<std::string> reply = call("/v3/lease/keepalive", etcd::leaseIdRequest(lease), Replay::Safe);
  if (!reply.ok) {
    return forward<std::chrono::milliseconds>(reply);
  }
  Result<int64_t> ttl = etcd::parseKeepAliveResponse(reply.value);
  if (!ttl.ok) {
    return R::failure(ttl.error);
  }
  return R::success(std::chrono::seconds(ttl.value));
}

Status EtcdClient::revoke(LeaseId lease) {
  Result<std::string> reply = call("/v3/lease/revoke", etcd::leaseIdRequest(lease), Replay::Safe, true);
  return reply.ok ? Status::success() : Status::failure(reply.error);
}

Result<std::optional<KeyValue>> EtcdClient::get(std::string_view key) {
  using R = Result<std::optional<KeyValue>>;
  Result<std::string> reply = call("/v3/kv/range", etcd::rangeRequest(key), Replay::Safe);
  if (!reply.ok) {
    return forward<std::optional<KeyValue>>(reply);
  }
  Result<std::vector<KeyValue>> kvs = etcd::parseRangeResponse(reply.value);
  if (!kvs.ok) {
    return R::failure(kvs.error);
  }
  if (kvs.value.empty()) {
    return R::success(std::nullopt);
  }
  return R::success(std::move(kvs.value.front()));
}

Status EtcdClient::put(std::string_view key, std::string_view value, LeaseId lease) {
  Result<std::string> reply = call("/v3/kv/put", etcd::putRequest(key, value, lease), Replay::OnlyIfUnsent);
  if (!reply.ok) {
    return Status::failure(reply.error);
  }
  return etcd::parsePutResponse(reply.value);
}

Result<bool> EtcdClient::createIfAbsent(std::string_view key, std::string_view value, LeaseId lease) {
  TxnCompare absent;
  absent.target = TxnCompare::Target::CreateRevision;
  absent.key = key;
  absent.revision = 0;
  return txn(etcd::txnRequest({absent}, {putOp(key, value, lease)}));
}

Result<bool> EtcdClient::compareAndPut(std::string_view key, std::string_view expected,
                                       std::string_view value, LeaseId lease) {
  return putIfValue(key, expected, key, value, lease);
}

Result<bool> EtcdClient::putIfValue(std::string_view guard, std::string_view expected, std::string_view key,
                                    std::string_view value, LeaseId lease) {
  return txn(etcd::txnRequest({valueIs(guard, expected)}, {putOp(key, value, lease)}));
}

Result<bool> EtcdClient::compareAndDelete(std::string_view key, std::string_view expected) {
  TxnOp del;
  del.kind = TxnOp::Kind::Delete;
  del.key = key;
  return txn(etcd::txnRequest({valueIs(key, expected)}, {del}));
}

Result<bool> EtcdClient::deleteIfUnchanged(std::string_view key, int64_t mod_revision) {
  TxnCompare unchanged;
  unchanged.target = TxnCompare::Target::ModRevision;
  unchanged.key = key;
  unchanged.revision = mod_revision;
  TxnOp del;
  del.kind = TxnOp::Kind::Delete;
  del.key = key;
  return txn(etcd::txnRequest({unchanged}, {del}));
}

Result<bool> EtcdClient::putIfUnchanged(std::string_view key, int64_t mod_revision, std::string_view value,
                                        LeaseId lease) {
  TxnCompare unchanged;
  unchanged.target = TxnCompare::Target::ModRevision;
  unchanged.key = key;
  unchanged.revision = mod_revision;
  return txn(etcd::txnRequest({unchanged}, {putOp(key, value, lease)}));
}

Result<std::vector<std::optional<KeyValue>>> EtcdClient::getMany(const std::vector<std::string>& keys) {
  using R = Result<std::vector<std::optional<KeyValue>>>;
  std::vector<TxnOp> reads;
  reads.reserve(keys.size());
  for (const std::string& key : keys) {
    TxnOp read;
    read.kind = TxnOp::Kind::Range;
    read.key = key;
    reads.push_back(std::move(read));
  }
  // A txn without comparisons always succeeds; reads only, so it is safe to send again.
  Result<std::string> reply = call("/v3/kv/txn", etcd::txnRequest({}, reads), Replay::Safe);
  if (!reply.ok) {
    return R::failure(reply.error);
  }
  auto ranges = etcd::parseTxnRangeResponses(reply.value);
  if (!ranges.ok) {
    return R::failure(ranges.error);
  }
  if (ranges.value.size() != keys.size()) {
    return R::failure("etcd: malformed txn response (" + std::to_string(ranges.value.size()) + " reads for " +
                      std::to_string(keys.size()) + " keys)");
  }
  std::vector<std::optional<KeyValue>> out;
  out.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    auto& kvs = ranges.value[i];
    if (kvs.empty() || kvs.front().key != keys[i]) {
      out.emplace_back(std::nullopt);
    } else {
      out.emplace_back(std::move(kvs.front()));
    }
  }
  return R::success(std::move(out));
}

Result<int64_t> EtcdClient::deletePrefix(std::string_view prefix) {
  if (prefix.empty()) {
    return Result<int64_t>::failure("etcd: refusing to delete every key (empty prefix)");
  }
  // Deleting a prefix twice deletes the same set: safe to replay.
  Result<std::string> reply =
      call("/v3/kv/deleterange", etcd::deleteRangeRequest(prefix, etcd::prefixEnd(prefix)), Replay::Safe);
  if (!reply.ok) {
    return forward<int64_t>(reply);
  }
  return etcd::parseDeleteRangeResponse(reply.value);
}

Result<std::vector<KeyValue>> EtcdClient::list(std::string_view prefix) {
  Result<std::string> reply =
      call("/v3/kv/range",
           etcd::rangeRequest(prefix.empty() ? std::string_view("\0", 1) : prefix, etcd::prefixEnd(prefix)),
           Replay::Safe);
  if (!reply.ok) {
    return forward<std::vector<KeyValue>>(reply);
  }
  return etcd::parseRangeResponse(reply.value);
}

}  // namespace fulcrum::db
