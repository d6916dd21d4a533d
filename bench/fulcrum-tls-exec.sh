#!/usr/bin/env bash
# Starts `fulcrum lb` terminating HTTPS for ../shared/bench/tls-compare.sh: https on port $1 with the
# certificate $3 and key $4 (PEM), proxying to the comma-separated backends $2; one thread. Execs
# fulcrum, so the harness measures fulcrum's own PID.
#   tls-compare.sh "fulcrum=bench/fulcrum-tls-exec.sh \$PORT \$BACKENDS \$CERT \$KEY"
# Env: THREADS (default 1), FULCRUM (binary).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FULCRUM=${FULCRUM:-$HERE/../build/fulcrum}
port=$1 cert=$3 key=$4
IFS=, read -r -a backends <<< "$2"
http_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-tls-bench.XXXX")
site=$dir/site.toml
{
  echo "[lb.tls]"
  echo "cert = \"$cert\""
  echo "key = \"$key\""
  echo "[lb.limits]"
  echo "max_connections = 100000"
  echo "[[lb.node]]"
  echo "name = \"lb-bench\""
  echo "http = \"127.0.0.1:$http_port\""   # required; nothing is sent to it
  echo "https = \"127.0.0.1:$port\""
  echo "threads = ${THREADS:-1}"
  echo "[web]"
  echo "app = \"none\""
  i=0
  for b in "${backends[@]}"; do
    i=$((i + 1))
    echo "[[web.node]]"
    echo "name = \"s$i\""
    echo "listen = \"$b\""
  done
} > "$site"
mkdir -p "$dir/www"
exec "$FULCRUM" lb --site "$site" --node lb-bench --log-level warn
