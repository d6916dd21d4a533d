#!/usr/bin/env bash
# Failover time and lost writes: `fulcrum db` (leader_ttl_ms 10000 and the default 5000) vs
# Patroni 3 (ttl 10, loop_wait 2, retry_timeout 4) on etcd 3.4, same machine, one run.
# Each system: three PostgreSQL 15 nodes on loopback with their own etcd, in a temp dir under /tmp.
# Modes async and synchronous; faults: (a) `postgres`, kill -9 of the primary's postgres only;
# (b) `agent+postgres`, kill -9 of the primary's agent and postgres together; (c) `agent-frozen`,
# SIGSTOP of the primary's agent process only (its PostgreSQL keeps running); (d) `node-frozen`,
# SIGSTOP of the agent and every PostgreSQL process of the primary's node. (c) and (d) thaw
# (SIGCONT, the agent last) THAW_DELAY s after the new primary's first commit; Patroni runs
# without a watchdog. A writer (THREADS clients, default 8) commits INSERTs as fast as it can
# through whichever node answers /primary; a probe writes to every node directly; in (c) and (d)
# a direct client also writes straight to the old primary's PostgreSQL.
# Prints: time from the fault to the first commit after it (median/min/max over TRIALS, default
# 10), acknowledged writes missing from the new primary, for (c) and (d) the old primary's commits
# acknowledged after the new primary's first commit, trials where two nodes accepted writes at
# once. A cell whose setting the Fulcrum build refuses reads "n/a (not supported by this build)".
# Reports only; nothing here passes or fails. Needs root (PostgreSQL runs as `postgres`).
# Env: FULCRUM_BIN, TRIALS, THREADS, SYSTEMS (default fulcrum:10000,fulcrum:5000,patroni:10000),
#      MODES (async,sync), FAULTS (postgres,agent+postgres,agent-frozen,node-frozen),
#      LOGS (a dir to keep the agents' logs in), THAW_DELAY (s, default 3),
#      REJOIN_TIMEOUT (s, default 90: a node not rejoining by itself is re-cloned and counted).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
FULCRUM_BIN=${FULCRUM_BIN:-$HERE/../build/fulcrum}
PY=/usr/bin/python3  # Debian's interpreter: python3-psycopg2 and Patroni live there

fail() { echo "failover.sh: $*" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || fail "needs root (PostgreSQL runs as the postgres user)"
id postgres >/dev/null 2>&1 || fail "no postgres OS user (apt-get install postgresql)"
command -v etcd >/dev/null || fail "etcd is not installed (scripts/deps.sh)"
[[ -x /usr/bin/patroni ]] || fail "patroni is not installed (scripts/deps.sh --bench)"
"$PY" -c 'import psycopg2' 2>/dev/null || fail "python3-psycopg2 is not installed (scripts/deps.sh --bench)"
[[ -x $FULCRUM_BIN ]] || fail "no fulcrum binary at $FULCRUM_BIN (build it, or set FULCRUM_BIN)"
FULCRUM_BIN=$(realpath "$FULCRUM_BIN")

W=$(mktemp -d /tmp/fulcrum-failover.XXXXXX)
chmod 0755 "$W"  # the postgres user must traverse it
RUN=""

cleanup() {
  trap - EXIT INT TERM
  if [[ -n $RUN ]] && kill -0 "$RUN" 2>/dev/null; then
    kill -TERM "$RUN" 2>/dev/null || true  # the driver stops its clusters at once
    for _ in $(seq 100); do kill -0 "$RUN" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$RUN" 2>/dev/null || true
  fi
  # Whatever is left frozen is thawed, whatever runs from the run dir (agents, patroni,
  # postmasters, etcd) is killed, then the dir is removed.
  "$PY" "$HERE/failover/run.py" --dir "$W" --fulcrum - --cleanup || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "failover.sh: fulcrum $FULCRUM_BIN, $(patroni --version), $(etcd --version | head -1), run dir $W"
echo "failover.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs" \
  "(figures from a shared machine are noisy)"
# In the background so a signal reaches the trap at once; the driver exits on SIGTERM.
"$PY" "$HERE/failover/run.py" --dir "$W" --fulcrum "$FULCRUM_BIN" --trials "${TRIALS:-10}" \
  --threads "${THREADS:-8}" --systems "${SYSTEMS:-fulcrum:10000,fulcrum:5000,patroni:10000}" \
  --modes "${MODES:-async,sync}" --faults "${FAULTS:-postgres,agent+postgres,agent-frozen,node-frozen}" \
  --logs "${LOGS:-}" &
RUN=$!
wait "$RUN"
