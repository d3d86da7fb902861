/**
 * The status page served at / on the metrics listener: one self-contained HTML document
 * (inline CSS and script, an SVG ring) that polls /status.json every 2 s and draws the
 * cluster as this node sees it.
 *
 * Rules:
 * - No external asset and no request but /status.json: the Content-Security-Policy allows
 *   only this document's own script and style (by hash) and connections to its own origin.
 * - Everything the node reports is put into the page as text (textContent, attributes),
 *   never parsed as HTML: node ids and addresses come from configuration and peers.
 * - The script writes no URL, not even the SVG namespace (taken from the <svg> element), so
 *   a test can assert that the document names no other host.
 * - A failed poll keeps the last picture, marks it stale and says since when.
 */
import { createHash } from 'node:crypto';

/** How often the page asks for /status.json. */
export const STATUS_POLL_INTERVAL_MS = 2000;

const STYLE = `
:root { --ink: #1d2330; --muted: #667085; --line: #e3e7ee; --panel: #ffffff; --bg: #f4f6fa;
  --alive: #2e9d57; --suspect: #d99400; --dead: #d64545; --left: #8a8f98; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { display: flex; align-items: baseline; gap: 16px; padding: 14px 24px; background: #1d2330; color: #fff; }
header h1 { margin: 0; font-size: 20px; letter-spacing: 0.5px; }
header .sub { color: #c7cede; }
header .updated { margin-left: auto; color: #c7cede; font-variant-numeric: tabular-nums; }
header .updated.stale { color: #ffb4b4; font-weight: 600; }
main { display: grid; grid-template-columns: 540px 1fr; gap: 20px; padding: 20px 24px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
.panel h2 { margin: 0 0 10px; font-size: 13px; text-transform: uppercase; letter-spacing: 0.6px; color: var(--muted); }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: inherit; }
.stale-picture svg, .stale-picture table, .stale-picture .figures, .stale-picture .budget, .stale-picture .meta { opacity: 0.45; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin-top: 8px; color: var(--muted); font-size: 12px; }
.legend span::before { content: ""; display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; background: var(--swatch); vertical-align: -1px; }
.figures { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; }
.figure .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.figure .label { color: var(--muted); font-size: 12px; }
.budget { margin-top: 12px; }
.bar { height: 10px; background: var(--line); border-radius: 5px; overflow: hidden; margin-top: 4px; }
.bar div { height: 100%; width: 0; background: var(--alive); }
.meta { margin-top: 10px; color: var(--muted); font-size: 12px; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; padding: 6px 8px; border-bottom: 1px solid var(--line); }
td { padding: 7px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
td.node { white-space: normal; overflow-wrap: anywhere; }
td.num, th.num { text-align: right; }
.id { font-weight: 600; }
.id::before { content: ""; display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 7px; background: var(--swatch); vertical-align: -1px; }
.self { font-size: 11px; color: var(--muted); margin-left: 6px; }
.state { display: inline-block; min-width: 56px; text-align: center; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; }
.state.alive { background: var(--alive); } .state.suspect { background: var(--suspect); }
.state.dead { background: var(--dead); } .state.left { background: var(--left); }
.side { display: flex; flex-direction: column; gap: 20px; min-width: 0; }
.note { color: var(--muted); font-size: 12px; margin-top: 8px; }
`;

const SCRIPT = `
'use strict';
(function () {
  var POLL_MS = ${STATUS_POLL_INTERVAL_MS};
  var STATE_COLOURS = { alive: '#2e9d57', suspect: '#d99400', dead: '#d64545', left: '#8a8f98' };
  var MEMBER_COLOURS = ['#3b6fd6', '#8a4fd1', '#1f9aa8', '#d1620f', '#c2417e', '#5b8c1a', '#4d5566', '#a8741a', '#2b4c9b', '#b04fb3', '#0d7d6c', '#8c5a3c'];
  var svg = document.getElementById('ring');
  var NS = svg.namespaceURI;
  var polls = 0;
  var lastOk = 0;

  function $(id) { return document.getElementById(id); }
  function svgEl(name, attrs, parent, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    parent.appendChild(e);
    return e;
  }
  function htmlEl(name, parent, text, className) {
    var e = document.createElement(name);
    if (text !== undefined) e.textContent = text;
    if (className) e.className = className;
    parent.appendChild(e);
    return e;
  }
  function stateColour(state) { return STATE_COLOURS[state] || '#8a8f98'; }
  function memberColour(i) { return MEMBER_COLOURS[i % MEMBER_COLOURS.length]; }
  function bytes(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var u = 0;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
    return (u === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[u];
  }
  function count(n) { return n.toLocaleString('en-US'); }
  function duration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return m + 'm ' + (s % 60) + 's';
    return s + 's';
  }
  function clock(t) { return new Date(t).toLocaleTimeString('en-GB'); }
  function short(id, max) { return id.length > max + 1 ? id.slice(0, max) + '\\u2026' : id; }
  function point(r, a) { return [260 + r * Math.sin(a), 260 - r * Math.cos(a)]; }

  function drawRing(d) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var segments = d.ring.primaries;
    var R = 228, W = 22;
    svgEl('circle', { cx: 260, cy: 260, r: R, fill: 'none', stroke: '#e3e7ee', 'stroke-width': W }, svg);
    var step = (2 * Math.PI) / Math.max(1, segments.length);
    var gap = segments.length <= 128 ? Math.min(0.01, step * 0.2) : 0;
    segments.forEach(function (owner, i) {
      var colour = owner < 0 ? '#c9ced8' : memberColour(owner);
      var first = i * d.ring.partitionsPerSegment;
      var last = Math.min(d.partitions, first + d.ring.partitionsPerSegment) - 1;
      var what = (first === last ? 'partition ' + first : 'partitions ' + first + '\\u2013' + last) +
        ': primary ' + (owner < 0 ? 'none' : d.members[owner].nodeId);
      var shape;
      if (segments.length === 1) {
        shape = svgEl('circle', { cx: 260, cy: 260, r: R, fill: 'none', stroke: colour, 'stroke-width': W }, svg);
      } else {
        var a = point(R, i * step + gap / 2), b = point(R, (i + 1) * step - gap / 2);
        shape = svgEl('path', { d: 'M' + a[0] + ' ' + a[1] + ' A' + R + ' ' + R + ' 0 ' + (step > Math.PI ? 1 : 0) + ' 1 ' + b[0] + ' ' + b[1],
          fill: 'none', stroke: colour, 'stroke-width': W }, svg);
      }
      svgEl('title', {}, shape, what);
    });
    var n = d.members.length;
    var alive = d.members.filter(function (m) { return m.state === 'alive'; }).length;
    svgEl('text', { x: 260, y: 250, 'text-anchor': 'middle', 'font-size': 26, 'font-weight': 700, fill: '#1d2330' }, svg, alive + ' / ' + n + ' alive');
    svgEl('text', { x: 260, y: 276, 'text-anchor': 'middle', 'font-size': 13, fill: '#667085' }, svg,
      count(d.partitions) + ' partitions \\u00d7 ' + d.copies + (d.copies === 1 ? ' copy' : ' copies'));
    // Crowded rings spread wider with smaller circles; their figures stay in the table (and the tooltip).
    // Up to three members carry their figures beside them; more leave no room for that.
    var r = n <= 3 ? 120 : 160;
    var size = n <= 6 ? 36 : Math.max(8, Math.min(30, Math.floor((Math.PI * r) / n) - 5));
    d.members.forEach(function (m, i) {
      var p = point(r, (2 * Math.PI * i) / Math.max(1, n));
      var g = svgEl('g', { class: 'member', 'data-node': m.nodeId, 'data-state': m.state }, svg);
      svgEl('title', {}, g, m.nodeId + ' (' + m.address + (m.role ? ', ' + m.role : '') + '): ' + m.state + ', lag ' + m.replicationLagSeqs + ' seqs, ' +
        m.partitionsPrimary + ' primary / ' + m.partitionsHeld + ' copies');
      if (m.isSelf) svgEl('circle', { cx: p[0], cy: p[1], r: size + 7, fill: 'none', stroke: '#1d2330', 'stroke-width': 2, 'stroke-dasharray': '4 3' }, g);
      svgEl('circle', { cx: p[0], cy: p[1], r: size, fill: stateColour(m.state), stroke: memberColour(i), 'stroke-width': Math.max(2, size / 6) }, g);
      if (size < 20) return;
      var big = size >= 30;
      var label = m.nodeId || '?';
      var font = big && label.length <= 6 ? 15 : big ? 12 : 11;
      // Bold digits and letters are about 0.62 em wide; keep the label inside the circle.
      var fits = Math.max(2, Math.floor((2 * size - 10) / (font * 0.62)));
      svgEl('text', { x: p[0], y: big ? p[1] - 4 : p[1] + 4, 'text-anchor': 'middle', 'font-size': font, 'font-weight': 700, fill: '#fff' }, g,
        short(label, fits - 1));
      if (big) svgEl('text', { x: p[0], y: p[1] + 13, 'text-anchor': 'middle', 'font-size': 11, fill: '#fff' }, g, m.state);
      if (n > 3) return;
      var below = p[1] + 56;
      svgEl('text', { x: p[0], y: below, 'text-anchor': 'middle', 'font-size': 12, fill: '#1d2330' }, g,
        m.partitionsPrimary + ' primary \\u00b7 ' + m.partitionsHeld + ' held');
      svgEl('text', { x: p[0], y: below + 15, 'text-anchor': 'middle', 'font-size': 12, fill: m.replicationLagSeqs > 0 ? '#d99400' : '#667085' }, g,
        m.isSelf ? 'this node' : 'lag ' + count(m.replicationLagSeqs) + ' seqs');
    });
    var legend = $('legend');
    legend.textContent = '';
    d.members.forEach(function (m, i) {
      var s = htmlEl('span', legend, 'primary: ' + (m.nodeId || '?'));
      s.style.setProperty('--swatch', memberColour(i));
    });
    var none = htmlEl('span', legend, 'no live member');
    none.style.setProperty('--swatch', '#c9ced8');
  }

  function drawFigures(d) {
    $('node-id').textContent = d.nodeId;
    $('sessions').textContent = count(d.sessions);
    $('parts').textContent = count(d.parts);
    $('bytes').textContent = bytes(d.bytes);
    $('tombstones').textContent = count(d.tombstones);
    var share = d.maxBytes > 0 ? d.bytes / d.maxBytes : 0;
    $('budget-text').textContent = d.maxBytes > 0 ? bytes(d.bytes) + ' of ' + bytes(d.maxBytes) + ' (' + (share * 100).toFixed(1) + '%)' : bytes(d.bytes) + ', no limit';
    var bar = $('budget-bar');
    bar.style.width = Math.min(100, share * 100).toFixed(2) + '%';
    bar.style.background = share > 0.9 ? STATE_COLOURS.dead : share > 0.75 ? STATE_COLOURS.suspect : STATE_COLOURS.alive;
    $('meta').textContent = 'baton ' + d.version + ' \\u00b7 up ' + duration(Date.now() - d.startedAtUnixMs) + ' \\u00b7 ' +
      count(d.partitions) + ' partitions, ' + d.copies + ' copies each' +
      (d.quorum > 1 ? ' \\u00b7 quorum ' + d.quorum + ': ' + d.membersHeard + ' heard' + (d.membersHeard < d.quorum ? ' (NO QUORUM: writes and claims refused)' : '') : '');
  }

  function drawMembers(d) {
    var body = $('members');
    body.textContent = '';
    d.members.forEach(function (m, i) {
      var tr = htmlEl('tr', body);
      tr.setAttribute('data-node', m.nodeId);
      var id = htmlEl('td', tr, undefined, 'node');
      var name = htmlEl('span', id, m.nodeId || '(never heard from)', 'id');
      name.style.setProperty('--swatch', memberColour(i));
      if (m.isSelf) htmlEl('span', id, 'this node', 'self');
      htmlEl('td', tr, m.address);
      htmlEl('span', htmlEl('td', tr), m.state, 'state ' + (STATE_COLOURS[m.state] ? m.state : 'left'));
      htmlEl('td', tr, m.isSelf ? '\\u2013' : count(m.replicationLagSeqs), 'num');
      htmlEl('td', tr, count(m.partitionsPrimary), 'num');
      htmlEl('td', tr, count(m.partitionsHeld), 'num');
    });
  }

  function render(d) {
    drawRing(d);
    drawFigures(d);
    drawMembers(d);
    document.title = 'baton \\u00b7 ' + d.nodeId;
    $('sub').textContent = 'the cluster as node ' + d.nodeId + ' sees it';
  }

  function showFreshness() {
    var el = $('updated');
    if (lastOk === 0) return;
    var age = Date.now() - lastOk;
    var stale = age > 3 * POLL_MS;
    el.className = stale ? 'updated stale' : 'updated';
    el.textContent = stale ? 'no answer since ' + clock(lastOk) + ' (' + duration(age) + ')' : 'updated ' + clock(lastOk);
    document.body.className = stale ? 'stale-picture' : '';
  }

  function poll() {
    fetch('status.json', { cache: 'no-store' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(function (d) {
        polls++;
        lastOk = Date.now();
        document.body.setAttribute('data-polls', String(polls));
        render(d);
      })
      .catch(function () { /* the freshness line says how long the picture has been stale */ })
      .then(function () { showFreshness(); setTimeout(poll, POLL_MS); });
  }
  setInterval(showFreshness, 1000);
  poll();
})();
`;

const BODY = `<header><h1>baton</h1><span class="sub" id="sub">cluster status</span><span class="updated" id="updated">waiting for the first answer\u2026</span></header>
<main>
<section class="panel"><h2>Members and partitions</h2><svg id="ring" viewBox="0 0 520 520" role="img" aria-label="the members on the partition ring"></svg>
<div class="legend" id="legend"></div>
<div class="note">Outer ring: the partitions, coloured by the member placement ranks first. Circles: the members, filled by state.</div></section>
<div class="side">
<section class="panel"><h2>This node: <span id="node-id"></span></h2>
<div class="figures">
<div class="figure"><div class="value" id="sessions">\u2013</div><div class="label">sessions</div></div>
<div class="figure"><div class="value" id="parts">\u2013</div><div class="label">parts</div></div>
<div class="figure"><div class="value" id="bytes">\u2013</div><div class="label">held</div></div>
<div class="figure"><div class="value" id="tombstones">\u2013</div><div class="label">tombstones</div></div>
</div>
<div class="budget"><span class="label">memory budget: </span><span id="budget-text">\u2013</span><div class="bar"><div id="budget-bar"></div></div></div>
<div class="meta" id="meta"></div>
<div class="note">Sessions and bytes are this node's own; each node's page shows its own.</div></section>
<section class="panel"><h2>Members</h2><table><thead><tr><th>node</th><th>peer address</th><th>state</th><th class="num">lag (seqs)</th><th class="num">primary</th><th class="num">held</th></tr></thead>
<tbody id="members"></tbody></table></section>
</div>
</main>`;

function cspHash(source: string): string {
  return `'sha256-${createHash('sha256').update(source, 'utf8').digest('base64')}'`;
}

export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>baton status</title>
<style>${STYLE}</style>
</head>
<body>
${BODY}
<script>${SCRIPT}</script>
</body>
</html>
`;

/**
 * Only this document's own style and script run, only its own origin is fetched from, and
 * nothing else loads (no images, fonts, frames or forms; no framing by other pages).
 */
export const STATUS_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${cspHash(SCRIPT)}`,
  `style-src ${cspHash(STYLE)}`,
  "connect-src 'self'",
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const STATUS_PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': STATUS_PAGE_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};
