#pragma once
// [monitoring]: the Prometheus and Alertmanager configuration of a site, generated from its
// topology (every node a scrape target, job = its role, node = its name), and the alert rules
// this binary was built with (deploy/prometheus/alerts.yml). `fulcrum up` writes them into
// state_dir/monitoring and runs both programs; `fulcrum monitoring SITE --out DIR` writes the same
// files for a Prometheus run elsewhere.
#include <filesystem>
#include <string>
#include <string_view>

#include "config/config.h"

namespace fulcrum::site {

// deploy/prometheus/alerts.yml as it was at build time.
std::string_view alertRules();

// prometheus.yml: global intervals from [monitoring] interval_ms, rule_files alerts.yml (next to
// it), the Alertmanager unless "", one job per role with `honor_labels` (a node's own `node`
// label is kept; it is the same name).
std::string prometheusConfig(const config::Site& site);
// alertmanager.yml: one default receiver that sends nothing anywhere (alerts are kept and shown
// in Alertmanager's API and UI); add receivers for your site.
std::string alertmanagerConfig(const config::Site& site);

// Where `up` writes them: state_dir/monitoring.
std::filesystem::path monitoringDir(const config::Site& site);

// prometheus.yml, alertmanager.yml and alerts.yml into `dir` (created if missing), each written
// whole under a temporary name and renamed into place. False with `error` set on failure.
bool writeMonitoringFiles(const config::Site& site, const std::filesystem::path& dir, std::string& error);

// `fulcrum monitoring SITE --out DIR`: writes the files and names them; 0, or 1 on failure.
int runMonitoringCommand(const config::Site& site, const std::filesystem::path& out);

}  // namespace fulcrum::site
