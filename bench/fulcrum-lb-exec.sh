#!/usr/bin/env bash
# Starts `fulcrum lb` for a benchmark harness: writes a one-node site file for listen port $1 and
# the comma-separated backends $2, then execs fulcrum (so the harness measures fulcrum's own PID).
# Env: THREADS (default 1), ALGORITHM (default roundrobin), FULCRUM (binary), CLIENT_MS (default 30000),
# HTTP_REQUEST_MS (default: fulcrum's), MAX_CONNECTIONS (default 100000), and for HTTPS: HTTPS_PORT with
# TLS_CERT and TLS_KEY (PEM files) add an https listener with that certificate; MAX_CONN (each
# server's max_conn, default none) and SLOW_START_MS (default none) turn those on.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FULCRUM=${FULCRUM:-$HERE/../build/fulcrum}
port=$1
IFS=, read -r -a backends <<< "$2"
dir=$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-lb-bench.XXXX")
site=$dir/site.toml
{
  echo "[lb]"
  echo "algorithm = \"${ALGORITHM:-roundrobin}\""
  if [[ -n ${SLOW_START_MS:-} ]]; then echo "slow_start_ms = $SLOW_START_MS"; fi
  echo "[[lb.node]]"
  echo "name = \"lb-bench\""
  echo "http = \"127.0.0.1:$port\""
  echo "threads = ${THREADS:-1}"
  if [[ -n ${HTTPS_PORT:-} ]]; then
    echo "https = \"127.0.0.1:$HTTPS_PORT\""
    echo "[lb.tls]"
    echo "cert = \"$TLS_CERT\""
    echo "key = \"$TLS_KEY\""
    case ${HTTP2:-} in
      "") ;;
      1|true) echo "http2 = true" ;;
      0|false) echo "http2 = false" ;;
      *) echo "HTTP2 must be 1 or 0, not $HTTP2" >&2; exit 2 ;;
    esac
  fi
  echo "[lb.timeouts]"
  echo "client_ms = ${CLIENT_MS:-30000}"
  if [[ -n ${HTTP_REQUEST_MS:-} ]]; then echo "http_request_ms = $HTTP_REQUEST_MS"; fi
  echo "[lb.limits]"
  echo "max_connections = ${MAX_CONNECTIONS:-100000}"
  echo "[web]"
  echo "app = \"none\""
  i=0
  for b in "${backends[@]}"; do
    i=$((i + 1))
    echo "[[web.node]]"
    echo "name = \"s$i\""
    echo "listen = \"$b\""
    if [[ -n ${MAX_CONN:-} ]]; then echo "max_conn = $MAX_CONN"; fi
  done
} > "$site"
mkdir -p "$dir/www"
exec "$FULCRUM" lb --site "$site" --node lb-bench --log-level warn
