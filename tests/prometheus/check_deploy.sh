#!/usr/bin/env bash
# deploy/prometheus/ holds what `fulcrum monitoring examples/site.toml` generates, and Prometheus'
# and Alertmanager's own checkers accept it.
# Usage: check_deploy.sh FULCRUM_BIN SOURCE_DIR SCRATCH_DIR
set -euo pipefail
fulcrum=$1 src=$2 out=$3
rm -rf "$out"
"$fulcrum" monitoring "$src/examples/site.toml" --out "$out" >/dev/null
for f in prometheus.yml alertmanager.yml alerts.yml; do
  if ! diff -u "$src/deploy/prometheus/$f" "$out/$f"; then
    echo "deploy/prometheus/$f is out of date: run build/fulcrum monitoring examples/site.toml --out deploy/prometheus" >&2
    exit 1
  fi
done
promtool check config "$out/prometheus.yml"
amtool check-config "$out/alertmanager.yml"
