// Fuzzes a whole proxied connection in-process: the real ProxyWorker on a real event loop (on a
// manual clock), a client socket and a raw server socket, both driven by the input. The input is
// a script; each operation is one byte (taken modulo the number of operations), some followed by
// a length byte and that many bytes of data (length 0: the rest of the input):
//
//   0 L data  the client sends data            5      the server half-closes its connection
//   1         one loop iteration, no wait      6      the server closes its connection
//   2         the server accepts and reads     7      the client reads
//   3 L data  the server sends data            8 T    time passes (T % 4: 1 s, 3 s, 11 s, 31 s)
//   4         the client half-closes
//
// The server's connection is the last one that received bytes (else the newest). After the
// script the loop runs until nothing moves; then the framing invariants of proxy_framing.h are
// checked, both peers reset their connections and every session must close. Any violation aborts.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "proxy_harness.h"

using namespace fulcrum;
using lb::fuzz::fail;
using lb::fuzz::Peers;
using lb::fuzz::ServerConn;
using lb::fuzz::Proxy;
using lb::fuzz::proxyLimits;
using lb::fuzz::serverLimits;
using lb::fuzz::readAvailable;
using lb::fuzz::resetClose;
using lb::fuzz::sendSome;

namespace {

enum Op : uint8_t {
  kClientSend,
  kRunLoop,
  kServerRead,
  kServerSend,
  kClientShutdown,
  kServerShutdown,
  kServerClose,
  kClientRead,
  kTimePasses,
  kOpCount,
};


// One input's connection: the client's side and every connection the server accepted.
class Run : public Peers {
 public:
  explicit Run(Proxy& proxy) : Peers(proxy) {}

  void execute(std::string_view script) {
    while (!script.empty()) {
      auto op = static_cast<Op>(static_cast<uint8_t>(script[0]) % kOpCount);
      script.remove_prefix(1);
      switch (op) {
        case kClientSend:
          if (std::string_view data = takeData(script); !client_shut_) {
            sent_.append(data.substr(0, sendSome(client_.get(), data)));
          }
          break;
        case kRunLoop:
          p_.loop->runOnce(core::Duration::zero());
          break;
        case kServerRead:
          pumpServer();
          break;
        case kServerSend: {
          std::string_view data = takeData(script);
          if (ServerConn* conn = currentServer()) {
            sendSome(conn->fd.get(), data);
          }
          break;
        }
        case kClientShutdown:
          ::shutdown(client_.get(), SHUT_WR);
          client_shut_ = true;
          break;
        case kServerShutdown:
          if (ServerConn* conn = currentServer()) {
            ::shutdown(conn->fd.get(), SHUT_WR);
          }
          break;
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
          int pick = script.empty() ? 0 : static_cast<uint8_t>(script[0]) % 4;
          script.remove_prefix(script.empty() ? 0 : 1);
          p_.clock.advance(std::chrono::seconds(kSeconds[pick]));
          p_.loop->runOnce(core::Duration::zero());
          break;
        }
        default:
          break;
      }
    }
  }

  // FULCRUM_PROXY_FUZZ_TRACE=1 prints the byte streams, to read what an input did.
  void trace() const {
    static const bool enabled = std::getenv("FULCRUM_PROXY_FUZZ_TRACE") != nullptr;
    if (!enabled) {
      return;
    }
    std::fprintf(stderr, "--- client sent\n%s\n--- client received\n%s\n", sent_.c_str(), got_.c_str());
    for (const ServerConn& conn : servers_) {
      std::fprintf(stderr, "--- server connection received\n%s\n", conn.received.c_str());
    }
  }

  void checkFraming() const {
    lb::fuzz::RequestStream sent = lb::fuzz::parseRequests(sent_, proxyLimits(), false);
    std::vector<http::Method> methods;
    for (const auto& req : sent.requests) {
      methods.push_back(req.method);
    }
    lb::fuzz::ResponseStream answers = lb::fuzz::parseResponses(got_, methods);
    if (answers.error != nullptr) {
      fail(answers.error, got_);
    }
    size_t complete = sent.requests.size() -
                      (sent.more && !sent.requests.empty() && !sent.requests.back().complete ? 1 : 0);
    if (!answers.tunnel && answers.finals > complete + (sent.more ? 1 : 0)) {
      fail("the client received more responses than it sent requests", got_);
    }
    for (const ServerConn& conn : servers_) {
      lb::fuzz::RequestStream got = lb::fuzz::parseRequests(conn.received, serverLimits(), true);
      if (got.head_error != 0) {
        fail("a server received bytes that are not a request", conn.received);
      }
      size_t next = 0;  // requests on one connection follow the client's order
      for (const auto& req : got.requests) {
        while (next < sent.requests.size() && !lb::fuzz::sameRequest(req, sent.requests[next])) {
          ++next;
        }
        if (next == sent.requests.size()) {
          fail("a server received a request the client did not send as one request", conn.received);
        }
        if (answers.closed_after >= 0 && next > static_cast<size_t>(answers.closed_after)) {
          fail("a request after the response that closed the client's connection was forwarded",
               conn.received);
        }
        ++next;
      }
    }
  }

 private:
  std::string_view takeData(std::string_view& script) {
    if (script.empty()) {
      return {};
    }
    size_t len = static_cast<uint8_t>(script[0]);
    script.remove_prefix(1);
    if (len == 0 || len > script.size()) {
      len = script.size();
    }
    std::string_view data = script.substr(0, len);
    script.remove_prefix(len);
    return data;
  }

  bool client_shut_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Proxy* proxy = new Proxy(proxyLimits());  // never freed: it lives as long as the process
  Run run(*proxy);
  run.execute(std::string_view(reinterpret_cast<const char*>(data), size));
  run.settle();
  run.trace();
  run.checkFraming();
  run.teardown();
  return 0;
}
