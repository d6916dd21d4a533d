#pragma once
// Character classes and line scanners shared by the head parser and the body decoder (trailers).
// Internal to src/http: not part of the codec's interface.
#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fulcrum::http::syntax {

// ---------------------------------------------------------------------------------------------
// Character classes (RFC 9110 §5.6.2 tchar, §5.5 field-value, RFC 3986 URI characters).

inline constexpr uint8_t kTcharBit = 1;    // token character
inline constexpr uint8_t kValueBit = 2;    // field-value / reason-phrase: VCHAR, obs-text, SP, HTAB
inline constexpr uint8_t kTargetBit = 4;   // request-target: visible ASCII except '#'
inline constexpr uint8_t kHostBit = 8;     // reg-name / IPv4: unreserved, sub-delims, '%'
inline constexpr uint8_t kSchemeBit = 16;  // scheme after the first letter: ALPHA DIGIT + - .

constexpr bool isAlpha(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
constexpr bool isDigit(int c) {
  return c >= '0' && c <= '9';
}

constexpr std::array<uint8_t, 256> makeClasses() {
  std::array<uint8_t, 256> table{};
  for (int c = 0; c < 256; ++c) {
    uint8_t bits = 0;
    bool alnum = isAlpha(c) || isDigit(c);
    if (alnum || (c != 0 &&
                  std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos)) {
      bits |= kTcharBit;
    }
    if (c == '\t' || (c >= 0x20 && c != 0x7f)) {
      bits |= kValueBit;
    }
    if (c > 0x20 && c < 0x7f && c != '#') {
      bits |= kTargetBit;
    }
    if (alnum || (c != 0 && std::string_view("-._~!$&'()*+,;=%").find(static_cast<char>(c)) !=
                                std::string_view::npos)) {
      bits |= kHostBit;
    }
    if (alnum || c == '+' || c == '-' || c == '.') {
      bits |= kSchemeBit;
    }
    table[c] = bits;
  }
  return table;
}
inline constexpr std::array<uint8_t, 256> kClass = makeClasses();

constexpr std::array<int8_t, 256> makeHexValues() {
  std::array<int8_t, 256> table{};
  for (int c = 0; c < 256; ++c) {
    table[c] = isDigit(c)               ? static_cast<int8_t>(c - '0')
               : (c >= 'a' && c <= 'f') ? static_cast<int8_t>(c - 'a' + 10)
               : (c >= 'A' && c <= 'F') ? static_cast<int8_t>(c - 'A' + 10)
                                        : int8_t{-1};
  }
  return table;
}
inline constexpr std::array<int8_t, 256> kHexValue = makeHexValues();

inline bool has(char c, uint8_t bit) {
  return (kClass[static_cast<unsigned char>(c)] & bit) != 0;
}
inline bool isOws(char c) {
  return c == ' ' || c == '\t';
}

// The scanners below return the first byte in [p, end) outside a character class. With SSE2
// (every x86-64) they test 16 bytes per step; otherwise a byte loop over the class table.
#if defined(__SSE2__)
inline unsigned firstBad(__m128i ok) {
  return ~static_cast<unsigned>(_mm_movemask_epi8(ok)) & 0xffffu;
}
// Bytes with lo <= x <= hi (unsigned).
inline __m128i inRange(__m128i x, char lo, char hi) {
  __m128i shifted = _mm_sub_epi8(x, _mm_set1_epi8(lo));
  return _mm_cmpeq_epi8(_mm_min_epu8(shifted, _mm_set1_epi8(static_cast<char>(hi - lo))), shifted);
}
#endif

// Field value (and reason phrase) characters: stops at CTLs other than HTAB, and at DEL.
inline const char* scanFieldValue(const char* p, const char* end) {
#if defined(__SSE2__)
  while (end - p >= 16) {
    __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i ok = _mm_andnot_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f)),
                                  _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(0x20)), x));
    unsigned bad = firstBad(ok);
    if (bad == 0) {
      p += 16;
      continue;
    }
    p += __builtin_ctz(bad);
    if (*p != '\t') {
      return p;
    }
    ++p;
  }
#endif
  while (p < end && has(*p, kValueBit)) {
    ++p;
  }
  return p;
}

// Field names: skips [A-Za-z0-9-] fast, the rest of tchar byte by byte.
inline const char* scanFieldName(const char* p, const char* end) {
#if defined(__SSE2__)
  while (end - p >= 16) {
    __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i ok = _mm_or_si128(
        _mm_or_si128(inRange(_mm_or_si128(x, _mm_set1_epi8(0x20)), 'a', 'z'), inRange(x, '0', '9')),
        _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
    unsigned bad = firstBad(ok);
    if (bad == 0) {
      p += 16;
      continue;
    }
    p += __builtin_ctz(bad);
    if (!has(*p, kTcharBit)) {
      return p;
    }
    ++p;
  }
#endif
  while (p < end && has(*p, kTcharBit)) {
    ++p;
  }
  return p;
}

// Request-target characters: visible ASCII except '#'.
inline const char* scanTarget(const char* p, const char* end) {
#if defined(__SSE2__)
  while (end - p >= 16) {
    __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i ok = _mm_andnot_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('#')), inRange(x, 0x21, 0x7e));
    unsigned bad = firstBad(ok);
    if (bad != 0) {
      return p + __builtin_ctz(bad);
    }
    p += 16;
  }
#endif
  while (p < end && has(*p, kTargetBit)) {
    ++p;
  }
  return p;
}

// ASCII case-insensitive comparison with a lowercase literal. Exact for the inputs it gets:
// validated names and values, where the only bytes that fold onto a letter, digit or '-' with
// `| 0x20` are that letter's capital (the others are CTLs, already rejected).
template <size_t N>
inline bool equalsLower(std::string_view text, const char (&lower)[N]) {
  if (text.size() != N - 1) {
    return false;
  }
  for (size_t i = 0; i + 1 < N; ++i) {
    if ((text[i] | 0x20) != lower[i]) {
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// One header (or trailer) field line, or the empty line that ends the section.

enum class LineKind : uint8_t { Field, End, More, Bad };

struct FieldLine {
  LineKind kind = LineKind::More;
  std::string_view name;
  std::string_view value;
  const char* next = nullptr;
  std::string_view reason;
};

inline FieldLine badLine(std::string_view reason) {
  FieldLine line;
  line.kind = LineKind::Bad;
  line.reason = reason;
  return line;
}

// Parses the field line at p: Field (value OWS-trimmed; next is past its CRLF), End (the empty
// line), More (the bytes end first) or Bad (obs-fold, bare CR/LF, bad name or value bytes).
[[gnu::always_inline]] inline FieldLine parseFieldLine(const char* p, const char* end) {
  FieldLine line;
  if (p == end) {
    return line;
  }
  if (*p == '\r') {
    if (p + 1 == end) {
      return line;
    }
    if (p[1] != '\n') {
      return badLine("bare CR");
    }
    line.kind = LineKind::End;
    line.next = p + 2;
    return line;
  }
  const char* name = p;
  p = scanFieldName(p, end);
  if (p == end) {
    return line;
  }
  if (*p != ':' || p == name) {
    if (p == name && isOws(*p)) {
      return badLine("obs-fold or whitespace before a header field");
    }
    if (isOws(*p)) {
      return badLine("whitespace before colon");
    }
    if (*p == '\n') {
      return badLine("bare LF");
    }
    return badLine("invalid header field name");
  }
  line.name = std::string_view(name, static_cast<size_t>(p - name));
  ++p;
  while (p < end && isOws(*p)) {
    ++p;
  }
  const char* value = p;
  p = scanFieldValue(p, end);
  if (p == end) {
    return line;
  }
  if (*p != '\r') {
    return badLine(*p == '\n' ? "bare LF" : "invalid character in header value");
  }
  if (p + 1 == end) {
    return line;
  }
  if (p[1] != '\n') {
    return badLine("bare CR");
  }
  const char* value_end = p;
  while (value_end > value && isOws(value_end[-1])) {
    --value_end;
  }
  line.kind = LineKind::Field;
  line.value = std::string_view(value, static_cast<size_t>(value_end - value));
  line.next = p + 2;
  return line;
}

}  // namespace fulcrum::http::syntax
