// The operator console's live layer: the pages are rendered by the headend and work
// without this file; it keeps them current from GET /events (Server-Sent Events) and
// draws the charts. No framework, no build step (docs/decisions.md "Operator console").
(() => {
  "use strict";
  const body = document.body;
  const live = document.getElementById("live");
  const STATUS = ["unspecified", "ok", "offline", "fault", "standby"];
  const LIVE_WINDOW_MS = 10 * 60 * 1000;

  const kw = (v) => (v === null || v === undefined || !Number.isFinite(v) ? "—" : v.toFixed(1));
  const pct = (v) => (v === null || v === undefined ? "—" : v.toFixed(0));
  const when = (s) => (s ? new Date(s).toISOString().replace(/\.\d+Z$/, "Z") : "—");
  const status = (v) => (typeof v === "number" ? STATUS[v] || "unspecified" : v || "—");
  const setText = (el, text) => {
    if (el && el.textContent !== text) el.textContent = text;
  };
  const byAttr = (scope, attr, value) =>
    scope ? scope.querySelector(`[${attr}="${CSS.escape(value)}"]`) : null;

  // -- parts of the page re-rendered by the server on discrete events -----------------
  let refreshTimer = null;
  let lastRefresh = 0;
  function scheduleRefresh() {
    if (refreshTimer !== null) return;
    // at most one re-fetch a second, whatever the event rate
    const wait = Math.max(200, 1000 - (Date.now() - lastRefresh));
    refreshTimer = setTimeout(refresh, wait);
  }
  async function refresh() {
    refreshTimer = null;
    lastRefresh = Date.now();
    let resp;
    try {
      resp = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
    } catch {
      return;
    }
    if (!resp.ok || resp.redirected) return;
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    for (const el of document.querySelectorAll("[data-refresh][id]")) {
      const fresh = doc.getElementById(el.id);
      if (fresh) el.replaceWith(document.adoptNode(fresh));
    }
  }

  // -- live chart of a site: its total and each asset ---------------------------------
  const liveChart = document.getElementById("live-chart");
  const series = new Map(); // name -> [[t, kW], ...]
  function pushPoint(name, t, value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return;
    let pts = series.get(name);
    if (!pts) series.set(name, (pts = []));
    pts.push([t, value]);
    while (pts.length && pts[0][0] < t - LIVE_WINDOW_MS) pts.shift();
  }
  const SVG = "http://www.w3.org/2000/svg";
  function draw(svg, lines, x0, x1) {
    const W = 800, H = 240, PAD = 24;
    let lo = 0, hi = 0;
    for (const { pts } of lines) for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (hi === lo) hi = lo + 1;
    const x = (t) => PAD + ((t - x0) / Math.max(1, x1 - x0)) * (W - 2 * PAD);
    const y = (v) => H - PAD - ((v - lo) / (hi - lo)) * (H - 2 * PAD);
    svg.replaceChildren();
    const axis = document.createElementNS(SVG, "line");
    axis.setAttribute("x1", PAD); axis.setAttribute("x2", W - PAD);
    axis.setAttribute("y1", y(0)); axis.setAttribute("y2", y(0));
    axis.setAttribute("class", "axis");
    svg.append(axis);
    for (const [v, label] of [[hi, kw(hi)], [lo, kw(lo)]]) {
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("x", 2); text.setAttribute("y", y(v) + (v === hi ? 12 : -2));
      text.setAttribute("class", "tick");
      text.textContent = `${label} kW`;
      svg.append(text);
    }
    lines.forEach(({ pts, cls }) => {
      if (!pts.length) return;
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
      line.setAttribute("class", cls);
      svg.append(line);
    });
  }
  function drawLive() {
    if (!liveChart) return;
    const now = Date.now();
    const names = [...series.keys()];
    const lines = names.map((name, i) => ({ pts: series.get(name), cls: name === "site total" ? "line total" : `line s${i % 8}` }));
    draw(liveChart, lines, now - LIVE_WINDOW_MS, now);
    const legend = document.getElementById("live-legend");
    if (legend && legend.children.length !== names.length) {
      legend.replaceChildren(...names.map((name, i) => {
        const li = document.createElement("li");
        li.className = name === "site total" ? "total" : `s${i % 8}`;
        li.textContent = name;
        return li;
      }));
    }
  }
  if (liveChart) {
    // seed from the rendered table, so the chart starts with the values on screen
    const t = Date.now();
    for (const row of document.querySelectorAll("#assets tr[data-asset-id]")) {
      const v = parseFloat(row.querySelector('[data-col="power"]').textContent);
      if (row.dataset.kind !== "meter") pushPoint(row.dataset.assetId, t, v);
    }
    pushPoint("site total", t, parseFloat((document.getElementById("site-power") || {}).textContent));
    drawLive();
  }

  // -- history chart from the one-minute rollups (JSON API, same session) -------------
  const history = document.getElementById("history-chart");
  async function loadHistory(rangeS) {
    if (!history) return;
    const end = Date.now();
    const start = new Date(end - rangeS * 1000).toISOString();
    const url = `${history.dataset.history}?start=${encodeURIComponent(start)}&limit=2000`;
    let data;
    try {
      const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) return;
      data = await resp.json();
    } catch {
      return;
    }
    const minutes = data.minutes || data.items || [];
    const pts = minutes.map((m) => [Date.parse(m.minute), m.avg_power_kw]).reverse();
    draw(history, [{ pts, cls: "line total" }], end - rangeS * 1000, end);
    history.dataset.points = String(pts.length);
  }
  for (const button of document.querySelectorAll("[data-range]")) {
    button.addEventListener("click", () => {
      for (const b of document.querySelectorAll("[data-range]")) b.setAttribute("aria-pressed", String(b === button));
      loadHistory(Number(button.dataset.range));
    });
  }
  loadHistory(3600);

  // -- live updates --------------------------------------------------------------------
  function onTelemetry(data) {
    const t = Date.parse(data.at) || Date.now();
    const table = document.getElementById("assets");
    for (const a of data.assets || []) {
      const row = byAttr(table, "data-asset-id", a.asset_id);
      if (row) {
        setText(row.querySelector('[data-col="power"]'), kw(a.power_kw));
        setText(row.querySelector('[data-col="soc"]'), pct(a.soc_pct));
        setText(row.querySelector('[data-col="status"]'), status(a.status));
        setText(row.querySelector('[data-col="setpoint"]'), kw(a.setpoint_kw));
        if (a.available_min_kw != null || a.available_max_kw != null) {
          setText(row.querySelector('[data-col="envelope"]'), `${kw(a.available_min_kw)} … ${kw(a.available_max_kw)}`);
        }
        const time = row.querySelector('[data-col="updated"] time');
        if (time) { time.dateTime = a.ts; setText(time, when(a.ts)); }
        if (row.dataset.kind !== "meter") pushPoint(a.asset_id, t, a.power_kw);
      }
      if (body.dataset.assetId === a.asset_id) {
        setText(document.getElementById("asset-power"), kw(a.power_kw));
        setText(document.getElementById("asset-soc"), pct(a.soc_pct));
        setText(document.getElementById("asset-status"), status(a.status));
        setText(document.getElementById("asset-setpoint"), kw(a.setpoint_kw));
        setText(document.getElementById("asset-updated"), when(a.ts));
      }
    }
    if (data.total_kw !== undefined) {
      setText(document.getElementById("site-power"), kw(data.total_kw));
      pushPoint("site total", t, data.total_kw);
    }
    drawLive();
  }
  function onBatch(data) {
    const table = document.getElementById("sites");
    for (const s of data.sites || []) {
      const row = byAttr(table, "data-site-id", s.site_id);
      if (row) setText(row.querySelector('[data-col="power"]'), kw(s.total_kw));
    }
  }

  const url = body.dataset.events;
  if (!url || !window.EventSource) {
    setText(live, "Not live: reload for new values");
    return;
  }
  const refreshOn = new Set((body.dataset.refreshOn || "").split(",").filter(Boolean));
  const source = new EventSource(url, { withCredentials: true });
  source.addEventListener("open", () => {
    setText(live, "Live");
    live.className = "live on";
    // Catch up on what changed between the page's rendering (or the stream's drop) and
    // now: the stream only carries what happens from here on.
    if (refreshOn.size) scheduleRefresh();
  });
  source.addEventListener("error", () => {
    setText(live, "Reconnecting…");
    live.className = "live off";
  });
  const parse = (handler) => (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch { return; }
    handler(data);
  };
  source.addEventListener("telemetry", parse(onTelemetry));
  source.addEventListener("telemetry_batch", parse(onBatch));
  source.addEventListener("overflow", () => scheduleRefresh());
  for (const kind of ["gateway", "dispatch"]) {
    source.addEventListener(kind, parse((data) => {
      if (!refreshOn.has(kind)) return;
      if (kind === "dispatch" && body.dataset.dispatchId && data.dispatch_id !== body.dataset.dispatchId) return;
      scheduleRefresh();
    }));
  }
  window.addEventListener("pagehide", () => source.close());
})();
