#!/usr/bin/env bash
# Static files side by side: `fulcrum web` and nginx, one worker each, pinned to the same core
# (CPU 0), the same files (1 KiB and 100 KiB), keep-alive load from wrk on the other core (CPU 1).
# Reports rps, p50, p99 and server CPU microseconds per request (utime+stime from /proc, the
# steady figure on a noisy machine). Reports only; nothing here passes or fails.
# Usage: bench/web-vs-nginx.sh        env: DUR (s, default 8), CONNS (default 64), FULCRUM (binary)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FULCRUM=${FULCRUM:-$HERE/../build/fulcrum}
DUR=${DUR:-8}; CONNS=${CONNS:-64}
W=$(mktemp -d /tmp/webcmp.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
chmod 755 "$W"   # nginx workers run as an unprivileged user when started as root
mkdir -p "$W/www"
head -c 1024 /dev/urandom | base64 -w 0 | head -c 1024 > "$W/www/1k.txt"
head -c 102400 /dev/urandom > "$W/www/100k.bin"

NGINX_PORT=$(free_port); FULCRUM_PORT=$(free_port)
cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; sendfile on; tcp_nopush on;
  include /etc/nginx/mime.types;
  server { listen 127.0.0.1:$NGINX_PORT; root $W/www; } }
NG
cat > "$W/site.toml" <<TOML
[web]
docroot = "www"
app = "none"
[[web.node]]
name = "bench"
listen = "127.0.0.1:$FULCRUM_PORT"
threads = 1
TOML

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "not up: $1" >&2; return 1; }

run_one() { # name pid url
  local name=$1 pid=$2 url=$3
  wait_up "$url"
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null 2>&1 || true  # warm-up
  local c0 c1
  c0=$(cpu_ticks "$pid")
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$url" > "$W/out.wrk" 2>&1
  c1=$(cpu_ticks "$pid")
  local reqs rps p50 p99 us err
  reqs=$(awk '/requests in/{print $1}' "$W/out.wrk")
  rps=$(awk '/Requests\/sec/{print $2}' "$W/out.wrk")
  p50=$(awk '$1=="50%"{print $2}' "$W/out.wrk"); p99=$(awk '$1=="99%"{print $2}' "$W/out.wrk")
  err=$(grep -E 'Non-2xx|Socket errors' "$W/out.wrk" | tr '\n' ' ' || true)
  us=$(awk -v c=$((c1 - c0)) -v t="$(getconf CLK_TCK)" -v r="$reqs" 'BEGIN{ if (r>0) printf "%.2f", c/t*1e6/r; else print "NA" }')
  printf "| %-8s | %-8s | %10s | %8s | %8s | %8s | %s\n" "$name" "$(basename "$url")" "$rps" "$p50" "$p99" "$us" "$err"
}

printf "| server   | file     |        rps |      p50 |      p99 | cpu us/req |\n"
printf "|----------|----------|------------|----------|----------|------------|\n"
taskset -c 0 nginx -c "$W/nginx.conf" -e "$W/nginx.err" & PIDS+=($!)
wait_up "http://127.0.0.1:$NGINX_PORT/1k.txt"
NGINX_WORKER=$(pgrep -P "$(cat "$W/nginx.pid")" | head -1)
taskset -c 0 "$FULCRUM" web --site "$W/site.toml" --node bench --log-level warn & PIDS+=($!)
FULCRUM_PID=$!
for file in 1k.txt 100k.bin; do
  run_one nginx "$NGINX_WORKER" "http://127.0.0.1:$NGINX_PORT/$file"
  run_one fulcrum "$FULCRUM_PID" "http://127.0.0.1:$FULCRUM_PORT/$file"
done
