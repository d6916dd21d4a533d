#pragma once
// The JSON side of etcd's v3 gRPC gateway (etcd 3.4, paths under /v3/): request bodies and
// response parsing, kept free of I/O so they are unit-tested on their own.
//
// The gateway speaks the proto3 JSON mapping: bytes fields (keys, values) are base64, int64
// fields (revisions, lease IDs, TTLs) are JSON strings ("7587823380406781187" does not fit a
// double), and fields holding their default value (0, false, "") are left out entirely, so a
// missing "TTL" means 0 and a missing "succeeded" means false.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/result.h"

namespace fulcrum::db::etcd {

using LeaseId = int64_t;

// Standard base64 (RFC 4648 §4) with padding, as Go's encoding/json writes []byte.
std::string base64Encode(std::string_view bytes);
// Strict: only the standard alphabet, length a multiple of 4, '=' only as final padding.
std::optional<std::string> base64Decode(std::string_view text);

// The range_end that selects every key starting with `prefix` (clientv3.GetPrefixRangeEnd):
// the prefix with its last byte below 0xff incremented and the rest dropped. An empty or
// all-0xff prefix gives "\0", etcd's "to the end of the keyspace".
std::string prefixEnd(std::string_view prefix);

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  LeaseId lease = 0;  // 0: not bound to a lease
};

struct Lease {
  LeaseId id = 0;
  int64_t ttl_seconds = 0;  // as granted: etcd raises a TTL below its minimum
};

// A txn comparison (etcdserverpb.Compare with result EQUAL).
struct TxnCompare {
  enum class Target { CreateRevision, ModRevision, Value };
  Target target = Target::Value;
  std::string key;
  int64_t revision = 0;  // CreateRevision (0 means "the key does not exist") or ModRevision
  std::string value;     // Target::Value
};

// A txn operation (etcdserverpb.RequestOp): a put, a delete, or a read of one key or range.
struct TxnOp {
  enum class Kind { Put, Delete, Range };
  Kind kind = Kind::Put;
  std::string key;
  std::string value;      // Put
  LeaseId lease = 0;      // Put
  std::string range_end;  // Delete and Range; empty: just `key`
};

// Request bodies, ready to POST.
std::string rangeRequest(std::string_view key, std::string_view range_end = {});
std::string putRequest(std::string_view key, std::string_view value, LeaseId lease);
std::string deleteRangeRequest(std::string_view key, std::string_view range_end = {});
std::string txnRequest(const std::vector<TxnCompare>& compare, const std::vector<TxnOp>& success,
                       const std::vector<TxnOp>& failure = {});
std::string leaseGrantRequest(int64_t ttl_seconds);
std::string leaseIdRequest(LeaseId id);  // keepalive, revoke

// Response parsing. Each takes a 200 response body; a malformed body is an error, never an
// exception.
Result<std::vector<KeyValue>> parseRangeResponse(std::string_view body);
Result<Lease> parseLeaseGrantResponse(std::string_view body);
// The keepalive endpoint is a stream: the body is newline-separated messages, each
// {"result": LeaseKeepAliveResponse} or {"error": {...}}. Returns the TTL of the first
// result in seconds; 0 means the lease no longer exists.
Result<int64_t> parseKeepAliveResponse(std::string_view body);
Result<bool> parseTxnResponse(std::string_view body);  // "succeeded"
// The key-values read by each Range op of a txn, in op order (a txn of reads only).
Result<std::vector<std::vector<KeyValue>>> parseTxnRangeResponses(std::string_view body);
Result<int64_t> parseDeleteRangeResponse(std::string_view body);  // "deleted"
Status parsePutResponse(std::string_view body);

// An error answer of the gateway, {"error": "...", "message": "...", "code": N} (N a gRPC code),
// or a stream's {"error": {"grpc_code": N, "message": "..."}}.
struct GatewayError {
  int grpc_code = 0;  // 0 when the body named none (e.g. a plain-text 404)
  std::string message;
};
GatewayError parseGatewayError(int http_status, std::string_view body);

// gRPC status codes the client acts on.
inline constexpr int kGrpcNotFound = 5;
inline constexpr int kGrpcUnavailable = 14;

// etcd's answer from a member that has no leader (a minority, or a cluster without quorum), to a
// call sent with `hasleader: true`: refused before anything was proposed, so nothing was applied.
bool isNoLeader(const GatewayError& error);

}  // namespace fulcrum::db::etcd
