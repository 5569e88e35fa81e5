"""The aggregator's live dashboard: one self-contained page that polls ``/api/state``.

Why hand-written SVG and vanilla JavaScript in one string: a daemon on a site network may have
no route to a CDN, and a page that loads nothing but itself and ``/api/state`` and
``/map.png`` from the daemon works wherever the daemon's port is reachable. The page is
read-only: it has no forms and the server accepts only GET.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>FedDiff job</title>
<link rel="icon" href="data:,">
<style>
  :root { --fg:#1d2430; --muted:#647084; --line:#d9dee7; --accent:#1f77b4; --oa:#2ca02c; --bad:#d62728; }
  body { font: 14px/1.4 system-ui, sans-serif; color: var(--fg); margin: 0; background: #f6f7f9; }
  header { display:flex; gap:1.5em; align-items:baseline; padding: .8em 1.2em; background:#fff; border-bottom:1px solid var(--line); }
  header h1 { font-size: 1.2em; margin: 0; }
  .pill { padding: .1em .6em; border-radius: 1em; background:#e8eef6; font-weight:600; }
  .pill.bad { background:#fbe3e3; color: var(--bad); }
  main { display:grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 1em; padding: 1em 1.2em; }
  section { background:#fff; border:1px solid var(--line); border-radius:6px; padding: .8em 1em; }
  h2 { font-size: 1em; margin: 0 0 .6em; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
  .big { font-size: 2em; font-weight: 700; }
  .bar { height: 10px; background: var(--line); border-radius: 5px; overflow:hidden; margin:.4em 0; }
  .bar > div { height:100%; background: var(--accent); width:0; transition: width .3s; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align:left; padding: .25em .5em; border-bottom:1px solid var(--line); white-space: nowrap; }
  .scroll { overflow-x: auto; }
  @media (min-width: 900px) { section.wide { grid-column: span 2; } }
  td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
  svg text { font-size: 11px; fill: var(--muted); }
  #map { max-width: 100%; image-rendering: pixelated; border:1px solid var(--line); }
  .muted { color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>FedDiff &mdash; <span id="job">&hellip;</span></h1>
  <span>phase <span class="pill" id="phase">&hellip;</span></span>
  <span>security <span class="pill" id="security">&hellip;</span></span>
  <span>health <span class="pill" id="health">&hellip;</span></span>
  <span class="muted" id="updated"></span>
</header>
<main>
  <section>
    <h2>Round progress</h2>
    <div><span class="big" id="round">0</span> <span class="muted" id="planned"></span></div>
    <div class="bar"><div id="progress"></div></div>
    <div class="muted" id="latency"></div>
  </section>
  <section><h2>Training loss</h2><svg id="loss" width="100%" height="170" viewBox="0 0 420 170"></svg></section>
  <section><h2>Accuracy <span id="final" class="muted"></span></h2><svg id="oa" width="100%" height="170" viewBox="0 0 420 170"></svg></section>
  <section class="wide">
    <h2>Stations</h2>
    <div class="scroll"><table>
      <thead><tr><th>station</th><th>state</th><th class="num">last seen</th><th class="num">bytes in</th><th class="num">bytes out</th><th class="num">rejects</th></tr></thead>
      <tbody id="stations"><tr><td colspan="6" class="muted">none yet</td></tr></tbody>
    </table></div>
    <div class="muted" id="rejects"></div>
  </section>
  <section>
    <h2>Classification map</h2>
    <div id="nomap" class="muted">no map yet</div>
    <img id="map" alt="latest classification map" hidden>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";
let mapVersion = 0;

function fmtBytes(n) {
  const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function fmtAge(s) {
  if (s === null || s === undefined) return "never";
  if (s < 60) return s.toFixed(0) + " s ago";
  if (s < 3600) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}
function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function chart(svg, series, fixed01) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = 420, H = 170, L = 44, R = 10, T = 10, B = 24;
  const pts = [].concat(...series.map((s) => s.points.filter((p) => p[1] !== null)));
  svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#d9dee7"}));
  svg.appendChild(el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#d9dee7"}));
  if (!pts.length) { svg.appendChild(el("text", {x: L + 10, y: H / 2}, "no data yet")); return; }
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = fixed01 ? 0 : Math.min(...ys), y1 = fixed01 ? 1 : Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  for (const v of [y0, (y0 + y1) / 2, y1]) {
    svg.appendChild(el("text", {x: L - 4, y: sy(v) + 4, "text-anchor": "end"}, fixed01 ? (100 * v).toFixed(0) + "%" : v.toPrecision(3)));
    svg.appendChild(el("line", {x1: L, y1: sy(v), x2: W - R, y2: sy(v), stroke: "#eef1f5"}));
  }
  svg.appendChild(el("text", {x: L, y: H - 6}, "round " + x0));
  svg.appendChild(el("text", {x: W - R, y: H - 6, "text-anchor": "end"}, "round " + x1));
  series.forEach((s, i) => {
    const p = s.points.filter((q) => q[1] !== null);
    if (!p.length) return;
    svg.appendChild(el("polyline", {points: p.map((q) => sx(q[0]) + "," + sy(q[1])).join(" "), fill: "none", stroke: s.colour, "stroke-width": 2, "stroke-dasharray": s.dash || ""}));
    svg.appendChild(el("circle", {cx: sx(p[p.length - 1][0]), cy: sy(p[p.length - 1][1]), r: 3, fill: s.colour}));
    // rising curves (accuracy) leave the bottom right free, falling ones (loss) the top right
    const ly = fixed01 ? H - B - 8 - 13 * (series.length - 1 - i) : T + 12 + 13 * i;
    svg.appendChild(el("text", {x: W - R, y: ly, "text-anchor": "end", style: "fill:" + s.colour}, s.name));
  });
}
function stations(rows) {
  const body = $("stations"), names = Object.keys(rows);
  body.textContent = "";
  if (!names.length) { body.innerHTML = '<tr><td colspan="6" class="muted">none yet</td></tr>'; return; }
  for (const n of names) {
    const s = rows[n], tr = document.createElement("tr");
    tr.dataset.station = n;
    for (const [v, cls] of [[n, ""], [s.state, ""], [fmtAge(s.age_s), "num"], [fmtBytes(s.bytes_in), "num"], [fmtBytes(s.bytes_out), "num"], [s.rejects, "num"]]) {
      const td = document.createElement("td"); td.textContent = v; if (cls) td.className = cls; tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}
function render(s) {
  $("job").textContent = s.job + " (" + s.role + ")";
  $("phase").textContent = s.phase;
  $("security").textContent = s.security;
  $("health").textContent = s.healthy ? "ok" : s.health;
  $("health").className = "pill" + (s.healthy ? "" : " bad");
  $("round").textContent = s.round;
  $("planned").textContent = s.rounds_planned ? "of " + s.rounds_planned + " (" + s.rounds_committed + " committed)" : s.rounds_committed + " committed";
  $("progress").style.width = (s.rounds_planned ? Math.min(100, 100 * s.rounds_committed / s.rounds_planned) : 0) + "%";
  const h = s.history;
  $("latency").textContent = h.length ? "last round " + h[h.length - 1].seconds.toFixed(2) + " s" : "";
  chart($("loss"), [{name: "loss", colour: "#1f77b4", points: h.map((r) => [r.round, r.loss])}], false);
  chart($("oa"), [{name: "validation OA", colour: "#2ca02c", points: h.map((r) => [r.round, r.oa])},
                  {name: "train accuracy", colour: "#8c96a5", dash: "5 4", points: h.map((r) => [r.round, r.train_acc])}], true);
  $("final").textContent = s.final_oa === null ? "" : "final OA " + (100 * s.final_oa).toFixed(2) + "%";
  stations(s.stations);
  const rj = Object.entries(s.rejects);
  $("rejects").textContent = rj.length ? "rejected: " + rj.map(([k, v]) => k + " " + v).join(", ") : "";
  if (s.map_version && s.map_version !== mapVersion) {
    mapVersion = s.map_version;
    $("map").src = "/map.png?v=" + mapVersion; $("map").hidden = false; $("nomap").hidden = true;
  }
  $("updated").textContent = "updated " + new Date(s.now * 1000).toLocaleTimeString();
}
async function poll() {
  try {
    const r = await fetch("/api/state", {cache: "no-store"});
    if (r.ok) render(await r.json());
    else $("updated").textContent = "daemon answered " + r.status;
  } catch (e) {
    $("updated").textContent = "daemon unreachable";
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
"""
