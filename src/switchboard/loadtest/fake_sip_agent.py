"""A fake agent of known delay over SIP and RTP (G.711 µ-law): the truth the SIP phone's timing
is checked against, as ``fake_agent`` is for the Twilio instruments.

It answers every INVITE (200 OK, PCMU only), sends RTP every 20 ms like a carrier's leg
(digital silence when it has nothing to say), greets with a tone, and answers every caller
utterance with a tone exactly ``delay_ms`` (± uniform ``jitter_ms``) after the *arrival* of the
last RTP packet that carried a non-zero sample. Its truth per reply is from that arrival to the
moment the reply's first packet left its socket: the planned delay plus however late this
thread woke, so a busy machine does not count against the phone.

Deliberately small: one thread, one UDP socket for SIP and one per call for RTP, no
retransmissions (loopback loses nothing), no re-INVITEs (the phones here use no session timers).
"""

from __future__ import annotations

import random
import re
import secrets
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from switchboard.audio import TELEPHONY_FRAME_BYTES
from switchboard.loadtest.fake_agent import REPLY_MS, tone

HOST = "127.0.0.1"
_PCMU = 0
_SILENCE = b"\xff" * TELEPHONY_FRAME_BYTES  # µ-law's zero
_FRAME_S = 0.020
_MAX_DATAGRAM = 4096


@dataclass
class _Call:
    call_id: str
    rtp: socket.socket
    remote: tuple[str, int]
    delays_ms: list[float] = field(default_factory=list)
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = 0
    timestamp: int = 0
    next_send: float = 0.0
    to_send: list[bytes] = field(default_factory=list)
    last_speech_at: float | None = None
    reply_at: float | None = None
    speech_end_at: float | None = None
    invite_response: str = ""

    def packet(self, payload: bytes) -> bytes:
        header = struct.pack("!BBHII", 0x80, _PCMU, self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc)
        self.seq += 1
        self.timestamp += TELEPHONY_FRAME_BYTES
        return header + payload


class FakeSipAgent:
    """``with FakeSipAgent(500, 20) as agent:`` dial ``agent.uri``; ``agent.turns()`` afterwards."""

    def __init__(self, delay_ms: float, jitter_ms: float = 0.0, seed: int = 1):
        self._delay_ms, self._jitter_ms = delay_ms, jitter_ms
        self._rng = random.Random(seed)
        self._sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sip.bind((HOST, 0))
        self.port = self._sip.getsockname()[1]
        self._calls: dict[str, _Call] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-sip-agent", daemon=True)

    @property
    def uri(self) -> str:
        return f"sip:agent@{HOST}:{self.port}"

    def __enter__(self) -> FakeSipAgent:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sip.close()
        for call in self._calls.values():
            call.rtp.close()

    def turns(self) -> dict[str, list[float]]:
        """By SIP Call-ID, the delay each reply really had (ms)."""
        with self._lock:
            return {cid: list(c.delays_ms) for cid, c in self._calls.items()}

    # -- the agent's thread ---------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._sip, selectors.EVENT_READ)
        while not self._stop.is_set():
            now = time.monotonic()
            due = [c.next_send for c in self._calls.values()] + [
                c.reply_at for c in self._calls.values() if c.reply_at is not None
            ]
            timeout = max(0.0, min(due, default=now + 0.05) - now)
            for key, _ in selector.select(min(timeout, 0.05)):
                data, sender = key.fileobj.recvfrom(_MAX_DATAGRAM)
                if key.fileobj is self._sip:
                    self._on_sip(data.decode(errors="replace"), sender, selector)
                else:
                    self._on_rtp(key.data, data)
            self._send_due(time.monotonic())
        selector.close()

    def _on_rtp(self, call: _Call, packet: bytes) -> None:
        now = time.monotonic()
        payload = packet[12 + 4 * (packet[0] & 0x0F) :]
        if packet[1] & 0x7F != _PCMU:
            return  # RFC 4733 events and comfort noise are no speech
        if any(b not in (0xFF, 0x7F) for b in payload):  # both µ-law zeros
            call.last_speech_at = now
        elif call.last_speech_at is not None and call.reply_at is None:
            delay = self._delay_ms + self._rng.uniform(-self._jitter_ms, self._jitter_ms)
            call.speech_end_at = call.last_speech_at
            call.reply_at = call.last_speech_at + max(0.0, delay) / 1000
            call.last_speech_at = None

    def _send_due(self, now: float) -> None:
        for call in list(self._calls.values()):
            if call.reply_at is not None and now >= call.reply_at:
                call.reply_at = None
                call.to_send = _frames(tone(REPLY_MS))
                call.next_send = now  # the reply starts now, not at the next 20 ms tick
                self._send(call, now, truth_from=call.speech_end_at)
            elif now >= call.next_send:
                self._send(call, now)

    def _send(self, call: _Call, now: float, truth_from: float | None = None) -> None:
        payload = call.to_send.pop(0) if call.to_send else _SILENCE
        call.rtp.sendto(call.packet(payload), call.remote)
        if truth_from is not None:
            with self._lock:
                call.delays_ms.append(round((time.monotonic() - truth_from) * 1000, 1))
        call.next_send = max(call.next_send + _FRAME_S, now - _FRAME_S)

    def _on_sip(self, message: str, sender: tuple[str, int], selector: selectors.BaseSelector) -> None:
        first, headers, body = _parse(message)
        if first.startswith("SIP/2.0"):
            return  # a response: this agent sends no requests
        method = first.split(" ", 1)[0]
        call_id = headers.get("call-id", "")
        if method == "ACK":
            return
        if method == "INVITE" and call_id not in self._calls:
            media = re.search(r"^m=audio (\d+)", body, re.M)
            address = re.search(r"^c=IN IP4 (\S+)", body, re.M)
            if media is None:
                self._sip.sendto(_response(488, "Not Acceptable Here", headers).encode(), sender)
                return
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind((HOST, 0))
            remote = (address[1] if address else sender[0], int(media[1]))
            call = _Call(call_id, rtp, remote, next_send=time.monotonic())
            call.to_send = _frames(tone(REPLY_MS))  # the greeting
            with self._lock:
                self._calls[call_id] = call
            selector.register(rtp, selectors.EVENT_READ, call)
            headers["to"] += f";tag={secrets.token_hex(4)}"
            sdp = (
                f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
                f"m=audio {rtp.getsockname()[1]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
            )
            call.invite_response = _response(200, "OK", headers, sdp, contact=f"<sip:agent@{HOST}:{self.port}>")
        if method == "INVITE":
            self._sip.sendto(self._calls[call_id].invite_response.encode(), sender)
            return
        if method == "BYE" and call_id in self._calls:
            call = self._calls[call_id]
            selector.unregister(call.rtp)
            call.next_send = float("inf")
        self._sip.sendto(_response(200, "OK", headers).encode(), sender)


def _frames(audio: bytes) -> list[bytes]:
    return [audio[i : i + TELEPHONY_FRAME_BYTES].ljust(TELEPHONY_FRAME_BYTES, b"\xff")
            for i in range(0, len(audio), TELEPHONY_FRAME_BYTES)]  # fmt: skip


def _parse(message: str) -> tuple[str, dict[str, str], str]:
    head, _, body = message.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact"}.get(
            name.strip().lower(), name.strip().lower()
        )
        # Several Via lines stay in order, one per line, as the response must repeat them.
        headers[name] = f"{headers[name]}\r\nVia: {value.strip()}" if name == "via" and name in headers else value.strip()
    return lines[0], headers, body


def _response(code: int, reason: str, headers: dict[str, str], sdp: str = "", contact: str = "") -> str:
    lines = [f"SIP/2.0 {code} {reason}", f"Via: {headers.get('via', '')}", f"From: {headers.get('from', '')}",
             f"To: {headers.get('to', '')}", f"Call-ID: {headers.get('call-id', '')}",
             f"CSeq: {headers.get('cseq', '')}"]  # fmt: skip
    if contact:
        lines.append(f"Contact: {contact}")
    if sdp:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(sdp.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + sdp
