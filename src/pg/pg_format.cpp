#include "pg/pg_format.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>

#include "core/secret_file.h"

namespace fulcrum::pg {

namespace {

std::optional<uint32_t> parseHex32(std::string_view text) {
  uint32_t value = 0;
  if (text.empty() || text.size() > 8) {
    return std::nullopt;
  }
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

// Wraps `text` in `quote`, doubling each quote inside (SQL style).
std::string doubled(std::string_view text, char quote) {
  std::string out(1, quote);
  for (char c : text) {
    out += c;
    if (c == quote) {
      out += quote;
    }
  }
  out += quote;
  return out;
}

std::string hmacSha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string sha256(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

// Standard base64 with padding (RFC 4648 §4), as SCRAM writes salts and keys.
std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');  // EVP_EncodeBlock adds a NUL
  int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace

std::optional<Lsn> parseLsn(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return std::nullopt;
  }
  auto hi = parseHex32(text.substr(0, slash));
  auto lo = parseHex32(text.substr(slash + 1));
  if (!hi || !lo) {
    return std::nullopt;
  }
  return (static_cast<Lsn>(*hi) << 32) | *lo;
}

std::optional<uint64_t> parseSysid(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0) {
    return std::nullopt;
  }
  return value;
}

std::string formatLsn(Lsn lsn) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(lsn >> 32), static_cast<unsigned>(lsn));
  return buf;
}

std::string quoteIdent(std::string_view name) {
  return doubled(name, '"');
}
std::string quoteLiteral(std::string_view text) {
  return doubled(text, '\'');
}
std::string confValue(std::string_view value) {
  return doubled(value, '\'');
}

std::string conninfoValue(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  out += '\'';
  return out;
}

std::string pgpassField(std::string_view field) {
  std::string out;
  for (char c : field) {
    if (c == ':' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out;
}

std::string slotNameFor(std::string_view node) {
  std::string slot;
  for (char c : node) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') {
      slot += c;
    } else if (c >= 'A' && c <= 'Z') {
      slot += static_cast<char>(c - 'A' + 'a');
    } else {
      slot += '_';
    }
  }
  if (slot.empty()) {
    slot = "node";
  }
  return slot.substr(0, 63);
}

std::string hostText(const core::SocketAddress& address) {
  return address.ip().toString();
}

std::optional<std::string> scramVerifier(std::string_view password) {
  for (char c : password) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) {
      return std::nullopt;
    }
  }
  std::string salt(16, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), static_cast<int>(salt.size())) != 1) {
    return std::nullopt;
  }
  return scramVerifier(password, salt, 4096);
}

std::string scramVerifier(std::string_view password, std::string_view salt, int iterations) {
  // RFC 5802 §3 / RFC 7677: SaltedPassword = Hi(password, salt, i) = PBKDF2-HMAC-SHA-256.
  std::string salted(32, '\0');
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()),
                    iterations, EVP_sha256(), static_cast<int>(salted.size()),
                    reinterpret_cast<unsigned char*>(salted.data()));
  std::string stored_key = sha256(hmacSha256(salted, "Client Key"));
  std::string server_key = hmacSha256(salted, "Server Key");
  return "SCRAM-SHA-256$" + std::to_string(iterations) + ":" + base64(salt) + "$" + base64(stored_key) + ":" +
         base64(server_key);
}

std::string generatePassword() {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string password;
  while (password.size() < 32) {
    unsigned char bytes[64];
    if (RAND_bytes(bytes, sizeof bytes) != 1) {
      continue;
    }
    for (unsigned char b : bytes) {
      if (b < 248 && password.size() < 32) {  // 248 = 4 * 62: keeps the choice uniform
        password += kAlphabet[b % 62];
      }
    }
  }
  return password;
}

core::Result<std::string> loadOrCreateSecret(const std::filesystem::path& path) {
  std::string value;
  std::string error;
  if (!core::loadOrCreateSecretFile(path, generatePassword, value, error)) {
    return core::Result<std::string>::failure(error);
  }
  return core::Result<std::string>::success(std::move(value));
}

}  // namespace fulcrum::pg
