#include "db/postgres.h"

#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "db/fence_file.h"
#include "pg/connection_policy.h"

namespace fulcrum::db {

using pg::confValue;
using pg::conninfoValue;
using pg::hostText;
using pg::loadOrCreateSecret;
using pg::parseLsn;
using pg::parseSysid;
using pg::pgpassField;
using pg::quoteIdent;
using pg::quoteLiteral;
using pg::scramVerifier;

using namespace std::string_view_literals;

namespace {

// A seconds column (numeric text); nullopt for NULL (libpq's empty text) or garbage. A negative
// age (the primary's clock ahead of this one) reads as 0.
std::optional<double> parseSeconds(std::string_view text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return std::max(value, 0.0);
}

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The ident map (pg_ident.conf) the local socket's peer rule uses.
constexpr const char* kIdentMap = "fulcrum";
// The ident map of the TCP rules under internal_tls: certificate names (node names) to roles.
constexpr const char* kCertMap = "fulcrum_cert";

std::string readFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A name we put in pg_hba.conf and SQL: quoting handles the rest, but a double quote or a line
// break cannot be written into pg_hba.conf.
Status checkName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 63 || name.find_first_of("\"\n\r\0"sv) != std::string_view::npos) {
    return Status::failure(std::string(what) + " '" + std::string(name) +
                           "' must be 1..63 bytes without quotes or line breaks");
  }
  return Status::success();
}

std::string hbaName(std::string_view name) {
  return "\"" + std::string(name) + "\"";
}

// Who this process runs as: the OS user the server sees on the local socket (peer).
std::string agentOsUser() {
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwuid_r(::geteuid(), &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return "#" + std::to_string(::geteuid());  // no name: no map line can match it
}

// Seconds for a libpq connect_timeout (it ignores values under 2).
std::string connectSeconds(milliseconds timeout) {
  return std::to_string(std::max<int64_t>(2, (timeout.count() + 999) / 1000));
}

// Bounded polling with a growing pause (2 ms .. max_pause).
template <typename Predicate>
bool pollUntil(Predicate done, SteadyClock::time_point until, milliseconds max_pause = milliseconds(100)) {
  auto pause = milliseconds(2);
  for (;;) {
    if (done()) {
      return true;
    }
    if (SteadyClock::now() >= until) {
      return false;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, max_pause);
  }
}

}  // namespace

PostgresNode::PostgresNode(PostgresOptions options) : options_(std::move(options)) {
  auto user = resolveOsUser(options_.os_user);
  if (!user.ok) {
    init_error_ = user.error;
    return;
  }
  user_ = std::move(user.value);
  if (options_.bin_dir.empty() || options_.data_dir.empty() || options_.run_dir.empty()) {
    init_error_ = "bin_dir, data_dir and run_dir must be set";
    return;
  }
  // The socket path must fit sockaddr_un (107 bytes with its NUL).
  std::string socket = (options_.run_dir / (".s.PGSQL." + std::to_string(options_.listen.port()))).string();
  if (socket.size() > 107) {
    init_error_ = "socket path " + socket + " is too long (max 107 bytes): use a shorter run directory";
    return;
  }
  if (!options_.fence_file.empty()) {
    if (!options_.fence_file.is_absolute() || !options_.fence_library.is_absolute()) {
      init_error_ = "fence_file and fence_library must be absolute paths";
      return;
    }
    if (options_.fence_library.string().size() >= 96) {
      init_error_ = "fence library path " + options_.fence_library.string() +
                    " is too long (max 95 bytes): use a shorter state directory";
      return;
    }
    for (const auto& file : {options_.fence_library, options_.fence_file}) {
      if (Status reachable = checkTraversable(user_, file); !reachable.ok) {
        init_error_ = reachable.error;
        return;
      }
    }
  }
  for (const auto& dir : {options_.run_dir, options_.data_dir}) {
    Status reachable = checkTraversable(user_, dir);
    if (!reachable.ok) {
      init_error_ = reachable.error;
      return;
    }
  }
  Status run_dir = preparePrivateDir(user_, options_.run_dir);
  if (!run_dir.ok) {
    init_error_ = run_dir.error;
  }
}

PostgresNode::~PostgresNode() {
  dropSessions();
  // Fast, then immediate (the postmaster ends its children), then kill.
  for (int sig : {SIGINT, SIGQUIT}) {
    postmaster_.signal(sig);
    if (!postmaster_.started() || postmaster_.waitExit(milliseconds(5000))) {
      return;
    }
  }
  postmaster_.kill();
}

bool PostgresNode::initialized() const {
  std::error_code ec;
  return std::filesystem::exists(options_.data_dir / "PG_VERSION", ec);
}

Result<ToolOutput> PostgresNode::run(std::vector<std::string> argv, milliseconds timeout,
                                     std::vector<std::string> env, std::string input) {
  if (!init_error_.empty()) {
    return Result<ToolOutput>::failure(init_error_);
  }
  ToolRun tool;
  tool.argv = std::move(argv);
  tool.env = std::move(env);
  tool.input = std::move(input);
  tool.cwd = options_.run_dir;
  tool.timeout = timeout;
  return runTool(user_, tool);
}

Result<std::string> PostgresNode::capture(std::vector<std::string> argv, milliseconds timeout,
                                          std::vector<std::string> env) {
  ToolRun described;
  described.argv = argv;
  described.timeout = timeout;
  auto output = run(std::move(argv), timeout, std::move(env));
  if (!output.ok) {
    return Result<std::string>::failure(output.error);
  }
  if (output.value.exit_code != 0 || output.value.timed_out) {
    return Result<std::string>::failure(describeFailure(described, output.value));
  }
  return Result<std::string>::success(std::move(output.value.out));
}

Status PostgresNode::launchJob(Operation op, std::vector<std::string> argv, milliseconds timeout,
                               std::vector<std::string> env) {
  if (!init_error_.empty()) {
    return Status::failure(init_error_);
  }
  if (op_ != Operation::None) {
    return Status::failure("another operation is under way");
  }
  ToolRun tool;
  tool.argv = std::move(argv);
  tool.env = std::move(env);
  tool.cwd = options_.run_dir;
  tool.timeout = timeout;
  auto job = ToolJob::start(user_, std::move(tool));
  if (!job.ok) {
    return Status::failure(job.error);
  }
  job_ = std::move(job.value);
  op_ = op;
  return Status::success();
}

Status PostgresNode::finishOperation() {
  std::optional<Status> done;
  pollUntil([&] { return (done = pollOperation()).has_value(); }, SteadyClock::time_point::max(),
            milliseconds(20));
  return *done;
}

Status PostgresNode::runChecked(std::vector<std::string> argv, milliseconds timeout,
                                std::vector<std::string> env, std::string input) {
  ToolRun described;
  described.argv = argv;
  described.timeout = timeout;
  auto output = run(std::move(argv), timeout, std::move(env), std::move(input));
  if (!output.ok) {
    return Status::failure(output.error);
  }
  if (output.value.exit_code != 0 || output.value.timed_out) {
    return Status::failure(describeFailure(described, output.value));
  }
  return Status::success();
}

void PostgresNode::dropSessions() {
  sessions_.clear();
}

Result<std::vector<std::vector<std::string>>> PostgresNode::query(std::string_view sql,
                                                                  std::string_view database) {
  using R = Result<std::vector<std::vector<std::string>>>;
  if (!init_error_.empty()) {
    return R::failure(init_error_);
  }
  auto session = sessions_.find(database);
  if (session == sessions_.end()) {
    pg::ConnParams params = {{"host", options_.run_dir.string()},
                             {"port", std::to_string(options_.listen.port())},
                             {"user", superuser()},
                             {"dbname", std::string(database)},
                             {"application_name", "fulcrum-agent"}};
    session = sessions_.emplace(std::string(database), std::make_unique<PgSession>(std::move(params))).first;
  }
  auto rows = session->second->query(sql, options_.query_timeout);
  if (!rows.ok && rows.error.find("authentication failed") != std::string::npos) {
    rows.error +=
        " (the local socket admits superuser '" + superuser() + "' by peer authentication with map '" +
        kIdentMap + "', which lets OS user '" + agentOsUser() +
        "' in: pg_hba.conf and pg_ident.conf are rewritten at each start of the server by this agent)";
  }
  return rows;
}

Status PostgresNode::writePassFile() {
  if (!std::filesystem::exists(options_.replication_password_file)) {
    return Status::failure("replication password file " + options_.replication_password_file.string() +
                           " is missing (the first primary creates it)");
  }
  auto password = loadOrCreateSecret(options_.replication_password_file);
  if (!password.ok) {
    return Status::failure(password.error);
  }
  std::string line =
      "*:*:*:" + pgpassField(options_.replication_user) + ":" + pgpassField(password.value) + "\n";
  return writeFileAs(user_, passFile(), line, 0600);
}

Status PostgresNode::installTls() {
  if (!options_.tls) {
    return Status::success();
  }
  if (Status dir = preparePrivateDir(user_, tlsDir()); !dir.ok) {
    return dir;
  }
  const pg::ClientTls copies = clientTls();
  for (const auto& [from, to] :
       {std::pair{options_.tls->ca_cert, copies.root_cert}, std::pair{options_.tls->cert, copies.cert},
        std::pair{options_.tls->key, copies.key}}) {
    std::ifstream in(from, std::ios::binary);
    if (!in) {
      return Status::failure("internal_tls: cannot read " + from.string() + ": " + std::strerror(errno));
    }
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (Status done = writeFileAs(user_, to, content, 0600); !done.ok) {
      return Status::failure("internal_tls: " + done.error);
    }
  }
  return Status::success();
}

Status PostgresNode::refreshTls() {
  if (Status copied = installTls(); !copied.ok) {
    return copied;
  }
  if (!isRunning()) {
    return Status::success();  // a start reads the copies
  }
  auto reload = query("SELECT pg_reload_conf()");
  return reload.ok ? Status::success() : Status::failure("pg_reload_conf(): " + reload.error);
}

pg::ClientTls PostgresNode::clientTls() const {
  return {tlsDir() / "ca.crt", tlsDir() / "node.crt", tlsDir() / "node.key"};
}

Status PostgresNode::writeClusterConfig(const AppDatabase& app) {
  std::string conf =
      "# Written by Fulcrum: the same on every node (pg_basebackup copies it). Each node's address,\n"
      "# port and socket directory are on its postmaster's command line.\n"
      "wal_level = replica\n"
      "max_wal_senders = 10\n"
      "max_replication_slots = 10\n"
      "hot_standby = on\n"
      "hot_standby_feedback = on\n"
      "wal_log_hints = on\n"
      "wal_keep_size = '128MB'\n"
      "max_slot_wal_keep_size = '2GB'\n"
      "# Crash start syncs the data directory with one syncfs() instead of an fsync per file:\n"
      "# seconds less before redo after a postmaster is killed.\n"
      "recovery_init_sync_method = syncfs\n"
      "# A standby whose primary went away (a crash restart, a failover) tries again after this,\n"
      "# not the default 5 s: a synchronous primary's commits wait for it.\n"
      "wal_retrieve_retry_interval = '500ms'\n"
      "password_encryption = 'scram-sha-256'\n"
      "logging_collector = off\n"
      "log_line_prefix = '%m [%p] %q%u@%d '\n";
  for (const auto& [name, value] : options_.settings) {
    conf += name + " = " + confValue(value) + "\n";
  }
  Status written = writeFileAs(user_, options_.data_dir / "fulcrum.conf", conf, 0600);
  if (!written.ok) {
    return written;
  }
  std::string main = readFile(options_.data_dir / "postgresql.conf");
  main += "\ninclude 'fulcrum.conf'\n";
  written = writeFileAs(user_, options_.data_dir / "postgresql.conf", main, 0600);
  if (!written.ok) {
    return written;
  }
  std::vector<std::string> host_rules;
  for (const std::string& network : options_.allowed_networks) {
    host_rules.push_back("host replication " + hbaName(options_.replication_user) + " " + network +
                         " scram-sha-256");
    host_rules.push_back("host postgres " + hbaName(options_.replication_user) + " " + network +
                         " scram-sha-256");
    host_rules.push_back("host " + hbaName(app.database) + " " + hbaName(app.user) + " " + network +
                         " scram-sha-256");
  }
  return writeAccessFiles(std::move(host_rules));
}

Status PostgresNode::writeAccessFiles(std::optional<std::vector<std::string>> host_rules) {
  const std::filesystem::path hba_file = options_.data_dir / "pg_hba.conf";
  if (options_.tls) {
    // Rewritten at every start: the site may have turned internal_tls on since initdb.
    const ServerTls& tls = *options_.tls;
    const std::string cert = " cert map=" + std::string(kCertMap);
    host_rules.emplace();
    for (const std::string& network : options_.allowed_networks) {
      host_rules->push_back("hostssl replication " + hbaName(options_.replication_user) + " " + network +
                            cert);
      host_rules->push_back("hostssl postgres " + hbaName(options_.replication_user) + " " + network + cert);
      host_rules->push_back("hostssl " + hbaName(tls.app_database) + " " + hbaName(tls.app_user) + " " +
                            network + cert);
    }
  } else if (!host_rules) {
    host_rules.emplace();
    // Keep the TCP rules (the same on every node: initPrimary wrote them, clones copied them);
    // the local rules are ours to write.
    std::stringstream in(readFile(hba_file));
    std::string line;
    while (std::getline(in, line)) {
      size_t start = line.find_first_not_of(" \t");
      if (start == std::string::npos || line[start] == '#' || line.compare(start, 5, "local") == 0) {
        continue;
      }
      // Our certificate rules, left by a start under internal_tls now turned off: back to the
      // password rules initPrimary() wrote ("hostssl D U NET cert map=M" -> "host D U NET scram-sha-256").
      const std::string cert = " cert map=" + std::string(kCertMap);
      if (line.compare(start, 8, "hostssl ") == 0 && line.size() > cert.size() &&
          line.compare(line.size() - cert.size(), cert.size(), cert) == 0) {
        line = "host " + line.substr(start + 8, line.size() - cert.size() - start - 8) + " scram-sha-256";
      }
      host_rules->push_back(line);
    }
  }
  // The agent's OS user (root) and the OS user named like the superuser may log in as the superuser.
  std::string ident =
      "# Written by Fulcrum at every start of the server: who may log in as the superuser on the local\n"
      "# socket (pg_hba.conf: peer map=" +
      std::string(kIdentMap) +
      ").\n"
      "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n" +
      kIdentMap + " " + hbaName(superuser()) + " " + hbaName(superuser()) + "\n";
  if (const std::string agent = agentOsUser(); agent != superuser()) {
    ident += std::string(kIdentMap) + " " + hbaName(agent) + " " + hbaName(superuser()) + "\n";
  }
  if (options_.tls) {
    ident +=
        "# internal_tls: the client certificate's CN (a node of the site) -> the role it may log in as.\n";
    for (const std::string& name : options_.tls->app_clients) {
      ident += std::string(kCertMap) + " " + hbaName(name) + " " + hbaName(options_.tls->app_user) + "\n";
    }
    for (const std::string& name : options_.tls->replication_clients) {
      ident += std::string(kCertMap) + " " + hbaName(name) + " " + hbaName(options_.replication_user) + "\n";
    }
  }
  if (Status done = writeFileAs(user_, options_.data_dir / "pg_ident.conf", ident, 0600); !done.ok) {
    return done;
  }
  std::string hba =
      "# Written by Fulcrum. The local socket: the superuser only, by peer authentication (map " +
      std::string(kIdentMap) +
      " in\n"
      "# pg_ident.conf). TCP: the replication role and the application role, by password (SCRAM) only,\n"
      "# or under internal_tls by client certificate only (map " +
      std::string(kCertMap) +
      ").\n"
      "# TYPE  DATABASE  USER  ADDRESS  METHOD\n"
      "local all " +
      hbaName(superuser()) + " peer map=" + kIdentMap + "\n";
  for (const std::string& rule : *host_rules) {
    hba += rule + "\n";
  }
  return writeFileAs(user_, hba_file, hba, 0600);
}

// A new cluster goes only into a data directory that holds none, owned by the OS user, mode 0700.
Status PostgresNode::prepareEmptyDataDir() {
  if (!init_error_.empty()) {
    return Status::failure(init_error_);
  }
  if (initialized()) {
    return Status::failure(options_.data_dir.string() + " already holds a cluster");
  }
  return preparePrivateDir(user_, options_.data_dir);
}

// Statements initPrimary() runs once the server is up (see the list there), plus one spare.
constexpr int kBootstrapStatements = 8;

std::chrono::milliseconds PostgresNode::bootstrapBound() const {
  return options_.tool_timeout + options_.start_timeout + kBootstrapStatements * options_.query_timeout;
}

Result<std::string> PostgresNode::serverVersion() {
  return capture({program("postgres").string(), "--version"}, options_.query_timeout);
}

Status PostgresNode::beginInitPrimary(const AppDatabase& app) {
  for (auto [what, name] : {std::pair{"database"sv, std::string_view(app.database)},
                            std::pair{"user"sv, std::string_view(app.user)},
                            std::pair{"replication user"sv, std::string_view(options_.replication_user)}}) {
    if (Status valid = checkName(what, name); !valid.ok) {
      return valid;
    }
  }
  if (app.user == superuser() || app.user == options_.replication_user) {
    return Status::failure("application user '" + app.user +
                           "' must differ from the superuser and the replication user");
  }
  if (Status dir = prepareEmptyDataDir(); !dir.ok) {
    return dir;
  }
  auto app_password = loadOrCreateSecret(app.password_file);
  if (!app_password.ok) {
    return Status::failure(app_password.error);
  }
  auto replication_password = loadOrCreateSecret(options_.replication_password_file);
  if (!replication_password.ok) {
    return Status::failure(replication_password.error);
  }
  std::vector<std::string> initdb = {program("initdb").string(), "--pgdata=" + options_.data_dir.string(),
                                     "--data-checksums",         "--username=" + superuser(),
                                     "--auth-local=peer",        "--auth-host=scram-sha-256",
                                     "--encoding=UTF8",          "--locale=C"};
  if (!options_.durable) {
    initdb.push_back("--no-sync");
  }
  init_app_ = app;
  init_app_password_ = app_password.value;
  init_replication_password_ = replication_password.value;
  return launchJob(Operation::InitPrimary, std::move(initdb), options_.tool_timeout);
}

Status PostgresNode::finishInitPrimary() {
  const AppDatabase& app = init_app_;
  if (Status done = writeClusterConfig(app); !done.ok) {
    return done;
  }
  if (Status done = writePassFile(); !done.ok) {
    return done;
  }
  // A new, empty cluster starts in well under a second: waited for here.
  if (Status done = start(); !done.ok) {
    return done;
  }
  auto password_sql = [](const std::string& password) {
    auto verifier = scramVerifier(password);
    return quoteLiteral(verifier ? *verifier : password);
  };
  const std::string repl = quoteIdent(options_.replication_user);
  const std::string statements[] = {
      "CREATE ROLE " + repl + " WITH REPLICATION LOGIN PASSWORD " + password_sql(init_replication_password_),
      // What pg_rewind reads from its source, so it needs no superuser.
      "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO " + repl,
      "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO " + repl,
      "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO " + repl,
      "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO " + repl,
      "CREATE ROLE " + quoteIdent(app.user) + " LOGIN PASSWORD " + password_sql(init_app_password_),
      // The web nodes read pg_stat_wal_receiver on replicas (whom a replica streams from, on
      // which timeline): hidden from ordinary roles.
      "GRANT pg_read_all_stats TO " + quoteIdent(app.user),
      "CREATE DATABASE " + quoteIdent(app.database) + " OWNER " + quoteIdent(app.user)};
  for (const std::string& sql : statements) {
    if (auto done = query(sql); !done.ok) {
      return Status::failure(done.error);
    }
  }
  return Status::success();
}

Status PostgresNode::initPrimary(const AppDatabase& app) {
  if (Status begun = beginInitPrimary(app); !begun.ok) {
    return begun;
  }
  return finishOperation();
}

std::string PostgresNode::primaryConninfo(const core::SocketAddress& primary) const {
  pg::ConnParams params = {{"host", hostText(primary)},
                           {"port", std::to_string(primary.port())},
                           {"user", options_.replication_user}};
  if (options_.tls) {
    pg::addTlsPolicy(params, clientTls());
  } else {
    params.emplace_back("passfile", passFile().string());
  }
  params.emplace_back("application_name", options_.node);
  pg::addReceiverPolicy(params);
  return pg::conninfoText(params);
}

Status PostgresNode::writeStandbyConfig(const core::SocketAddress& primary, std::string_view slot) {
  if (Status pass = writePassFile(); !pass.ok) {
    return pass;
  }
  const std::filesystem::path auto_conf = options_.data_dir / "postgresql.auto.conf";
  std::stringstream in(readFile(auto_conf));
  std::string kept;
  std::string line;
  while (std::getline(in, line)) {
    std::string key = line.substr(0, line.find('='));
    key.erase(std::remove(key.begin(), key.end(), ' '), key.end());
    // A copied fence must not survive: promoted later, this node must take writes.
    if (key != "primary_conninfo" && key != "primary_slot_name" && key != "default_transaction_read_only") {
      kept += line + "\n";
    }
  }
  kept += "primary_conninfo = " + confValue(primaryConninfo(primary)) + "\n";
  kept += "primary_slot_name = " + confValue(slot) + "\n";
  if (Status done = writeFileAs(user_, auto_conf, kept, 0600); !done.ok) {
    return done;
  }
  return writeFileAs(user_, options_.data_dir / "standby.signal", "", 0600);
}

std::vector<std::string> PostgresNode::basebackupArgs(bool create_slot) const {
  std::vector<std::string> argv = {program("pg_basebackup").string(),
                                   "--pgdata=" + options_.data_dir.string(),
                                   "--host=" + hostText(clone_primary_),
                                   "--port=" + std::to_string(clone_primary_.port()),
                                   "--username=" + options_.replication_user,
                                   "--no-password",
                                   "--wal-method=stream",
                                   "--checkpoint=fast",
                                   "--slot=" + clone_slot_};
  if (create_slot) {
    argv.push_back("--create-slot");
  }
  if (options_.tls) {
    pg::ConnParams tls;
    pg::addTlsPolicy(tls, clientTls());
    argv.push_back("--dbname=" + pg::conninfoText(tls));
  }
  if (!options_.durable) {
    argv.push_back("--no-sync");
  }
  return argv;
}

void PostgresNode::clearDataDir() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.data_dir, ec)) {
    std::filesystem::remove_all(entry.path(), ec);
  }
}

Status PostgresNode::launchBasebackup(bool create_slot) {
  clone_create_slot_ = create_slot;
  // Not the node's name: this WAL stream must never count as its standby.
  return launchJob(Operation::Clone, basebackupArgs(create_slot), options_.tool_timeout,
                   {"PGPASSFILE=" + passFile().string(), "PGAPPNAME=" + options_.node + "-clone",
                    "PGCONNECT_TIMEOUT=" + connectSeconds(options_.query_timeout)});
}

Status PostgresNode::prepareClone(const core::SocketAddress& primary, std::string_view slot) {
  if (Status dir = prepareEmptyDataDir(); !dir.ok) {
    return dir;
  }
  if (Status pass = writePassFile(); !pass.ok) {
    return pass;
  }
  if (Status tls = installTls(); !tls.ok) {
    return tls;
  }
  clearDataDir();
  clone_primary_ = primary;
  clone_slot_ = std::string(slot);
  return Status::success();
}

Status PostgresNode::beginClone(const core::SocketAddress& primary, std::string_view slot) {
  if (Status prepared = prepareClone(primary, slot); !prepared.ok) {
    return prepared;
  }
  return launchBasebackup(true);
}

Status PostgresNode::beginRestoreClone(std::vector<std::string> restore, milliseconds timeout,
                                       const core::SocketAddress& primary, std::string_view slot) {
  if (Status prepared = prepareClone(primary, slot); !prepared.ok) {
    return prepared;
  }
  return launchJob(Operation::RestoreClone, std::move(restore), timeout);
}

Status PostgresNode::cloneReplica(const core::SocketAddress& primary, std::string_view slot) {
  if (Status begun = beginClone(primary, slot); !begun.ok) {
    return begun;
  }
  return finishOperation();
}

std::optional<pid_t> PostgresNode::livePostmasterPid() const {
  std::ifstream in(options_.data_dir / "postmaster.pid");
  long pid = 0;
  if (!(in >> pid) || pid <= 0) {
    return std::nullopt;
  }
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno != EPERM) {
    return std::nullopt;  // a stale file: PostgreSQL removes it at its next start
  }
  return static_cast<pid_t>(pid);
}

Status PostgresNode::beginStart() {
  if (!init_error_.empty()) {
    return Status::failure(init_error_);
  }
  if (isRunning()) {
    return Status::failure("already running (pid " + std::to_string(pid()) + ")");
  }
  if (auto other = livePostmasterPid()) {
    return Status::failure("a postmaster this agent did not start (pid " + std::to_string(*other) +
                           ") runs on " + options_.data_dir.string() + ": stop() it first");
  }
  if (!initialized()) {
    return Status::failure(options_.data_dir.string() + " holds no cluster");
  }
  if (Status dir = preparePrivateDir(user_, options_.run_dir); !dir.ok) {
    return dir;
  }
  dropSessions();
  if (Status access = writeAccessFiles(); !access.ok) {
    return access;
  }
  if (Status tls = installTls(); !tls.ok) {
    return tls;
  }
  std::vector<std::string> argv = {program("postgres").string(),
                                   "-D",
                                   options_.data_dir.string(),
                                   "-c",
                                   "listen_addresses=" + hostText(options_.listen),
                                   "-c",
                                   "port=" + std::to_string(options_.listen.port()),
                                   "-c",
                                   "unix_socket_directories=\"" + options_.run_dir.string() + "\"",
                                   "-c",
                                   "cluster_name=" + options_.node};
  if (options_.tls) {
    const pg::ClientTls files = clientTls();
    argv.insert(argv.end(),
                {"-c", "ssl=on", "-c", "ssl_ca_file=" + files.root_cert.string(), "-c",
                 "ssl_cert_file=" + files.cert.string(), "-c", "ssl_key_file=" + files.key.string()});
  }
  if (!options_.archive_command.empty()) {
    argv.insert(argv.end(), {"-c", "archive_mode=on", "-c", "archive_command=" + options_.archive_command});
  }
  std::error_code ec;
  const auto log_size = std::filesystem::file_size(logFile(), ec);
  start_log_offset_ = ec ? 0 : log_size;
  if (!options_.fence_file.empty()) {
    // Written at every start: the library always matches this binary (and its fence file layout).
    if (Status written = writeFenceLibrary(options_.fence_library); !written.ok) {
      return written;
    }
    argv.insert(argv.end(), {"-c", "shared_preload_libraries=\"" + options_.fence_library.string() + "\"",
                             "-c", "fulcrum.fence_file=" + options_.fence_file.string()});
  }
  Status spawned = postmaster_.spawn(user_, argv, {}, logFile(), options_.run_dir, SIGINT);
  if (!spawned.ok) {
    return spawned;
  }
  op_ = Operation::Start;
  start_deadline_ = SteadyClock::now() + options_.start_timeout;
  return Status::success();
}

Status PostgresNode::start(const std::function<bool()>& keep_waiting) {
  if (Status begun = beginStart(); !begun.ok) {
    return begun;
  }
  const pid_t ours = postmaster_.pid();
  std::optional<Status> result;
  bool abandoned = false;
  pollUntil(
      [&] {
        if ((result = pollOperation())) {
          return true;
        }
        if (keep_waiting && !keep_waiting()) {
          abandoned = true;
          return true;
        }
        return false;
      },
      SteadyClock::time_point::max());
  if (abandoned) {
    op_ = Operation::None;
    return Status::failure("stopped waiting for postgres (pid " + std::to_string(ours) +
                           ") to accept connections: still starting");
  }
  return *result;
}

std::string PostgresNode::startLogSummary() const {
  // What this start wrote, not the whole log: the FATAL/PANIC lines say why, the rest is noise
  // (a start loop once copied 466 lines of PostgreSQL's log into the agent's in 25 s).
  std::string text = readFile(logFile());
  text = start_log_offset_ <= text.size() ? text.substr(start_log_offset_) : text;
  std::stringstream in(text);
  std::string line;
  std::vector<std::string> fatal;
  std::vector<std::string> last;
  while (std::getline(in, line)) {
    if (line.size() > 300) {
      line = line.substr(0, 300) + "...";
    }
    if ((line.find("FATAL:") != std::string::npos || line.find("PANIC:") != std::string::npos) &&
        fatal.size() < 3) {
      fatal.push_back(line);
    }
    last.push_back(line);
    if (last.size() > 3) {
      last.erase(last.begin());
    }
  }
  const auto& quoted = fatal.empty() ? last : fatal;
  std::string out;
  for (const auto& l : quoted) {
    out += (out.empty() ? "" : " | ") + l;
  }
  return out.empty() ? "(nothing in " + logFile().string() + ")" : out;
}

std::optional<Status> PostgresNode::pollStart() {
  const pid_t ours = postmaster_.pid();
  if (!postmaster_.started()) {  // reaped elsewhere (isRunning()) while starting
    return Status::failure("postgres exited during start: " + startLogSummary());
  }
  if (auto exited = postmaster_.poll()) {
    return Status::failure("postgres exited during start (" + describeWaitStatus(*exited) +
                           "): " + startLogSummary());
  }
  // postmaster.pid line 8 is what pg_ctl -w waits for: "ready" or "standby" once the server
  // accepts connections.
  std::ifstream in(options_.data_dir / "postmaster.pid");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
  }
  if (lines.size() >= 8 && lines[0] == std::to_string(ours) &&
      (lines[7].rfind("ready", 0) == 0 || lines[7].rfind("standby", 0) == 0)) {
    return Status::success();
  }
  if (SteadyClock::now() >= start_deadline_) {
    return Status::failure("postgres (pid " + std::to_string(ours) + ") not accepting connections after " +
                           std::to_string(options_.start_timeout.count()) +
                           " ms; it keeps starting (stop() to give up): " + startLogSummary());
  }
  return std::nullopt;
}

std::optional<Status> PostgresNode::pollOperation() {
  std::optional<Status> done;
  switch (op_) {
    case Operation::None:
      return Status::success();
    case Operation::Start:
      done = pollStart();
      break;
    case Operation::InitPrimary:
    case Operation::Clone:
    case Operation::RestoreClone:
    case Operation::Rewind:
      done = pollJob();
      break;
  }
  if (done) {
    op_ = Operation::None;
  }
  return done;
}

std::optional<Status> PostgresNode::pollJob() {
  auto output = job_ ? job_->poll() : std::optional<ToolOutput>(ToolOutput{});
  if (!output) {
    return std::nullopt;
  }
  Status result = Status::success();
  if (output->exit_code != 0 || output->timed_out) {
    result = Status::failure(describeFailure(job_ ? job_->run() : ToolRun{}, *output));
  }
  job_.reset();
  switch (op_) {
    case Operation::InitPrimary:
      op_ = Operation::None;  // finishInitPrimary() starts the server itself
      return result.ok ? finishInitPrimary() : result;
    case Operation::Clone:
      if (!result.ok && clone_create_slot_ && result.error.find("already exists") != std::string::npos) {
        // A slot left by an earlier clone of this node: reuse it.
        clearDataDir();
        op_ = Operation::None;
        if (Status again = launchBasebackup(false); !again.ok) {
          clearDataDir();
          return again;
        }
        return std::nullopt;
      }
      if (!result.ok) {
        clearDataDir();
        return result;
      }
      return writeStandbyConfig(clone_primary_, clone_slot_);
    case Operation::RestoreClone:
      if (!result.ok) {
        clearDataDir();
        return result;
      }
      return writeStandbyConfig(clone_primary_, clone_slot_);
    case Operation::Rewind: {
      // standby.signal, parked while pg_rewind ran: back if it failed (the node must not start
      // as a primary); follow() writes it afterwards anyway.
      const std::filesystem::path signal = options_.data_dir / "standby.signal";
      const std::filesystem::path parked = options_.data_dir / "standby.signal.rewind";
      std::error_code ec;
      if (rewind_parked_) {
        if (!result.ok) {
          std::filesystem::rename(parked, signal, ec);
        } else {
          std::filesystem::remove(parked, ec);
        }
        rewind_parked_ = false;
      }
      return result;
    }
    case Operation::None:
    case Operation::Start:
      break;
  }
  return result;
}

void PostgresNode::abandonOperation() {
  job_.reset();  // kills a running tool's process group
  // What a failure of the tool would leave, undone the same way: a partial copy goes, and
  // standby.signal parked during pg_rewind comes back (the node must never start as a primary).
  if (op_ == Operation::Clone) {
    clearDataDir();
  } else if (op_ == Operation::Rewind && rewind_parked_) {
    std::error_code ec;
    std::filesystem::rename(options_.data_dir / "standby.signal.rewind", options_.data_dir / "standby.signal", ec);
    rewind_parked_ = false;
  }
  op_ = Operation::None;
}

Status PostgresNode::stop(StopMode mode) {
  dropSessions();  // also: a smart shutdown would wait for them
  if (postmaster_.started()) {
    static constexpr int kSignals[] = {SIGTERM, SIGINT, SIGQUIT};
    for (int i = static_cast<int>(mode); i < 3; ++i) {
      postmaster_.signal(kSignals[i]);
      if (postmaster_.waitExit(options_.stop_timeout)) {
        return Status::success();  // the postmaster exits only after its children have
      }
    }
    postmaster_.kill();
    return Status::success();
  }
  if (auto other = livePostmasterPid()) {
    static constexpr const char* kModes[] = {"smart", "fast", "immediate"};
    auto seconds = std::to_string(std::max<int64_t>(1, options_.stop_timeout.count() / 1000));
    Status done = runChecked({program("pg_ctl").string(), "stop", "-D", options_.data_dir.string(), "-m",
                              kModes[static_cast<int>(mode)], "-w", "-t", seconds},
                             options_.stop_timeout + milliseconds(5000));
    if (!done.ok && livePostmasterPid()) {
      return done;
    }
  }
  return Status::success();
}

bool PostgresNode::signalStop(StopMode mode) {
  if (!postmaster_.started()) {
    return false;
  }
  dropSessions();
  static constexpr int kSignals[] = {SIGTERM, SIGINT, SIGQUIT};
  postmaster_.signal(kSignals[static_cast<int>(mode)]);
  return true;
}

bool PostgresNode::isRunning() {
  if (!postmaster_.started()) {
    return false;
  }
  if (auto status = postmaster_.poll()) {
    unreported_exit_ = status;
    dropSessions();
    return false;
  }
  return true;
}

std::optional<int> PostgresNode::pollExit() {
  if (unreported_exit_) {
    return std::exchange(unreported_exit_, std::nullopt);
  }
  auto status = postmaster_.poll();
  if (status) {
    dropSessions();
  }
  return status;
}

Result<PgStatus> PostgresNode::status() {
  using R = Result<PgStatus>;
  auto rows = query(
      "SELECT r, CASE WHEN r THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0)"
      " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,"
      " CASE WHEN r THEN NULL ELSE pg_current_wal_lsn() END,"
      " pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(),"
      " current_setting('default_transaction_read_only'),"
      " (SELECT status FROM pg_stat_wal_receiver),"
      // As core::SocketAddress::toString() writes an address: "[::1]:5432" for IPv6.
      " (SELECT CASE WHEN sender_host LIKE '%:%' THEN '[' || sender_host || ']' ELSE sender_host END"
      "  || ':' || sender_port FROM pg_stat_wal_receiver),"
      // Replay lag as commonly measured: 0 when all received WAL is replayed (a receiver that
      // restarted reports where it restarted streaming, which may be behind replay), else the
      // age of the last transaction replayed.
      " CASE WHEN r THEN CASE WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0"
      "  ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END END"
      "  ,"
      // A setting changed (ALTER SYSTEM, the configuration file) that takes effect only at a
      // restart: `fulcrum db list` says so (patronictl's "Pending restart").
      " (SELECT coalesce(bool_or(pending_restart), false) FROM pg_settings),"
      // The timeline of the last checkpoint (a standby's restartpoint): what a standby that
      // streams from nobody last knew.
      " (SELECT timeline_id FROM pg_control_checkpoint())"
      " FROM (SELECT pg_is_in_recovery() AS r) AS s");
  if (!rows.ok) {
    return R::failure(rows.error);
  }
  if (rows.value.size() != 1 || rows.value[0].size() != 11) {
    return R::failure("unexpected answer to the status query");
  }
  const auto& row = rows.value[0];
  PgStatus status;
  status.in_recovery = row[0] == "t";
  std::from_chars(row[1].data(), row[1].data() + row[1].size(), status.timeline);
  status.current_lsn = parseLsn(row[2]).value_or(0);
  status.receive_lsn = parseLsn(row[3]).value_or(0);
  status.replay_lsn = parseLsn(row[4]).value_or(0);
  status.read_only = row[5] == "on";
  status.receiver = row[6];
  status.sender = row[7];
  status.replay_lag_seconds = parseSeconds(row[8]);
  status.pending_restart = row[9] == "t";
  std::from_chars(row[10].data(), row[10].data() + row[10].size(), status.checkpoint_timeline);
  return R::success(status);
}

Result<std::vector<ReplicaInfo>> PostgresNode::replicas() {
  using R = Result<std::vector<ReplicaInfo>>;
  auto rows = query(
      "SELECT application_name, coalesce(host(client_addr), ''), state, sent_lsn, flush_lsn, replay_lsn,"
      " sync_state, sync_priority,"
      " CASE WHEN replay_lsn = sent_lsn THEN 0 ELSE extract(epoch FROM replay_lag) END"
      " FROM pg_stat_replication ORDER BY application_name");
  if (!rows.ok) {
    return R::failure(rows.error);
  }
  std::vector<ReplicaInfo> replicas;
  for (const auto& row : rows.value) {
    if (row.size() != 9) {
      return R::failure("unexpected answer from pg_stat_replication");
    }
    ReplicaInfo info;
    info.application_name = row[0];
    info.client_addr = row[1];
    info.state = row[2];
    info.sent_lsn = parseLsn(row[3]).value_or(0);
    info.flush_lsn = parseLsn(row[4]).value_or(0);
    info.replay_lsn = parseLsn(row[5]).value_or(0);
    info.sync_state = row[6];
    std::from_chars(row[7].data(), row[7].data() + row[7].size(), info.sync_priority);
    info.replay_lag_seconds = parseSeconds(row[8]);
    replicas.push_back(std::move(info));
  }
  return R::success(std::move(replicas));
}

// While a promotion has not ended, pg_promote is sent again this often.
constexpr auto kPromoteResignal = milliseconds(50);

Status PostgresNode::promote() {
  // pg_promote(wait => true) looks for the end of recovery only every 100 ms: signal without
  // waiting, then ask ourselves at a finer grain (a round trip on our session is well under 1 ms).
  auto rows = query("SELECT pg_promote(false)");
  if (!rows.ok) {
    return Status::failure(rows.error);
  }
  if (rows.value != std::vector<std::vector<std::string>>{{"t"}}) {
    return Status::failure("pg_promote could not signal the postmaster");
  }
  std::string last_error;
  auto signalled = SteadyClock::now();
  bool promoted = pollUntil(
      [&] {
        auto recovering = query("SELECT pg_is_in_recovery()");
        last_error = recovering.ok ? "" : ": " + recovering.error;
        if (recovering.ok && recovering.value == std::vector<std::vector<std::string>>{{"f"}}) {
          return true;
        }
        // The startup process can miss the signal's wakeup: caught between two waits for WAL
        // from the lost primary it sleeps out wal_retrieve_retry_interval first (seen: 490 ms
        // of 500). Signalling again is harmless (the trigger file is rewritten) and wakes it.
        if (SteadyClock::now() - signalled >= kPromoteResignal) {
          query("SELECT pg_promote(false)");  // "recovery is not in progress" once it ended
          signalled = SteadyClock::now();
        }
        return false;
      },
      SteadyClock::now() + options_.query_timeout, milliseconds(10));
  if (!promoted) {
    return Status::failure("recovery did not end within " + std::to_string(options_.query_timeout.count()) +
                           " ms of pg_promote" + last_error);
  }
  return unfence();
}

Status PostgresNode::checkpoint() {
  auto done = query("CHECKPOINT");
  return done.ok ? Status::success() : Status::failure("CHECKPOINT: " + done.error);
}

Status PostgresNode::fence() {
  auto set = query("ALTER SYSTEM SET default_transaction_read_only = on");
  if (!set.ok) {
    return Status::failure(set.error);
  }
  auto reload = query("SELECT pg_reload_conf()");
  if (!reload.ok) {
    return Status::failure(reload.error);
  }
  // The reload is asynchronous: wait until it is in force for new sessions, then end the older
  // ones. Our own (older) session is the probe: pg_reload_conf() signals the postmaster, which
  // rereads the files and only then signals its children, and a backend applies a pending reload
  // before its next command. So once our backend reports "on", the postmaster has the new value
  // and every session it starts from now on inherits it.
  std::string last_error;
  bool seen = pollUntil(
      [&] {
        auto rows = query("SELECT current_setting('default_transaction_read_only')");
        last_error = rows.ok ? "" : rows.error;
        return rows.ok && !rows.value.empty() && rows.value[0] == std::vector<std::string>{"on"};
      },
      SteadyClock::now() + options_.query_timeout);
  if (!seen) {
    return Status::failure("fence not in force after reload" + (last_error.empty() ? "" : ": " + last_error));
  }
  // With a timeout, pg_terminate_backend waits until each backend has exited (PostgreSQL 14+):
  // no old session writes once fence() returns, and its client has the FATAL already, so a
  // session of ours on another database sees it is gone before its next query. (A backend that
  // ended by itself meanwhile answers false: nothing to wait for.)
  auto terminated = query(
      "SELECT count(pg_terminate_backend(pid, 1000)) FROM pg_stat_activity"
      " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()");
  return terminated.ok ? Status::success() : Status::failure(terminated.error);
}

Status PostgresNode::unfence() {
  auto reset = query("ALTER SYSTEM RESET default_transaction_read_only");
  if (!reset.ok) {
    return Status::failure(reset.error);
  }
  auto reload = query("SELECT pg_reload_conf()");
  return reload.ok ? Status::success() : Status::failure(reload.error);
}

Status PostgresNode::setSynchronousStandbys(std::string_view value) {
  for (const std::string& sql : {"ALTER SYSTEM SET synchronous_standby_names = " + quoteLiteral(value),
                                 std::string("SELECT pg_reload_conf()")}) {
    if (auto done = query(sql); !done.ok) {
      return Status::failure(done.error);
    }
  }
  return Status::success();
}

namespace {

// One "Name: value" field of pg_controldata's output ("" when absent).
std::string controlField(const std::string& output, std::string_view name) {
  std::stringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) == 0 && line.size() > name.size() && line[name.size()] == ':') {
      std::string value = line.substr(name.size() + 1);
      value.erase(0, value.find_first_not_of(' '));
      return value;
    }
  }
  return "";
}

}  // namespace

Result<Lsn> PostgresNode::cleanShutdownLsn() {
  using R = Result<Lsn>;
  if (isRunning() || livePostmasterPid()) {
    return R::failure("the server is running");
  }
  auto output = capture({program("pg_controldata").string(), "-D", options_.data_dir.string()},
                        options_.query_timeout, {"LC_ALL=C"});
  if (!output.ok) {
    return R::failure(output.error);
  }
  std::string state = controlField(output.value, "Database cluster state");
  if (state != "shut down") {
    return R::failure("cluster state is '" + state + "', not 'shut down'");
  }
  if (auto lsn = parseLsn(controlField(output.value, "Latest checkpoint location"))) {
    return R::success(*lsn);
  }
  return R::failure("pg_controldata printed no latest checkpoint location");
}

std::optional<std::vector<TimelineSwitch>> parseTimelineHistory(std::string_view text) {
  // "1\t0/3000148\tno recovery target specified": parent timeline, switchpoint, reason.
  std::vector<TimelineSwitch> out;
  std::stringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    std::stringstream fields(line);
    std::string tli_text;
    std::string lsn_text;
    if (!(fields >> tli_text) || tli_text[0] == '#') {
      continue;  // blank lines and comments, as PostgreSQL's own reader skips them
    }
    TimelineSwitch entry;
    auto [end, ec] = std::from_chars(tli_text.data(), tli_text.data() + tli_text.size(), entry.tli);
    auto lsn = (fields >> lsn_text) ? parseLsn(lsn_text) : std::nullopt;
    if (ec != std::errc() || end != tli_text.data() + tli_text.size() || entry.tli == 0 || !lsn) {
      return std::nullopt;
    }
    entry.switchpoint = *lsn;
    out.push_back(entry);
  }
  return out;
}

Result<std::vector<TimelineSwitch>> PostgresNode::timelineHistory(uint32_t tli) {
  using R = Result<std::vector<TimelineSwitch>>;
  if (tli <= 1) {
    return R::success({});
  }
  char name[32];
  std::snprintf(name, sizeof name, "%08X.history", tli);
  std::ifstream in(options_.data_dir / "pg_wal" / name);
  if (!in) {
    return R::failure("no " + std::string(name) + " in " + (options_.data_dir / "pg_wal").string());
  }
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = parseTimelineHistory(text.str());
  if (!parsed) {
    return R::failure("malformed " + std::string(name));
  }
  return R::success(std::move(*parsed));
}

Result<uint64_t> PostgresNode::systemIdentifier() {
  using R = Result<uint64_t>;
  if (!initialized()) {
    return R::failure(options_.data_dir.string() + " holds no cluster");
  }
  // A tool, not a query: it must work while the server is stopped. Generous: it reads one file.
  auto output = capture({program("pg_controldata").string(), "-D", options_.data_dir.string()},
                        std::max(options_.query_timeout, std::chrono::milliseconds(5000)), {"LC_ALL=C"});
  if (!output.ok) {
    return R::failure(output.error);
  }
  if (auto id = parseSysid(controlField(output.value, "Database system identifier"))) {
    return R::success(*id);
  }
  return R::failure("pg_controldata printed no database system identifier");
}

Result<std::filesystem::path> PostgresNode::moveDataAside() {
  using R = Result<std::filesystem::path>;
  if (isRunning() || livePostmasterPid()) {
    return R::failure("moving the data directory aside needs the server stopped");
  }
  dropSessions();
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  std::filesystem::path aside = options_.data_dir;
  aside += std::string(".failed-") + stamp;
  std::error_code ec;
  std::filesystem::rename(options_.data_dir, aside, ec);
  if (ec) {
    return R::failure("moving " + options_.data_dir.string() + " to " + aside.string() + ": " + ec.message());
  }
  return R::success(aside);
}

Status PostgresNode::ensureSlot(std::string_view slot) {
  auto rows = query("SELECT pg_create_physical_replication_slot(" + quoteLiteral(slot) +
                    ", true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = " +
                    quoteLiteral(slot) + ")");
  return rows.ok ? Status::success() : Status::failure(rows.error);
}

Status PostgresNode::dropSlot(std::string_view slot) {
  auto rows =
      query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = " +
            quoteLiteral(slot));
  return rows.ok ? Status::success() : Status::failure(rows.error);
}

Status PostgresNode::beginRewind(const core::SocketAddress& source) {
  if (isRunning() || livePostmasterPid()) {
    return Status::failure("pg_rewind needs the server stopped");
  }
  dropSessions();
  if (Status pass = writePassFile(); !pass.ok) {
    return pass;
  }
  // The receivers' network policy (connect timeout, keepalives): a source cut off mid-rewind
  // ends the tool in seconds, not at its timeout.
  pg::ConnParams params = {{"host", hostText(source)},
                           {"port", std::to_string(source.port())},
                           {"user", options_.replication_user},
                           {"dbname", "postgres"}};
  if (options_.tls) {
    if (Status tls = installTls(); !tls.ok) {
      return tls;
    }
    pg::addTlsPolicy(params, clientTls());
  } else {
    params.emplace_back("passfile", passFile().string());
  }
  pg::addReceiverPolicy(params);
  std::string conninfo = pg::conninfoText(params);
  std::vector<std::string> argv = {program("pg_rewind").string(),
                                   "--target-pgdata=" + options_.data_dir.string(),
                                   "--source-server=" + conninfo};
  if (!options_.durable) {
    argv.push_back("--no-sync");
  }
  // A standby that crashed (or never got through its start) is not cleanly shut down: pg_rewind
  // then finishes its crash recovery in single-user mode, which refuses to run with
  // standby.signal. Out of the way meanwhile; put back if pg_rewind fails (the node must not
  // start as a primary), and follow() writes it afterwards anyway.
  const std::filesystem::path signal = options_.data_dir / "standby.signal";
  const std::filesystem::path parked = options_.data_dir / "standby.signal.rewind";
  std::error_code ec;
  bool moved = false;
  if (std::filesystem::exists(signal, ec)) {
    auto control = capture({program("pg_controldata").string(), "-D", options_.data_dir.string()},
                           std::max(options_.query_timeout, std::chrono::milliseconds(5000)), {"LC_ALL=C"});
    const std::string state = control.ok ? controlField(control.value, "Database cluster state") : "";
    if (state != "shut down" && state != "shut down in recovery") {
      std::filesystem::rename(signal, parked, ec);
      moved = !ec;
    }
  }
  rewind_parked_ = moved;
  return launchJob(Operation::Rewind, std::move(argv), options_.tool_timeout,
                   {"PGAPPNAME=" + options_.node + "-rewind"});
}

Status PostgresNode::rewind(const core::SocketAddress& source) {
  if (Status begun = beginRewind(source); !begun.ok) {
    return begun;
  }
  return finishOperation();
}

Status PostgresNode::follow(const core::SocketAddress& primary, std::string_view slot) {
  if (isRunning()) {
    auto current = status();
    if (!current.ok) {
      return Status::failure(current.error);
    }
    if (!current.value.in_recovery) {
      return Status::failure("a running primary cannot follow another: stop, rewind, then follow");
    }
    if (Status pass = writePassFile(); !pass.ok) {
      return pass;
    }
    // Both settings take effect on reload (PostgreSQL 13+): the WAL receiver restarts.
    for (const std::string& sql :
         {"ALTER SYSTEM SET primary_conninfo = " + quoteLiteral(primaryConninfo(primary)),
          "ALTER SYSTEM SET primary_slot_name = " + quoteLiteral(slot),
          std::string("SELECT pg_reload_conf()")}) {
      if (auto done = query(sql); !done.ok) {
        return Status::failure(done.error);
      }
    }
    return Status::success();
  }
  if (livePostmasterPid()) {
    return Status::failure("a postmaster this agent did not start runs on " + options_.data_dir.string());
  }
  return writeStandbyConfig(primary, slot);
}

}  // namespace fulcrum::db
