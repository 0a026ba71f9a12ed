// The browser phone: one WebRTC call to a Switchboard agent, with transcript and latency.
//
// Signalling is one request: the offer (with every ICE candidate, gathered before sending) goes
// to POST /webrtc/offer and the worker's answer comes back. Media then flows directly between
// this page and the worker. The agent reports transcripts and per-turn latency over the data
// channel as {type: "switchboard", event: ...} messages.
"use strict";

(() => {
  const ICE_GATHERING_LIMIT_MS = 3000; // host candidates take milliseconds; never wait forever
  const METER_INTERVAL_MS = 60;

  const $ = (id) => document.getElementById(id);
  const ui = {
    call: $("call"),
    hangup: $("hangup"),
    status: $("status"),
    timer: $("timer"),
    alert: $("alert"),
    meter: $("mic-level"),
    meterFill: $("mic-level").querySelector(".fill"),
    transcript: $("transcript"),
    transcriptEmpty: $("transcript-empty"),
    latency: $("latency"),
    latencyEmpty: $("latency-empty"),
    remoteAudio: $("remote-audio"),
  };

  // One call at a time; everything it owns is released by endCall().
  let call = null;

  function setStatus(text) { ui.status.textContent = text; }
  function showError(text) { ui.alert.textContent = text; }
  function clearError() { ui.alert.textContent = ""; }

  function setInCall(inCall) {
    ui.call.hidden = inCall;
    ui.hangup.hidden = !inCall;
    ui.call.disabled = false;
    ui.timer.hidden = !inCall;
    document.body.dataset.callState = inCall ? "active" : "idle";
    (inCall ? ui.hangup : ui.call).focus();
  }

  function micErrorMessage(error) {
    switch (error && error.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "Microphone access was denied. Allow the microphone for this page in your browser's site settings, then press Call again.";
      case "NotFoundError":
      case "OverconstrainedError":
        return "No microphone was found. Connect one and press Call again.";
      case "NotReadableError":
      case "AbortError":
        return "The microphone is busy or unavailable (another app may be using it).";
      default:
        return `The microphone could not be opened: ${error && error.message ? error.message : error}`;
    }
  }

  async function openMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw Object.assign(new Error("this page must be opened over https or on localhost to use the microphone"), { name: "SecurityError" });
    }
    return navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
  }

  function startMeter(stream) {
    const AudioCtx = window.AudioContext || window.webkitAudioContext;
    const context = new AudioCtx();
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const rms = Math.sqrt(sum / samples.length);
      // dBFS mapped to 0..100: -60 dB (quiet room) to 0 dB (full scale).
      const level = Math.max(0, Math.min(100, Math.round(((20 * Math.log10(rms + 1e-9)) + 60) * (100 / 60))));
      ui.meterFill.style.width = `${level}%`;
      ui.meter.setAttribute("aria-valuenow", String(level));
    }, METER_INTERVAL_MS);
    return () => {
      clearInterval(timer);
      context.close();
      ui.meterFill.style.width = "0%";
      ui.meter.setAttribute("aria-valuenow", "0");
    };
  }

  function waitForIceGathering(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(limit);
        pc.removeEventListener("icegatheringstatechange", onChange);
        resolve();
      };
      const onChange = () => { if (pc.iceGatheringState === "complete") done(); };
      const limit = setTimeout(done, ICE_GATHERING_LIMIT_MS);
      pc.addEventListener("icegatheringstatechange", onChange);
    });
  }

  function startTimer() {
    const started = Date.now();
    const tick = () => {
      const secs = Math.floor((Date.now() - started) / 1000);
      ui.timer.textContent = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
    };
    tick();
    const timer = setInterval(tick, 1000);
    return () => clearInterval(timer);
  }

  // Transcript: consecutive pieces from the same side join one entry.
  function addTranscript(role, text) {
    ui.transcriptEmpty.hidden = true;
    const last = ui.transcript.lastElementChild;
    if (last && last.dataset.role === role && role === "user" && !last.dataset.closed) {
      last.querySelector(".text").textContent += ` ${text}`;
      return last;
    }
    if (last) last.dataset.closed = "1";
    const item = document.createElement("li");
    item.className = role;
    item.dataset.role = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Agent";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(who, body);
    ui.transcript.append(item);
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
    return item;
  }

  function lastAgentEntry() {
    const items = ui.transcript.querySelectorAll("li.agent");
    return items.length ? items[items.length - 1] : null;
  }

  function fmtMs(value) { return value === null || value === undefined ? "–" : `${Math.round(value)} ms`; }

  function addLatency(event) {
    ui.latencyEmpty.hidden = true;
    const item = document.createElement("li");
    item.dataset.turn = String(event.turn);
    const total = document.createElement("strong");
    total.textContent = fmtMs(event.voice_to_voice_ms);
    const stages = document.createElement("span");
    stages.className = "stages";
    stages.textContent = `transcript ${fmtMs(event.transcript_ms)} · end of turn ${fmtMs(event.turn_end_ms)} · first audio ${fmtMs(event.first_audio_ms)}`;
    item.append(`Turn ${event.turn}: `, total, stages);
    ui.latency.append(item);
    const reply = lastAgentEntry();
    if (reply && !reply.querySelector(".badge")) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.title = "Voice-to-voice latency of this reply";
      badge.textContent = fmtMs(event.voice_to_voice_ms);
      reply.querySelector(".who").append(badge);
    }
  }

  function onAgentMessage(raw) {
    let message;
    try { message = JSON.parse(raw); } catch { return; }
    if (message.type === "signalling" && message.message && message.message.type === "peerLeft") {
      endCall("The agent ended the call.");
      return;
    }
    if (message.type !== "switchboard") return;
    switch (message.event) {
      case "transcript": addTranscript(message.role, message.text); break;
      case "latency": addLatency(message); break;
      case "interrupted": {
        const reply = lastAgentEntry();
        if (reply && reply === ui.transcript.lastElementChild) reply.classList.add("interrupted");
        break;
      }
      default: break;
    }
  }

  async function startCall() {
    clearError();
    ui.call.disabled = true;
    ui.transcript.replaceChildren();
    ui.latency.replaceChildren();
    ui.transcriptEmpty.hidden = false;
    ui.latencyEmpty.hidden = false;
    setStatus("Opening the microphone…");
    let stream;
    try {
      stream = await openMicrophone();
    } catch (error) {
      showError(micErrorMessage(error));
      setStatus("Ready to call an agent.");
      ui.call.disabled = false;
      return;
    }
    call = { stream, pc: null, channel: null, stopMeter: startMeter(stream), stopTimer: null, callId: null, ended: false };
    setInCall(true);
    setStatus("Calling…");
    try {
      await connect(call);
    } catch (error) {
      endCall(null, error.message || String(error));
    }
  }

  async function connect(current) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    current.pc = pc;
    for (const track of current.stream.getAudioTracks()) pc.addTrack(track, current.stream);
    const channel = pc.createDataChannel("switchboard", { ordered: true });
    current.channel = channel;
    channel.addEventListener("message", (e) => onAgentMessage(e.data));
    pc.addEventListener("track", (e) => {
      ui.remoteAudio.srcObject = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
      ui.remoteAudio.play().catch(() => { /* autoplay is allowed after the Call click */ });
    });
    pc.addEventListener("connectionstatechange", () => {
      if (current.ended) return;
      switch (pc.connectionState) {
        case "connected":
          setStatus("Connected: talk to the agent.");
          document.body.dataset.callState = "connected";
          if (!current.stopTimer) current.stopTimer = startTimer();
          break;
        case "disconnected":
          // Often a blip; ICE recovers by itself or declares the connection failed.
          setStatus("Connection interrupted, trying to recover…");
          break;
        case "failed":
          endCall(null, "The connection to the agent failed. Check that this browser can reach the agent's network, then try again.");
          break;
        case "closed":
          endCall("The call ended.");
          break;
        default:
          break;
      }
    });

    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    if (current.ended) return;
    setStatus("Waiting for an agent…");
    let response;
    try {
      response = await fetch("/webrtc/offer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
      });
    } catch {
      throw new Error("Switchboard could not be reached. Check your connection and try again.");
    }
    const body = await response.json().catch(() => ({}));
    if (current.ended) return;
    if (response.status === 503) {
      endCall(null, "No agent is free right now. Please try again in a moment.");
      return;
    }
    if (!response.ok) throw new Error(body.error || `The call could not be placed (HTTP ${response.status}).`);
    current.callId = body.call_id;
    document.body.dataset.callId = body.call_id || "";
    setStatus("Connecting to the agent…");
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
  }

  // Tell the agent first, so it hangs up at once; closing the connection alone also ends
  // the call, a little later, so a lost message costs nothing.
  function closePeer(pc, channel) {
    if (!pc) return;
    if (!channel || channel.readyState !== "open") { pc.close(); return; }
    try { channel.send(JSON.stringify({ type: "hangup" })); } catch { pc.close(); return; }
    const started = Date.now();
    const flushed = setInterval(() => {
      if (channel.bufferedAmount === 0 || Date.now() - started > 500) {
        clearInterval(flushed);
        pc.close();
      }
    }, 20);
  }

  function endCall(statusText, errorText) {
    const current = call;
    if (!current || current.ended) return;
    current.ended = true;
    call = null;
    closePeer(current.pc, current.channel);
    current.stream.getTracks().forEach((t) => t.stop());
    current.stopMeter();
    if (current.stopTimer) current.stopTimer();
    ui.remoteAudio.srcObject = null;
    setInCall(false);
    document.body.dataset.callState = "ended";
    if (errorText) showError(errorText);
    setStatus(statusText || (errorText ? "Call not connected." : "Call ended."));
  }

  ui.call.addEventListener("click", startCall);
  ui.hangup.addEventListener("click", () => endCall("You hung up."));
  window.addEventListener("pagehide", () => endCall());
})();
