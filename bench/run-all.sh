#!/usr/bin/env bash
# `make bench`: every side-by-side benchmark, one after another. They report; none judges.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
echo "== fulcrum web vs nginx: static files =="
"$HERE/web-vs-nginx.sh"
echo
echo "== fulcrum lb vs HAProxy and nginx =="
"$HERE/lb-vs-haproxy.sh"
echo
echo "== HTTP/2 termination (h2load, 64 connections x 10 streams): HAProxy, nginx and fulcrum lb =="
HTTP2=1 "$HERE/h2-compare.sh" "fulcrum=$HERE/fulcrum-tls-exec.sh \$PORT \$BACKENDS \$CERT \$KEY"
echo
echo "== the guestbook through the load balancer: 90% reads, 0-2 replicas, with and without tokens =="
"$HERE/guestbook.sh"
echo
# bench/failover.sh (Fulcrum vs Patroni) runs alone: sudo bench/failover.sh -- with its four default
# faults an estimated two to three times the 45-60 minutes of the two kill faults
# (FAULTS=postgres,agent+postgres); see docs/benchmarks.md.
for b in "$HERE"/../build/bench/*_bench; do
  if [[ -x "$b" ]]; then
    echo "== $(basename "$b") =="
    "$b" --benchmark_min_time=0.2
  fi
done
