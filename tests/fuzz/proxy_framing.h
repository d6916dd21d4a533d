#pragma once
// The framing invariants the proxy fuzzer asserts on a finished connection, computed with the
// project's own parser: every request a server received is one the client sent as one request
// (same method, target and decoded body), in the client's order on each server connection, and
// nothing the client sent after the response that closed its connection was forwarded.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "http/parser.h"

namespace fulcrum::lb::fuzz {

// One request of a byte stream. A request cut short (body incomplete or refused) ends the stream.
struct StreamRequest {
  http::Method method = http::Method::Other;
  std::string method_text;
  std::string target;
  std::string body;         // decoded
  bool complete = false;    // the whole body arrived
  bool body_error = false;  // the decoder refused the body (400/413)
  bool tunnel = false;      // CONNECT or upgrade: what may follow is not HTTP
};

struct RequestStream {
  std::vector<StreamRequest> requests;
  bool more = false;   // bytes after the complete requests: a cut request, or a head that is
                       // incomplete or refused (the proxy may answer it)
  int head_error = 0;  // the status the parser gave the first bad head
};

// Splits `bytes` into requests as a connection reading them would, up to the first error.
// `stop_at_tunnel`: stop after a CONNECT or upgrade request (a server connection may carry raw
// tunnel bytes after it).
inline RequestStream parseRequests(std::string_view bytes, const http::Limits& limits, bool stop_at_tunnel) {
  RequestStream out;
  while (!bytes.empty()) {
    http::RequestHead head;
    http::ParseResult parsed = http::parseRequestHead(bytes, limits, head);
    if (parsed.state != http::ParseState::Complete) {
      out.more = true;
      out.head_error = parsed.state == http::ParseState::Error ? parsed.status : 0;
      return out;
    }
    StreamRequest req;
    req.method = head.method;
    req.method_text.assign(head.method_text);
    req.target.assign(head.target);
    req.tunnel = head.upgrade || head.method == http::Method::Connect;
    http::BodyDecoder decoder;
    decoder.reset(head.body_kind, head.content_length, limits.max_body_bytes);
    bytes.remove_prefix(parsed.consumed);  // `head` is not used past this point
    req.complete = decoder.done();
    while (!req.complete) {
      http::BodyStep step = decoder.step(bytes);
      if (step.error_status != 0) {
        req.body_error = true;
        break;
      }
      req.body.append(step.payload);
      bytes.remove_prefix(step.consumed);
      req.complete = step.done;
      if (step.consumed == 0 && !step.done) {
        break;
      }
    }
    bool tunnel = req.tunnel;
    out.requests.push_back(std::move(req));
    if (!out.requests.back().complete) {
      out.more = true;
      return out;
    }
    if (tunnel && stop_at_tunnel) {
      return out;
    }
  }
  return out;
}

struct ResponseStream {
  size_t finals = 0;       // final (non-1xx) responses, one per request in order
  long closed_after = -1;  // index of the request whose response said the connection closes
  bool tunnel = false;     // a 101 or a 2xx to CONNECT: the rest is raw bytes
  const char* error = nullptr;
};

// Decodes one response body from the start of `bytes`; false when it is malformed.
inline bool skipBody(const http::ResponseHead& head, std::string_view& bytes, bool& done) {
  http::BodyDecoder decoder;
  decoder.reset(head.body_kind, head.content_length, 0);
  done = decoder.done();
  while (!done) {
    http::BodyStep step = decoder.step(bytes);
    if (step.error_status != 0) {
      return false;
    }
    bytes.remove_prefix(step.consumed);
    done = step.done;
    if (step.consumed == 0 && !step.done) {
      break;
    }
  }
  return true;
}

// Splits what the client received into responses; request i was made with methods[i].
inline ResponseStream parseResponses(std::string_view bytes, const std::vector<http::Method>& methods) {
  ResponseStream out;
  http::Limits limits;
  limits.max_header_bytes = 1 << 20;
  limits.max_headers = 1 << 16;
  while (!bytes.empty()) {
    http::Method method = out.finals < methods.size() ? methods[out.finals] : http::Method::Other;
    http::ResponseHead head;
    http::ParseResult parsed = http::parseResponseHead(bytes, limits, method, head);
    if (parsed.state == http::ParseState::Incomplete) {
      return out;
    }
    if (parsed.state == http::ParseState::Error) {
      out.error = "the client received a malformed response head";
      return out;
    }
    std::string_view head_bytes = bytes.substr(0, parsed.consumed);
    bytes.remove_prefix(parsed.consumed);
    if (head.status < 200 && head.status != 101) {
      continue;  // interim
    }
    ++out.finals;
    if (head.body_kind == http::BodyKind::Tunnel) {
      out.tunnel = true;
      return out;
    }
    bool closes = !head.keep_alive;
    std::string_view after = bytes;
    bool done = false;
    if (!skipBody(head, after, done)) {
      out.error = "the client received a malformed response body";
      return out;
    }
    if (closes && method == http::Method::Head && done && !after.empty()) {
      // The proxy refused a head it could not parse yet (408, 431): it knew no method then,
      // though the bytes that came later complete a HEAD request. Its answer has a body.
      http::ResponseHead refusal;
      http::parseResponseHead(head_bytes, limits, http::Method::Other, refusal);
      after = bytes;
      if (!skipBody(refusal, after, done)) {
        out.error = "the client received a malformed response body";
        return out;
      }
    }
    bytes = after;
    if (closes) {
      out.closed_after = static_cast<long>(out.finals - 1);
      if (done && !bytes.empty()) {
        out.error = "the client received bytes after a response that closed the connection";
      }
      return out;
    }
    if (!done) {
      return out;
    }
  }
  return out;
}

// A request a server received matches one the client sent: the same method and target, and
// the same body (a server may have received only the start of it).
inline bool sameRequest(const StreamRequest& got, const StreamRequest& sent) {
  if (got.method_text != sent.method_text || got.target != sent.target) {
    return false;
  }
  if (got.complete) {
    return sent.complete && got.body == sent.body;
  }
  return got.body.size() <= sent.body.size() && sent.body.compare(0, got.body.size(), got.body) == 0;
}

inline void fail(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "proxy fuzz check failed: %s\n%.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

}  // namespace fulcrum::lb::fuzz
