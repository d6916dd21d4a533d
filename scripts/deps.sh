#!/usr/bin/env bash
# Installs every Debian package Fulcrum needs. Idempotent: when everything is present it
# only runs dpkg-query and exits; `apt-get update` runs only when something is missing.
# Usage: scripts/deps.sh [--bench]   (--bench adds the peers we measure against)
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git curl ca-certificates procps iproute2
  clang libclang-rt-14-dev
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libssl-dev openssl libpq-dev libnghttp2-dev python3-h2 nghttp2-client
  postgresql postgresql-server-dev-15 libkrb5-dev etcd-server etcd-client pgbackrest
  nginx testssl.sh pebble
  python3 chromium wget
  keepalived nftables tcpdump
  prometheus prometheus-alertmanager
)
bench=(haproxy wrk linux-perf valgrind hyperfine patroni python3-psycopg2)
if [[ "${1:-}" == "--bench" ]]; then pkgs+=("${bench[@]}"); fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts these services on install; Fulcrum runs its own instances, never the system ones.
for svc in nginx etcd postgresql prometheus prometheus-alertmanager keepalived; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
    $SUDO systemctl disable "$svc" >/dev/null 2>&1 || true
  fi
done
