#include "lb/dashboard_page.h"

namespace fulcrum::lb {

namespace {

// Colours are chosen for WCAG AA: every text colour is at least 4.5:1 on its background
// (#4a5361 on #fff is 7.9:1; white on #137333 5.9:1, on #b3261e 6.2:1, on #8a4b00 6.9:1).
// Node names never break (white-space: nowrap); rows wrap instead, so 390 px needs no scroll.
constexpr std::string_view kPage = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fulcrum site</title>
<link rel="icon" href="favicon.ico" type="image/svg+xml">
<style>
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2430}
header{background:#1d2430;color:#fff;padding:10px 16px;display:flex;flex-wrap:wrap;gap:4px 16px;align-items:baseline}
header h1{font-size:18px;margin:0}
header span{color:#d5dae3}
main{padding:12px 16px;max-width:1200px;margin:0 auto}
h2{font-size:15px;margin:18px 0 6px}
.muted{color:#4a5361}
.nowrap,.name{white-space:nowrap}
#summary{padding:10px 14px;border-radius:6px;font-weight:600;overflow-wrap:anywhere}
#summary.ok{background:#e6f4ea;color:#0d5223}
#summary.warn{background:#fff4e0;color:#5c3300}
#summary.down{background:#b3261e;color:#fff}
#summary.unknown{background:#e8eaee;color:#1d2430}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(110px,1fr));gap:8px;margin:10px 0}
.card{background:#fff;border:1px solid #d0d5dd;border-radius:6px;padding:6px 10px}
.card b{display:block;font-size:19px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:8px}
.chart{background:#fff;border:1px solid #d0d5dd;border-radius:6px;padding:6px 10px}
.chart svg{width:100%;height:60px;display:block}
.chart .head{display:flex;justify-content:space-between;gap:8px;flex-wrap:wrap}
.node{background:#fff;border:1px solid #d0d5dd;border-left:6px solid #4a5361;border-radius:6px;padding:6px 10px;
 margin:6px 0;display:flex;flex-wrap:wrap;gap:2px 14px;align-items:baseline}
.node.ok{border-left-color:#137333}
.node.warn{border-left-color:#8a4b00}
.node.down{border-left-color:#b3261e;background:#fdecea}
.node .name{font-weight:700;min-width:80px}
.badge{display:inline-block;padding:0 8px;border-radius:10px;color:#fff;font-weight:600;white-space:nowrap;background:#4a5361}
.ok>.badge,.badge.ok{background:#137333}
.warn>.badge,.badge.warn{background:#8a4b00}
.down>.badge,.badge.down{background:#b3261e}
.node .badge.flap,.events .badge.flap{background:#6a1b9a}
.detail{overflow-wrap:anywhere;min-width:0}
.metrics{display:flex;flex-wrap:wrap;gap:2px 12px;width:100%}
.events{list-style:none;padding:0;margin:0;background:#fff;border:1px solid #d0d5dd;border-radius:6px}
.events li{padding:4px 10px;border-bottom:1px solid #e8eaee;display:flex;flex-wrap:wrap;gap:2px 10px}
.events li:last-child{border-bottom:0}
details{margin-top:16px}
.tablewrap{overflow-x:auto;background:#fff;border:1px solid #d0d5dd;border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{padding:4px 10px;text-align:left;white-space:nowrap;border-bottom:1px solid #e8eaee}
th{font-weight:600;color:#4a5361}
tr:last-child td{border-bottom:0}
td.down{color:#b3261e;font-weight:600}
</style></head><body>
<header><h1>Fulcrum</h1><span id="node"></span><span id="updated"></span></header>
<main>
<div id="summary" class="unknown" role="status">loading…</div>
<div class="cards" id="cards"></div>
<div class="charts" id="charts"></div>
<div id="groups"></div>
<h2>Servers</h2>
<div class="tablewrap"><table id="servers"></table></div>
<h2>Recent state changes</h2>
<ul class="events" id="events"></ul>
<details><summary>Load balancer counters</summary><div id="counters"></div></details>
</main>
<script>
'use strict';
const GROUPS = [['lb', 'Load balancers'], ['web', 'Web servers'], ['db', 'Database members'], ['etcd', 'etcd']];
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function num(v, d){return v === null || v === undefined ? '-' : Number(v).toFixed(d === undefined ? 1 : d);}
function dur(ms){const s = Math.max(0, Math.floor(ms / 1000));
  return s < 120 ? s + ' s' : s < 7200 ? Math.floor(s / 60) + ' min' : Math.floor(s / 3600) + ' h ' + Math.floor(s / 60) % 60 + ' min';}
function bytes(b){return b === null || b === undefined ? '-' : b < 10240 ? b + ' B' : b < 10485760 ? Math.floor(b / 1024) + ' kB' : Math.floor(b / 1048576) + ' MB';}
// HAProxy's short durations: 45s, 2m15s, 3h4m, 2d5h.
function hms(sec){if (sec === null || sec === undefined) return '-'; const s = Math.floor(sec);
  return s < 60 ? s + 's' : s < 3600 ? Math.floor(s / 60) + 'm' + s % 60 + 's' : s < 86400 ? Math.floor(s / 3600) + 'h' + Math.floor(s / 60) % 60 + 'm' :
    Math.floor(s / 86400) + 'd' + Math.floor(s / 3600) % 24 + 'h';}
// The last check as HAProxy's LastChk: "L7OK/200 in 1 ms", "L7STS/503 in 2 ms", "L4CON in 0 ms: connect: Connection refused".
function lastChk(c){if (!c) return 'not checked yet';
  return c.result + (c.status ? '/' + c.status : '') + ' in ' + num(c.duration_ms, 0) + ' ms' + (/OK$/.test(c.result) ? '' : ': ' + c.reason);}
function serverRow(group, v){
  const state = v.health === 'up' && v.admin && v.admin !== 'ready' ? v.admin : v.health;
  return '<tr data-server="' + esc(v.name) + '" data-group="' + esc(group) + '"><td>' + esc(group) + '</td><td class="name">' + esc(v.name) + '</td><td>' +
    esc(v.role || (v.backup ? 'backup' : '')) + '</td><td class="' + (v.health === 'up' ? '' : 'down') + '">' + esc(state) + '</td><td class="check">' +
    esc(lastChk(v.last_check)) + '</td><td>' + (v.checks_failed === undefined ? '-' : v.checks_failed) + '</td><td>' +
    (v.down_transitions === undefined ? '-' : v.down_transitions) + '</td><td>' + hms(v.downtime_seconds) + '</td><td>' + hms(v.last_change_seconds) + '</td></tr>';
}
function clock(ms){return new Date(ms).toLocaleTimeString([], {hour12: false});}

// Charts: [t_ms, value] series drawn as one SVG polyline each.
function chart(title, unit, series, source){
  const w = 300, h = 60;
  const vals = series.map(p => p[1]), max = Math.max(1e-9, ...vals);
  const t0 = series.length ? series[0][0] : 0, t1 = series.length ? series[series.length - 1][0] : 1;
  const pts = series.map(p => ((p[0] - t0) / Math.max(1, t1 - t0) * w).toFixed(1) + ',' + (h - 2 - p[1] / max * (h - 4)).toFixed(1)).join(' ');
  const last = vals.length ? vals[vals.length - 1] : null;
  return '<div class="chart"><div class="head"><b>' + esc(title) + '</b><span class="muted">now ' + num(last) + ' ' + unit +
    ' · max ' + num(vals.length ? max : null) + '</span></div><svg viewBox="0 0 ' + w + ' ' + h + '" preserveAspectRatio="none" role="img" aria-label="' +
    esc(title) + ', last 15 minutes"><polyline fill="none" stroke="#1a56a6" stroke-width="1.5" vector-effect="non-scaling-stroke" points="' +
    pts + '"/></svg><span class="muted">last 15 min · ' + esc(source) + '</span></div>';
}
let prom = null;  // {at, rps, errors, p99} from Prometheus' query_range, when [monitoring] runs it
async function promSeries(base){
  const end = Date.now() / 1000, q = {
    rps: 'sum(rate(fulcrum_lb_requests_total[1m]))',
    errors: 'sum(rate(fulcrum_lb_responses_total{code="5xx"}[1m]))',
    p99: '1000 * histogram_quantile(0.99, sum by (le) (rate(fulcrum_lb_request_duration_seconds_bucket[1m])))'};
  const out = {at: Date.now()};
  for (const k of Object.keys(q)) {
    const r = await fetch(base.replace(/\/$/, '') + '/api/v1/query_range?query=' + encodeURIComponent(q[k]) +
      '&start=' + (end - 900) + '&end=' + end + '&step=15');
    const j = await r.json(); const v = j.data && j.data.result[0] ? j.data.result[0].values : [];
    out[k] = v.map(p => [p[0] * 1000, isFinite(+p[1]) ? +p[1] : 0]);
  }
  if (!out.rps.length) throw new Error('no data in Prometheus yet');  // the lb's own ring meanwhile
  return out;
}
async function charts(s){
  const url = s.monitoring && s.monitoring.prometheus_url;
  if (url && (!prom || Date.now() - prom.at > 15000)) {
    try { prom = await promSeries(url); } catch (e) { prom = null; }
  }
  if (url && prom) {
    return chart('Requests', '/s', prom.rps, 'Prometheus') + chart('Errors (5xx)', '/s', prom.errors, 'Prometheus') +
      chart('p99 latency', 'ms', prom.p99, 'Prometheus');
  }
  const p = s.history.points, src = 'this load balancer, every ' + s.history.interval_ms / 1000 + ' s';
  return chart('Requests', '/s', p.map(x => [x[0], x[1]]), src) + chart('Errors (5xx)', '/s', p.map(x => [x[0], x[2]]), src) +
    chart('p99 latency', 'ms', p.map(x => [x[0], x[3]]), src);
}

function nodeRow(n, s, servers){
  let extra = '';
  if (n.role === 'web') {
    const v = servers[n.name] || {}, r = n.rates || {};
    extra = '<span>' + num(r.rps) + ' req/s</span><span>' + num(r.errors_per_s) + ' err/s</span><span class="nowrap">p50 ' + num(r.p50_ms) +
      ' · p90 ' + num(r.p90_ms) + ' · p99 ' + num(r.p99_ms) + ' ms</span><span>' + (v.inflight || 0) + ' in flight</span><span>' +
      (v.requests || 0) + ' requests · ' + (v.failures || 0) + ' failures</span>' + (v.admin && v.admin !== 'ready' ? '<span>admin ' + esc(v.admin) + '</span>' : '') +
      (v.outlier && v.outlier.ejected ? '<span class="badge flap">ejected: ' + esc(v.outlier.reason) + ', ' + dur(v.outlier.remaining_ms) + ' left</span>' : '');
  } else if (n.role === 'db') {
    extra = '<span>timeline ' + num(n.timeline, 0) + '</span><span>lag ' + bytes(n.lag_bytes) + '</span><span>leader ' + esc(n.leader || '-') +
      '</span><span>routes ' + (n.routes && n.routes.length ? esc(n.routes.join(', ')) : 'none') + '</span>' +
      (n.paused ? '<span class="badge flap">paused: no automatic failover</span>' : '');
  }
  const since = n.status === 'unknown' ? '' : '<span class="muted nowrap">for ' + dur(s.now_ms - n.since_ms) + '</span>';
  return '<div class="node ' + esc(n.status) + '" data-name="' + esc(n.name) + '" data-role="' + esc(n.role) + '" data-state="' + esc(n.state) + '">' +
    '<span class="badge">' + esc(n.state) + '</span><span class="name">' + esc(n.name) + '</span>' +
    (n.flapping ? '<span class="badge flap">flapping: ' + n.changes + ' changes</span>' : '') +
    '<span class="muted nowrap">' + esc(n.address) + '</span>' + since +
    (n.detail ? '<span class="detail">' + esc(n.detail) + '</span>' : '') +
    (extra ? '<div class="metrics muted">' + extra + '</div>' : '') + '</div>';
}

let failures = 0;
async function tick(){
  try {
    const r = await fetch('api/state', {cache: 'no-store'}); const s = await r.json();
    failures = 0;
    document.getElementById('node').textContent = 'seen from ' + s.node + ' · ' + s.algorithm;
    document.getElementById('updated').textContent = 'updated ' + clock(s.now_ms);
    const sum = document.getElementById('summary');
    sum.className = s.summary.status; sum.textContent = s.summary.text;
    const t = s.totals, rt = s.rates;
    const cards = [['req/s', num(rt.rps)], ['errors/s', num(rt.errors_per_s)], ['p50 ms', num(rt.p50_ms)], ['p99 ms', num(rt.p99_ms)],
      ['connections', t.connections_active], ['requests', t.requests]];
    document.getElementById('cards').innerHTML = cards.map(([k, v]) => '<div class="card"><span class="muted">' + esc(k) + '</span><b>' + esc(v) + '</b></div>').join('');
    const servers = {}; for (const v of s.servers) servers[v.name] = v;
    document.getElementById('groups').innerHTML = GROUPS.map(([role, title]) => {
      const nodes = s.nodes.filter(n => n.role === role);
      return nodes.length ? '<h2>' + title + '</h2>' + nodes.map(n => nodeRow(n, s, servers)).join('') : '';
    }).join('');
    document.getElementById('servers').innerHTML = '<tr><th>pool</th><th>server</th><th>role</th><th>status</th><th title="the last health check">last check</th>' +
      '<th title="failed checks">failed</th><th title="times it went down">down</th><th title="time down in all">downtime</th><th title="since the last change of state">last change</th></tr>' +
      s.servers.map(v => serverRow('web', v)).join('') + (s.db_frontends || []).map(f => f.servers.map(v => serverRow(f.name, v)).join('')).join('');
    document.getElementById('events').innerHTML = s.events.length ? s.events.slice(0, 50).map(e =>
      '<li><span class="muted nowrap">' + clock(e.t_ms) + '</span><span class="name">' + esc(e.node) + '</span><span class="nowrap">' +
      esc(e.from || 'first seen') + ' → ' + esc(e.to) + '</span>' + (e.flapping ? '<span class="badge flap">flapping</span>' : '') +
      (e.reason ? '<span class="detail muted">' + esc(e.reason) + '</span>' : '') + '</li>').join('') :
      '<li class="muted">no state change since this node started</li>';
    const c = [['retries', t.retries], ['503 no server', t.no_server], ['502', t.bad_gateway], ['504', t.gateway_timeout],
      ['bad requests', t.bad_requests], ['bytes in', t.bytes_in], ['bytes out', t.bytes_out]];
    document.getElementById('counters').innerHTML = '<div class="cards">' + c.map(([k, v]) => '<div class="card"><span class="muted">' + esc(k) +
      '</span><b>' + esc(v) + '</b></div>').join('') + '</div>' + (s.db_frontends || []).map(f => '<p>' + esc(f.name) + ' on ' + esc(f.address) +
      ': ' + f.connections_active + ' open, ' + f.connections_total + ' total, ' + f.no_server + ' without a server</p>').join('');
    document.getElementById('charts').innerHTML = await charts(s);
  } catch (e) {
    if (++failures >= 2) {
      const sum = document.getElementById('summary');
      sum.className = 'down'; sum.textContent = 'this load balancer does not answer (' + e + ')';
    }
  }
}
tick(); setInterval(tick, 1000);
</script></body></html>
)HTML";

constexpr std::string_view kIcon =
    R"(<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#1d2430"/>)"
    R"(<path d="M4 24h24M16 24L9 12h14z" stroke="#fff" stroke-width="3" fill="none" stroke-linejoin="round"/></svg>)";

}  // namespace

std::string_view dashboardPage() {
  return kPage;
}

std::string_view dashboardIcon() {
  return kIcon;
}

}  // namespace fulcrum::lb
