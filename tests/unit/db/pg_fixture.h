#pragma once
// A fixture for tests against a real PostgreSQL (Debian's postgresql package): nodes on free
// loopback ports, with every node's data under a fresh directory in /tmp (searchable by the
// postgres user, which runs the servers when the tests run as root). Skipped, with a message,
// when PostgreSQL or its OS user is missing.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/address.h"
#include "db/pg_process.h"
#include "db/postgres.h"
#include "pg/pg_bin.h"
#include "pg/pg_format.h"
#include "test_support.h"

namespace fulcrum::db::testing {

using pg::findPgBin;
using pg::pgpassField;

class PostgresFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto bin = findPgBin("");
    if (!bin.ok) {
      FULCRUM_SKIP_UNLESS_CI("PostgreSQL not installed: " << bin.error);
    }
    bin_ = bin.value;
    auto user = resolveOsUser("postgres");
    if (!user.ok) {
      FULCRUM_SKIP_UNLESS_CI("no PostgreSQL OS user: " << user.error);
    }
    char tmpl[] = "/tmp/fulcrum-pg-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    ASSERT_EQ(::chmod(base_.c_str(), 0755), 0);  // postgres must traverse it
  }

  void TearDown() override {
    nodes_.clear();  // each destructor stops (and if need be kills and reaps) its postmaster
    if (!base_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(base_, ignored);
    }
  }

  PostgresNode& makeNode(const std::string& name) { return addNode(nodeOptions(name)); }

  PostgresNode& addNode(PostgresOptions options) {
    nodes_.push_back(std::make_unique<PostgresNode>(std::move(options)));
    EXPECT_EQ(nodes_.back()->initError(), "");
    return *nodes_.back();
  }

  // A test node's options: its directories under base_/name, a free loopback port, small settings.
  PostgresOptions nodeOptions(const std::string& name) const {
    PostgresOptions options;
    options.node = name;
    options.bin_dir = bin_;
    options.data_dir = base_ / name / "data";
    options.run_dir = base_ / name / "run";
    options.listen = *core::SocketAddress::parse("127.0.0.1:" + std::to_string(freePort()));
    options.replication_password_file = base_ / "secrets" / "replication.password";
    options.durable = false;
    options.settings = {{"fsync", "off"}, {"shared_buffers", "16MB"}, {"max_connections", "20"}};
    options.tool_timeout = std::chrono::milliseconds(30000);
    options.start_timeout = std::chrono::milliseconds(30000);
    options.stop_timeout = std::chrono::milliseconds(10000);
    return options;
  }

  AppDatabase app() const {
    AppDatabase app;
    app.database = "site";
    app.user = "site";
    app.password_file = base_ / "secrets" / "db.password";
    return app;
  }

  // psql over TCP as `user`, with the password from a .pgpass file (as a client would connect).
  ToolOutput psqlTcp(PostgresNode& node, const std::string& user, const std::string& password,
                     const std::string& sql) {
    std::filesystem::path pass = base_ / ("pgpass-" + user);
    EXPECT_TRUE(writeFileAs(node.osUser(), pass,
                            "*:*:*:" + pgpassField(user) + ":" + pgpassField(password) + "\n", 0600)
                    .ok);
    ToolRun run;
    run.argv = {node.program("psql").string(),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "host=127.0.0.1 port=" + std::to_string(node.options().listen.port()) + " user=" + user +
                    " dbname=site passfile=" + pass.string() + " connect_timeout=5",
                "-c",
                sql};
    run.timeout = std::chrono::milliseconds(10000);
    auto output = runTool(node.osUser(), run);
    EXPECT_TRUE(output.ok) << output.error;
    return output.value;
  }

  static std::string one(PostgresNode& node, const std::string& sql, const std::string& db = "site") {
    auto rows = node.query(sql, db);
    if (!rows.ok || rows.value.size() != 1 || rows.value[0].size() != 1) {
      return "<" + (rows.ok ? std::to_string(rows.value.size()) + " rows" : rows.error) + ">";
    }
    return rows.value[0][0];
  }

  std::filesystem::path bin_;
  std::filesystem::path base_;
  std::vector<std::unique_ptr<PostgresNode>> nodes_;
};

}  // namespace fulcrum::db::testing
