#!/usr/bin/env bash
# What [db.backup] (pgBackRest, issue 20) costs and how long its operations take, on one machine,
# one run of each:
#
#  1. A site under `fulcrum up` (managed etcd, two db agents, two web nodes with app = "guestbook",
#     one lb) with an empty [db.backup] table: the time until `up` says "is up", then until the
#     first full backup (taken by the leader's agent by itself) shows in `fulcrum backup --list`.
#  2. Write throughput with WAL archiving on: wrk sends only POST /api/messages (a small JSON
#     message) through the lb for DUR seconds (after a 2 s warm-up). Run on the small database,
#     right after the first backup, so that it compares with step 6. With it, the WAL the run wrote
#     (pg_current_wal_lsn before and after) and the segments archived meanwhile (the leader agent's
#     fulcrum_db_archive_archived_total): all that archiving adds is one archive-push per segment.
#  3. The guestbook table grown to about SIZE_MB (default 1024) MiB: INSERT ... SELECT
#     generate_series in batches of BATCH rows as the application role (psql over TCP, user and
#     database "site", password from state_dir/db.password). Each row's text is 256 hex characters
#     (eight md5s), which lz4 barely compresses, so backup sizes are near the worst case rather than
#     flattered by repeated text. Reports pg_database_size.
#  4. `fulcrum backup SITE --full`, then DIFF_ROWS (default 20000, a few MB) new rows and
#     `fulcrum backup SITE` (differential), each timed wall-clock until it exits; each backup's size
#     and repo_size from `fulcrum backup --list --json` and `du -sb` of its own directory in the
#     repository, and `du -sb` of the whole repository (backups and WAL archive).
#  5. Point-in-time restore: PITR_ROWS more rows (only in the WAL archive, in no backup), a moment T
#     noted, then every row written in 4 and 5 deleted; `fulcrum restore SITE --to @T` timed until
#     it exits 0, the rows counted afterwards on the leader, and the time from its exit until the
#     other db node streams again (the replica is cloned anew after the promotion).
#  6. The first site stopped and removed; a second one, identical but without [db.backup] (no
#     archiving), started, and the same wrk run as in 2. Reports the ratio of the two.
#
# Nothing is pinned: on a 2-core machine wrk, the lb, the web nodes, PostgreSQL and pgBackRest
# share the cores, and one run each is noisy; the load average is printed with each wrk row. The
# directory is a temporary one in /tmp (0755: the postgres user must traverse it), ports are free
# loopback ports, and everything is stopped and removed on exit (KEEP=1 keeps the directory).
# Reports only; nothing here passes or fails.
# Usage: bench/backup.sh   env: FULCRUM (binary, default build/fulcrum), DUR (s per wrk run, default
#        20), CONNS (default 32), WRK_THREADS (default 2), SIZE_MB (default 1024), BATCH (rows per
#        INSERT, default 400000), DIFF_ROWS (default 20000), PITR_ROWS (default 1000)
set -Eeuo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FULCRUM=${FULCRUM:-$HERE/../build/fulcrum}
DUR=${DUR:-20}; CONNS=${CONNS:-32}; WRK_THREADS=${WRK_THREADS:-2}
SIZE_MB=${SIZE_MB:-1024}; BATCH=${BATCH:-400000}; DIFF_ROWS=${DIFF_ROWS:-20000}; PITR_ROWS=${PITR_ROWS:-1000}
DB_NODES=(db-1 db-2)
WEB_NODES=(web-1 web-2)

for tool in etcd wrk curl python3 jq pgbackrest; do
  command -v "$tool" >/dev/null || { echo "backup.sh: $tool is not installed (scripts/deps.sh --bench)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "backup.sh: run as root (the db agents run PostgreSQL as postgres)" >&2; exit 1; }
PSQL=$(ls -d /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -t/ -k5 -n | tail -1)
[[ -x $PSQL ]] || { echo "backup.sh: no PostgreSQL client under /usr/lib/postgresql" >&2; exit 1; }

W=$(mktemp -d /tmp/fulcrum-backupbench.XXXX)
chmod 0755 "$W"
UP_PID=""
S=""  # the current site's directory
# Our children: a dead one stays a zombie until reaped, so "exited" means gone or state Z.
exited() { [[ ! -e /proc/$1 ]] || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }
# Stops the current site: SIGTERM to `up` (it stops every node, the agents their PostgreSQL), then
# anything still running from the directory (a postmaster whose agent died) is killed.
site_down() {
  if [[ -n $UP_PID ]]; then
    kill -TERM "$UP_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 90))
    until exited "$UP_PID" || ((SECONDS >= deadline)); do sleep 0.2; done
    kill -KILL "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=""
  fi
  for p in $(grep -lsF "$W" /proc/[0-9]*/cmdline | cut -d/ -f3); do kill -KILL "$p" 2>/dev/null || true; done
}
cleanup() {
  set +e
  trap - ERR
  site_down
  if [[ -n ${KEEP:-} ]]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo "backup.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { echo "$EPOCHREALTIME"; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }
# wait_for WHAT SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "backup.sh: timed out after ${secs}s waiting for $what; logs in $W" >&2
      KEEP=1
      exit 1
    fi
    sleep 0.2
  done
}

# site_up NAME BACKUP(true|false): writes $W/NAME/site.toml and runs `fulcrum up` on it until "is up".
declare -A PG_PORT=() AGENT_PORT=()
site_up() {
  local name=$1 backup=$2
  S="$W/$name"; SITE_NAME=$name
  mkdir -p "$S/www"
  echo "hello" >"$S/www/index.html"
  LB=$(free_port); ETCD=$(free_port)
  for n in "${DB_NODES[@]}"; do PG_PORT[$n]=$(free_port); AGENT_PORT[$n]=$(free_port); done
  {
    printf '[site]\nname = "%s"\nstate_dir = "var"\n' "$name"
    printf '[lb.health]\ninterval_ms = 500\ntimeout_ms = 1000\nrise = 1\nfall = 2\n'
    printf '[[lb.node]]\nname = "lb-1"\nhttp = "127.0.0.1:%s"\nthreads = 1\n' "$LB"
    printf '[web]\ndocroot = "www"\napp = "guestbook"\n'
    for n in "${WEB_NODES[@]}"; do
      printf '[[web.node]]\nname = "%s"\nlisten = "127.0.0.1:%s"\nthreads = 1\n' "$n" "$(free_port)"
    done
    printf '[db]\n'
    [[ $backup == true ]] && printf '[db.backup]\n'
    for n in "${DB_NODES[@]}"; do
      printf '[[db.node]]\nname = "%s"\npg = "127.0.0.1:%s"\nagent = "127.0.0.1:%s"\n' "$n" "${PG_PORT[$n]}" \
        "${AGENT_PORT[$n]}"
    done
    printf '[etcd]\nendpoints = ["127.0.0.1:%s"]\nmanaged = true\n' "$ETCD"
  } >"$S/site.toml"
  "$FULCRUM" check "$S/site.toml" >/dev/null 2>"$S/check.err" || {
    echo "backup.sh: this build refuses the benchmark's site:" >&2; cat "$S/check.err" >&2; exit 1; }
  local started; started=$(now)
  "$FULCRUM" up "$S/site.toml" >"$S/up.out" 2>&1 &
  UP_PID=$!
  is_up() { grep -qs "is up" "$S/up.out" || exited "$UP_PID"; }
  wait_for "\`fulcrum up\` to say the site is up" 300 is_up
  exited "$UP_PID" && { echo "backup.sh: \`fulcrum up\` exited:" >&2; tail -30 "$S/up.out" >&2; KEEP=1; exit 1; }
  UP_SECONDS=$(since "$started")
}

primary() {
  for n in "${DB_NODES[@]}"; do
    [[ $(code "http://127.0.0.1:${AGENT_PORT[$n]}/primary") == 200 ]] && { echo "$n"; return 0; }
  done
  return 1
}
# sql SQL: one statement on the leader as the application role; prints the unaligned result.
sql() {
  local p; p=$(primary) || { echo "backup.sh: no primary" >&2; return 1; }
  PGPASSWORD=$(head -1 "$S/var/db.password") PGCONNECT_TIMEOUT=3 "$PSQL" -X -A -t -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "${PG_PORT[$p]}" -U site -d site -c "$1"
}
catalog() { "$FULCRUM" backup "$S/site.toml" --list --json 2>/dev/null; }
has_backup() { [[ $(catalog | jq '.backups | length' 2>/dev/null || echo 0) -gt 0 ]]; }
db_size() { sql "SELECT pg_database_size(current_database())"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1048576:.1f}')" "$1"; }

post_ok() {
  [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 3 -H 'Content-Type: application/json' \
    --data '{"author":"bench","text":"first"}' "http://127.0.0.1:$LB/api/messages") == 201 ]]
}

cat >"$W/post.lua" <<'LUA'
local n = 0
writes, errors = 0, 0
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function request()
  n = n + 1
  return wrk.format("POST", "/api/messages", {["Content-Type"] = "application/json"},
                    string.format('{"author":"wrk","text":"message %d from wrk"}', n))
end
function response(status, headers, body)
  if status == 201 then writes = writes + 1 else errors = errors + 1 end
end
function done(summary, latency, requests)
  local w, e = 0, 0
  for _, t in ipairs(threads) do w = w + t:get("writes"); e = e + t:get("errors") end
  io.write(string.format("POSTS writes=%d errors=%d\n", w, e))
end
LUA

# The leader agent's count of archived WAL segments ("-" without [db.backup]).
archived() {
  local p; p=$(primary) || { echo "-"; return; }
  curl -s --max-time 2 "http://127.0.0.1:${AGENT_PORT[$p]}/metrics" |
    awk '/^fulcrum_db_archive_archived_total[{ ]/{print $NF; found=1} END{if (!found) print "-"}'
}
# post_load LABEL: the wrk run of steps 2 and 6; sets RPS_<LABEL> and prints a table row with the
# WAL the run wrote and the segments archived meanwhile (which is all that archiving adds).
WRK_ROWS=()
post_load() {
  local label=$1 site="http://127.0.0.1:$LB"
  wait_for "a guestbook write through the load balancer" 60 post_ok
  wrk -t"$WRK_THREADS" -c"$CONNS" -d2s -s "$W/post.lua" "$site" >/dev/null 2>&1 || true
  local load lsn0 arch0 wal arch
  load=$(cut -d' ' -f1-3 /proc/loadavg); lsn0=$(sql "SELECT pg_current_wal_lsn()"); arch0=$(archived)
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DUR}s" --latency -s "$W/post.lua" "$site" >"$W/wrk-$label.out" 2>&1
  wal=$(mib "$(sql "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint")"); arch=$(archived)
  [[ $arch == - ]] || arch=$(awk -v a="$arch" -v b="$arch0" 'BEGIN{print a - b}')
  local rps p50 p99 posts
  rps=$(awk '/Requests\/sec/{print $2}' "$W/wrk-$label.out")
  p50=$(awk '$1=="50%"{print $2}' "$W/wrk-$label.out"); p99=$(awk '$1=="99%"{print $2}' "$W/wrk-$label.out")
  posts=$(grep '^POSTS ' "$W/wrk-$label.out" | cut -d' ' -f2- || echo "(no summary)")
  printf -v "RPS_$label" '%s' "$rps"
  WRK_ROWS+=("$(printf '| %-9s | %8s | %8s | %8s | %-22s | %7s | %8s | %s |' "$label" "$rps" "$p50" "$p99" "$posts" \
    "$wal" "$arch" "$load")")
  echo "${WRK_ROWS[-1]}" >&2
}

FIG=()  # "figure|value" rows of the main table
fig() { FIG+=("$1|$2"); echo "  $1: $2" >&2; }

# --- 1. the site with [db.backup] ---------------------------------------------------------------
echo "site with [db.backup] under \`fulcrum up\` in $W/archiving ..." >&2
site_up archiving true
fig "\`up\` until \"is up\" (s)" "$UP_SECONDS"
t=$(now)
wait_for "the first full backup" 300 has_backup
fig "\"is up\" until the first full backup is listed (s)" "$(since "$t")"

# --- 2. write throughput with archiving on ------------------------------------------------------
echo "POST load, archiving on ..." >&2
post_load archiving

# --- 3. about SIZE_MB MiB of guestbook rows -----------------------------------------------------
# 256 hex characters from eight md5s of seeds no other row uses (rows sharing md5s would let lz4
# find every row's text again in the one before).
HEX="md5((8 * g)::text) || md5((8 * g + 1)::text) || md5((8 * g + 2)::text) || md5((8 * g + 3)::text) ||
     md5((8 * g + 4)::text) || md5((8 * g + 5)::text) || md5((8 * g + 6)::text) || md5((8 * g + 7)::text)"
echo "growing guestbook_messages to ${SIZE_MB} MiB ..." >&2
t=$(now)
from=1
while (($(db_size) < SIZE_MB * 1048576)); do
  sql "INSERT INTO guestbook_messages (author, text) SELECT 'gen', $HEX FROM generate_series($from, $((from + BATCH - 1))) g" >/dev/null
  from=$((from + BATCH))
done
fig "rows generated (INSERT ... SELECT, $BATCH a batch)" "$((from - 1))"
fig "time to generate them, WAL archived meanwhile (s)" "$(since "$t")"
SIZE=$(db_size)
fig "pg_database_size (MiB)" "$(mib "$SIZE")"

# --- 4. full and differential backups -----------------------------------------------------------
# backup_row WHAT ARGS...: `fulcrum backup ARGS` timed; the backup it made is the catalog's newest.
# Besides the catalog's figures, `du -sb` of the backup's own directory in the repository: what it
# added there (a differential's unchanged files are references to its full backup, not copies).
backup_row() {
  local what=$1 t; shift
  t=$(now)
  if "$FULCRUM" backup "$S/site.toml" "$@" >"$W/backup-$what.out" 2>&1; then
    local took; took=$(since "$t")
    local last label; last=$(catalog | jq -c '.backups[-1]'); label=$(jq -r '.label' <<<"$last")
    fig "\`fulcrum backup${*:+ $*}\` ($what) wall time (s)" "$took"
    fig "  label" "$label"
    fig "  size (MiB: the database files it covers)" "$(mib "$(jq '.size' <<<"$last")")"
    fig "  repo_size (MiB)" "$(mib "$(jq '.repo_size' <<<"$last")")"
    fig "  \`du -sb\` of its directory in the repository (MiB)" \
      "$(mib "$(du -sb "$S/var/backup/backup/$SITE_NAME/$label" | cut -f1)")"
  else
    fig "\`fulcrum backup${*:+ $*}\` ($what)" "FAILED after $(since "$t") s: $(tail -3 "$W/backup-$what.out" | tr '\n' ' ')"
  fi
}
echo "full backup ..." >&2
backup_row full --full
sql "INSERT INTO guestbook_messages (author, text) SELECT 'diff', $HEX FROM generate_series($from, $((from + DIFF_ROWS - 1))) g" >/dev/null
echo "differential backup after $DIFF_ROWS new rows ..." >&2
backup_row differential
fig "repository: backups in the catalog" "$(catalog | jq -r '[.backups[] | .type] | join(", ")')"
fig "repository: \`du -sb var/backup\` (MiB, backups and WAL archive)" "$(mib "$(du -sb "$S/var/backup" | cut -f1)")"
fig "  of which the WAL archive (MiB)" "$(mib "$(du -sb "$S/var/backup/archive" | cut -f1)")"

# --- 5. point-in-time restore -------------------------------------------------------------------
sql "INSERT INTO guestbook_messages (author, text) SELECT 'pitr', 'after the differential backup ' || g
     FROM generate_series(1, $PITR_ROWS) g" >/dev/null
KEPT=$(sql "SELECT count(*) FROM guestbook_messages WHERE author IN ('diff', 'pitr')")
TARGET=$(($(date +%s) + 1))  # after every commit above (they ended before this second did)
clock_past() { (($(date +%s) > TARGET)); }
wait_for "the clock past the target" 5 clock_past
DELETED=$(sql "DELETE FROM guestbook_messages WHERE author IN ('diff', 'pitr')" | sed -n 's/^DELETE //p')
LEFT=$(sql "SELECT count(*) FROM guestbook_messages WHERE author IN ('diff', 'pitr')")
echo "restore to @$TARGET after deleting $DELETED rows ..." >&2
t=$(now)
if "$FULCRUM" restore "$S/site.toml" --to "@$TARGET" >"$W/restore.out" 2>&1; then
  fig "\`fulcrum restore --to @T\` wall time until exit 0 (s)" "$(since "$t")"
  t=$(now)
  LEADER=$(primary || echo "?")
  other=${DB_NODES[0]}; [[ $LEADER == "$other" ]] && other=${DB_NODES[1]}
  replica_back() { [[ $(code "http://127.0.0.1:${AGENT_PORT[$other]}/replica") == 200 ]]; }
  wait_for "$other streaming again" 600 replica_back
  fig "then until $other (re-cloned) answers /replica 200 (s)" "$(since "$t")"
  sql_ok() { sql "SELECT 1" >/dev/null 2>&1; }
  wait_for "the leader to answer SQL" 60 sql_ok
  fig "rows deleted after T / left / back after the restore" \
    "$DELETED / $LEFT / $(sql "SELECT count(*) FROM guestbook_messages WHERE author IN ('diff', 'pitr')") (of $KEPT)"
  fig "restore output's last line" "$(tail -1 "$W/restore.out")"
else
  fig "\`fulcrum restore --to @T\`" "FAILED (exit $?) after $(since "$t") s: $(tail -5 "$W/restore.out" | tr '\n' ' ')"
  KEEP=1
fi

# --- 6. the same site without [db.backup] -------------------------------------------------------
echo "stopping the first site; the same site without [db.backup] in $W/plain ..." >&2
site_down
[[ -n ${KEEP:-} ]] || rm -rf "$W/archiving"
site_up plain false
post_load plain

# --- report -------------------------------------------------------------------------------------
echo
echo "| figure | value |"
echo "|---|---|"
for row in "${FIG[@]}"; do echo "| ${row%%|*} | ${row#*|} |"; done
echo
echo "POST /api/messages through the lb, $DUR s, $CONNS connections, $WRK_THREADS wrk threads:"
echo
echo "| site      |      rps |      p50 |      p99 | answers                | WAL MiB | archived | load average before |"
echo "|-----------|----------|----------|----------|------------------------|---------|----------|---------------------|"
printf '%s\n' "${WRK_ROWS[@]}"
echo
echo "rps with archiving / without: $(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.3f}')" \
  "${RPS_archiving:-0}" "${RPS_plain:-1}")"
