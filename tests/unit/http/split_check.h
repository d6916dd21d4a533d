#pragma once
// Shared by the parser tests: checks that a stateless head parse gives the same answer when the
// bytes arrive one at a time as when they arrive at once, and that a HeadScanner fed the bytes in
// pieces answers as the stateless parser does.
#include <gtest/gtest.h>

#include <algorithm>
#include <initializer_list>
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

// `scan(scanner, data)` (a HeadScanner call) is fed `whole` in pieces of each size, the buffer
// moving between calls. Its first answer other than Incomplete must be exactly what the stateless
// `parse(data)` says on the same bytes. Until then `parse` may have found an error inside a line
// that has not ended (the scanner checks lines when their LF arrives), never a complete head; such
// an error is the scanner's answer once an LF ends that line.
template <typename Parse, typename Scan>
void expectScannerAgrees(std::string_view whole, Parse&& parse, Scan&& scan) {
  for (size_t piece : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{64}, whole.size()}) {
    SCOPED_TRACE("pieces of " + std::to_string(piece));
    HeadScanner scanner;
    std::string buffers[2];
    ParseResult answer;
    size_t len = 0;
    while (len < whole.size() && answer.state == ParseState::Incomplete) {
      len = std::min(whole.size(), len + std::max(piece, size_t{1}));
      std::string& data = buffers[len % 2];
      data.assign(whole.substr(0, len));
      answer = scan(scanner, std::string_view(data));
      const ParseResult stateless = parse(std::string_view(data));
      if (answer.state == ParseState::Incomplete) {
        ASSERT_NE(stateless.state, ParseState::Complete) << "prefix length " << len;
        continue;
      }
      ASSERT_EQ(answer.state, stateless.state) << "prefix length " << len;
      EXPECT_EQ(answer.status, stateless.status) << "prefix length " << len;
      EXPECT_EQ(answer.reason, stateless.reason) << "prefix length " << len;
      EXPECT_EQ(answer.consumed, stateless.consumed) << "prefix length " << len;
    }
    const ParseResult full = parse(whole);
    if (answer.state == ParseState::Incomplete && full.state == ParseState::Error) {
      std::string ended(whole);
      ended += '\n';
      answer = scan(scanner, std::string_view(ended));
      ASSERT_EQ(answer.state, ParseState::Error);
      EXPECT_EQ(answer.status, full.status);
      EXPECT_EQ(answer.reason, full.reason);
    }
  }
}

}  // namespace fulcrum::http::testing
