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
PCMU = 0


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

    def __init__(self) -> None:
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
            if address[2] == _PACKET_OUTGOING or len(data) < 28 or data[9] != _UDP:
                continue
            header = (data[0] & 0x0F) * 4
            source, target = struct.unpack_from("!HH", data, header)
            with self._lock:
                port = target if target in self._watched else source if source in self._watched else None
                if port is None:
                    continue
                at = _kernel_time(ancillary)
                packet = _rtp(data[header + 8 :], at, inbound=port == target)
                if packet is not None:
                    self._watched[port].append(packet)


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
