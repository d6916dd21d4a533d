#include "db/etcd_codec.h"

#include <openssl/evp.h>

#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>

namespace fulcrum::db::etcd {

namespace {

using nlohmann::json;

bool isBase64Char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// Parses a body without exceptions; a non-object is as bad as malformed text.
std::optional<json> parseObject(std::string_view body) {
  json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return std::nullopt;
  }
  return doc;
}

// An int64 field: a JSON string of digits (proto3 mapping) or, leniently, a JSON integer.
// Absent means 0 (proto3 leaves defaults out).
std::optional<int64_t> int64Field(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) {
    return 0;
  }
  if (it->is_string()) {
    const std::string& text = it->get_ref<const std::string&>();
    int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
      return std::nullopt;
    }
    return value;
  }
  if (it->is_number_integer() && !it->is_number_unsigned()) {
    return it->get<int64_t>();
  }
  if (it->is_number_unsigned()) {
    uint64_t value = it->get<uint64_t>();
    if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return std::nullopt;
    }
    return static_cast<int64_t>(value);
  }
  return std::nullopt;
}

// A bytes field (base64). Absent means empty.
std::optional<std::string> bytesField(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) {
    return std::string();
  }
  if (!it->is_string()) {
    return std::nullopt;
  }
  return base64Decode(it->get_ref<const std::string&>());
}

bool boolField(const json& object, const char* name, bool& out) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) {
    out = false;
    return true;
  }
  if (!it->is_boolean()) {
    return false;
  }
  out = it->get<bool>();
  return true;
}

std::string int64Text(int64_t value) {
  return std::to_string(value);
}

json opJson(const TxnOp& op) {
  if (op.kind == TxnOp::Kind::Put) {
    json put = {{"key", base64Encode(op.key)}, {"value", base64Encode(op.value)}};
    if (op.lease != 0) {
      put["lease"] = int64Text(op.lease);
    }
    return json{{"request_put", std::move(put)}};
  }
  json ranged = {{"key", base64Encode(op.key)}};
  if (!op.range_end.empty()) {
    ranged["range_end"] = base64Encode(op.range_end);
  }
  if (op.kind == TxnOp::Kind::Range) {
    return json{{"request_range", std::move(ranged)}};
  }
  return json{{"request_delete_range", std::move(ranged)}};
}

std::string malformed(std::string_view what) {
  return "etcd: malformed " + std::string(what) + " response";
}

}  // namespace

std::string base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  if (bytes.empty()) {
    return out;
  }
  // EVP_EncodeBlock writes a terminating NUL after the 4*ceil(n/3) characters.
  std::string buffer(out.size() + 1, '\0');
  int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(buffer.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  buffer.resize(static_cast<size_t>(n));
  return buffer;
}

std::optional<std::string> base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return std::nullopt;
  }
  if (text.empty()) {
    return std::string();
  }
  size_t padding = 0;
  if (text.back() == '=') {
    padding = text[text.size() - 2] == '=' ? 2 : 1;
  }
  // EVP_DecodeBlock skips whitespace and keeps padding as zero bytes; check strictly first.
  for (size_t i = 0; i < text.size() - padding; ++i) {
    if (!isBase64Char(text[i])) {
      return std::nullopt;
    }
  }
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) {
    return std::nullopt;
  }
  out.resize(out.size() - padding);
  return out;
}

std::string prefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

std::string rangeRequest(std::string_view key, std::string_view range_end) {
  json body = {{"key", base64Encode(key)}};
  if (!range_end.empty()) {
    body["range_end"] = base64Encode(range_end);
  }
  return body.dump();
}

std::string putRequest(std::string_view key, std::string_view value, LeaseId lease) {
  json body = {{"key", base64Encode(key)}, {"value", base64Encode(value)}};
  if (lease != 0) {
    body["lease"] = int64Text(lease);
  }
  return body.dump();
}

std::string deleteRangeRequest(std::string_view key, std::string_view range_end) {
  json body = {{"key", base64Encode(key)}};
  if (!range_end.empty()) {
    body["range_end"] = base64Encode(range_end);
  }
  return body.dump();
}

std::string txnRequest(const std::vector<TxnCompare>& compare, const std::vector<TxnOp>& success,
                       const std::vector<TxnOp>& failure) {
  json compares = json::array();
  for (const TxnCompare& c : compare) {
    json item = {{"result", "EQUAL"}, {"key", base64Encode(c.key)}};
    if (c.target == TxnCompare::Target::CreateRevision) {
      item["target"] = "CREATE";
      item["create_revision"] = int64Text(c.revision);
    } else if (c.target == TxnCompare::Target::ModRevision) {
      item["target"] = "MOD";
      item["mod_revision"] = int64Text(c.revision);
    } else {
      item["target"] = "VALUE";
      item["value"] = base64Encode(c.value);
    }
    compares.push_back(std::move(item));
  }
  json on_success = json::array();
  for (const TxnOp& op : success) {
    on_success.push_back(opJson(op));
  }
  json on_failure = json::array();
  for (const TxnOp& op : failure) {
    on_failure.push_back(opJson(op));
  }
  return json{{"compare", std::move(compares)},
              {"success", std::move(on_success)},
              {"failure", std::move(on_failure)}}
      .dump();
}

std::string leaseGrantRequest(int64_t ttl_seconds) {
  return json{{"TTL", int64Text(ttl_seconds)}}.dump();
}

std::string leaseIdRequest(LeaseId id) {
  return json{{"ID", int64Text(id)}}.dump();
}

namespace {

// The "kvs" of a RangeResponse object; nullopt when malformed.
std::optional<std::vector<KeyValue>> kvsOf(const json& doc) {
  std::vector<KeyValue> out;
  auto kvs = doc.find("kvs");
  if (kvs == doc.end() || kvs->is_null()) {
    return out;
  }
  if (!kvs->is_array()) {
    return std::nullopt;
  }
  for (const json& item : *kvs) {
    if (!item.is_object()) {
      return std::nullopt;
    }
    auto key = bytesField(item, "key");
    auto value = bytesField(item, "value");
    auto create = int64Field(item, "create_revision");
    auto mod = int64Field(item, "mod_revision");
    auto version = int64Field(item, "version");
    auto lease = int64Field(item, "lease");
    if (!key || !value || !create || !mod || !version || !lease) {
      return std::nullopt;
    }
    out.push_back(KeyValue{std::move(*key), std::move(*value), *create, *mod, *version, *lease});
  }
  return out;
}

}  // namespace

Result<std::vector<KeyValue>> parseRangeResponse(std::string_view body) {
  using R = Result<std::vector<KeyValue>>;
  std::optional<json> doc = parseObject(body);
  if (!doc) {
    return R::failure(malformed("range"));
  }
  auto kvs = kvsOf(*doc);
  if (!kvs) {
    return R::failure(malformed("range"));
  }
  return R::success(std::move(*kvs));
}

Result<std::vector<std::vector<KeyValue>>> parseTxnRangeResponses(std::string_view body) {
  using R = Result<std::vector<std::vector<KeyValue>>>;
  std::optional<json> doc = parseObject(body);
  if (!doc) {
    return R::failure(malformed("txn"));
  }
  std::vector<std::vector<KeyValue>> out;
  auto responses = doc->find("responses");
  if (responses == doc->end() || responses->is_null()) {
    return R::success(std::move(out));
  }
  if (!responses->is_array()) {
    return R::failure(malformed("txn"));
  }
  for (const json& item : *responses) {
    auto range = item.is_object() ? item.find("response_range") : item.end();
    if (!item.is_object() || range == item.end() || !range->is_object()) {
      return R::failure(malformed("txn"));
    }
    auto kvs = kvsOf(*range);
    if (!kvs) {
      return R::failure(malformed("txn"));
    }
    out.push_back(std::move(*kvs));
  }
  return R::success(std::move(out));
}

Result<Lease> parseLeaseGrantResponse(std::string_view body) {
  std::optional<json> doc = parseObject(body);
  if (!doc) {
    return Result<Lease>::failure(malformed("lease grant"));
  }
  auto error = doc->find("error");  // LeaseGrantResponse carries its own error string
  if (error != doc->end() && error->is_string() && !error->get_ref<const std::string&>().empty()) {
    return Result<Lease>::failure("etcd: lease grant: " + error->get<std::string>());
  }
  auto id = int64Field(*doc, "ID");
  auto ttl = int64Field(*doc, "TTL");
  if (!id || !ttl || *id == 0 || *ttl <= 0) {
    return Result<Lease>::failure(malformed("lease grant"));
  }
  return Result<Lease>::success(Lease{*id, *ttl});
}

Result<int64_t> parseKeepAliveResponse(std::string_view body) {
  // The first non-empty line is the one answer to our one request.
  size_t start = body.find_first_not_of("\r\n \t");
  if (start == std::string_view::npos) {
    return Result<int64_t>::failure("etcd: empty lease keepalive response");
  }
  size_t end = body.find('\n', start);
  std::string_view line =
      body.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
  std::optional<json> doc = parseObject(line);
  if (!doc) {
    return Result<int64_t>::failure(malformed("lease keepalive"));
  }
  auto result = doc->find("result");
  if (result == doc->end() || !result->is_object()) {
    GatewayError error = parseGatewayError(200, line);
    return Result<int64_t>::failure("etcd: lease keepalive: " + error.message);
  }
  auto ttl = int64Field(*result, "TTL");
  if (!ttl || *ttl < 0) {
    return Result<int64_t>::failure(malformed("lease keepalive"));
  }
  return Result<int64_t>::success(*ttl);
}

Result<bool> parseTxnResponse(std::string_view body) {
  std::optional<json> doc = parseObject(body);
  bool succeeded = false;
  if (!doc || !boolField(*doc, "succeeded", succeeded)) {
    return Result<bool>::failure(malformed("txn"));
  }
  return Result<bool>::success(succeeded);
}

Result<int64_t> parseDeleteRangeResponse(std::string_view body) {
  std::optional<json> doc = parseObject(body);
  if (!doc) {
    return Result<int64_t>::failure(malformed("delete range"));
  }
  auto deleted = int64Field(*doc, "deleted");
  if (!deleted) {
    return Result<int64_t>::failure(malformed("delete range"));
  }
  return Result<int64_t>::success(*deleted);
}

Status parsePutResponse(std::string_view body) {
  if (!parseObject(body)) {
    return Status::failure(malformed("put"));
  }
  return Status::success();
}

GatewayError parseGatewayError(int http_status, std::string_view body) {
  GatewayError out;
  std::optional<json> doc = parseObject(body);
  if (doc) {
    const json* source = &*doc;
    auto error = doc->find("error");
    if (error != doc->end() && error->is_object()) {
      source = &*error;  // a stream's error message
      if (auto code = int64Field(*source, "grpc_code")) {
        out.grpc_code = static_cast<int>(*code);
      }
    } else if (auto code = int64Field(*source, "code")) {
      out.grpc_code = static_cast<int>(*code);
    }
    auto message = source->find("message");
    if (message != source->end() && message->is_string()) {
      out.message = message->get<std::string>();
    } else if (error != doc->end() && error->is_string()) {
      out.message = error->get<std::string>();
    }
  }
  if (out.message.empty()) {
    std::string_view text = body.substr(0, 200);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
      text.remove_suffix(1);
    }
    out.message = "HTTP " + std::to_string(http_status) + (text.empty() ? "" : ": " + std::string(text));
  }
  return out;
}

bool isNoLeader(const GatewayError& error) {
  return error.grpc_code == kGrpcUnavailable && error.message == "etcdserver: no leader";
}

}  // namespace fulcrum::db::etcd
