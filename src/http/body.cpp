// BodyDecoder: Content-Length, chunked (RFC 9112 §7.1) and read-until-close bodies.
#include <limits>

#include "http/parser.h"
#include "http/syntax.h"

namespace fulcrum::http {

namespace {

using namespace syntax;

constexpr size_t kMaxChunkLine = 4096;  // chunk-size line, extensions included

enum class ChunkLineKind : uint8_t { Ok, More, Bad };

struct ChunkLine {
  ChunkLineKind kind = ChunkLineKind::More;
  uint64_t size = 0;
  const char* next = nullptr;
};

// chunk-size [ chunk-ext ] CRLF (RFC 9112 §7.1). Extensions are checked loosely: BWS only
// before ';', then field-value characters up to CRLF.
ChunkLine parseChunkLine(const char* p, const char* end) {
  ChunkLine line;
  const bool capped = static_cast<size_t>(end - p) > kMaxChunkLine;
  if (capped) {
    end = p + kMaxChunkLine;
  }
  auto more = [&]() {
    line.kind = capped ? ChunkLineKind::Bad : ChunkLineKind::More;
    return line;
  };
  auto bad = [&]() {
    line.kind = ChunkLineKind::Bad;
    return line;
  };
  const char* digits = p;
  uint64_t size = 0;
  while (p < end) {
    int v = kHexValue[static_cast<unsigned char>(*p)];
    if (v < 0) {
      break;
    }
    if (size > (std::numeric_limits<uint64_t>::max() >> 4)) {
      return bad();  // overflow
    }
    size = (size << 4) | static_cast<uint64_t>(v);
    ++p;
  }
  if (p == end) {
    return more();
  }
  if (p == digits) {
    return bad();
  }
  const char* after_digits = p;
  while (p < end && isOws(*p)) {
    ++p;
  }
  if (p == end) {
    return more();
  }
  if (*p == ';') {
    p = scanFieldValue(p + 1, end);
    if (p == end) {
      return more();
    }
  } else if (p != after_digits) {
    return bad();  // whitespace not followed by an extension
  }
  if (*p != '\r') {
    return bad();
  }
  if (p + 1 == end) {
    return more();
  }
  if (p[1] != '\n') {
    return bad();
  }
  line.kind = ChunkLineKind::Ok;
  line.size = size;
  line.next = p + 2;
  return line;
}

}  // namespace

void BodyDecoder::reset(BodyKind kind, uint64_t content_length, uint64_t max_body_bytes,
                        size_t max_trailer_bytes) {
  remaining_ = 0;
  body_bytes_ = 0;
  max_body_bytes_ = max_body_bytes;
  max_trailer_bytes_ = max_trailer_bytes;
  trailer_bytes_ = 0;
  error_status_ = 0;
  switch (kind) {
    case BodyKind::None:
    case BodyKind::Tunnel:
      state_ = State::Done;
      break;
    case BodyKind::ContentLength:
      if (max_body_bytes != 0 && content_length > max_body_bytes) {
        state_ = State::Failed;
        error_status_ = 413;
      } else {
        remaining_ = content_length;
        state_ = content_length == 0 ? State::Done : State::Length;
      }
      break;
    case BodyKind::Chunked:
      state_ = State::ChunkSize;
      break;
    case BodyKind::UntilClose:
      state_ = State::UntilClose;
      break;
  }
}

BodyStep BodyDecoder::step(std::string_view input) {
  BodyStep out;
  const char* const begin = input.data();
  const char* const end = begin + input.size();
  const char* p = begin;
  auto finish = [&]() {
    out.consumed = static_cast<size_t>(p - begin);
    return out;
  };
  // A framing error after a payload piece is reported by the next step, so a step never carries
  // both a payload and an error.
  auto fail = [&](int status) {
    if (out.payload.empty()) {
      state_ = State::Failed;
      error_status_ = status;
      out.error_status = status;
    }
    return finish();
  };
  auto take = [&]() {
    size_t n = static_cast<size_t>(end - p);
    if (n > remaining_) {
      n = static_cast<size_t>(remaining_);
    }
    out.payload = std::string_view(p, n);
    p += n;
    remaining_ -= n;
    body_bytes_ += n;
  };

  for (;;) {
    switch (state_) {
      case State::Done:
        out.done = true;
        return finish();
      case State::Failed:
        out.error_status = error_status_;
        return finish();
      case State::Length:
        if (p == end) {
          return finish();
        }
        take();
        if (remaining_ == 0) {
          state_ = State::Done;
          out.done = true;
        }
        return finish();
      case State::UntilClose: {
        size_t n = static_cast<size_t>(end - p);
        if (n == 0) {
          return finish();
        }
        if (max_body_bytes_ != 0 && n > max_body_bytes_ - body_bytes_) {
          return fail(413);
        }
        out.payload = std::string_view(p, n);
        p = end;
        body_bytes_ += n;
        return finish();
      }
      case State::ChunkSize: {
        if (p == end) {
          return finish();
        }
        ChunkLine line = parseChunkLine(p, end);
        if (line.kind == ChunkLineKind::More) {
          return finish();
        }
        if (line.kind == ChunkLineKind::Bad) {
          return fail(400);
        }
        if (max_body_bytes_ != 0 && line.size > max_body_bytes_ - body_bytes_) {
          return fail(413);
        }
        p = line.next;
        remaining_ = line.size;
        state_ = line.size == 0 ? State::Trailers : State::ChunkData;
        break;
      }
      case State::ChunkData:
        if (p == end || !out.payload.empty()) {
          return finish();
        }
        take();
        if (remaining_ == 0) {
          state_ = State::ChunkDataCrlf;
        }
        break;
      case State::ChunkDataCrlf:
        if (p == end) {
          return finish();
        }
        if (*p != '\r') {
          return fail(400);
        }
        if (p + 1 == end) {
          return finish();
        }
        if (p[1] != '\n') {
          return fail(400);
        }
        p += 2;
        state_ = State::ChunkSize;
        break;
      case State::Trailers: {
        if (p == end) {
          return finish();
        }
        // Trailer fields follow header rules; the section is bounded by max_trailer_bytes.
        size_t budget = max_trailer_bytes_ - trailer_bytes_;
        const bool capped = static_cast<size_t>(end - p) >= budget;
        FieldLine line = parseFieldLine(p, capped ? p + budget : end);
        if (line.kind == LineKind::More) {
          return capped ? fail(400) : finish();
        }
        if (line.kind == LineKind::Bad) {
          return fail(400);
        }
        // Framing and routing never come after the body (RFC 9110 §6.5.1): a recipient that merged
        // these into the head would frame or route the message differently from us.
        if (line.kind == LineKind::Field &&
            (equalsLower(line.name, "content-length") || equalsLower(line.name, "transfer-encoding") ||
             equalsLower(line.name, "host"))) {
          return fail(400);
        }
        trailer_bytes_ += static_cast<size_t>(line.next - p);
        p = line.next;
        if (line.kind == LineKind::End) {
          state_ = State::Done;
        }
        break;
      }
    }
  }
}

}  // namespace fulcrum::http
