"""The RTP of chosen loopback UDP ports as the wire carried it, with the kernel's receive times.

A SIP phone's own clock cannot say when audio crossed the wire: PJSIP pulls and plays frames
on a 20 ms media clock behind a jitter buffer, so what it hears lags the packets by 20-50 ms,
varying with the clock's phase. The tap reads the packets themselves (an ``AF_PACKET`` socket
on ``lo``, kernel timestamps): the SIP edge of a call, the counterpart of the Twilio media
stream that the caller simulator measures. It needs ``CAP_NET_RAW`` (root, or the capability).
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from dataclasses import dataclass

import numpy as np

from switchboard.audio import ulaw_decode

_ETH_P_ALL = 0x0003
_SO_TIMESTAMPNS = 35  # <asm-generic/socket.h>; SCM_TIMESTAMPNS has the same number
_PACKET_OUTGOING = 4  # loopback shows each packet twice: sent, and received
_UDP = 17
_TCP = 6
PCMU = 0


@dataclass(frozen=True)
class TracedPacket:
    """Any RTP-looking packet on ``lo`` (SRTP too: its header is in the clear), over UDP or
    framed in TCP (RFC 4571, as WebRTC's ICE-TCP carries it)."""

    at: float
    source: int  # ports
    target: int
    size: int  # the RTP packet's length
    payload_type: int


@dataclass(frozen=True)
class RtpPacket:
    at: float  # the kernel's time of the packet on ``lo`` (CLOCK_REALTIME, seconds)
    inbound: bool  # towards the watched port (else from it)
    payload_type: int
    samples: np.ndarray  # int16 at 8 kHz (PCMU payloads; empty for others)

    @property
    def silent(self) -> bool:
        return not np.any(self.samples)


def tap_available() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_ALL)).close()
    except (PermissionError, OSError):
        return False
    return True


class RtpTap:
    """``with RtpTap() as tap:`` ``tap.watch(port)``, then ``tap.packets(port)``."""

    def __init__(self, trace_all: bool = False, tcp_ports: set[int] | None = None) -> None:
        """With ``trace_all`` every RTP-looking UDP packet on ``lo`` is kept as a
        ``TracedPacket`` (the WebRTC legs' timing, for a breakdown of where a call's time
        goes), and so is RTP framed in TCP to or from ``tcp_ports``."""
        self._trace_all = trace_all
        self._tcp_ports = tcp_ports or set()
        self.trace: list[TracedPacket] = []
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._watched: dict[int, list[RtpPacket]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-tap", daemon=True)

    def __enter__(self) -> RtpTap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def watch(self, port: int) -> None:
        with self._lock:
            self._watched.setdefault(port, [])

    def packets(self, port: int) -> list[RtpPacket]:
        with self._lock:
            return list(self._watched.get(port, []))

    def _run(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._sock], [], [], 0.1)[0]:
                continue
            data, ancillary, _, address = self._sock.recvmsg(65535, 64)
            if address[2] == _PACKET_OUTGOING or len(data) < 40:
                continue
            # IPv4, or IPv6 (WebRTC picks an IPv6 pair as readily as an IPv4 one)
            protocol, header = (data[9], (data[0] & 0x0F) * 4) if data[0] >> 4 == 4 else (data[6], 40)
            if protocol not in (_UDP, _TCP):
                continue
            source, target = struct.unpack_from("!HH", data, header)
            if protocol == _TCP:
                self._trace_tcp(data, header, source, target, ancillary)
                continue
            with self._lock:
                port = target if target in self._watched else source if source in self._watched else None
                if self._trace_all and len(data) >= header + 20 and data[header + 8] >> 6 == 2:
                    self.trace.append(TracedPacket(_kernel_time(ancillary), source, target, len(data) - header - 8,
                                                   data[header + 9] & 0x7F))  # fmt: skip
                if port is None:
                    continue
                at = _kernel_time(ancillary)
                packet = _rtp(data[header + 8 :], at, inbound=port == target)
                if packet is not None:
                    self._watched[port].append(packet)


    def _trace_tcp(self, data: bytes, header: int, source: int, target: int, ancillary: list) -> None:
        if not self._trace_all or not ({source, target} & self._tcp_ports):
            return
        payload = data[header + (data[header + 12] >> 4) * 4 :]
        # One RFC 4571 frame per segment, as a sender of small audio packets writes them.
        if len(payload) >= 14 and payload[2] >> 6 == 2:
            packet = TracedPacket(_kernel_time(ancillary), source, target, len(payload) - 2, payload[3] & 0x7F)
            with self._lock:
                self.trace.append(packet)


def _kernel_time(ancillary: list) -> float:
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            seconds, nanos = struct.unpack("qq", value[:16])
            return seconds + nanos / 1e9
    raise RuntimeError("the kernel gave no timestamp")


def _rtp(datagram: bytes, at: float, inbound: bool) -> RtpPacket | None:
    if len(datagram) < 12 or datagram[0] >> 6 != 2:
        return None  # not RTP (STUN, RTCP is caught by the payload type below)
    payload_type = datagram[1] & 0x7F
    if 72 <= payload_type <= 76:
        return None  # RTCP
    start = 12 + 4 * (datagram[0] & 0x0F)
    samples = ulaw_decode(datagram[start:]) if payload_type == PCMU else np.zeros(0, np.int16)
    return RtpPacket(at, inbound, payload_type, samples)
