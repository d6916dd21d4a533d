#!/usr/bin/env bash
# The guestbook through the load balancer at 90 % reads / 10 % writes: wrk sends, on each
# connection, GET /api/messages?limit=20 nine times out of ten and POST /api/messages (a small
# JSON message) the tenth. Reports rps, p50 and p99 (both kinds together), answers by status,
# and which database node served the reads (counted by wrk from the db_node of every GET answer,
# so the table shows what really happened, not what was intended).
#
# The site is started here and torn down on exit: etcd, three `fulcrum db` agents (PostgreSQL 15,
# one primary and two streaming replicas), WEB web nodes (default 2) with app = "guestbook" and
# one `fulcrum lb`, all on loopback free ports, under a temporary directory in /tmp (0755: the
# postgres user must traverse it).
#
# Replicas serving reads, 2 → 1 → 0: after the runs with both replicas, one replica's agent is
# stopped (SIGTERM: the agent stops its PostgreSQL and exits), then the other. The web nodes see
# the replica unreachable exactly as in an outage and send its share of reads elsewhere; with no
# replica left every read falls back to the primary. Stopping is used rather than a lag limit
# because it is deterministic: a replica pushed out by max_lag_bytes would come and go with the
# write rate. [db] failover = false so that nothing reshuffles roles during the runs. Before each
# run the script waits until sampled reads no longer name the stopped node.
#
# Read-your-writes tokens: "off" — the wrk script never sends a cookie (every read may go to any
# replica in the pool); "on" — each wrk thread keeps the fulcrum_lsn cookie from its latest write's
# Set-Cookie and sends it on every later request, like one browser session that keeps posting, so
# each read must go to a node that has replayed that thread's last write (or wait, or use the
# primary). The difference between the two rows is the cost of read-your-writes.
#
# Nothing is pinned: on a 2-core machine the load generator, lb, web nodes and PostgreSQL share
# the cores, so the figures compare the rows with each other, not with other machines. A stopped
# replica also stops replaying WAL and competing for those cores, which the 1 and 0 rows gain.
# Reports only; nothing here passes or fails.
# Synchronous replication: SYNC=true sets [db] synchronous = true (every commit waits for a
# replica's flush; the default for a site of three or more db nodes), SYNC=false (the default
# here) asynchronous. `SYNC=false STEPS=2` and `SYNC=true STEPS=2` in turn give the cost of
# synchronous commits with both replicas serving reads.
# Internal TLS: TLS=true sets [security] internal_tls = true (certificates from `fulcrum certs`):
# the lb reaches the web nodes, and the web nodes and replicas reach PostgreSQL, over mutual TLS.
# `TLS=false STEPS=2` and `TLS=true STEPS=2` in turn give the cost of encrypting those links.
# Usage: bench/guestbook.sh   env: DUR (s per run, default 10), CONNS (default 32), WEB (web nodes,
#        default 2), WRK_THREADS (default 2), FULCRUM (binary, default build/fulcrum),
#        SYNC (true|false, default false), STEPS (replica counts to run, default "2 1 0"),
#        TLS (true|false, default false)
set -Eeuo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FULCRUM=${FULCRUM:-$HERE/../build/fulcrum}
DUR=${DUR:-10}; CONNS=${CONNS:-32}; WEB=${WEB:-2}; WRK_THREADS=${WRK_THREADS:-2}
SYNC=${SYNC:-false}; STEPS=${STEPS:-2 1 0}; TLS=${TLS:-false}
[[ $SYNC == true || $SYNC == false ]] || { echo "guestbook.sh: SYNC is true or false" >&2; exit 1; }
[[ $TLS == true || $TLS == false ]] || { echo "guestbook.sh: TLS is true or false" >&2; exit 1; }
DB_NODES=(db-1 db-2 db-3)

for tool in etcd wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "guestbook.sh: $tool is not installed" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "guestbook.sh: run as root (the db agents run PostgreSQL as postgres)" >&2; exit 1; }

W=$(mktemp -d /tmp/fulcrum-gbbench.XXXX)
chmod 0755 "$W"
declare -A PID=()  # role name → pid
WEB_NODES=()
# Our children: a dead one stays a zombie until reaped, so "exited" means gone or state Z.
exited() { [[ ! -e /proc/$1 ]] || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }
wait_exit() { # pid: waits up to 45 s, then kills
  local deadline=$((SECONDS + 45))
  until exited "$1" || ((SECONDS >= deadline)); do sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  set +e
  trap - ERR
  # Front to back: lb, web nodes, the agents (each stops its PostgreSQL), etcd.
  for group in lb "${WEB_NODES[*]}" "${DB_NODES[*]}" etcd; do
    for name in $group; do [[ -n ${PID[$name]:-} ]] && kill -TERM "${PID[$name]}" 2>/dev/null; done
    for name in $group; do [[ -n ${PID[$name]:-} ]] && wait_exit "${PID[$name]}"; done
  done
  # Anything still running from this directory (a postmaster whose agent died) goes too.
  for p in $(grep -lsF "$W" /proc/[0-9]*/cmdline | cut -d/ -f3); do kill -KILL "$p" 2>/dev/null; done
  if [[ -n ${KEEP:-} ]]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo "guestbook.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Under internal_tls (TLS=true) the agents' API is https, read as the operator (CURL_TLS, below).
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${CURL_TLS[@]}" "$1" || true; }
answers_200() { [[ $(code "$1") == 200 ]]; }
# wait_for WHAT SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "guestbook.sh: timed out after ${secs}s waiting for $what; logs in $W" >&2
      KEEP=1
      exit 1
    fi
    sleep 0.2
  done
}

ETCD=$(free_port); ETCD_PEER=$(free_port); LB=$(free_port)
declare -A PG_PORT=() AGENT_PORT=()
for n in "${DB_NODES[@]}"; do PG_PORT[$n]=$(free_port); AGENT_PORT[$n]=$(free_port); done
declare -A WEB_PORT=()
for i in $(seq 1 "$WEB"); do WEB_NODES+=("web-$i"); WEB_PORT[web-$i]=$(free_port); done

mkdir -p "$W/www"
{
  printf '[site]\nname = "guestbook-bench"\nstate_dir = "var"\n'
  printf '[lb]\nalgorithm = "roundrobin"\nretries = 2\n[lb.health]\npath = "/healthz"\ninterval_ms = 500\n'
  printf 'timeout_ms = 1000\nrise = 1\nfall = 2\n'
  printf '[[lb.node]]\nname = "lb-1"\nhttp = "127.0.0.1:%s"\nthreads = 1\n' "$LB"
  printf '[web]\ndocroot = "www"\napp = "guestbook"\n'
  for n in "${WEB_NODES[@]}"; do
    printf '[[web.node]]\nname = "%s"\nlisten = "127.0.0.1:%s"\nthreads = 1\n' "$n" "${WEB_PORT[$n]}"
  done
  printf '[db]\nfailover = false\nsynchronous = %s\n' "$SYNC"
  for n in "${DB_NODES[@]}"; do
    printf '[[db.node]]\nname = "%s"\npg = "127.0.0.1:%s"\nagent = "127.0.0.1:%s"\n' "$n" "${PG_PORT[$n]}" \
      "${AGENT_PORT[$n]}"
  done
  printf '[etcd]\nendpoints = ["127.0.0.1:%s"]\nmanaged = false\n' "$ETCD"
  printf '[security]\ninternal_tls = %s\n' "$TLS"
} > "$W/site.toml"
"$FULCRUM" check "$W/site.toml" >/dev/null 2>"$W/check.err" || {
  echo "guestbook.sh: this build refuses the benchmark's site:" >&2; cat "$W/check.err" >&2; exit 1; }
if [[ $TLS == true ]]; then "$FULCRUM" certs "$W/site.toml" >"$W/certs.out"; fi

# The wrk script. Counters are per-thread globals, gathered in done() through thread:get().
cat > "$W/guestbook.lua" <<'LUA'
local tokens = os.getenv("GB_TOKENS") == "1"
local n, cookie = 0, nil
reads, writes, errors, by_db = 0, 0, 0, {}
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  n = math.random(10)  -- threads do not all write in step
end
function request()
  n = n + 1
  local headers = {}
  if cookie then headers["Cookie"] = cookie end
  if n % 10 == 0 then
    headers["Content-Type"] = "application/json"
    return wrk.format("POST", "/api/messages", headers,
                      string.format('{"author":"bench","text":"message %d from wrk"}', n))
  end
  return wrk.format("GET", "/api/messages?limit=20", headers)
end
function response(status, headers, body)
  if status == 201 then
    writes = writes + 1
    if tokens then
      for k, v in pairs(headers) do
        if k:lower() == "set-cookie" and v:find("^fulcrum_lsn=") then cookie = v:match("^([^;]+)") end
      end
    end
  elseif status == 200 then
    reads = reads + 1
    local db = body:match('"db_node":"([^"]*)"}%s*$')
    if db then by_db[db] = (by_db[db] or 0) + 1 end
  else
    errors = errors + 1
  end
end
function done(summary, latency, requests)
  local r, w, e, dbs = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    r = r + t:get("reads"); w = w + t:get("writes"); e = e + t:get("errors")
    for k, v in pairs(t:get("by_db")) do dbs[k] = (dbs[k] or 0) + v end
  end
  local names = {}
  for k in pairs(dbs) do table.insert(names, k) end
  table.sort(names)
  local shares = {}
  for _, k in ipairs(names) do table.insert(shares, string.format("%s %d%%", k, math.floor(100 * dbs[k] / r + 0.5))) end
  io.write(string.format("GB reads=%d writes=%d errors=%d db=%s\n", r, w, e, table.concat(shares, ",")))
end
LUA

echo "starting etcd, 3 db agents, $WEB web nodes and a load balancer in $W ..." >&2
# Under internal_tls the agents speak TLS to etcd with their certificates, as to a managed one.
ETCD_URL="http://127.0.0.1:$ETCD"; ETCD_TLS=(); CURL_TLS=(); AGENT=http
if [[ $TLS == true ]]; then
  T="$W/var/tls"; ETCD_URL="https://127.0.0.1:$ETCD"; AGENT=https
  ETCD_TLS=(--cert-file="$T/etcd.crt" --key-file="$T/etcd.key" --client-cert-auth --trusted-ca-file="$T/ca.crt")
  CURL_TLS=(--cacert "$T/ca.crt" --cert "$T/operator.crt" --key "$T/operator.key")
fi
etcd_healthy() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${CURL_TLS[@]}" "$ETCD_URL/health") == 200 ]]; }
etcd --name=gbbench --data-dir="$W/etcd" --listen-client-urls="$ETCD_URL" "${ETCD_TLS[@]}" \
  --advertise-client-urls="$ETCD_URL" --listen-peer-urls="http://127.0.0.1:$ETCD_PEER" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster="gbbench=http://127.0.0.1:$ETCD_PEER" --heartbeat-interval=50 --election-timeout=500 --logger=zap --log-level=warn >"$W/etcd.log" 2>&1 &
PID[etcd]=$!
wait_for "etcd" 60 etcd_healthy
start_agent() {
  "$FULCRUM" db --site "$W/site.toml" --node "$1" --log-level info >"$W/$1.log" 2>&1 &
  PID[$1]=$!
}
# The first agent bootstraps alone (initdb, then the lease); the others then clone it.
start_agent "${DB_NODES[0]}"
wait_for "${DB_NODES[0]} primary" 180 answers_200 "$AGENT://127.0.0.1:${AGENT_PORT[${DB_NODES[0]}]}/primary"
for n in "${DB_NODES[@]:1}"; do start_agent "$n"; done
roles_settled() {
  PRIMARY=""; REPLICAS=()
  for n in "${DB_NODES[@]}"; do
    if [[ $(code "$AGENT://127.0.0.1:${AGENT_PORT[$n]}/primary") == 200 ]]; then
      [[ -z $PRIMARY ]] || return 1
      PRIMARY=$n
    elif [[ $(code "$AGENT://127.0.0.1:${AGENT_PORT[$n]}/replica") == 200 ]]; then
      REPLICAS+=("$n")
    fi
  done
  [[ -n $PRIMARY && ${#REPLICAS[@]} == 2 ]]
}
wait_for "one primary and two replicas" 180 roles_settled
for n in "${WEB_NODES[@]}"; do
  "$FULCRUM" web --site "$W/site.toml" --node "$n" --log-level warn >"$W/$n.log" 2>&1 &
  PID[$n]=$!
done
"$FULCRUM" lb --site "$W/site.toml" --node lb-1 --log-level warn >"$W/lb.log" 2>&1 &
PID[lb]=$!
SITE="http://127.0.0.1:$LB"
post_ok() {
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 3 -H 'Content-Type: application/json' \
    --data '{"author":"bench","text":"first"}' "$SITE/api/messages") == 201 ]]
}
wait_for "a guestbook write through the load balancer" 60 post_ok
# Rows to read from the start: a read returns the latest 20.
for i in $(seq 1 40); do
  curl -s -o /dev/null -H 'Content-Type: application/json' --data "{\"author\":\"seed\",\"text\":\"row $i\"}" \
    "$SITE/api/messages"
done

# db_node of N plain reads through the load balancer, as a sorted unique list.
read_nodes() {
  for _ in $(seq 1 "$1"); do
    curl -s --max-time 3 "$SITE/api/messages?limit=1" | grep -o '"db_node":"[^"]*"' | cut -d'"' -f4
  done | sort -u | tr '\n' ' '
}
reads_from() { # true when 20 plain reads named exactly the nodes given
  [[ $(read_nodes 20) == "$(printf '%s\n' "$@" | sort -u | tr '\n' ' ')" ]]
}

run_one() { # replicas tokens
  local replicas=$1 tokens=$2 env=0
  [[ $tokens == on ]] && env=1
  GB_TOKENS=$env wrk -t"$WRK_THREADS" -c"$CONNS" -d2s -s "$W/guestbook.lua" "$SITE" >/dev/null 2>&1 || true
  GB_TOKENS=$env wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DUR}s" --latency -s "$W/guestbook.lua" "$SITE" \
    >"$W/out.wrk" 2>&1
  local rps p50 p99 gb
  rps=$(awk '/Requests\/sec/{print $2}' "$W/out.wrk")
  p50=$(awk '$1=="50%"{print $2}' "$W/out.wrk"); p99=$(awk '$1=="99%"{print $2}' "$W/out.wrk")
  gb=$(grep '^GB ' "$W/out.wrk" || echo "GB (no summary: see $W/out.wrk)")
  local reads writes errors db
  reads=$(sed -n 's/.*reads=\([0-9]*\).*/\1/p' <<<"$gb"); writes=$(sed -n 's/.*writes=\([0-9]*\).*/\1/p' <<<"$gb")
  errors=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$gb"); db=$(sed -n 's/.* db=//p' <<<"$gb")
  printf "| %8s | %6s | %8s | %8s | %8s | %7s | %6s | %6s | %s\n" "$replicas" "$tokens" "$rps" "$p50" "$p99" \
    "$reads" "$writes" "$errors" "$db"
  cp "$W/out.wrk" "$W/out-$replicas-$tokens.wrk"
}

echo "primary $PRIMARY, replicas ${REPLICAS[*]}; synchronous = $SYNC; internal_tls = $TLS; $DUR s per run, $CONNS connections," \
  "$WRK_THREADS wrk threads" >&2
printf "| replicas | tokens |      rps |      p50 |      p99 |   reads | writes | errors | reads served by (db node, share)\n"
printf "|----------|--------|----------|----------|----------|---------|--------|--------|------------------\n"
SERVING=("${REPLICAS[@]}")
for replicas in $STEPS; do
  if ((${#SERVING[@]} > replicas)); then
    gone=${SERVING[-1]}
    unset 'SERVING[-1]'
    kill -TERM "${PID[$gone]}"
    wait_exit "${PID[$gone]}"
    unset "PID[$gone]"
  fi
  if ((replicas == 0)); then
    wait_for "reads from the primary alone" 60 reads_from "$PRIMARY"
  else
    wait_for "reads from ${SERVING[*]}" 60 reads_from "${SERVING[@]}"
  fi
  run_one "$replicas" off
  run_one "$replicas" on
done
if [[ $TLS == true ]]; then
  # The TLS handshakes the web nodes made (full and resumed) against the requests above: a pooled
  # link makes few; one per request would be the cost to look at first.
  for n in "${WEB_NODES[@]}"; do
    curl -s --max-time 3 "${CURL_TLS[@]}" "https://127.0.0.1:${WEB_PORT[$n]}/metrics" |
      grep -E '^fulcrum_web_tls_handshakes_total' | sed "s/^/$n: /" >&2 || true
  done
fi
