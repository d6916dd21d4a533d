// The text formats PostgreSQL reads: no server needed.
#include "pg/pg_format.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace fulcrum::pg {
namespace {

TEST(PgFormatTest, LsnRoundTrip) {
  EXPECT_EQ(parseLsn("0/0"), Lsn{0});
  EXPECT_EQ(parseLsn("16/B374D848"), (Lsn{0x16} << 32) | 0xB374D848);
  EXPECT_EQ(parseLsn("FFFFFFFF/FFFFFFFF"), ~Lsn{0});
  EXPECT_EQ(formatLsn((Lsn{0x16} << 32) | 0xB374D848), "16/B374D848");
  EXPECT_EQ(formatLsn(0x3000148), "0/3000148");
  for (const char* bad : {"", "0", "/1", "1/", "1/2/3", "x/1", "100000000/0", " 0/1"}) {
    EXPECT_FALSE(parseLsn(bad).has_value()) << bad;
  }
  EXPECT_EQ(lagBytes(100, 40), 60u);
  EXPECT_EQ(lagBytes(40, 100), 0u);
}

TEST(PgFormatTest, Quoting) {
  EXPECT_EQ(quoteIdent("site"), "\"site\"");
  EXPECT_EQ(quoteIdent("a\"b"), "\"a\"\"b\"");
  EXPECT_EQ(quoteLiteral("it's"), "'it''s'");
  EXPECT_EQ(confValue("host='x'"), "'host=''x'''");
  EXPECT_EQ(conninfoValue("a b'c\\d"), "'a b\\'c\\\\d'");
  EXPECT_EQ(pgpassField("p:w\\d"), "p\\:w\\\\d");
}

TEST(PgFormatTest, SlotNames) {
  EXPECT_EQ(slotNameFor("db-01"), "db_01");
  EXPECT_EQ(slotNameFor("DB.Two"), "db_two");
  EXPECT_EQ(slotNameFor(""), "node");
  EXPECT_EQ(slotNameFor(std::string(100, 'a')).size(), 63u);
}

TEST(PgFormatTest, ScramVerifierMatchesRfc5802Construction) {
  // Expected value computed independently (Python hashlib/hmac) for this password and salt.
  EXPECT_EQ(scramVerifier("pencil", "fulcrum-salt-16b", 4096),
            "SCRAM-SHA-256$4096:ZnVsY3J1bS1zYWx0LTE2Yg==$jrehNUYEQWwtTHTVq01C5k1O9kTppC/mZ064Qo4W0/c=:"
            "NR+CDMYmd6QNovhiGefsV5J9dlapHnhkoJYqBbs4WjU=");
  auto random_salt = scramVerifier("pencil");
  ASSERT_TRUE(random_salt.has_value());
  EXPECT_EQ(random_salt->rfind("SCRAM-SHA-256$4096:", 0), 0u);
  EXPECT_NE(*random_salt, *scramVerifier("pencil"));
  EXPECT_FALSE(scramVerifier("caf\xc3\xa9").has_value());  // SASLprep territory: sent as is
}

TEST(PgFormatTest, SecretsAreGeneratedOnceWithMode0600) {
  char tmpl[] = "/tmp/fulcrum-secret-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::filesystem::path dir = tmpl;
  auto first = loadOrCreateSecret(dir / "sub" / "db.password");
  ASSERT_TRUE(first.ok) << first.error;
  EXPECT_EQ(first.value.size(), 32u);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "sub" / "db.password").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = loadOrCreateSecret(dir / "sub" / "db.password");
  ASSERT_TRUE(again.ok);
  EXPECT_EQ(again.value, first.value);
  std::ofstream(dir / "given") << "s3cret \n";
  EXPECT_EQ(loadOrCreateSecret(dir / "given").value, "s3cret");
  EXPECT_NE(generatePassword(), generatePassword());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fulcrum::pg
