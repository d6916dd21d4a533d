#!/usr/bin/env bash
# Slow clients: `fulcrum lb` and HAProxy 2.6, one thread each pinned to the same core, the same
# backends (one nginx worker on three ports, as ../shared/bench/lb-compare.sh) and the same limits.
# For each lb, wrk measures a normal client (-t1 -c$CONNS, $DURATION s): rps, p99, the lb's CPU µs per
# request (utime+stime from /proc over the wrk run / requests) and RSS, first quiet, then under a
# flood (bench/slow_clients.py) of $TRICKLE connections sending a request head one byte a second and
# $IDLE idle keep-alive ones. wrk, the flood and the backend share the other core. One table.
# Reports only; nothing here passes or fails. With the defaults a run takes about two minutes:
#   FULCRUM_BIN=build/fulcrum bench/slow-clients.sh
#   TRICKLE=200 IDLE=200 DURATION=3 HEAD_MS=5000 bench/slow-clients.sh      # a quick look
# "lb core %" is the lb's CPU time over the wrk run's wall time: well under 100 means the lb was not
# the bottleneck (wrk, the backend and the flood share one core), so rps and p99 say little about it.
#
# Env: FULCRUM_BIN (default build/fulcrum), TRICKLE (5000), IDLE (5000), DURATION (10), HEAD_MS (30000:
# fulcrum http_request_ms, HAProxy timeout http-request), IDLE_MS (60000: fulcrum client_ms, HAProxy
# timeout http-keep-alive and client), MAXCONN (20000: fulcrum max_connections, HAProxy maxconn),
# CONNS (50), RATE (1000 new flood connections a second), SOURCES (1: client addresses 127.0.0.1..N),
# CHURN (1: under the flood, wrk starts once the first trickler has met the head deadline, so it
# measures while tricklers are being closed and reopened; 0: as soon as every connection is open).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FULCRUM_BIN=${FULCRUM_BIN:-$HERE/../build/fulcrum}
TRICKLE=${TRICKLE:-5000}; IDLE=${IDLE:-5000}; DURATION=${DURATION:-10}; HEAD_MS=${HEAD_MS:-30000}
IDLE_MS=${IDLE_MS:-60000}; MAXCONN=${MAXCONN:-20000}; CONNS=${CONNS:-50}; RATE=${RATE:-1000}
SOURCES=${SOURCES:-1}; CHURN=${CHURN:-1}
LB_CORE=0; GEN_CORE=1
ulimit -n "$(ulimit -Hn)"   # 20000 here: HAProxy's maxconn 20000 wants 40014 and says so, then runs

W=$(mktemp -d /tmp/slowclients.XXXX)
chmod 755 "$W"
PIDS=()
stop() { # pid (one this script started): TERM, up to 5 s, then KILL; then forgotten
  local keep=() p
  if kill "$1" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
cleanup() { for p in "${PIDS[@]}"; do stop "$p"; done; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; return 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_mb() { awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo NA; }
flood_get() { awk -F= -v k="$2" '$1==k{v=$2} END{print (v=="" ? 0 : v)}' "$1" 2>/dev/null || echo 0; }
wait_flood() { # status-file key minimum seconds
  local end=$((SECONDS + $4))
  while ((SECONDS < end)); do
    (( $(flood_get "$1" "$2") >= $3 )) && return 0
    sleep 0.5
  done
  return 1
}

B1=$(free_port); B2=$(free_port); B3=$(free_port); BACKENDS=127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3
cat > "$W/backend.conf" <<NG
worker_processes 1; daemon off; pid $W/be.pid; error_log $W/be.err; worker_rlimit_nofile 4096;
events { worker_connections 2048; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$B1; listen 127.0.0.1:$B2; listen 127.0.0.1:$B3; location / { return 200 "hello\n"; } } }
NG
taskset -c $GEN_CORE nginx -c "$W/backend.conf" -e "$W/be.err" & PIDS+=($!)
wait_up "$B1" || { echo "the nginx backend did not start: $(cat "$W/be.err")"; exit 1; }

HP=$(free_port); FP=$(free_port)
cat > "$W/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn $MAXCONN
  no strict-limits
defaults
  mode http
  maxconn $MAXCONN
  timeout connect 2s
  timeout client ${IDLE_MS}ms
  timeout http-keep-alive ${IDLE_MS}ms
  timeout http-request ${HEAD_MS}ms
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HP
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  server s1 127.0.0.1:$B1
  server s2 127.0.0.1:$B2
  server s3 127.0.0.1:$B3
HA

ROWS=$W/rows; NOTES=$W/notes
: > "$ROWS"; : > "$NOTES"
FMT="%-8s | %-5s | %8s | %7s | %10s | %9s | %6s | %s\n"
wrk_run() { # lb pid port phase last-column (a command whose output it is, run after wrk)
  local lb=$1 pid=$2 port=$3 phase=$4 out=$W/wrk.$1.$4 extra
  local c0 c1 t0 reqs rps p99 us busy
  c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
  timeout $((DURATION + 30)) taskset -c $GEN_CORE wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
    "http://127.0.0.1:$port/" > "$out" 2>&1 || true
  c1=$(cpu_ticks "$pid")
  busy=$(awk -v c=$((c1 - c0)) -v t="$(getconf CLK_TCK)" -v s="$t0" -v e="$(date +%s.%N)" \
    'BEGIN{ printf "%.0f", c/t*100/(e-s) }')
  reqs=$(awk '/requests in/{print $1}' "$out"); rps=$(awk '/Requests\/sec/{printf "%.0f", $2}' "$out")
  p99=$(awk '$1=="99%"{v=$2; u=v; sub(/[0-9.]+/,"",u); sub(/[a-z]+$/,"",v);
                       printf "%.2f", v*(u=="us"?0.001:u=="s"?1000:u=="m"?60000:1)}' "$out")
  extra=$($5)
  us=$(awk -v c=$((c1 - c0)) -v t="$(getconf CLK_TCK)" -v r="${reqs:-0}" \
    'BEGIN{ if (r>0) printf "%.1f", c/t*1e6/r; else print "NA" }')
  printf "$FMT" "$lb" "$phase" "${rps:-NA}" "${p99:-NA}" "$us" "$busy" "$(rss_mb "$pid")" "$extra" >> "$ROWS"
  grep -E 'Non-2xx|Socket errors' "$out" | sed "s/^/$lb $phase wrk: /" >> "$NOTES" || true
}

closed_during_wrk() {
  echo "$(($(flood_get "$ST" trickle_closed) - C0)) (408: $(($(flood_get "$ST" trickle_408) - R0))," \
    "age $(flood_get "$ST" trickle_age_median_s) s)"
}
bench_lb() { # name pid port
  local lb=$1 pid=$2 port=$3 st=$W/flood.$1 flood
  if ! wait_up "$port"; then echo "$lb: not answering on $port" >> "$NOTES"; return; fi
  timeout 10 taskset -c $GEN_CORE wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
  wrk_run "$lb" "$pid" "$port" quiet "echo -"

  taskset -c $GEN_CORE python3 "$HERE/slow_clients.py" "$port" --trickle "$TRICKLE" --idle "$IDLE" \
    --rate "$RATE" --sources "$SOURCES" --status "$st" > "$W/flood.$lb.out" 2>&1 & flood=$!; PIDS+=($flood)
  if ! wait_flood "$st" all_open 1 $(((TRICKLE + IDLE) / ${RATE%.*} * 3 + 60)); then
    echo "$lb: not every flood connection opened in time: $(tr '\n' ' ' < "$st")" >> "$NOTES"
  fi
  if ((CHURN)) && ((TRICKLE > 0)) && ! wait_flood "$st" trickle_closed 1 $((HEAD_MS / 1000 + 60)); then
    echo "$lb: no trickler was closed within $((HEAD_MS / 1000 + 60)) s of the flood's start" >> "$NOTES"
  fi
  # the last column: tricklers the lb closed while wrk ran, how many of them had a 408 first, and the
  # median age of every trickler closed so far (≈ the head deadline, to the 1 s trickle granularity)
  C0=$(flood_get "$st" trickle_closed); R0=$(flood_get "$st" trickle_408); ST=$st
  wrk_run "$lb" "$pid" "$port" flood closed_during_wrk
  stop "$flood"
  kill -0 "$pid" 2>/dev/null || echo "$lb: the lb process is gone" >> "$NOTES"
  echo "$lb flood: $(tail -1 "$W/flood.$lb.out")" >> "$NOTES"
}

echo "slow clients: $TRICKLE tricklers (1 byte/s) + $IDLE idle keep-alive, wrk -t1 -c$CONNS -d${DURATION}s;"
echo "head deadline ${HEAD_MS} ms, idle keep-alive ${IDLE_MS} ms, maxconn $MAXCONN; lb on core $LB_CORE," \
  "wrk + flood + backend on core $GEN_CORE; $FULCRUM_BIN"

TMPDIR=$W FULCRUM=$FULCRUM_BIN CLIENT_MS=$IDLE_MS HTTP_REQUEST_MS=$HEAD_MS MAX_CONNECTIONS=$MAXCONN \
  taskset -c $LB_CORE "$HERE/fulcrum-lb-exec.sh" "$FP" "$BACKENDS" 2> "$W/fulcrum.err" & FPID=$!; PIDS+=($FPID)
bench_lb fulcrum "$FPID" "$FP"
stop "$FPID"

taskset -c $LB_CORE haproxy -f "$W/haproxy.cfg" -db 2> "$W/haproxy.err" & HPID=$!; PIDS+=($HPID)
bench_lb haproxy "$HPID" "$HP"
stop "$HPID"

echo
printf "$FMT" lb phase rps "p99 ms" "CPU µs/req" "lb core %" "RSS MB" "tricklers closed by deadline during wrk"
printf "$FMT" -------- ----- -------- ------- ---------- --------- ------ ---------------------------------------
cat "$ROWS"
echo
cat "$NOTES"
for lb in fulcrum haproxy; do grep -v '^\[NOTICE\]' "$W/$lb.err" | head -3 | sed "s/^/$lb stderr: /"; done
