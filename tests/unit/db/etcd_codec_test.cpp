#include "db/etcd_codec.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

// The gateway's JSON, byte for byte as etcd 3.4.23 writes it (captured with curl).
namespace fulcrum::db::etcd {
namespace {

using nlohmann::json;
using namespace std::string_literals;

TEST(Base64Test, Rfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64Encode(plain), encoded) << plain;
    auto decoded = base64Decode(encoded);
    ASSERT_TRUE(decoded) << encoded;
    EXPECT_EQ(*decoded, plain);
  }
}

TEST(Base64Test, RoundTripsEveryByte) {
  std::string all;
  for (int i = 0; i < 256; ++i) {
    all.push_back(static_cast<char>(i));
  }
  for (size_t len = 0; len <= all.size(); len += 37) {
    std::string bytes = all.substr(0, len);
    auto decoded = base64Decode(base64Encode(bytes));
    ASSERT_TRUE(decoded);
    EXPECT_EQ(*decoded, bytes);
  }
  EXPECT_EQ(base64Encode("\0\xff"s), "AP8=");
  EXPECT_EQ(base64Encode("\xfb\xff"s), "+/8=");  // the standard alphabet, not the URL one
}

TEST(Base64Test, RejectsMalformedInput) {
  EXPECT_FALSE(base64Decode("Zm9"));       // not a multiple of 4
  EXPECT_FALSE(base64Decode("Zm9v!A=="));  // outside the alphabet
  EXPECT_FALSE(base64Decode("Zm=v"));      // padding in the middle
  EXPECT_FALSE(base64Decode("Z==="));      // three padding characters
  EXPECT_FALSE(base64Decode("Zm9v\n"));    // whitespace (OpenSSL alone would skip it)
  EXPECT_FALSE(base64Decode(" Zm9"));
  EXPECT_FALSE(base64Decode("-_8="));  // URL-safe alphabet
}

TEST(PrefixEndTest, IncrementsTheLastByteBelow0xff) {
  EXPECT_EQ(prefixEnd("/fulcrum/"), "/fulcrum0");
  EXPECT_EQ(prefixEnd("a"), "b");
  EXPECT_EQ(prefixEnd("a\xff"s), "b");
  EXPECT_EQ(prefixEnd("a\xfe\xff\xff"s), "a\xff"s);
  EXPECT_EQ(prefixEnd(""), "\0"s);
  EXPECT_EQ(prefixEnd("\xff\xff"s), "\0"s);
}

TEST(RequestTest, RangeAndPutEncodeKeysAndValues) {
  EXPECT_EQ(json::parse(rangeRequest("foo")), json::parse(R"({"key":"Zm9v"})"));
  EXPECT_EQ(json::parse(rangeRequest("foo", "fop")), json::parse(R"({"key":"Zm9v","range_end":"Zm9w"})"));
  EXPECT_EQ(json::parse(putRequest("foo", "bar", 0)), json::parse(R"({"key":"Zm9v","value":"YmFy"})"));
  // int64 fields go out as strings: a lease ID above 2^53 survives exactly.
  EXPECT_EQ(json::parse(putRequest("foo", "", 7587823380406781187)),
            json::parse(R"({"key":"Zm9v","value":"","lease":"7587823380406781187"})"));
  EXPECT_EQ(json::parse(deleteRangeRequest("a", "b")), json::parse(R"({"key":"YQ==","range_end":"Yg=="})"));
  EXPECT_EQ(json::parse(leaseGrantRequest(5)), json::parse(R"({"TTL":"5"})"));
  EXPECT_EQ(json::parse(leaseIdRequest(7587823380406781187)), json::parse(R"({"ID":"7587823380406781187"})"));
}

TEST(RequestTest, TxnCreateIfAbsent) {
  TxnCompare absent;
  absent.target = TxnCompare::Target::CreateRevision;
  absent.key = "/fulcrum/s/leader";
  absent.revision = 0;
  TxnOp put;
  put.key = "/fulcrum/s/leader";
  put.value = "db-01";
  put.lease = 42;
  json got = json::parse(txnRequest({absent}, {put}));
  json want = json::parse(R"({
    "compare": [{"result": "EQUAL", "target": "CREATE", "key": "L2Z1bGNydW0vcy9sZWFkZXI=", "create_revision": "0"}],
    "success": [{"request_put": {"key": "L2Z1bGNydW0vcy9sZWFkZXI=", "value": "ZGItMDE=", "lease": "42"}}],
    "failure": []
  })");
  EXPECT_EQ(got, want);
}

TEST(RequestTest, TxnCompareValueThenDelete) {
  TxnCompare same;
  same.target = TxnCompare::Target::Value;
  same.key = "k";
  same.value = "v";
  TxnOp del;
  del.kind = TxnOp::Kind::Delete;
  del.key = "k";
  json got = json::parse(txnRequest({same}, {del}));
  json want = json::parse(R"({
    "compare": [{"result": "EQUAL", "target": "VALUE", "key": "aw==", "value": "dg=="}],
    "success": [{"request_delete_range": {"key": "aw=="}}],
    "failure": []
  })");
  EXPECT_EQ(got, want);
}

TEST(ResponseTest, RangeWithInt64AsStrings) {
  auto r = parseRangeResponse(
      R"({"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"2",)"
      R"("raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"9","version":"1",)"
      R"("value":"YmFy","lease":"7587823380406781187"}],"count":"1"})");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.value.size(), 1u);
  EXPECT_EQ(r.value[0].key, "foo");
  EXPECT_EQ(r.value[0].value, "bar");
  EXPECT_EQ(r.value[0].create_revision, 2);
  EXPECT_EQ(r.value[0].mod_revision, 9);
  EXPECT_EQ(r.value[0].version, 1);
  EXPECT_EQ(r.value[0].lease, 7587823380406781187);
}

TEST(ResponseTest, RangeOmitsDefaults) {
  // No match: no "kvs", no "count". A key with an empty value and no lease: no "value", no "lease".
  auto none = parseRangeResponse(R"({"header":{"revision":"2"}})");
  ASSERT_TRUE(none.ok);
  EXPECT_TRUE(none.value.empty());
  auto empty = parseRangeResponse(
      R"({"kvs":[{"key":"Zm9v","create_revision":"3","mod_revision":"3","version":"1"}]})");
  ASSERT_TRUE(empty.ok);
  ASSERT_EQ(empty.value.size(), 1u);
  EXPECT_EQ(empty.value[0].value, "");
  EXPECT_EQ(empty.value[0].lease, 0);
  // Plain JSON integers are accepted too.
  auto numbers = parseRangeResponse(R"({"kvs":[{"key":"Zm9v","mod_revision":12}]})");
  ASSERT_TRUE(numbers.ok);
  EXPECT_EQ(numbers.value[0].mod_revision, 12);
}

TEST(ResponseTest, MalformedBodiesAreErrorsNotExceptions) {
  EXPECT_FALSE(parseRangeResponse("").ok);
  EXPECT_FALSE(parseRangeResponse("{").ok);
  EXPECT_FALSE(parseRangeResponse("[]").ok);
  EXPECT_FALSE(parseRangeResponse(R"({"kvs":{}})").ok);
  EXPECT_FALSE(parseRangeResponse(R"({"kvs":[{"key":"!!"}]})").ok);
  EXPECT_FALSE(parseRangeResponse(R"({"kvs":[{"key":"Zm9v","mod_revision":"12x"}]})").ok);
  EXPECT_FALSE(parseRangeResponse(R"({"kvs":[{"key":"Zm9v","mod_revision":"99999999999999999999"}]})").ok);
  EXPECT_FALSE(parseRangeResponse(R"({"kvs":[{"key":"Zm9v","mod_revision":true}]})").ok);
  EXPECT_FALSE(parseTxnResponse(R"({"succeeded":"yes"})").ok);
  EXPECT_FALSE(parseLeaseGrantResponse(R"({"TTL":"5"})").ok);  // no ID
  EXPECT_FALSE(parseKeepAliveResponse("").ok);
  EXPECT_FALSE(parseKeepAliveResponse("not json").ok);
  EXPECT_FALSE(parseDeleteRangeResponse(R"({"deleted":"x"})").ok);
  EXPECT_FALSE(parsePutResponse("oops").ok);
}

TEST(ResponseTest, LeaseGrant) {
  auto r = parseLeaseGrantResponse(
      R"({"header":{"revision":"3","raft_term":"2"},"ID":"4111120280385958932","TTL":"2"})");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.value.id, 4111120280385958932);
  EXPECT_EQ(r.value.ttl_seconds, 2);
  auto refused = parseLeaseGrantResponse(R"({"ID":"1","TTL":"2","error":"lessor: no space"})");
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.error.find("no space"), std::string::npos);
}

TEST(ResponseTest, KeepAliveStream) {
  auto alive = parseKeepAliveResponse(
      "{\"result\":{\"header\":{\"revision\":\"3\"},\"ID\":\"4111120280385958926\",\"TTL\":\"2\"}}\n");
  ASSERT_TRUE(alive.ok) << alive.error;
  EXPECT_EQ(alive.value, 2);
  // An expired or unknown lease: the result has no TTL (0 is left out).
  auto expired = parseKeepAliveResponse("{\"result\":{\"header\":{\"revision\":\"3\"},\"ID\":\"12345\"}}\n");
  ASSERT_TRUE(expired.ok) << expired.error;
  EXPECT_EQ(expired.value, 0);
  // Only the first message counts.
  auto two = parseKeepAliveResponse("{\"result\":{\"TTL\":\"5\"}}\n{\"result\":{\"TTL\":\"7\"}}\n");
  ASSERT_TRUE(two.ok);
  EXPECT_EQ(two.value, 5);
  auto error = parseKeepAliveResponse(
      R"({"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}})");
  EXPECT_FALSE(error.ok);
  EXPECT_NE(error.error.find("no leader"), std::string::npos);
}

TEST(ResponseTest, TxnSucceededIsOmittedWhenFalse) {
  auto yes = parseTxnResponse(
      R"({"header":{"revision":"3"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"}}}]})");
  ASSERT_TRUE(yes.ok);
  EXPECT_TRUE(yes.value);
  auto no = parseTxnResponse(R"({"header":{"cluster_id":"1","revision":"2"}})");
  ASSERT_TRUE(no.ok);
  EXPECT_FALSE(no.value);
}

TEST(ResponseTest, DeleteRangeCount) {
  auto r = parseDeleteRangeResponse(R"({"header":{"revision":"5"},"deleted":"3"})");
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.value, 3);
  auto none = parseDeleteRangeResponse(R"({"header":{"revision":"5"}})");
  ASSERT_TRUE(none.ok);
  EXPECT_EQ(none.value, 0);
}

TEST(GatewayErrorTest, UnaryStreamAndPlainText) {
  GatewayError unary = parseGatewayError(
      404,
      R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  EXPECT_EQ(unary.grpc_code, kGrpcNotFound);
  EXPECT_EQ(unary.message, "etcdserver: requested lease not found");

  GatewayError stream = parseGatewayError(
      200,
      R"({"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"x"}})");
  EXPECT_EQ(stream.grpc_code, kGrpcUnavailable);
  EXPECT_EQ(stream.message, "etcdserver: no leader");

  GatewayError plain = parseGatewayError(404, "Not Found\n");
  EXPECT_EQ(plain.grpc_code, 0);
  EXPECT_EQ(plain.message, "HTTP 404: Not Found");

  GatewayError bad_base64 =
      parseGatewayError(400, R"({"error":"illegal base64 data at input byte 0","code":3})");
  EXPECT_EQ(bad_base64.grpc_code, 3);
  EXPECT_EQ(bad_base64.message, "illegal base64 data at input byte 0");
}

}  // namespace
}  // namespace fulcrum::db::etcd
