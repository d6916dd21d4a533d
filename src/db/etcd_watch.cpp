#include "db/etcd_watch.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

#include "core/log.h"
#include "core/socket.h"
#include "db/etcd_codec.h"

namespace fulcrum::db {

namespace {

using nlohmann::json;

// A stream message is small (one batch of events); anything larger is a broken stream.
constexpr size_t kMaxMessageBytes = 8 << 20;
// A larger message (someone wrote a large value under the prefix) is not decoded: the owner is
// told to re-read what it needs (on_resync), which reads only its own keys. Decoding 2 MB of JSON
// per write would let any writer stall every agent's loop.
constexpr size_t kMaxDecodedBytes = 64 << 10;

// An int64 field in the proto3 JSON mapping (a string of digits); absent means 0.
int64_t revisionField(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_string()) {
    return it != object.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
  }
  const std::string& text = it->get_ref<const std::string&>();
  int64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

bool flagField(const json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

std::string createRequest(std::string_view prefix, int64_t start_revision) {
  // As EtcdClient::list: an empty prefix is the range ["\0", "\0"), the whole keyspace.
  json create = {{"key", etcd::base64Encode(prefix.empty() ? std::string_view("\0", 1) : prefix)},
                 {"range_end", etcd::base64Encode(etcd::prefixEnd(prefix))}};
  if (start_revision > 0) {
    create["start_revision"] = std::to_string(start_revision);
  }
  return json{{"create_request", std::move(create)}}.dump();
}

}  // namespace

EtcdWatch::EtcdWatch(core::EventLoop& loop, EtcdWatchOptions options, EventCallback on_event,
                     ResyncCallback on_resync)
    : loop_(loop),
      options_(std::move(options)),
      on_event_(std::move(on_event)),
      on_resync_(std::move(on_resync)),
      retry_timer_(loop, [this] { connect(); }),
      deadline_timer_(loop,
                      [this] {
                        fail(phase_ == Phase::Connecting ? "timeout connecting"
                                                         : "timeout waiting for etcd to create the watch");
                      }),
      backoff_(options_.min_backoff) {
  connect();
}

EtcdWatch::~EtcdWatch() {
  stop();
}

void EtcdWatch::stop() {
  closeStream();
  retry_timer_.disarm();
  phase_ = Phase::Stopped;
}

void EtcdWatch::leave(const core::SocketAddress& endpoint, const std::string& why) {
  if (phase_ == Phase::Stopped || options_.endpoints.size() < 2 ||
      options_.endpoints[endpoint_] != endpoint) {
    return;
  }
  if (phase_ == Phase::Idle) {  // waiting to retry it: the retry goes to the next one instead
    endpoint_ = (endpoint_ + 1) % options_.endpoints.size();
    return;
  }
  log::info("etcd watch leaves {}: {}", endpoint.toString(), why);
  fail(why);
}

void EtcdWatch::closeStream() {
  transport_.reset();
  if (fd_) {
    loop_.remove(fd_.get());
    fd_.reset();
  }
  armed_ = 0;
  deadline_timer_.disarm();
  out_.clear();
  in_.clear();
  lines_.clear();
  scanned_ = 0;
  ++generation_;
  phase_ = Phase::Idle;
}

void EtcdWatch::retryAfter(core::Duration delay) {
  retry_timer_.armAfter(delay);
}

void EtcdWatch::fail(const std::string& why) {
  if (phase_ == Phase::Stopped) {
    return;
  }
  const core::SocketAddress& to = options_.endpoints[endpoint_];
  last_error_ = to.toString() + ": " + why;
  // Loud only when a working stream ends; a member staying down would otherwise flood the log.
  if (phase_ == Phase::Streaming) {
    log::warn("etcd watch ended: {}", last_error_);
  } else {
    log::debug("etcd watch: {}", last_error_);
  }
  closeStream();
  endpoint_ = (endpoint_ + 1) % options_.endpoints.size();
  retryAfter(backoff_);
  backoff_ = std::min(backoff_ * 2, options_.max_backoff);
}

void EtcdWatch::connect() {
  if (phase_ == Phase::Stopped) {
    return;
  }
  if (options_.endpoints.empty()) {
    last_error_ = "no etcd endpoints configured";
    return;
  }
  const core::SocketAddress& to = options_.endpoints[endpoint_];
  std::string error;
  fd_ = core::connectTcp(to, error);
  if (!fd_) {
    fail(error);
    return;
  }
  if (!loop_.add(fd_.get(), EPOLLOUT, this)) {
    fail(std::string("epoll: ") + std::strerror(errno));
    return;
  }
  armed_ = EPOLLOUT;
  core::setNoDelay(fd_.get());
  if (options_.tls) {
    transport_ = options_.tls->newClientTransport(fd_.get(), to);  // handshakes with the first write
  } else {
    transport_ = std::make_unique<core::PlainTransport>(fd_.get());
  }
  if (!transport_) {
    fail("TLS: out of memory");
    return;
  }
  const std::string body = createRequest(options_.prefix, revision_ > 0 ? revision_ + 1 : 0);
  // hasleader: a member without a leader refuses the watch, and etcd ends a stream whose member
  // has lost its leader for three election timeouts: the watch moves to a member of the quorum.
  out_.append("POST /v3/watch HTTP/1.1\r\nHost: " + to.toString() +
              "\r\nGrpc-Metadata-hasleader: true\r\nContent-Type: application/json\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\n\r\n" + body);
  response_.reset(http::Method::Post, /*max_body_bytes=*/0);  // endless by design
  phase_ = Phase::Connecting;
  deadline_timer_.armAfter(options_.connect_timeout);
}

void EtcdWatch::onIoEvents(uint32_t events) {
  if (phase_ == Phase::Connecting) {
    onConnected();
    return;  // a response cannot have arrived before the request was sent
  }
  const uint64_t generation = generation_;
  // Whatever woke us: a TLS handshake may go on by a read as much as by a write.
  if (!out_.empty()) {
    flush();
  }
  if (generation == generation_ && (events & (EPOLLIN | EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0) {
    onReadable();
  }
  if (generation == generation_) {
    rearm();
  }
}

void EtcdWatch::rearm() {
  const uint32_t extra = transport_->extraEvents();
  const bool write_waits_for_read = !out_.empty() && (extra & EPOLLIN) != 0;
  const uint32_t want =
      EPOLLIN | (((extra & EPOLLOUT) != 0 || (!out_.empty() && !write_waits_for_read)) ? EPOLLOUT : 0u);
  if (want != armed_ && loop_.modify(fd_.get(), want, this)) {
    armed_ = want;
  }
}

std::string EtcdWatch::ioError(std::string_view what, int err) const {
  std::string reason = transport_->failureReason();
  return reason.empty() ? std::string(what) + ": " + std::strerror(err) : "TLS: " + reason;
}

void EtcdWatch::onConnected() {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err != 0) {
    fail(std::string("connect: ") + std::strerror(err));
    return;
  }
  phase_ = Phase::AwaitingHead;
  deadline_timer_.armAfter(options_.create_timeout);
  flush();
}

void EtcdWatch::flush() {
  while (!out_.empty()) {
    ssize_t n = transport_->write(out_);
    if (n > 0) {
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    }
    fail(ioError("send", n < 0 ? errno : EPIPE));
    return;
  }
  rearm();
}

void EtcdWatch::onReadable() {
  for (;;) {
    ssize_t n = transport_->read(in_, in_.size() + core::Buffer::kBlockSize);
    if (n > 0) {
      if (!consumeInput()) {
        return;
      }
      continue;
    }
    if (n == 0) {
      fail("connection closed by etcd");
      return;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      fail(ioError("recv", errno));
    }
    return;
  }
}

bool EtcdWatch::consumeInput() {
  in_.consume(response_.read(in_.view(), lines_));
  if (phase_ == Phase::AwaitingHead && response_.headDone()) {
    if (response_.status() != 200) {
      fail("HTTP " + std::to_string(response_.status()));
      return false;
    }
    if (response_.bodyKind() != http::BodyKind::Chunked &&
        response_.bodyKind() != http::BodyKind::UntilClose) {
      fail("the watch response is not a stream");
      return false;
    }
    phase_ = Phase::AwaitingCreated;
  }
  if (response_.state() == http::ResponseReader::State::Failed) {
    fail(response_.error());
    return false;
  }
  if (response_.state() == http::ResponseReader::State::Done) {
    fail("etcd ended the stream");
    return false;
  }

  // The gateway ends every message with a newline, wherever the chunk boundaries fall (JSON text
  // never holds a raw newline).
  const uint64_t generation = generation_;
  size_t start = 0;
  // Bytes already searched hold no newline: a large message arriving in many pieces is scanned
  // once, not once per piece.
  for (size_t end; (end = lines_.find('\n', std::max(start, scanned_))) != std::string::npos;
       start = end + 1) {
    if (!handleMessage(std::string_view(lines_).substr(start, end - start)) || generation != generation_) {
      return false;  // the stream is gone (and lines_ with it)
    }
  }
  lines_.erase(0, start);
  scanned_ = lines_.size();
  if (lines_.size() > kMaxMessageBytes) {
    fail("a stream message is over " + std::to_string(kMaxMessageBytes) + " bytes");
    return false;
  }
  return true;
}

bool EtcdWatch::handleMessage(std::string_view line) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
    return true;
  }
  if (line.size() > kMaxDecodedBytes) {
    log::warn(
        "etcd watch: a message of {} bytes under {} was not decoded (a large value written there); "
        "re-reading instead",
        line.size(), options_.prefix);
    if (on_resync_) {
      on_resync_();
    }
    return true;
  }
  json doc = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    fail("malformed stream message");
    return false;
  }
  auto result = doc.find("result");
  if (result == doc.end() || !result->is_object()) {
    fail("etcd: " + etcd::parseGatewayError(200, line).message);
    return false;
  }

  if (flagField(*result, "canceled")) {
    if (revisionField(*result, "compact_revision") > 0) {
      // The revisions we missed are gone: watch from now on, and let on_resync re-read the state.
      log::info("etcd watch: revision {} was compacted, watching from the current one", revision_ + 1);
      revision_ = 0;
      closeStream();
      retryAfter(core::Duration::zero());
      return false;
    }
    auto reason = result->find("cancel_reason");
    fail("watch canceled" + (reason != result->end() && reason->is_string()
                                 ? ": " + reason->get<std::string>()
                                 : std::string()));
    return false;
  }

  if (flagField(*result, "created")) {
    deadline_timer_.disarm();
    backoff_ = options_.min_backoff;
    if (revision_ == 0) {
      // Watching from "now": everything up to the header's revision is the owner's to read.
      revision_ = revisionField(result->value("header", json::object()), "revision");
    }
    if (!last_error_.empty()) {
      log::info("etcd watch on {} created again (at revision {})", options_.endpoints[endpoint_].toString(),
                revision_);
    }
    phase_ = Phase::Streaming;
    if (on_resync_) {
      on_resync_();
    }
    return true;
  }

  auto events = result->find("events");
  if (events == result->end() || !events->is_array() || events->empty()) {
    return true;  // a progress notification
  }
  // An event's kv is the KeyValue a range answers with: reuse that parser on the batch.
  json kvs = json::array();
  for (const json& event : *events) {
    kvs.push_back(event.is_object() ? event.value("kv", json::object()) : json());
  }
  Result<std::vector<etcd::KeyValue>> parsed = etcd::parseRangeResponse(json{{"kvs", kvs}}.dump());
  if (!parsed.ok) {
    fail("malformed watch event");
    return false;
  }
  const uint64_t generation = generation_;
  for (size_t i = 0; i < parsed.value.size(); ++i) {
    etcd::KeyValue& kv = parsed.value[i];
    WatchEvent event;
    // proto3 JSON leaves out the default enum value: no "type" means PUT.
    auto type = (*events)[i].find("type");
    event.type =
        type != (*events)[i].end() && *type == "DELETE" ? WatchEvent::Type::Delete : WatchEvent::Type::Put;
    event.key = std::move(kv.key);
    event.value = std::move(kv.value);
    event.mod_revision = kv.mod_revision;
    revision_ = std::max(revision_, kv.mod_revision);
    if (on_event_) {
      on_event_(event);
    }
    if (generation != generation_) {
      return false;
    }
  }
  return true;
}

}  // namespace fulcrum::db
