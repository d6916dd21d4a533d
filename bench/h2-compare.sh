#!/usr/bin/env bash
# HTTP/2 termination on loopback (issue 17): HAProxy 2.6 and nginx 1.22 (and any extra `name=command`)
# each terminate TLS with ALPN h2 on one thread/worker pinned to CPU 0 and proxy over HTTP/1.1
# keep-alive to one nginx backend (`return 200 "hello\n"`) on CPU 1; h2load runs on CPU 1:
# $CONNS connections x $STREAMS concurrent streams for $DUR seconds.
# Per proxy: requests/s, CPU microseconds (utime+stime from /proc/PID/stat) per completed request,
# the share of CPU 0 the proxy used over the run (near 100%: the proxy is the bottleneck),
# request time min/mean/max as h2load prints them, and p50/p99 computed from h2load's per-request
# log (--log-file), failed/errored/timed-out requests and non-2xx responses.
# Before measuring, one short h2load run must report "Application protocol: h2"; a proxy that
# negotiates anything else (http/1.1) is reported as such and not measured.
# Certificate: ECDSA P-256 (CERT_KIND=rsa for RSA-2048), the same for every proxy.
# Usage: h2-compare.sh [name=command ...]  (the command listens with TLS on $PORT using $CERT/$KEY,
#        PEM files, offers h2 by ALPN, and proxies to $BACKENDS, e.g. 127.0.0.1:19111), e.g.
#   HTTP2=1 bench/h2-compare.sh 'fulcrum=bench/fulcrum-tls-exec.sh $PORT $BACKENDS $CERT $KEY'
# Env: DUR (default 10), CONNS (64), STREAMS (10), PORT (18453), PEERS (default "haproxy nginx";
#      empty to run only the extra commands), KEEP=1 keeps the temp dir (configs, h2load outputs, logs).
set -euo pipefail
DUR=${DUR:-10}; CONNS=${CONNS:-64}; STREAMS=${STREAMS:-10}; PORT=${PORT:-18453}; BE=127.0.0.1:19111
PEERS=${PEERS-haproxy nginx}
URL=https://127.0.0.1:$PORT/
W=$(mktemp -d /tmp/h2cmp.XXXX); chmod 755 $W
cleanup(){ for p in $(cat $W/pids 2>/dev/null); do kill $p 2>/dev/null || true; done; sleep 0.2
  if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf $W; fi; }
trap cleanup EXIT
if [ "${CERT_KIND:-ecdsa}" = rsa ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout $W/key.pem -out $W/cert.pem -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
else
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $W/key.pem -out $W/cert.pem -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
fi
cat $W/cert.pem $W/key.pem > $W/both.pem
# Every stream in flight may hold its own backend connection: let each proxy keep that many idle.
POOL=$((CONNS * STREAMS))
cat > $W/be.conf <<NG
worker_processes 1; daemon off; pid $W/be.pid; error_log $W/be.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; server { listen $BE; location / { return 200 "hello\n"; } } }
NG
taskset -c 1 nginx -c $W/be.conf -e $W/be.err & echo $! >> $W/pids
cat > $W/haproxy.cfg <<HA
global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$PORT ssl crt $W/both.pem alpn h2,http/1.1
  default_backend be
backend be
  http-reuse always
  server s1 $BE
HA
cat > $W/nginxlb.conf <<NG
worker_processes 1; daemon off; pid $W/lb.pid; error_log $W/lb.err;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; ssl_session_tickets off; ssl_session_cache off;
  upstream be { server $BE; keepalive $POOL; }
  server { listen 127.0.0.1:$PORT ssl http2; ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NG
sleep 0.3
cpu_of(){ awk '{print $14+$15}' /proc/$1/stat; }
# The protocol h2load's ALPN (h2 first, then http/1.1) ends up with, "none" if it cannot connect.
protocol(){ local p
  p=$(taskset -c 1 h2load -n 4 -c 1 -m 1 $URL 2>&1 | awk -F': ' '/Application protocol/{print $2; exit}')
  echo ${p:-none}; }
measure(){ # name pid
  local name=$1 pid=$2 out=$W/$1.h2load log=$W/$1.log proto
  for i in $(seq 50); do curl -skf -o /dev/null $URL && break; sleep 0.1; done
  proto=$(protocol)
  if [ "$proto" != h2 ]; then
    printf "%-8s protocol=%s: did not negotiate h2, not measured\n" $name "$proto"; return
  fi
  taskset -c 1 h2load -c $CONNS -m $STREAMS -D 1 $URL >/dev/null 2>&1 || true
  local c0=$(cpu_of $pid) t0=$(date +%s.%N)
  taskset -c 1 h2load -c $CONNS -m $STREAMS -D $DUR --log-file=$log $URL > $out 2>&1 || true
  local c1=$(cpu_of $pid) t1=$(date +%s.%N)
  # requests: T total, S started, D done, OK succeeded, F failed, E errored, TO timeout
  local rps=$(awk '/^finished in/{print $4}' $out)
  local done=$(awk '/^requests:/{print $6}' $out)
  local fails=$(awk '/^requests:/{printf "failed=%s errored=%s timeout=%s", $10, $12, $14}' $out)
  local non2xx=$(awk '/^status codes:/{print $5+$7+$9}' $out)
  local times=$(awk '/^time for request:/{printf "min=%s mean=%s max=%s", $4, $6, $5}' $out)
  local pct=$(cut -f3 $log | sort -n | awk '{v[NR]=$1} END{ if (NR == 0) { print "p50=NA p99=NA"; exit }
    i50 = int(NR*0.50); if (i50 < 1) i50 = 1; i99 = int(NR*0.99); if (i99 < 1) i99 = 1;
    printf "p50=%.2fms p99=%.2fms", v[i50]/1000, v[i99]/1000 }')
  local us=$(awk -v c=$((c1-c0)) -v t=$(getconf CLK_TCK) -v r=${done:-0} 'BEGIN{ if (r>0) printf "%.2f", c/t*1e6/r; else print "NA" }')
  local busy=$(awk -v c=$((c1-c0)) -v t=$(getconf CLK_TCK) -v a=$t0 -v b=$t1 'BEGIN{ printf "%.0f%%", c/t/(b-a)*100 }')
  printf "%-8s %-3s rps=%-10s cpu_us_per_req=%-7s cpu0_busy=%-4s %s %s done=%s non2xx=%s %s rss_kb=%s\n" $name $proto \
    "${rps:-NA}" $us $busy "$pct" "$times" "${done:-NA}" "${non2xx:-NA}" "$fails" "$(awk '/VmHWM/{print $2}' /proc/$pid/status)"
}
for peer in $PEERS; do
  case $peer in
    haproxy)
      taskset -c 0 haproxy -f $W/haproxy.cfg -db & HP=$!; echo $HP >> $W/pids
      measure haproxy $HP; kill $HP 2>/dev/null || true; wait $HP 2>/dev/null || true; sleep 0.3 ;;
    nginx)
      taskset -c 0 nginx -c $W/nginxlb.conf -e $W/lb.err &
      for i in $(seq 50); do [ -s $W/lb.pid ] && pgrep -P $(cat $W/lb.pid) >/dev/null && break; sleep 0.1; done
      NP=$(pgrep -P $(cat $W/lb.pid) | head -1); cat $W/lb.pid >> $W/pids
      measure nginx $NP; kill $(cat $W/lb.pid) 2>/dev/null || true; sleep 0.3 ;;
    *) echo "unknown peer $peer" >&2; exit 2 ;;
  esac
done
for spec in "$@"; do
  name=${spec%%=*}; cmd=${spec#*=}
  cmd=${cmd//\$PORT/$PORT}; cmd=${cmd//\$BACKENDS/$BE}; cmd=${cmd//\$CERT/$W/cert.pem}; cmd=${cmd//\$KEY/$W/key.pem}
  taskset -c 0 bash -c "exec $cmd" & XP=$!; echo $XP >> $W/pids; sleep 0.5
  measure $name $XP; kill $XP 2>/dev/null || true; wait $XP 2>/dev/null || true; sleep 0.3
done
