// The operations page: polls GET /stats and draws calls, workers, queue and latency.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const HISTORY_POINTS = 90; // three minutes at the refresh rate
  const STALE_HEARTBEAT_SECS = 1.5; // a worker is declared dead at 2 s without a heartbeat

  const $ = (id) => document.getElementById(id);
  const history = []; // {t, p50, p95} of voice-to-voice latency, one per refresh
  let timer = null;

  function fmtMs(value) { return value === null || value === undefined ? "–" : `${Math.round(value)} ms`; }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function loadCell(load, capacity) {
    const td = document.createElement("td");
    const wrap = document.createElement("span");
    wrap.className = "load";
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = `fill${load >= capacity ? " full" : ""}`;
    fill.style.display = "block";
    fill.style.width = `${capacity ? Math.min(100, (100 * load) / capacity) : 0}%`;
    track.append(fill);
    wrap.append(track, `${load} / ${capacity}`);
    td.append(wrap);
    return td;
  }

  function stateCell(worker) {
    const td = document.createElement("td");
    const pill = document.createElement("span");
    const stale = worker.heartbeat_age_secs > STALE_HEARTBEAT_SECS;
    pill.className = `pill ${worker.draining ? "draining" : stale ? "stale" : "ok"}`;
    pill.textContent = worker.draining ? "draining" : stale ? "late heartbeat" : "ready";
    td.append(pill);
    return td;
  }

  // Why a worker admits no more calls (latency, lag, cpu, engine_queue, ceiling), or what it
  // measures while open; "slots" for a worker that admits by max_calls alone.
  function headroomCell(worker) {
    const h = worker.headroom;
    if (!h) return cell("slots", "muted");
    const measured = `p95 ${h.p95_ms === null ? "–" : `${Math.round(h.p95_ms)} ms`}, lag ${Math.round(h.lag_ms)} ms, cpu ${Math.round(100 * h.cpu)} %, engine queue ${h.engine_queue}`;
    const td = cell(h.open ? `open to ${h.admit_until}` : `closed: ${h.closed_reason}`);
    td.title = measured;
    return td;
  }

  function renderWorkers(workers) {
    const rows = workers.map((w) => {
      const tr = document.createElement("tr");
      tr.dataset.workerId = w.worker_id;
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = w.worker_id;
      tr.append(
        name,
        loadCell(w.load, w.capacity),
        headroomCell(w),
        stateCell(w),
        cell(`${w.heartbeat_age_secs.toFixed(1)} s ago`),
        cell(w.media_url, "muted wide-only"),
      );
      return tr;
    });
    $("workers").replaceChildren(...rows);
    $("worker-count").textContent = `(${workers.length})`;
    $("no-workers").hidden = workers.length > 0;
  }

  function renderPercentiles(rowId, stats) {
    const cells = $(rowId).querySelectorAll("td");
    cells[0].textContent = String(stats.count);
    cells[1].textContent = fmtMs(stats.p50);
    cells[2].textContent = fmtMs(stats.p95);
    cells[3].textContent = fmtMs(stats.p99);
  }

  function svg(tag, attrs) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  function renderChart() {
    const chart = $("chart");
    const width = 320, height = 120, pad = 14;
    const points = history.filter((h) => h.p50 !== null);
    const parts = [svg("line", { class: "axis", x1: 0, y1: height - pad, x2: width, y2: height - pad })];
    if (points.length === 0) {
      const empty = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" });
      empty.textContent = "no turns yet";
      parts.push(empty);
      $("chart-desc").textContent = "No latency measured yet.";
      chart.replaceChildren(...parts);
      return;
    }
    const top = Math.max(100, ...points.map((p) => p.p95 ?? p.p50)) * 1.15;
    const x = (i) => 4 + ((width - 8) * (HISTORY_POINTS - history.length + i)) / (HISTORY_POINTS - 1);
    const y = (v) => height - pad - ((height - 2 * pad) * v) / top;
    for (const key of ["p50", "p95"]) {
      const coords = history
        .map((h, i) => (h[key] === null ? null : `${x(i).toFixed(1)},${y(h[key]).toFixed(1)}`))
        .filter(Boolean)
        .join(" ");
      parts.push(svg("polyline", { class: key, points: coords }));
      const lastIndex = history.length - 1;
      if (history[lastIndex][key] !== null) {
        parts.push(svg("circle", { class: key, cx: x(lastIndex), cy: y(history[lastIndex][key]), r: 3 }));
      }
    }
    const label = svg("text", { x: 2, y: pad - 3 });
    label.textContent = `${Math.round(top)} ms`;
    parts.push(label);
    chart.replaceChildren(...parts);
    const last = points[points.length - 1];
    $("chart-desc").textContent = `Latest voice-to-voice latency: p50 ${fmtMs(last.p50)}, p95 ${fmtMs(last.p95)}.`;
  }

  function render(stats) {
    $("active-calls").textContent = String(stats.active_calls);
    $("capacity").textContent = `${Math.max(0, stats.capacity - stats.active_calls)} / ${stats.capacity}`;
    $("queue-length").textContent = String(stats.queue_length);
    $("pending-ack").textContent = String(stats.jobs_pending_ack);
    const admission = stats.admission;
    $("hold-queue").textContent = `${admission.hold_queue_length} (${admission.hold_oldest_wait_secs.toFixed(0)} s)`;
    renderWorkers(stats.workers);
    renderPercentiles("turn-latency", stats.turn_latency_ms);
    renderPercentiles("dispatch-latency", stats.dispatch_latency_ms);
    history.push({ t: Date.now(), p50: stats.turn_latency_ms.p50, p95: stats.turn_latency_ms.p95 });
    if (history.length > HISTORY_POINTS) history.shift();
    renderChart();
  }

  async function refresh() {
    try {
      const response = await fetch("/stats", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
      $("alert").textContent = "";
      $("updated").textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
      document.body.dataset.refreshed = String(Date.now());
    } catch (error) {
      $("alert").textContent = `Cannot read /stats (${error.message}); showing the last known values.`;
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (document.hidden) return; // no polling in a background tab
    timer = setTimeout(async () => { await refresh(); schedule(); }, REFRESH_MS);
  }

  document.addEventListener("visibilitychange", async () => {
    if (!document.hidden) await refresh();
    schedule();
  });
  refresh().then(schedule);
})();
