#!/usr/bin/env bash
# Starts `fulcrum lb` terminating HTTPS for ../shared/bench/tls-compare.sh: https on port $1 with the
# certificate $3 and key $4 (PEM), proxying to the comma-separated backends $2; one thread. Execs
# fulcrum (through fulcrum-lb-exec.sh), so the harness measures fulcrum's own PID.
#   tls-compare.sh "fulcrum=bench/fulcrum-tls-exec.sh \$PORT \$BACKENDS \$CERT \$KEY"
# Env: as fulcrum-lb-exec.sh (THREADS, FULCRUM, HTTP2=1 for h2 by ALPN, ...).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# The node's http listener is required; nothing is sent to it.
http_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HTTPS_PORT=$1 TLS_CERT=$3 TLS_KEY=$4 exec "$HERE/fulcrum-lb-exec.sh" "$http_port" "$2"
