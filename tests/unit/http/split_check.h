#pragma once
// Shared by the parser tests: checks that a stateless head parse gives the same answer when the
// bytes arrive one at a time as when they arrive at once.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "http/parser.h"

namespace fulcrum::http::testing {

// `parse(prefix)` must, for every prefix, be Incomplete or agree with `parse(whole)`: a complete
// head completes at the same length, an error is the same error and never comes earlier than
// an Incomplete would be required.
template <typename Parse>
void expectSplitConsistent(std::string_view whole, Parse&& parse) {
  const ParseResult full = parse(whole);
  for (size_t len = 0; len < whole.size(); ++len) {
    SCOPED_TRACE("prefix length " + std::to_string(len));
    const ParseResult part = parse(whole.substr(0, len));
    if (part.state == ParseState::Incomplete) {
      if (full.state == ParseState::Complete) {
        EXPECT_GT(full.consumed, len);
      }
      continue;
    }
    ASSERT_EQ(part.state, full.state);
    if (part.state == ParseState::Complete) {
      EXPECT_LE(full.consumed, len);
      EXPECT_EQ(part.consumed, full.consumed);
    } else {
      EXPECT_EQ(part.status, full.status);
    }
  }
}

}  // namespace fulcrum::http::testing
