// Argument parsing and dispatch only; every command's logic lives in a library the tests link.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "config/features.h"
#include "config/loader.h"
#include "config/values.h"
#include "core/acceptor.h"
#include "core/exit_codes.h"
#include "core/log.h"
#include "db/db_command.h"
#include "lb/lb_command.h"
#include "run/logs.h"
#include "site/backup_command.h"
#include "site/certs_command.h"
#include "site/db_cli.h"
#include "site/firewall.h"
#include "site/import_command.h"
#include "site/lab_command.h"
#include "site/monitoring.h"
#include "site/node_command.h"
#include "site/reload_command.h"
#include "site/roll_command.h"
#include "site/status.h"
#include "site/up_command.h"
#include "web/web_command.h"

namespace {

using fulcrum::core::kExitOk;
constexpr int kExitUsage = fulcrum::core::kExitConfig;

// Loads the topology file, printing every error as FILE:LINE:COL: key: message.
bool loadSite(const std::string& path, fulcrum::config::Site& out) {
  auto result = fulcrum::config::loadSiteFile(path);
  for (const auto& error : result.errors) {
    std::fprintf(stderr, "%s\n", error.toString().c_str());
  }
  if (!result.ok()) {
    return false;
  }
  out = std::move(result.site);
  return true;
}

void addAccessLogOptions(CLI::App& role, fulcrum::run::LogFlags& flags) {
  role.add_option(
      "--access-log", flags.access_log,
      "write access lines to this file (reopened on SIGUSR1), or - for stdout (default: access_log_file)");
  role.add_option("--access-log-format", flags.access_log_format, "off|text|json (default: access_log)")
      ->check(CLI::IsMember({"off", "text", "json"}));
}

// The event log's file and the role's access stream; false (said on stderr) when a file cannot
// be opened.
bool openLogs(const fulcrum::run::LogFlags& flags, const fulcrum::config::Site& site,
              const fulcrum::config::AccessLog* access, const std::string& node) {
  std::string error;
  fulcrum::core::LogRotation rotation{site.site.log_max_bytes, static_cast<int>(site.site.log_keep)};
  if (!fulcrum::run::openLogs(flags, access != nullptr ? access->format : "off",
                              access != nullptr ? access->file : std::filesystem::path(), node, rotation,
                              error)) {
    std::fprintf(stderr, "fulcrum: %s\n", error.c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fulcrum: a whole highly available website from one binary"};
  app.require_subcommand(1);
  std::string log_format = "text";
  std::string log_level = "info";
  app.add_option("--log-format", log_format, "text|json")->check(CLI::IsMember({"text", "json"}));
  app.add_option("--log-level", log_level, "error|warn|info|debug")
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
  fulcrum::run::LogFlags log_flags;
  app.add_option(
      "--log-file", log_flags.log_file,
      "write event lines to this file (reopened on SIGUSR1) instead of stderr; {node} is the node's name");

  auto* version = app.add_subcommand("version", "print version and build flags");

  std::string check_site = "examples/site.toml";
  auto* check = app.add_subcommand("check", "validate a topology file");
  check->add_option("site", check_site, "topology file")->required();

  std::string firewall_site;
  std::string firewall_node;
  std::vector<std::string> firewall_admin;
  auto* firewall = app.add_subcommand("firewall", "print the nftables ruleset of a node's host");
  firewall->add_option("site", firewall_site, "topology file")->required();
  firewall->add_option("--node", firewall_node, "a node of the host (lb-01, web-02, db-01, etcd-1, prometheus...)")
      ->required();
  firewall->add_option("--admin", firewall_admin, "an address or CIDR allowed to every port (repeatable)");

  std::string certs_site;
  bool certs_json = false;
  auto* certs = app.add_subcommand(
      "certs", "make the site CA and every node's certificate for [security] internal_tls (or renew them)");
  certs->add_option("site", certs_site, "topology file")->required();
  certs->add_flag("--json", certs_json, "print a JSON object");

  fulcrum::site::ImportOptions import_options;
  auto* import = app.add_subcommand(
      "import", "print a topology file equivalent to an haproxy.cfg, naming each line it could not translate");
  import->add_option("file", import_options.input, "haproxy.cfg")->required();
  import->add_option("--out", import_options.out, "write the topology file here instead of stdout");
  import->add_flag("--force", import_options.force, "overwrite --out if it exists");
  import->add_option("--name", import_options.name, "[site] name (default: the file's name without extension)");
  import->add_option("--bind-ip", import_options.bind_ip,
                     "the lb's address for binds on every address ('*:80', ':80'); default 0.0.0.0");

  std::string web_site;
  std::string web_node;
  auto* web = app.add_subcommand("web", "run one web server node");
  web->add_option("--site", web_site, "topology file")->required();
  web->add_option("--node", web_node, "node name ([[web.node]] name)")->required();
  addAccessLogOptions(*web, log_flags);

  std::string lb_site;
  std::string lb_node;
  auto* lb = app.add_subcommand("lb", "run one load balancer node");
  lb->add_option("--site", lb_site, "topology file")->required();
  lb->add_option("--node", lb_node, "node name ([[lb.node]] name)")->required();
  addAccessLogOptions(*lb, log_flags);
  bool lb_takeover = false;
  lb->add_flag("--takeover", lb_takeover,
               "take the listening sockets over from this node's running process (a binary upgrade): it "
               "then stops accepting, drains and exits");
  bool lb_release_vip = false;
  lb->add_flag("--release-vip", lb_release_vip,
               "remove [lb.vip]'s address from its interface and exit (after the node died without releasing it)");

  std::string db_site;
  std::string db_node;
  auto* db = app.add_subcommand("db", "run one database node agent (supervises its PostgreSQL), or act on the cluster");
  db->add_option("--site", db_site, "topology file (running an agent)");
  db->add_option("--node", db_node, "node name ([[db.node]] name; running an agent)");
  db->require_subcommand(0, 1);
  std::string db_cli_site = "examples/site.toml";
  bool db_list_json = false;
  auto* db_list = db->add_subcommand("list", "the cluster as each agent sees it: leader, timeline, members, lag");
  db_list->add_option("site", db_cli_site, "topology file (default examples/site.toml)");
  db_list->add_flag("--json", db_list_json, "an object: site, leader, timeline, synchronous, members");
  std::string db_to;
  auto* db_switchover = db->add_subcommand("switchover", "hand the leadership over without loss (planned)");
  db_switchover->add_option("site", db_cli_site, "topology file (default examples/site.toml)");
  db_switchover->add_option("--to", db_to, "the replica to take over (default: the most advanced healthy one)");
  std::string db_at;
  bool db_cancel = false;
  db_switchover->add_option("--at", db_at,
                            "schedule it: \"2026-12-04 03:00:00\" (UTC), with an optional +HH:MM offset, or @UNIXTIME");
  db_switchover->add_flag("--cancel", db_cancel, "drop the scheduled switchover")->excludes("--at")->excludes("--to");
  bool db_json = false;  // the actions' answer as one JSON object
  auto* db_failover = db->add_subcommand("failover", "make NODE the leader of a cluster that has none");
  db_failover->add_option("site", db_cli_site, "topology file (default examples/site.toml)");
  db_failover->add_option("--to", db_to, "the replica to promote")->required();
  auto* db_pause = db->add_subcommand("pause", "maintenance mode: no automatic failover until `db resume`");
  db_pause->add_option("site", db_cli_site, "topology file (default examples/site.toml)");
  auto* db_resume = db->add_subcommand("resume", "end maintenance mode: automatic failover again");
  db_resume->add_option("site", db_cli_site, "topology file (default examples/site.toml)");
  std::string db_target;
  auto* db_restart = db->add_subcommand("restart", "restart NODE's PostgreSQL in its role (the leader keeps the lease)");
  db_restart->add_option("node", db_target, "the [[db.node]] to restart")->required();
  db_restart->add_option("site", db_cli_site, "topology file (default examples/site.toml)");
  int db_reinit_wait = 900;
  auto* db_reinit = db->add_subcommand("reinit", "clone replica NODE again from the leader (old data kept aside)");
  db_reinit->add_option("node", db_target, "the replica to re-clone")->required();
  db_reinit->add_option("site", db_cli_site, "topology file (default examples/site.toml)");
  db_reinit->add_option("--wait", db_reinit_wait, "seconds to wait for it to stream again (default 900)")
      ->check(CLI::Range(1, 86400));
  for (CLI::App* action : {db_switchover, db_failover, db_pause, db_resume, db_restart, db_reinit}) {
    action->add_flag("--json", db_json, "print the outcome as one JSON object");
  }
  bool db_history_json = false;
  auto* db_history = db->add_subcommand("history", "the cluster's timelines: where, when and why each began");
  db_history->add_option("site", db_cli_site, "topology file (default examples/site.toml)");
  db_history->add_flag("--json", db_history_json, "an object: leader, timeline, history");

  std::string up_site = "examples/site.toml";
  bool up_no_restart = false;
  auto* up = app.add_subcommand("up", "run every node of a site on this machine, supervised");
  up->add_option("site", up_site, "topology file (default examples/site.toml)");
  up->add_flag("--no-restart", up_no_restart, "do not restart a child that exits");

  std::string reload_site = "examples/site.toml";
  fulcrum::site::ReloadOptions reload_options;
  auto* reload = app.add_subcommand("reload", "ask the nodes of a site running on this host to re-read the file");
  reload->add_option("--site", reload_site, "topology file (default examples/site.toml)");
  reload->add_option("--node", reload_options.nodes, "only this node (repeatable)");
  reload->add_flag("--json", reload_options.json, "print a JSON array");
  reload->add_flag("--upgrade", reload_options.upgrade,
                   "binary upgrade: `fulcrum up` restarts each lb from the binary now installed, taking its "
                   "listening sockets over (no connection refused)");

  std::string roll_site = "examples/site.toml";
  fulcrum::site::RollOptions roll_options;
  auto* roll = app.add_subcommand("roll", "restart a role's nodes running on this host one by one, drained at the lbs");
  roll->add_option("--site", roll_site, "topology file (default examples/site.toml)");
  roll->add_option("--role", roll_options.role, "role to restart (web)");
  roll->add_option("--node", roll_options.nodes, "only this node (repeatable)");

  // stop|start|restart [FILE] NODE: one or two words, the last the node.
  std::string node_site = "examples/site.toml";
  std::vector<std::string> node_words;
  std::vector<std::pair<CLI::App*, fulcrum::site::ControlOp>> node_commands;
  for (const auto& [op, what] : std::initializer_list<std::pair<fulcrum::site::ControlOp, const char*>>{
           {fulcrum::site::ControlOp::Stop, "stop one node of the site `fulcrum up` runs, and keep it down"},
           {fulcrum::site::ControlOp::Start, "start a node `fulcrum stop` stopped; returns once it answers"},
           {fulcrum::site::ControlOp::Restart, "stop then start one node of the site `fulcrum up` runs"}}) {
    auto* sub = app.add_subcommand(std::string(fulcrum::site::controlOpName(op)), what);
    sub->add_option("node", node_words, "the topology file (default examples/site.toml, or --site), then the node")
        ->required()
        ->expected(1, 2)
        ->type_name("[FILE] NODE");
    sub->add_option("--site", node_site, "topology file (default examples/site.toml)");
    node_commands.emplace_back(sub, op);
  }

  std::string status_site = "examples/site.toml";
  bool status_json = false;
  auto* status = app.add_subcommand("status", "one line per node: role, state, health, requests/s, lag");
  std::string status_file;
  status->add_option("file", status_file, "topology file (as --site)");
  status->add_option("--site", status_site, "topology file (default examples/site.toml)");
  status->add_flag("--json", status_json, "print a JSON array");
  bool status_watch = false;
  int status_interval = 2;
  status->add_flag("--watch", status_watch, "redraw in place until interrupted");
  status->add_option("--interval", status_interval, "seconds between two reports under --watch (default 2)")
      ->check(CLI::Range(1, 3600));

  std::string backup_site = "examples/site.toml";
  fulcrum::site::BackupOptions backup_options;
  bool backup_full = false;
  bool backup_incr = false;
  auto* backup = app.add_subcommand("backup", "take a pgBackRest backup now on the db leader ([db.backup]), or list them");
  backup->add_option("site", backup_site, "topology file (default examples/site.toml)");
  auto* full_flag = backup->add_flag("--full", backup_full, "a full backup (default: differential)");
  backup->add_flag("--incr", backup_incr, "an incremental backup")->excludes(full_flag);
  backup->add_flag("--list", backup_options.list, "list the backups and the time range a restore can reach");
  backup->add_flag("--json", backup_options.json, "with --list: the leader agent's JSON");

  std::string restore_site = "examples/site.toml";
  fulcrum::site::RestoreOptions restore_options;
  auto* restore = app.add_subcommand(
      "restore", "restore the database to a moment (point-in-time recovery) or a backup; replicas re-clone");
  restore->add_option("site", restore_site, "topology file (default examples/site.toml)");
  auto* to_flag = restore->add_option("--to", restore_options.to,
                                      "a moment: '2026-12-03 10:15:00' (UTC unless +HH:MM is given) or @UNIXTIME");
  restore->add_option("--to-backup", restore_options.to_backup, "a backup's label (fulcrum backup --list)")
      ->excludes(to_flag);
  restore->add_flag("--dry-run", restore_options.dry_run, "print what would happen, change nothing");

  std::string monitoring_site;
  std::string monitoring_out;
  auto* monitoring = app.add_subcommand(
      "monitoring", "write prometheus.yml, alertmanager.yml and alerts.yml for a site's [monitoring]");
  monitoring->add_option("site", monitoring_site, "topology file")->required();
  monitoring->add_option("--out", monitoring_out, "directory to write them into (created if missing)")
      ->required();

  std::string etcd_site;
  std::string etcd_node;
  bool etcd_print = false;
  auto* etcd = app.add_subcommand("etcd", "run one managed etcd member with the flags `up` would give it");
  etcd->add_option("--site", etcd_site, "topology file")->required();
  etcd->add_option("--node", etcd_node, "member name: etcd (one endpoint), or etcd-1, etcd-2, ...")->required();
  etcd->add_flag("--print", etcd_print, "print the etcd command line instead of running it");

  std::string lab_site;
  std::string lab_node;
  fulcrum::site::LabOptions lab_options;
  bool lab_no_firewall = false;
  auto* lab = app.add_subcommand("lab", "(root) the site across network namespaces, one per host, with faults");
  lab->require_subcommand(1);
  std::vector<CLI::App*> lab_actions;
  for (const auto& [name, what] : std::initializer_list<std::pair<const char*, const char*>>{
           {"up", "build the lab's network and run every node in its host's namespace (foreground)"},
           {"down", "stop the lab's nodes and remove its namespaces, links and bridge (also after a crash)"},
           {"status", "hosts, links, nodes with pid and state; exit 0 once the lab is up and ready"},
           {"kill", "SIGKILL a node's processes (`lab up` restarts it unless --hold)"},
           {"pause", "SIGSTOP a node's processes: a stuck host"},
           {"resume", "SIGCONT a node's processes (and lift a kill --hold)"},
           {"cut", "take a node's host off the network (both ways, or --oneway in|out)"},
           {"heal", "bring a node's host back on the network"}}) {
    auto* action = lab->add_subcommand(name, what);
    action->add_option("site", lab_site, "topology file")->required();
    const std::string n = name;
    if (n != "up" && n != "down" && n != "status") {
      action->add_option("node", lab_node, "node name (lb-01, web-02, db-01, etcd...)")->required();
    }
    if (n == "up") {
      action->add_flag("--no-restart", up_no_restart, "do not restart a child that exits");
      action->add_flag("--no-firewall", lab_no_firewall, "do not load each host's nftables ruleset");
    } else if (n == "status") {
      action->add_flag("--json", lab_options.json, "print one JSON object");
    } else if (n == "kill") {
      action->add_flag("--hold", lab_options.hold, "keep the node down until `lab resume`");
    } else if (n == "cut") {
      action->add_option("--oneway", lab_options.oneway, "drop only the traffic into (in) or out of (out) the host")
          ->check(CLI::IsMember({"in", "out"}));
    }
    action->fallthrough();
    lab_actions.push_back(action);
  }

  // Global options may also be given after the subcommand.
  for (auto* sub : {version, check, firewall, import, web, lb, db, up, status, monitoring, lab, etcd}) {
    sub->fallthrough();
  }
  for (auto& [sub, op] : node_commands) {
    sub->fallthrough();
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }

  fulcrum::log::Level level{};
  fulcrum::log::Format format{};
  fulcrum::log::parseLevel(log_level, level);
  fulcrum::log::parseFormat(log_format, format);
  fulcrum::log::setLevel(level);
  fulcrum::log::setFormat(format);
  if (!log_flags.log_file.empty()) {
    std::string node = *lb ? lb_node : *web ? web_node : *db ? db_node : "";
    std::string error;
    if (!fulcrum::log::setEventFile(fulcrum::run::nodeLogPath(log_flags.log_file, node), error)) {
      std::fprintf(stderr, "fulcrum: --log-file: %s\n", error.c_str());
      return kExitUsage;
    }
  }
  // Every role holds a descriptor per connection: take what the hard limit allows, as HAProxy
  // and nginx (worker_rlimit_nofile) do. Roles warn when their max_connections still cannot fit.
  fulcrum::core::raiseFileLimit();

  if (*version) {
    std::printf("fulcrum %s (%s)\n", FULCRUM_VERSION, FULCRUM_BUILD_FLAGS);
    return kExitOk;
  }
  if (*check) {
    fulcrum::config::Site site;
    if (!loadSite(check_site, site)) {
      return kExitUsage;
    }
    // A file the commands would refuse at start is refused here too: a setting this build
    // cannot run yet must never pass as valid.
    auto refused = fulcrum::config::notBuiltYet(site);
    for (const auto& error : refused) {
      std::fprintf(stderr, "%s\n", error.toString().c_str());
    }
    if (!refused.empty()) {
      return kExitUsage;
    }
    std::printf("%s: ok\n", check_site.c_str());
    return kExitOk;
  }
  if (*import) {
    return fulcrum::site::runImportCommand(import_options);
  }
  if (*firewall) {
    fulcrum::config::Site site;
    if (!loadSite(firewall_site, site)) {
      return kExitUsage;
    }
    fulcrum::site::FirewallOptions options;
    for (const auto& text : firewall_admin) {
      std::string error;
      auto cidr = fulcrum::config::parseCidr(text, error);
      if (!cidr) {
        std::fprintf(stderr, "--admin %s: %s\n", text.c_str(), error.c_str());
        return kExitUsage;
      }
      options.admin.push_back(*cidr);
    }
    std::string ruleset;
    std::string error;
    if (!fulcrum::site::firewallRuleset(site, firewall_node, options, ruleset, error)) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return kExitUsage;
    }
    std::fputs(ruleset.c_str(), stdout);
    return kExitOk;
  }
  if (*certs) {
    fulcrum::config::Site site;
    if (!loadSite(certs_site, site)) {
      return kExitUsage;
    }
    return fulcrum::site::runCertsCommand(site, certs_json);
  }
  if (*web) {
    fulcrum::config::Site site;
    if (!loadSite(web_site, site) || !openLogs(log_flags, site, &site.web.access_log, web_node)) {
      return kExitUsage;
    }
    return fulcrum::web::runWebCommand(site, web_node);
  }
  if (*lb) {
    fulcrum::config::Site site;
    if (!loadSite(lb_site, site) || !openLogs(log_flags, site, &site.lb.access_log, lb_node)) {
      return kExitUsage;
    }
    if (lb_release_vip) {
      return fulcrum::lb::releaseVip(site);
    }
    return fulcrum::lb::runLbCommand(site, lb_node, lb_takeover);
  }
  if (*db) {
    fulcrum::config::Site site;
    if (*db_list || *db_switchover || *db_failover || *db_pause || *db_resume || *db_restart || *db_reinit ||
        *db_history) {
      if (!loadSite(db_cli_site, site)) {
        return kExitUsage;
      }
      if (*db_list) {
        return fulcrum::site::runDbList(site, db_list_json);
      }
      if (*db_restart) {
        return fulcrum::site::runDbRestart(site, db_target, db_json);
      }
      if (*db_reinit) {
        return fulcrum::site::runDbReinit(site, db_target, std::chrono::seconds(db_reinit_wait), db_json);
      }
      if (*db_history) {
        return fulcrum::site::runDbHistory(site, db_history_json);
      }
      if (*db_pause || *db_resume) {
        return fulcrum::site::runDbPause(site, db_pause->parsed(), db_json);
      }
      return *db_switchover ? fulcrum::site::runDbSwitchover(site, db_to, db_at, db_cancel, db_json)
                            : fulcrum::site::runDbFailover(site, db_to, db_json);
    }
    if (db_site.empty() || db_node.empty()) {
      std::fprintf(stderr, "fulcrum db: --site and --node are required to run an agent (or: db list|switchover|failover|pause|resume|restart|reinit|history)\n");
      return kExitUsage;
    }
    if (!loadSite(db_site, site) || !openLogs(log_flags, site, nullptr, db_node)) {
      return kExitUsage;
    }
    return fulcrum::db::runDbCommand(site, db_node);
  }
  if (*up) {
    fulcrum::config::Site site;
    if (!loadSite(up_site, site)) {
      return kExitUsage;
    }
    return fulcrum::site::runUpCommand(site, {!up_no_restart, log_format, log_level});
  }
  if (*etcd) {
    fulcrum::config::Site site;
    if (!loadSite(etcd_site, site)) {
      return kExitUsage;
    }
    return fulcrum::site::runEtcdCommand(site, etcd_node, etcd_print);
  }
  if (*roll) {
    fulcrum::config::Site site;
    if (!loadSite(roll_site, site)) {
      return kExitUsage;
    }
    return fulcrum::site::runRollCommand(site, roll_options);
  }
  if (*reload) {
    fulcrum::config::Site site;
    if (!loadSite(reload_site, site)) {
      std::fprintf(stderr, "%s: refused; no node was asked to reload\n", reload_site.c_str());
      return kExitUsage;
    }
    return reload_options.upgrade ? fulcrum::site::runUpgradeCommand(site, reload_options)
                                  : fulcrum::site::runReloadCommand(site, reload_options);
  }
  if (*backup) {
    fulcrum::config::Site site;
    if (!loadSite(backup_site, site)) {
      return kExitUsage;
    }
    backup_options.type = backup_full ? "full" : backup_incr ? "incr" : "diff";
    return fulcrum::site::runBackupCommand(site, backup_options);
  }
  if (*restore) {
    fulcrum::config::Site site;
    if (!loadSite(restore_site, site)) {
      return kExitUsage;
    }
    return fulcrum::site::runRestoreCommand(site, restore_options);
  }
  for (const auto& [sub, op] : node_commands) {
    if (!*sub) {
      continue;
    }
    fulcrum::config::Site site;
    if (!loadSite(node_words.size() == 2 ? node_words[0] : node_site, site)) {
      return kExitUsage;
    }
    return fulcrum::site::runNodeCommand(site, op, node_words.back());
  }
  if (*status) {
    fulcrum::config::Site site;
    if (!loadSite(status_file.empty() ? status_site : status_file, site)) {
      return kExitUsage;
    }
    return fulcrum::site::runStatusCommand(site, status_json, status_watch ? status_interval : 0);
  }
  if (*lab) {
    for (auto* action : lab_actions) {
      if (!*action) {
        continue;
      }
      fulcrum::config::Site site;
      if (!loadSite(lab_site, site)) {
        return kExitUsage;
      }
      lab_options.up = {!up_no_restart, log_format, log_level};
      lab_options.firewall = !lab_no_firewall;
      return fulcrum::site::runLabCommand(action->get_name(), site, lab_node, lab_options);
    }
  }
  if (*monitoring) {
    fulcrum::config::Site site;
    if (!loadSite(monitoring_site, site)) {
      return kExitUsage;
    }
    return fulcrum::site::runMonitoringCommand(site, monitoring_out);
  }
  return kExitUsage;
}
