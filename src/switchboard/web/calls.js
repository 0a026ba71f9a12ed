// The Calls page: the call history (GET /calls), and per call its transcript, recording,
// per-turn latency and the gaps `switchboard analyze` finds. Every request carries the
// operator key, asked for once and kept in this tab's sessionStorage.
"use strict";

(() => {
  const KEY_STORAGE = "switchboard.apiKey";
  const PAGE_SIZE = 20;
  const TARGET_MS = 600;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let offset = 0;
  let audioUrl = null;

  class Unauthorized extends Error {}

  function apiKey() { return sessionStorage.getItem(KEY_STORAGE); }

  function showAlert(message) { $("alert").textContent = message || ""; }

  async function api(path, asBlob = false) {
    const response = await fetch(path, { headers: { "X-API-Key": apiKey() || "" }, cache: "no-store" });
    if (response.status === 401) throw new Unauthorized((await response.json()).detail);
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.detail || body.error || `${path}: HTTP ${response.status}`);
    }
    return asBlob ? response.blob() : response.json();
  }

  function askForKey(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    $("list-card").hidden = true;
    $("detail").hidden = true;
    $("key-form").hidden = false;
    showAlert(message);
    $("api-key").focus();
  }

  async function guarded(work) {
    try {
      await work();
    } catch (e) {
      if (e instanceof Unauthorized) askForKey(`The server refused the key: ${e.message}`);
      else showAlert(e.message);
    }
  }

  const fmtTime = (iso) => new Date(iso).toLocaleString();
  const fmtSecs = (s) => (s === null || s === undefined ? "–" : `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, "0")}`);
  const fmtMs = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);

  function td(text) {
    const cell = document.createElement("td");
    cell.textContent = text;
    return cell;
  }

  function query() {
    const params = new URLSearchParams({ limit: PAGE_SIZE, offset });
    const number = $("f-number").value.trim();
    if (number) params.set("number", number);
    if ($("f-outcome").value) params.set("outcome", $("f-outcome").value);
    if ($("f-since").value) params.set("since", new Date(`${$("f-since").value}T00:00:00`).toISOString());
    return params;
  }

  async function loadList() {
    const page = await api(`/calls?${query()}`);
    $("key-form").hidden = true;
    $("list-card").hidden = false;
    showAlert("");
    $("call-count").textContent = `(${page.total})`;
    $("no-calls").hidden = page.total > 0;
    $("calls").replaceChildren(...page.calls.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.callId = c.call_id;
      tr.tabIndex = 0;
      const started = document.createElement("th");
      started.scope = "row";
      started.textContent = fmtTime(c.started_at);
      const secs = c.ended_at ? (new Date(c.ended_at) - new Date(c.started_at)) / 1000 : null;
      tr.append(started, td(c.from_number || "–"), td(c.agent), td(c.outcome), td(fmtSecs(secs)), td(c.recording ? "yes" : "–"));
      tr.addEventListener("click", () => guarded(() => showCall(c.call_id)));
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") guarded(() => showCall(c.call_id)); });
      return tr;
    }));
    $("prev").disabled = offset === 0;
    $("next").disabled = offset + PAGE_SIZE >= page.total;
    const last = Math.min(offset + PAGE_SIZE, page.total);
    $("page-info").textContent = page.total ? `${offset + 1}–${last} of ${page.total}` : "";
  }

  function renderTranscript(call) {
    $("transcript").replaceChildren(...call.transcript.map((entry) => {
      const li = document.createElement("li");
      li.className = entry.role;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = entry.role === "user" ? "Caller" : "Agent";
      const at = document.createElement(call.recording ? "button" : "span");
      at.className = call.recording ? "t seek" : "t";
      at.textContent = fmtSecs(entry.t);
      if (call.recording) {
        at.type = "button";
        at.setAttribute("aria-label", `Play from ${fmtSecs(entry.t)}`);
        at.addEventListener("click", () => { $("player").currentTime = entry.t; $("player").play(); });
      }
      who.append(at);
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = entry.text;
      li.append(who, text);
      return li;
    }));
  }

  function svg(name, attrs, text) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Stacked bars, one per turn: end of speech → transcript → end of turn → first audio.
  function renderPlot(turns) {
    const plot = $("latency-plot");
    const [w, h, left, bottom, top] = [360, 160, 34, 18, 12];
    const totals = turns.map((t) => t.bot_started_ms ?? t.first_tts_audio_ms ?? t.turn_end_ms ?? 0);
    const max = Math.max(TARGET_MS * 1.3, ...totals) * 1.05;
    const y = (ms) => h - bottom - ((h - bottom - top) * ms) / max;
    const nodes = [svg("line", { class: "axis", x1: left, y1: y(0), x2: w, y2: y(0) })];
    for (const tick of [0, 500, 1000, 1500, 2000, 3000, 5000].filter((v) => v <= max)) {
      nodes.push(svg("text", { x: left - 4, y: y(tick) + 3, "text-anchor": "end" }, tick));
    }
    const slot = (w - left) / Math.max(turns.length, 1);
    const barWidth = Math.min(36, slot * 0.6);
    turns.forEach((turn, i) => {
      const x = left + slot * i + (slot - barWidth) / 2;
      const group = svg("g", { class: "turn", "data-turn": i + 1 });
      const stages = [
        ["stage-transcript", 0, turn.transcript_ms],
        ["stage-turn", turn.transcript_ms, turn.turn_end_ms],
        ["stage-audio", turn.turn_end_ms, turn.bot_started_ms],
      ];
      for (const [cls, from, to] of stages) {
        if (from === null || from === undefined || to === null || to === undefined || to <= from) continue;
        group.append(svg("rect", { class: cls, x, width: barWidth, y: y(to), height: y(from) - y(to) }));
      }
      group.append(svg("title", {}, `Turn ${i + 1}: ${fmtMs(totals[i])} voice to voice`));
      group.append(svg("text", { x: x + barWidth / 2, y: y(totals[i]) - 3, "text-anchor": "middle" }, Math.round(totals[i])));
      group.append(svg("text", { x: x + barWidth / 2, y: h - 4, "text-anchor": "middle" }, `#${i + 1}`));
      nodes.push(group);
    });
    nodes.push(svg("line", { class: "target", x1: left, y1: y(TARGET_MS), x2: w, y2: y(TARGET_MS) }));
    plot.replaceChildren(...nodes);
    $("plot-desc").textContent = turns.length
      ? `Voice-to-voice latency per turn: ${totals.map((t) => fmtMs(t)).join(", ")}.`
      : "No turns were measured.";
  }

  async function renderGaps(callId) {
    $("gaps").replaceChildren();
    $("talk").textContent = "";
    $("gaps-status").textContent = "Analysing the recording…";
    const analysis = await api(`/calls/${encodeURIComponent(callId)}/analysis`);
    const gaps = analysis.gaps.filter((g) => g.gap_ms !== null);
    $("gaps").replaceChildren(...gaps.map((g) => {
      const tr = document.createElement("tr");
      tr.append(td(`${g.caller_end_s.toFixed(2)} s`), td(`${g.agent_start_s.toFixed(2)} s`), td(fmtMs(g.gap_ms)));
      return tr;
    }));
    $("gaps-status").textContent = gaps.length ? "" : "No caller turn was answered in the recording.";
    const t = analysis.talk;
    const pct = (v) => `${Math.round(v * 100)} %`;
    $("talk").textContent = `Talk: caller ${pct(t.caller)}, agent ${pct(t.agent)}, overlap ${pct(t.overlap)}, silence ${pct(t.silence)}; ${analysis.overlaps.length} barge-in(s).`;
  }

  async function showCall(callId) {
    const call = await api(`/calls/${encodeURIComponent(callId)}`);
    for (const row of $("calls").children) row.setAttribute("aria-selected", String(row.dataset.callId === callId));
    $("detail").hidden = false;
    $("detail").dataset.callId = callId;
    $("detail-h").textContent = `Call ${call.call_id}`;
    const failure = call.failure_reason ? ` (${call.failure_reason})` : "";
    $("detail-meta").textContent =
      `${call.ingress ?? "?"} · ${call.from_number || "unknown"} → ${call.to_number || "unknown"} · ${call.agent ?? ""} · ${call.outcome ?? call.status}${failure}` +
      (call.intents?.length ? ` · intents: ${call.intents.join(", ")}` : "");
    const analysis = call.analysis;
    $("analysis").hidden = !analysis;
    if (analysis) {
      const verdict = analysis.success === null ? "" : analysis.success ? "Successful. " : "Not successful. ";
      $("analysis").textContent = `${verdict}${analysis.summary || ""} ${analysis.reasons || ""}`.trim();
    }
    renderTranscript({ transcript: call.transcript || [], recording: call.recording });
    renderPlot(call.turns || []);
    const player = $("player");
    if (audioUrl) URL.revokeObjectURL(audioUrl);
    audioUrl = null;
    player.hidden = !call.recording;
    $("no-recording").hidden = Boolean(call.recording);
    $("gaps-status").textContent = call.recording ? "" : "No recording to analyse.";
    $("gaps").replaceChildren();
    $("talk").textContent = "";
    if (call.recording) {
      // An <audio src> cannot send the key, so the recording is fetched and played from a blob.
      audioUrl = URL.createObjectURL(await api(`/calls/${encodeURIComponent(callId)}/recording`, true));
      player.src = audioUrl;
      await renderGaps(callId);
    }
    history.replaceState(null, "", `#${encodeURIComponent(callId)}`);
  }

  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    $("api-key").value = "";
    guarded(start);
  });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; guarded(loadList); });
  $("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE_SIZE); guarded(loadList); });
  $("next").addEventListener("click", () => { offset += PAGE_SIZE; guarded(loadList); });
  $("forget-key").addEventListener("click", () => askForKey(""));

  async function start() {
    await loadList();
    const wanted = decodeURIComponent(location.hash.slice(1));
    if (wanted) await showCall(wanted);
  }

  if (apiKey()) guarded(start);
  else askForKey("");
})();
