// The site CA and the nodes' certificates for internal_tls: made once, each node's identity and
// addresses in its certificate, kept while good, renewed before the end, replaced when wrong.
#include "tls/site_pki.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "config/loader.h"

namespace fulcrum::tls {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using Clock = std::chrono::system_clock;
namespace fs = std::filesystem;

class SitePki : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/fulcrum-pki-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    fs::create_directories(dir_ / "www");
  }
  void TearDown() override { fs::remove_all(dir_); }

  config::Site site(const std::string& extra = "", const std::string& web_listen = "127.0.0.21:9001") {
    const std::string text = "[site]\nname = \"pki\"\nstate_dir = \"" + (dir_ / "var").string() +
                             "\"\n"
                             "[[lb.node]]\nname = \"lb-1\"\nhttp = \"127.0.0.11:8080\"\nstats = \"127.0.0.12:8404\"\n"
                             "[web]\napp = \"none\"\n"
                             "[[web.node]]\nname = \"web-1\"\nlisten = \"" +
                             web_listen +
                             "\"\n"
                             "[[db.node]]\nname = \"db-1\"\npg = \"127.0.0.31:5432\"\nagent = \"127.0.0.31:8008\"\n"
                             "[etcd]\nendpoints = [\"127.0.0.41:2379\"]\n"
                             "[security]\ninternal_tls = true\n" +
                             extra;
    auto result = config::loadSiteString(text, (dir_ / "site.toml").string());
    EXPECT_TRUE(result.ok()) << (result.errors.empty() ? "" : result.errors[0].toString());
    return result.site;
  }

  static X509* readCert(const fs::path& path) {
    FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) {
      return nullptr;
    }
    X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    return cert;
  }

  static std::string commonName(const fs::path& path) {
    X509* cert = readCert(path);
    char cn[256] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
    X509_free(cert);
    return cn;
  }

  static std::set<std::string> ipSans(const fs::path& path) {
    X509* cert = readCert(path);
    std::set<std::string> out;
    auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
    for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
      if (name->type == GEN_IPADD && ASN1_STRING_length(name->d.iPAddress) == 4) {
        const unsigned char* b = ASN1_STRING_get0_data(name->d.iPAddress);
        out.insert(std::to_string(b[0]) + "." + std::to_string(b[1]) + "." + std::to_string(b[2]) + "." +
                   std::to_string(b[3]));
      }
    }
    GENERAL_NAMES_free(names);
    X509_free(cert);
    return out;
  }

  static std::string contents(const fs::path& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
};

TEST_F(SitePki, MakesTheCaOnceAndACertificatePerNode) {
  const config::Site s = site();
  auto made = ensureSiteCertificates(s);
  ASSERT_TRUE(made.ok) << made.error;
  EXPECT_TRUE(made.value.ca_created);
  EXPECT_THAT(made.value.issued, ElementsAre("lb-1", "web-1", "db-1", "etcd", "operator"));
  EXPECT_THAT(made.value.renewed, IsEmpty());

  const SitePaths paths = sitePaths(s);
  EXPECT_EQ(paths.ca_cert, dir_ / "var" / "tls" / "ca.crt");
  struct stat st {};
  ASSERT_EQ(::stat(paths.ca_key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(paths.nodeKey("web-1").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  X509* ca = readCert(paths.ca_cert);
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(X509_check_ca(ca), 1);
  X509_free(ca);

  EXPECT_EQ(commonName(paths.nodeCert("web-1")), "web-1");
  EXPECT_THAT(ipSans(paths.nodeCert("web-1")), UnorderedElementsAre("127.0.0.21"));
  EXPECT_THAT(ipSans(paths.nodeCert("lb-1")), UnorderedElementsAre("127.0.0.11", "127.0.0.12"));
  EXPECT_THAT(ipSans(paths.nodeCert("db-1")), UnorderedElementsAre("127.0.0.31"));
  EXPECT_THAT(ipSans(paths.nodeCert("operator")), IsEmpty());
  for (const char* node : {"lb-1", "web-1", "db-1", "etcd", "operator"}) {
    auto loaded = nodeTls(s, node);
    EXPECT_TRUE(loaded.ok) << node << ": " << loaded.error;
    EXPECT_EQ(loaded.value.cert, paths.nodeCert(node));
  }

  // Again: nothing to do, nothing rewritten.
  const std::string before = contents(paths.nodeCert("web-1"));
  auto again = ensureSiteCertificates(s);
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_FALSE(again.value.ca_created);
  EXPECT_THAT(again.value.issued, IsEmpty());
  EXPECT_THAT(again.value.renewed, IsEmpty());
  EXPECT_EQ(contents(paths.nodeCert("web-1")), before);
}

TEST_F(SitePki, ANodeThatMovedGetsACertificateForItsNewAddress) {
  ASSERT_TRUE(ensureSiteCertificates(site()).ok);
  const config::Site moved = site("", "127.0.0.22:9001");
  auto made = ensureSiteCertificates(moved);
  ASSERT_TRUE(made.ok) << made.error;
  EXPECT_THAT(made.value.issued, ElementsAre("web-1"));
  EXPECT_THAT(ipSans(sitePaths(moved).nodeCert("web-1")), UnorderedElementsAre("127.0.0.22"));
}

TEST_F(SitePki, RenewedAMonthBeforeTheEndAndRefusedOnceExpired) {
  const config::Site s = site();
  const auto now = Clock::now();
  ASSERT_TRUE(ensureSiteCertificates(s, now).ok);
  auto later = ensureSiteCertificates(s, now + std::chrono::hours(24 * 50));
  ASSERT_TRUE(later.ok);
  EXPECT_THAT(later.value.renewed, IsEmpty());

  // Seen from 91 days on, the first certificates have ended: a role refuses to start on one.
  auto expired = nodeTls(s, "web-1", now + kNodeLifetime + std::chrono::hours(24));
  ASSERT_FALSE(expired.ok);
  EXPECT_THAT(expired.error, HasSubstr("certificate has expired"));
  EXPECT_THAT(expired.error, HasSubstr("fulcrum certs"));

  auto renewed = ensureSiteCertificates(s, now + std::chrono::hours(24 * 61));
  ASSERT_TRUE(renewed.ok) << renewed.error;
  EXPECT_THAT(renewed.value.renewed, ElementsAre("lb-1", "web-1", "db-1", "etcd", "operator"));
  EXPECT_TRUE(nodeTls(s, "web-1", now + kNodeLifetime + std::chrono::hours(24)).ok);
}

TEST_F(SitePki, ACertificateOfAnotherCaIsRefusedAndReplaced) {
  const config::Site s = site();
  ASSERT_TRUE(ensureSiteCertificates(s).ok);
  const SitePaths paths = sitePaths(s);
  // Another site's CA and certificates, then this site's web-1 pair swapped for that one's.
  char other[] = "/tmp/fulcrum-pki-other-XXXXXX";
  ASSERT_NE(::mkdtemp(other), nullptr);
  config::Site stranger = s;
  stranger.site.state_dir = other;
  ASSERT_TRUE(ensureSiteCertificates(stranger).ok);
  fs::copy_file(sitePaths(stranger).nodeCert("web-1"), paths.nodeCert("web-1"), fs::copy_options::overwrite_existing);
  fs::copy_file(sitePaths(stranger).nodeKey("web-1"), paths.nodeKey("web-1"), fs::copy_options::overwrite_existing);
  fs::remove_all(other);

  auto loaded = nodeTls(s, "web-1");
  ASSERT_FALSE(loaded.ok);
  EXPECT_THAT(loaded.error, HasSubstr("unable to get local issuer certificate"));
  auto made = ensureSiteCertificates(s);
  ASSERT_TRUE(made.ok) << made.error;
  EXPECT_THAT(made.value.issued, ElementsAre("web-1"));
  EXPECT_TRUE(nodeTls(s, "web-1").ok);
}

TEST_F(SitePki, AKeyThatIsNotTheCertificatesIsRefused) {
  const config::Site s = site();
  ASSERT_TRUE(ensureSiteCertificates(s).ok);
  const SitePaths paths = sitePaths(s);
  fs::copy_file(paths.nodeKey("db-1"), paths.nodeKey("web-1"), fs::copy_options::overwrite_existing);
  auto loaded = nodeTls(s, "web-1");
  ASSERT_FALSE(loaded.ok);
  EXPECT_THAT(loaded.error, HasSubstr("another key"));
  auto missing = nodeTls(s, "web-9");
  ASSERT_FALSE(missing.ok);
  EXPECT_THAT(missing.error, HasSubstr("web-9.crt"));
}

TEST_F(SitePki, ARunningNodeSeesItsReissuedPairOnceAndSkipsAHalfWrittenOne) {
  const config::Site s = site();
  ASSERT_TRUE(ensureSiteCertificates(s).ok);
  const SitePaths paths = sitePaths(s);
  NodeTlsWatch watch(s, "web-1");
  EXPECT_FALSE(watch.changed());  // the files loaded at start

  fs::remove(paths.nodeCert("web-1"));
  fs::remove(paths.nodeKey("web-1"));
  EXPECT_FALSE(watch.changed());  // gone: the loaded pair keeps serving
  ASSERT_TRUE(ensureSiteCertificates(s).ok);
  auto taken = watch.changed();
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->cert, paths.nodeCert("web-1"));
  EXPECT_FALSE(watch.changed());  // taken once

  // A key that is not the certificate's (a pair caught between its two writes, or a mistake):
  // skipped at every look until a good pair is there.
  fs::copy_file(paths.nodeKey("db-1"), paths.nodeKey("web-1"), fs::copy_options::overwrite_existing);
  EXPECT_FALSE(watch.changed());
  EXPECT_FALSE(watch.changed());
  fs::remove(paths.nodeCert("web-1"));
  ASSERT_TRUE(ensureSiteCertificates(s).ok);
  EXPECT_TRUE(watch.changed());
}

TEST_F(SitePki, TheUsersOwnCaIssuesAndIsNeverMade) {
  // Made with this site's own CA code into another directory, then named in [security].
  const config::Site plain = site();
  ASSERT_TRUE(ensureSiteCertificates(plain).ok);
  const fs::path own = dir_ / "own";
  fs::create_directories(own);
  fs::copy_file(sitePaths(plain).ca_cert, own / "corp.crt");
  fs::copy_file(sitePaths(plain).ca_key, own / "corp.key");
  fs::remove_all(dir_ / "var");

  const config::Site s = site("ca_cert = \"own/corp.crt\"\nca_key = \"own/corp.key\"\n");
  EXPECT_EQ(sitePaths(s).ca_cert, own / "corp.crt");
  auto made = ensureSiteCertificates(s);
  ASSERT_TRUE(made.ok) << made.error;
  EXPECT_FALSE(made.value.ca_created);
  EXPECT_FALSE(fs::exists(dir_ / "var" / "tls" / "ca.crt"));
  EXPECT_TRUE(nodeTls(s, "lb-1").ok);

  fs::remove(own / "corp.key");
  auto refused = ensureSiteCertificates(site("ca_cert = \"own/corp.crt\"\nca_key = \"own/corp.key\"\n"));
  ASSERT_FALSE(refused.ok);
  EXPECT_THAT(refused.error, HasSubstr("corp.key"));
}

TEST(SecurityConfig, TheCaNeedsItsKey) {
  auto result = config::loadSiteString("[security]\ninternal_tls = true\nca_cert = \"ca.crt\"\n", "/srv/s.toml");
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.errors[0].toString(), HasSubstr("security.ca_cert: needs ca_key too"));
  auto typo = config::loadSiteString("[security]\ninternal_tsl = true\n", "/srv/s.toml");
  ASSERT_FALSE(typo.ok());
}

}  // namespace
}  // namespace fulcrum::tls
