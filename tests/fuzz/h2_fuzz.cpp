// Fuzzes HTTP/2 connections through the whole proxy, in-process: the real ProxyWorker (h2c with
// prior knowledge) on a manual clock, a client socket that has sent the preface and a raw HTTP/1.1
// server. The input is a script of one-byte operations (modulo their count):
//
//   0 T F S L data  the client sends a frame: type T % 10, flags F, stream S (S % 16 == 15: 0,
//                   else the odd ids 1..29), L bytes of payload (0: the rest of the input)
//   1 V F S         the client sends HEADERS on stream S with flags F and request block V % 8
//   2               one loop iteration           6  the server closes its connection
//   3               the server accepts and reads 7  the client reads
//   4 V             the server answers (V % 4)   8 T time passes (T % 4: 1 s, 3 s, 11 s, 31 s)
//   5 L data        the server sends raw bytes   9 L data  the client sends raw bytes
//
// Checked after each input: the loop settles (no spin), every byte a server got parses as HTTP/1.1
// requests, no more requests reach the servers than the client opened streams (plus the proxy's
// counted retries), what the client
// got is a well-framed HTTP/2 byte stream, and once both peers reset every session closes (no
// stream or exchange outlives its connection; ASan in the sanitizer pass finds what leaks).
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "proxy_harness.h"

using namespace fulcrum;
using lb::fuzz::fail;
using lb::fuzz::Peers;
using lb::fuzz::Proxy;
using lb::fuzz::proxyLimits;
using lb::fuzz::serverLimits;
using lb::fuzz::readAvailable;
using lb::fuzz::sendSome;
using lb::fuzz::ServerConn;

namespace {

enum Op : uint8_t {
  kFrame,
  kRequest,
  kRunLoop,
  kServerRead,
  kServerAnswer,
  kServerSend,
  kServerClose,
  kClientRead,
  kTimePasses,
  kClientRaw,
  kOpCount,
};

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Request header blocks, HPACK by hand from the static table (RFC 7541 Appendix A): indexed
// fields, and literals without indexing (0x0N: name index N < 15; 0x0F then N - 15; 0x00: a new
// name). Good requests and the malformed ones the strict checks must refuse.
std::string block(int variant) {
  const std::string get = "\x82\x84\x86\x01\x06" "a.test";  // GET / http, :authority a.test
  const std::string post = "\x83\x84\x86\x01\x06" "a.test";
  switch (variant) {
    case 0:
      return get;
    case 1:
      return post + std::string("\x0f\x0d\x01" "5", 4);  // content-length: 5
    case 2:
      return post;  // a body without a length: chunked upstream
    case 3:
      return get + std::string("\x00\x0a" "connection" "\x05" "close", 18);
    case 4:
      return get + std::string("\x0f\x17\x06" "b.test", 9);  // host: b.test, not :authority
    case 5:
      return "\x82\x86\x01\x06" "a.test";  // no :path
    case 6:
      return get + std::string("\x00\x02" "te" "\x08" "trailers", 12);
    default:
      return get + std::string("\x00\x03" "x-a" "\x03" "a\rb", 9);  // CR in a value
  }
}

std::string frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string out;
  size_t n = payload.size();
  out.push_back(static_cast<char>(n >> 16));
  out.push_back(static_cast<char>(n >> 8));
  out.push_back(static_cast<char>(n));
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(flags));
  out.push_back(static_cast<char>(stream >> 24 & 0x7f));
  out.push_back(static_cast<char>(stream >> 16));
  out.push_back(static_cast<char>(stream >> 8));
  out.push_back(static_cast<char>(stream));
  out.append(payload);
  return out;
}

uint32_t streamId(uint8_t b) {
  return b % 16 == 15 ? 0 : (b % 16) * 2 + 1;
}

class Run : public Peers {
 public:
  explicit Run(Proxy& proxy) : Peers(proxy), retries_before_(proxy.stats->retries.get()) {
    send(std::string(kPreface) + frame(4, 0, 0, {}));
  }

  void execute(std::string_view script) {
    while (!script.empty()) {
      auto op = static_cast<Op>(static_cast<uint8_t>(script[0]) % kOpCount);
      script.remove_prefix(1);
      switch (op) {
        case kFrame: {
          uint8_t type = take(script) % 10;
          uint8_t flags = take(script);
          uint32_t id = streamId(take(script));
          std::string_view payload = takeData(script);
          if (type == 1 && id != 0) {
            opened_.insert(id);
          }
          send(frame(type, flags, id, payload));
          break;
        }
        case kRequest: {
          int variant = take(script) % 8;
          uint8_t flags = take(script);
          uint32_t id = streamId(take(script));
          if (id != 0) {
            opened_.insert(id);
          }
          send(frame(1, flags, id, block(variant)));
          break;
        }
        case kRunLoop:
          p_.loop->runOnce(core::Duration::zero());
          break;
        case kServerRead:
          pumpServer();
          break;
        case kServerAnswer: {
          static constexpr std::string_view kAnswers[] = {
              "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
              "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
              "HTTP/1.1 204 No Content\r\n\r\n",
              "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
          };
          uint8_t v = take(script);
          if (ServerConn* conn = currentServer()) {
            sendSome(conn->fd.get(), kAnswers[v % 4]);
          }
          break;
        }
        case kServerSend: {
          std::string_view data = takeData(script);
          if (ServerConn* conn = currentServer()) {
            sendSome(conn->fd.get(), data);
          }
          break;
        }
        case kServerClose:
          if (ServerConn* conn = currentServer()) {
            conn->fd.reset();
          }
          break;
        case kClientRead:
          readAvailable(client_.get(), got_);
          break;
        case kTimePasses: {
          static constexpr int kSeconds[] = {1, 3, 11, 31};
          p_.clock.advance(std::chrono::seconds(kSeconds[take(script) % 4]));
          p_.loop->runOnce(core::Duration::zero());
          break;
        }
        case kClientRaw:
          send(takeData(script));
          raw_ = true;  // streams it opened are not known here
          break;
        default:
          break;
      }
    }
  }

  void check() const {
    size_t requests = 0;
    for (const ServerConn& conn : servers_) {
      lb::fuzz::RequestStream got = lb::fuzz::parseRequests(conn.received, serverLimits(), true);
      if (got.head_error != 0) {
        fail("a server received bytes that are not a request", conn.received);
      }
      requests += got.requests.size();
    }
    // A request goes to a server once, and once more for each retry the proxy counted (a
    // server that closed without answering an idempotent request).
    if (!raw_ && requests > opened_.size() + (p_.stats->retries.get() - retries_before_)) {
      fail("the servers received more requests than the client opened streams and the proxy retried");
    }
    // What the client got: SETTINGS first, then whole frames no larger than the default
    // SETTINGS_MAX_FRAME_SIZE (the client never raised it), on streams it opened or 0. The last
    // frame may be cut short by the teardown's reset; bytes after a GOAWAY are allowed (frames
    // already queued), nothing else is.
    std::string_view in = got_;
    bool first = true;
    while (in.size() >= 9) {
      size_t len = static_cast<uint8_t>(in[0]) << 16 | static_cast<uint8_t>(in[1]) << 8 | static_cast<uint8_t>(in[2]);
      auto type = static_cast<uint8_t>(in[3]);
      uint32_t id = (static_cast<uint8_t>(in[5]) & 0x7fu) << 24 | static_cast<uint8_t>(in[6]) << 16 |
                    static_cast<uint8_t>(in[7]) << 8 | static_cast<uint8_t>(in[8]);
      if (first && type != 4) {
        fail("the server's first frame is not SETTINGS", got_);
      }
      first = false;
      if (len > 16384) {
        fail("a frame larger than SETTINGS_MAX_FRAME_SIZE", got_);
      }
      if (type > 9) {
        fail("a frame of an unknown type", got_);
      }
      if (id != 0 && !opened_.contains(id) && (!raw_ || id % 2 == 0)) {
        fail("a frame on a stream the client never opened", got_);
      }
      if (in.size() < 9 + len) {
        break;
      }
      in.remove_prefix(9 + len);
    }
  }

  void trace() const {
    static const bool enabled = std::getenv("FULCRUM_H2_FUZZ_TRACE") != nullptr;
    if (!enabled) {
      return;
    }
    std::fprintf(stderr, "--- client sent %zu bytes, got %zu\n", sent_.size(), got_.size());
    for (const ServerConn& conn : servers_) {
      std::fprintf(stderr, "--- server connection received\n%s\n", conn.received.c_str());
    }
  }

 private:
  void send(std::string_view data) {
    sent_.append(data.substr(0, sendSome(client_.get(), data)));
  }
  static uint8_t take(std::string_view& script) {
    if (script.empty()) {
      return 0;
    }
    auto b = static_cast<uint8_t>(script[0]);
    script.remove_prefix(1);
    return b;
  }
  static std::string_view takeData(std::string_view& script) {
    size_t len = take(script);
    if (len == 0 || len > script.size()) {
      len = script.size();
    }
    std::string_view data = script.substr(0, len);
    script.remove_prefix(len);
    return data;
  }

  std::set<uint32_t> opened_;
  uint64_t retries_before_;  // the proxy's retry count is process-wide
  bool raw_ = false;         // raw bytes were sent: only client-initiated (odd) ids are possible
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Proxy* proxy = new Proxy(proxyLimits(), [](lb::ProxyOptions& options) {
    options.h2c = true;
    options.h2_max_streams = 4;
  });
  Run run(*proxy);
  run.execute(std::string_view(reinterpret_cast<const char*>(data), size));
  run.settle();
  run.trace();
  run.check();
  run.teardown();
  return 0;
}
