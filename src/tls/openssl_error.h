#pragma once
// OpenSSL's error queue is per thread: a failure's entry left there would be blamed on the next
// connection handled by the same thread. Every failure is read out and the queue emptied.
#include <openssl/err.h>

#include <string>

namespace fulcrum::tls {

// The reason for the last OpenSSL failure ("unknown error" if none), the queue emptied after it.
inline std::string lastSslError() {
  unsigned long code = ERR_get_error();
  char text[256] = "unknown error";
  if (code != 0) {
    ERR_error_string_n(code, text, sizeof text);
  }
  ERR_clear_error();
  return text;
}

}  // namespace fulcrum::tls
