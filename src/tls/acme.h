#pragma once
// Certificates from an ACME CA (RFC 8555: Let's Encrypt, or Debian's pebble in tests), obtained and
// renewed by the lb itself. The client is blocking and runs on a thread of its own (AcmeRenewer);
// the workers only answer HTTP-01 challenges from a ChallengeStore, and the main thread's file
// watcher loads the certificate once it is written.
//
// Files, in state_dir/acme: account.key (the account's ECDSA P-256 key, made once, 0600),
// cert.pem (the chain) and key.pem (0600), replaced whole (written aside, then renamed). Several lb
// nodes sharing a state_dir do not fight: the one holding the lock file obtains and renews, the
// others use the files it writes (and take over if it goes).
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

// OpenSSL's SSL_CTX, named without its headers.
struct ssl_ctx_st;

namespace fulcrum::tls {

enum class AcmeChallenge : uint8_t {
  Http01,     // a key authorization at /.well-known/acme-challenge/TOKEN on the http listener
  TlsAlpn01,  // RFC 8737: a certificate for the name, handed out on the https listener to acme-tls/1
};

struct AcmeSettings {
  std::string directory;             // the directory URL
  std::string email;                 // account contact ("" = none)
  std::vector<std::string> domains;  // names to certify (the first is the subject)
  std::filesystem::path ca_file;     // extra CA to trust for the ACME server itself ("" = system)
  std::filesystem::path dir;         // state_dir/acme
  AcmeChallenge challenge = AcmeChallenge::Http01;
};

// What this node answers a CA with while an order is open: HTTP-01 key authorizations (served by
// the http listener at /.well-known/acme-challenge/TOKEN) and TLS-ALPN-01 certificates (handed to
// a handshake that asks for acme-tls/1 with that name). Thread-safe (written by the ACME thread,
// read by the workers).
class ChallengeStore {
 public:
  using TlsContext = std::shared_ptr<ssl_ctx_st>;

  void put(const std::string& token, const std::string& key_authorization);
  void erase(const std::string& token);
  std::optional<std::string> find(std::string_view token) const;

  void putTlsAlpn(const std::string& domain, TlsContext context);
  void eraseTlsAlpn(const std::string& domain);
  TlsContext findTlsAlpn(std::string_view domain) const;  // null when no validation is expected

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::string, std::less<>> answers_;
  std::map<std::string, TlsContext, std::less<>> tls_alpn_;
};

inline constexpr std::string_view kAcmeTlsAlpnProtocol = "acme-tls/1";

// The TLS-ALPN-01 answer for `domain` (RFC 8737 §3): a context holding a self-signed certificate
// for that one name with a critical acmeIdentifier extension (the SHA-256 of the key
// authorization), whose ALPN accepts only acme-tls/1. Null with `error`.
ChallengeStore::TlsContext tlsAlpnContext(const std::string& domain, const std::string& key_authorization,
                                          std::string& error);

inline constexpr std::string_view kAcmeChallengePrefix = "/.well-known/acme-challenge/";

// One whole issuance: account, order, HTTP-01 for every domain, finalize, download; writes
// cert.pem and key.pem. Blocking; false with `error` (the ACME problem document's detail when
// there is one).
// `stop` (may be null) is looked at between polls: set, the issuance gives up.
bool obtainCertificate(const AcmeSettings& settings, ChallengeStore& challenges, std::string& error,
                       const std::atomic<bool>* stop = nullptr);

// Seconds from now until `cert` (PEM) has two thirds of its lifetime behind it (negative when past),
// or nullopt when it cannot be read.
std::optional<long> secondsUntilRenewal(const std::filesystem::path& cert);

// The ACME thread: obtains a certificate when there is none, renews it at two thirds of its
// lifetime, retries failures with backoff (10 s doubling to 1 h) while the old certificate serves.
class AcmeRenewer {
 public:
  AcmeRenewer(AcmeSettings settings, ChallengeStore& challenges);
  ~AcmeRenewer();  // stops the thread (an exchange in flight ends within its timeout)
  AcmeRenewer(const AcmeRenewer&) = delete;
  AcmeRenewer& operator=(const AcmeRenewer&) = delete;

  void start();
  // The certificate files changed (another node renewed, an operator replaced them): look at
  // them again now rather than at the next planned renewal.
  void wake();
  std::filesystem::path certFile() const { return settings_.dir / "cert.pem"; }
  std::filesystem::path keyFile() const { return settings_.dir / "key.pem"; }

  uint64_t issued() const { return issued_.load(std::memory_order_relaxed); }
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }

 private:
  void run();
  // Waits `seconds` or until stopped; false when stopped.
  bool sleepFor(long seconds);

  const AcmeSettings settings_;
  ChallengeStore& challenges_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool recheck_ = false;
  std::atomic<bool> stopping_{false};  // stop_, readable without the mutex by an issuance in flight
  std::atomic<uint64_t> issued_{0};
  std::atomic<uint64_t> failures_{0};
};

}  // namespace fulcrum::tls
