"""SIP phones for tests and benchmarks: PJSIP's user agent (``pjsua2``), scripted from Python.

A phone places and answers calls over real SIP and RTP on loopback, G.711 µ-law only, like a
carrier's leg of a call: it says WAV clips into the call, keeps every 20 ms frame it hears with
its arrival time, sends keypad digits as RFC 4733 events, answers / rejects / lets ring the calls
it gets, follows a REFER (a cold transfer) by calling the transfer target, and hangs up.

PJSIP is one library instance per process, and its objects want one thread: every phone of a
process shares one :class:`SipLine`, whose thread owns the library and runs the commands the
phones post to it. Audio frames come and go on PJSIP's own media clock thread (a null sound
device; nothing here touches a sound card).
"""

from __future__ import annotations

import functools
import gc
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

SAMPLE_RATE = 8000  # G.711's own rate: what the phone line carries, with no resampling inside
FRAME_SAMPLES = SAMPLE_RATE // 50  # 20 ms
_POLL_MS = 5


def _pj():
    try:
        import pjsua2
    except ImportError as e:  # a dev dependency, not the product's
        raise RuntimeError("SIP phones need pjsua2: pip install pjsua2-python") from e
    return pjsua2


class Answer(StrEnum):
    """What a phone does with a call it gets."""

    ANSWER = "answer"
    BUSY = "busy"  # 486 Busy Here
    RING = "ring"  # 180 Ringing until the caller gives up


@dataclass
class HeardFrame:
    at: float  # time.monotonic() when PJSIP handed the frame over
    samples: np.ndarray  # int16, 160 samples


@dataclass
class PhoneCall:
    """One call of a phone, as the test sees it; updated from the SIP thread."""

    direction: str  # "outbound" (this phone called) or "inbound"
    remote_uri: str = ""
    state: str = "NULL"
    status_code: int = 0  # the last SIP status (200 answered, 486 busy, 487 cancelled...)
    disconnect_reason: str = ""
    digits_received: list[str] = field(default_factory=list)
    transfers_requested: list[str] = field(default_factory=list)
    confirmed_at: float | None = None
    disconnected_at: float | None = None
    _heard: list[HeardFrame] = field(default_factory=list, repr=False)
    _to_say: queue.SimpleQueue = field(default_factory=queue.SimpleQueue, repr=False)
    _said_until: float = 0.0
    _handle: Any = field(default=None, repr=False)
    _line: SipLine | None = field(default=None, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    # -- what the test does ------------------------------------------------------------------

    def say(self, audio: np.ndarray | Path) -> float:
        """Queue speech (a WAV file, or int16 samples at 8 kHz); return the seconds queued."""
        samples = load_wav_8k(audio) if isinstance(audio, Path) else audio.astype(np.int16)
        for start in range(0, len(samples), FRAME_SAMPLES):
            frame = samples[start : start + FRAME_SAMPLES]
            if len(frame) < FRAME_SAMPLES:
                frame = np.pad(frame, (0, FRAME_SAMPLES - len(frame)))
            self._to_say.put(frame)
        return len(samples) / SAMPLE_RATE

    def send_digits(self, digits: str) -> None:
        """Keypad presses as RFC 4733 telephone-events on the RTP stream."""
        assert self._line is not None
        self._line.run(lambda: self._handle.dialDtmf(digits))

    def answer(self) -> None:
        """Pick up a call this phone let ring (``Answer.RING``)."""
        assert self._line is not None
        pj = _pj()

        def _answer() -> None:
            param = pj.CallOpParam()
            param.statusCode = 200
            self._handle.answer(param)

        self._line.run(_answer)

    def hang_up(self) -> None:
        assert self._line is not None
        pj = _pj()

        def _hang_up() -> None:
            if self._handle is not None and self._handle.isActive():
                param = pj.CallOpParam()
                param.statusCode = 603 if self.state in ("INCOMING", "EARLY") else 200
                self._handle.hangup(param)

        self._line.run(_hang_up)

    def wait(self, predicate: Callable[[PhoneCall], bool], timeout: float, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), timeout):
                raise TimeoutError(f"call to {self.remote_uri}: {what} not within {timeout} s "
                                   f"(state {self.state}, status {self.status_code})")

    def wait_confirmed(self, timeout: float = 15.0) -> None:
        self.wait(lambda c: c.confirmed_at is not None or c.ended, timeout, "answered")
        if self.confirmed_at is None:
            raise AssertionError(f"call ended unanswered: {self.status_code} {self.disconnect_reason}")

    def wait_ended(self, timeout: float = 15.0) -> None:
        self.wait(lambda c: c.ended, timeout, "ended")

    @property
    def ended(self) -> bool:
        return self.state == "DISCONNECTED"

    @property
    def speaking(self) -> bool:
        return not self._to_say.empty()

    def heard(self, since: float = 0.0) -> np.ndarray:
        """Everything heard (int16, 8 kHz) from ``since`` (a time.monotonic()) on."""
        frames = [f.samples for f in list(self._heard) if f.at >= since]
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    def first_sound_after(self, since: float, threshold: float = 300.0) -> float | None:
        """When a frame louder than ``threshold`` (RMS of int16) first arrived after ``since``."""
        for frame in list(self._heard):
            if frame.at >= since and rms(frame.samples) >= threshold:
                return frame.at
        return None

    def wait_for_sound(self, since: float, timeout: float, threshold: float = 300.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (at := self.first_sound_after(since, threshold)) is not None:
                return at
            time.sleep(0.02)
        raise TimeoutError(f"no sound from {self.remote_uri} within {timeout} s")

    def wait_for_silence(self, since: float, quiet_secs: float, timeout: float,
                         threshold: float = 300.0) -> float:
        """Wait until the far end has been quiet for ``quiet_secs``; return when it went quiet."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames = [f for f in list(self._heard) if f.at >= since]
            loud = [f.at for f in frames if rms(f.samples) >= threshold]
            last = loud[-1] if loud else since
            if frames and frames[-1].at - last >= quiet_secs:
                return last
            time.sleep(0.05)
        raise TimeoutError(f"{self.remote_uri} did not go quiet within {timeout} s")

    # -- called on PJSIP's threads ---------------------------------------------------------

    def _notify(self, **changes: Any) -> None:
        with self._changed:
            for name, value in changes.items():
                setattr(self, name, value)
            self._changed.notify_all()

    def _frame_heard(self, samples: np.ndarray) -> None:
        self._heard.append(HeardFrame(time.monotonic(), samples))

    def _next_frame(self) -> bytes:
        try:
            return self._to_say.get_nowait().tobytes()
        except queue.Empty:
            return bytes(FRAME_SAMPLES * 2)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def load_wav_8k(path: Path) -> np.ndarray:
    """A WAV clip as the phone line carries it: mono int16 at 8 kHz."""
    import soundfile as sf
    import soxr

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return (np.clip(mono, -1, 1) * 32767).astype(np.int16)


class SipLine:
    """The process's PJSIP library on one thread, and the phones (accounts) on it."""

    def __init__(self, log_level: int = 1) -> None:
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._log_level = log_level
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.phones: list[SipPhone] = []
        self._keep: list[Any] = []  # SWIG objects PJSIP points at: kept alive here
        self.endpoint: Any = None

    def start(self) -> SipLine:
        self._thread = threading.Thread(target=self._main, name="pjsip", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"PJSIP did not start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(15)
        self._thread = None

    def run(self, command: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``command`` on the SIP thread and return its result (or raise its error)."""
        done = threading.Event()
        result: dict[str, Any] = {}

        def _wrapped() -> None:
            try:
                result["value"] = command()
            except BaseException as e:  # handed back to the caller's thread
                result["error"] = e
            done.set()

        self._commands.put(_wrapped)
        if not done.wait(timeout):
            raise TimeoutError("the SIP thread did not run the command in time")
        if "error" in result:
            raise result["error"]
        return result.get("value")

    def phone(self, name: str, port: int, answer: Answer = Answer.ANSWER) -> SipPhone:
        """A phone listening for SIP on 127.0.0.1:``port`` as ``sip:name@127.0.0.1:port``."""
        phone = SipPhone(self, name, port, answer)
        self.run(phone._create)
        self.phones.append(phone)
        return phone

    def _main(self) -> None:
        pj = _pj()
        try:
            ep = pj.Endpoint()
            ep.libCreate()
            config = pj.EpConfig()
            config.uaConfig.threadCnt = 0  # this thread polls: every SIP callback runs here
            config.uaConfig.mainThreadOnly = False
            config.uaConfig.userAgent = "switchboard-test-phone (pjsua2)"
            config.logConfig.level = self._log_level
            config.logConfig.consoleLevel = self._log_level
            config.medConfig.clockRate = SAMPLE_RATE
            config.medConfig.sndClockRate = SAMPLE_RATE
            config.medConfig.channelCount = 1
            config.medConfig.noVad = True  # send every frame, as a carrier does
            config.medConfig.ecTailLen = 0
            ep.libInit(config)
            ep.audDevManager().setNullDev()
            for codec in ep.codecEnum2():
                ep.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith("PCMU/") else 0)
            ep.libStart()
            self.endpoint = ep
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        while not self._stop.is_set():
            ep.libHandleEvents(_POLL_MS)
            while True:
                try:
                    self._commands.get_nowait()()
                except queue.Empty:
                    break
        try:
            ep.hangupAllCalls()
            for _ in range(40):
                ep.libHandleEvents(_POLL_MS)
            # PJSIP objects must go before the library: a call's destructor calls into it.
            for phone in self.phones:
                for call in phone.calls:
                    if call._handle is not None:
                        call._handle._port = None
                    call._handle = None
                phone._account.shutdown()
                phone._account = None
            self._keep.clear()
            gc.collect()
            ep.libDestroy()
        except Exception:  # noqa: BLE001 - a test's teardown; the process is ending anyway
            pass


class SipPhone:
    """One SIP account with its own UDP port: places and gets calls."""

    def __init__(self, line: SipLine, name: str, port: int, answer: Answer):
        self.line = line
        self.name = name
        self.port = port
        self.answer = answer
        self.calls: list[PhoneCall] = []
        self._account: Any = None
        self._calls_changed = threading.Condition()

    @property
    def uri(self) -> str:
        return f"sip:{self.name}@127.0.0.1:{self.port}"

    def call(self, uri: str, headers: dict[str, str] | None = None) -> PhoneCall:
        """Dial ``uri`` (``sip:+15550100@127.0.0.1:5060``); returns at once, see ``wait_*``."""
        call = PhoneCall(direction="outbound", remote_uri=uri, _line=self.line)
        pj = _pj()

        def _dial() -> None:
            handle = _pj_classes().Call(self, call)
            param = pj.CallOpParam(True)
            for name, value in (headers or {}).items():
                header = pj.SipHeader()
                header.hName, header.hValue = name, value
                param.txOption.headers.append(header)
            handle.makeCall(uri, param)
            call._handle = handle

        self._add(call)
        self.line.run(_dial)
        return call

    def wait_incoming(self, timeout: float = 15.0, count: int = 1) -> PhoneCall:
        """The ``count``-th call this phone got."""
        with self._calls_changed:
            if not self._calls_changed.wait_for(
                lambda: len([c for c in self.calls if c.direction == "inbound"]) >= count, timeout
            ):
                raise TimeoutError(f"{self.uri}: no incoming call within {timeout} s")
            return [c for c in self.calls if c.direction == "inbound"][count - 1]

    def _add(self, call: PhoneCall) -> None:
        with self._calls_changed:
            self.calls.append(call)
            self._calls_changed.notify_all()

    def _create(self) -> None:
        pj = _pj()
        transport = pj.TransportConfig()
        transport.port = self.port
        transport.boundAddress = "127.0.0.1"
        transport.publicAddress = "127.0.0.1"
        transport_id = self.line.endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        config = pj.AccountConfig()
        config.idUri = self.uri
        config.sipConfig.transportId = transport_id
        config.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        config.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
        config.natConfig.iceEnabled = False
        config.natConfig.sipOutboundUse = 0
        config.callConfig.timerUse = 0  # no session timers: nothing re-INVITEs mid-test
        self._account = _pj_classes().Account(self)
        self._account.create(config)


@functools.cache
def _pj_classes() -> SimpleNamespace:
    """PJSIP's callback classes, defined when a phone is first made (pjsua2 is optional)."""
    pj = _pj()

    class _AudioPortImpl(pj.AudioMediaPort):
        def __init__(self, call: PhoneCall):
            super().__init__()
            self._call = call

        def onFrameRequested(self, frame) -> None:  # noqa: N802 - PJSIP's name
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
            frame.buf = pj.ByteVector(self._call._next_frame())
            frame.size = FRAME_SAMPLES * 2

        def onFrameReceived(self, frame) -> None:  # noqa: N802 - PJSIP's name
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size:
                self._call._frame_heard(np.frombuffer(bytes(frame.buf), dtype=np.int16).copy())

    class _CallImpl(pj.Call):
        def __init__(self, phone: SipPhone, call: PhoneCall, call_id: int | None = None):
            if call_id is None:
                super().__init__(phone._account)
            else:
                super().__init__(phone._account, call_id)
            self._phone = phone
            self._state = call
            self._port: Any = None

        def onCallState(self, prm) -> None:  # noqa: N802
            info = self.getInfo()
            state = info.stateText
            changes: dict[str, Any] = {"state": state, "status_code": info.lastStatusCode}
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                changes["confirmed_at"] = time.monotonic()
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                changes["disconnected_at"] = time.monotonic()
                changes["disconnect_reason"] = info.lastReason
                self._phone.line._keep.append(self)  # PJSIP may still call into it
            self._state._notify(**changes)

        def onCallMediaState(self, prm) -> None:  # noqa: N802
            info = self.getInfo()
            for index, media in enumerate(info.media):
                if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    if self._port is None:
                        fmt = pj.MediaFormatAudio()
                        fmt.init(pj.PJMEDIA_FORMAT_PCM, SAMPLE_RATE, 1, 20000, 16)
                        self._port = _AudioPortImpl(self._state)
                        self._port.createPort(f"phone-{id(self)}", fmt)
                    audio = self.getAudioMedia(index)
                    audio.startTransmit(self._port)
                    self._port.startTransmit(audio)

        def onDtmfDigit(self, prm) -> None:  # noqa: N802
            self._state._notify(digits_received=[*self._state.digits_received, prm.digit])

        def onCallTransferRequest(self, prm) -> None:  # noqa: N802
            # Follow the REFER, as a carrier does for a cold transfer: call the target.
            # PJSIP places the new call with a Call object of its own: handing it one of ours
            # (prm.newCall) crashed the process now and then. The target's phone sees the call.
            self._state._notify(transfers_requested=[*self._state.transfers_requested, prm.dstUri])
            prm.statusCode = 202

    class _AccountImpl(pj.Account):
        def __init__(self, phone: SipPhone):
            super().__init__()
            self._phone = phone

        def onIncomingCall(self, prm) -> None:  # noqa: N802
            state = PhoneCall(direction="inbound", _line=self._phone.line)
            handle = _CallImpl(self._phone, state, prm.callId)
            state._handle = handle
            state.remote_uri = handle.getInfo().remoteUri
            self._phone._add(state)
            param = pj.CallOpParam()
            if self._phone.answer is Answer.BUSY:
                param.statusCode = 486
            elif self._phone.answer is Answer.RING:
                param.statusCode = 180
            else:
                param.statusCode = 200
            handle.answer(param)

    return SimpleNamespace(Account=_AccountImpl, Call=_CallImpl)
