#!/usr/bin/env bash
# `make run` until `fulcrum up` exists: the part of the demo site this build runs — three web
# nodes and a load balancer from examples/lb.toml — with Ctrl-C (or SIGTERM) stopping them all.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=build/fulcrum
SITE=examples/lb.toml
pids=()
stop() {
  trap - INT TERM
  echo "stopping..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait
  exit 0
}
trap stop INT TERM
for node in web-01 web-02 web-03; do
  "$BIN" web --site "$SITE" --node "$node" & pids+=($!)
done
"$BIN" lb --site "$SITE" --node lb-01 & pids+=($!)
for _ in $(seq 100); do
  curl -sf -o /dev/null http://127.0.0.1:8080/ && break
  sleep 0.1
done
cat <<MSG

  site       http://127.0.0.1:8080/     (three web nodes behind the load balancer)
  dashboard  http://127.0.0.1:8404/     (/metrics, /api/state; admin token in examples/var/admin.token)

  Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
echo "a node exited; stopping the others" >&2
stop
