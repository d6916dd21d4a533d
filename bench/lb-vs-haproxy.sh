#!/usr/bin/env bash
# `fulcrum lb`, HAProxy 2.6 and nginx 1.22 side by side, one thread each pinned to the same core,
# the same three backends, wrk on the other core, in one run (../shared/bench/lb-compare.sh),
# then memory per idle keep-alive client connection with IDLE (default 8000) connections.
# Reports only; nothing here passes or fails.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
IDLE=${IDLE:-8000}   # HAProxy needs 2 fds a connection; the hard fd limit here is 20000
ulimit -n "$(ulimit -Hn)"

echo "== throughput and CPU per request (lb-compare.sh) =="
bash "$SHARED/lb-compare.sh" "fulcrum=$HERE/fulcrum-lb-exec.sh \$PORT \$BACKENDS"

echo
echo "== memory per idle keep-alive client connection ($IDLE connections) =="
W=$(mktemp -d /tmp/lbidle.XXXX)
chmod 755 "$W"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BE=$(free_port); HP=$(free_port); NP=$(free_port); FP=$(free_port)
cat > "$W/be.conf" <<NG
worker_processes 1; daemon off; pid $W/be.pid; error_log $W/be.err; worker_rlimit_nofile 19000;
events { worker_connections 9000; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BE; location / { return 200 "hello\n"; } } }
NG
cat > "$W/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HP
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BE
HA
cat > "$W/nginxlb.conf" <<NG
worker_processes 1; daemon off; pid $W/lb.pid; error_log $W/lb.err; worker_rlimit_nofile 19000;
events { worker_connections 9000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream be { server 127.0.0.1:$BE; keepalive 128; }
  server { listen 127.0.0.1:$NP; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NG
wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.05; done; return 1; }
nginx -c "$W/be.conf" -e "$W/be.err" & PIDS+=($!)
wait_up "$BE"

taskset -c 0 haproxy -f "$W/haproxy.cfg" -db & PIDS+=($!); HPID=$!
wait_up "$HP"
printf "%-8s " haproxy; python3 "$HERE/idle_conns.py" "$HP" "$IDLE" "$HPID"
kill "$HPID"

taskset -c 0 nginx -c "$W/nginxlb.conf" -e "$W/lb.err" & PIDS+=($!)
wait_up "$NP"
printf "%-8s " nginx; python3 "$HERE/idle_conns.py" "$NP" "$IDLE" $(pgrep -P "$(cat "$W/lb.pid")")
kill "$(cat "$W/lb.pid")"

CLIENT_MS=300000 "$HERE/fulcrum-lb-exec.sh" "$FP" "127.0.0.1:$BE" & PIDS+=($!); FPID=$!
wait_up "$FP"
printf "%-8s " fulcrum; python3 "$HERE/idle_conns.py" "$FP" "$IDLE" "$FPID"
