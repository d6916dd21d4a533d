// Fuzzes the PROXY protocol parser (v1 and v2). The first input byte picks where the rest is
// split; the parser must reach the same end whether the bytes come at once, in two pieces or
// one at a time, never take a byte past the header, and parse back what it encodes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/proxy_protocol.h"

using namespace fulcrum::core::proxy_protocol;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

struct End {
  Parser::Status status = Parser::Status::NeedMore;
  size_t consumed = 0;
  std::string source;
};

// Feeds `input` as a socket would give it: each piece with whatever the previous steps left.
End feed(std::string_view input, size_t piece) {
  Parser parser;
  End end;
  size_t arrived = 0;
  while (true) {
    arrived = std::min(input.size(), arrived + piece);
    std::string_view queued = input.substr(end.consumed, arrived - end.consumed);
    Parser::Step step = parser.feed(queued);
    check(step.consumed <= queued.size(), "took more than it was given");
    end.consumed += step.consumed;
    end.status = step.status;
    if (step.status == Parser::Status::NeedMore) {
      check(step.consumed == queued.size(), "NeedMore left bytes untaken");
    } else {
      break;
    }
    if (arrived == input.size()) {
      break;
    }
  }
  if (end.status == Parser::Status::Invalid) {
    check(!parser.error().empty(), "refused without a reason");
  }
  if (end.status == Parser::Status::Done) {
    const Header& h = parser.header();
    check(h.version == 1 || h.version == 2, "no version");
    check(end.consumed <= (h.version == 1 ? kMaxV1Line : 16 + kMaxV2Payload), "header over its limit");
    check(h.source.has_value() == h.destination.has_value(), "one address without the other");
    if (h.source) {
      end.source = h.source->toString();
      // What it parsed, encoded again, parses to the same client.
      for (const std::string& again :
           {encodeV1(*h.source, *h.destination), encodeV2(*h.source, *h.destination)}) {
        Parser back;
        Parser::Step step = back.feed(again);
        check(step.status == Parser::Status::Done && step.consumed == again.size(), "encoded header refused");
        check(back.header().source->toString() == end.source, "encoded header names another client");
      }
    }
  }
  return end;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) {
    return 0;
  }
  size_t split = data[0];
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  End whole = feed(input, input.size() + 1);
  End parts = feed(input, split == 0 ? 1 : split);
  End bytes = feed(input, 1);
  for (const End* other : {&parts, &bytes}) {
    if (whole.status == Parser::Status::NeedMore) {
      check(other->status == Parser::Status::NeedMore, "pieces ended where the whole did not");
      continue;
    }
    check(other->status == whole.status, "pieces ended differently from the whole");
    if (whole.status == Parser::Status::Done) {
      check(other->consumed == whole.consumed, "pieces took a different header");
      check(other->source == whole.source, "pieces named another client");
    }
  }
  return 0;
}
