"""Silero VAD and smart-turn v3 analyzers whose ONNX sessions are loaded once per process.

Pipecat's analyzers load their model in ``__init__``; a phone platform builds one analyzer
per call, so these subclasses take a process-wide session instead. The per-call state
(Silero's recurrent state, smart-turn's audio buffer) stays in each analyzer.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import onnxruntime as ort
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.utils import exp_smoothing, normalize_value
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

from switchboard.engines.models import silero_vad_file, smart_turn_file
from switchboard.speech_end import SpeechEnergyGate

_lock = threading.Lock()
_VOLUME_WINDOW_SECS = 0.4  # Pipecat's loudness window
_SILERO_SETTLE_SECS = 0.3  # Silero hears this much of each silence before it is skipped


def _session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


@cache
def _silero_session() -> ort.InferenceSession:
    with _lock:
        return _session(str(silero_vad_file()), threads=1)


@cache
def _smart_turn_session() -> ort.InferenceSession:
    with _lock:
        return _session(str(smart_turn_file()), threads=1)


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """Silero VAD with the process-wide ONNX session, run on the event loop, with a cheap volume.

    Pipecat hands every 20 ms frame to a thread of the analyzer's own (one thread per call)
    and gates speech on BS.1770 integrated loudness of the last 400 ms, recomputed per 32 ms
    window. The Silero window costs ~0.1 ms of ONNX, less than the thread hand-off, and the
    loudness gate only needs to tell speech from near-silence, which RMS level does.
    """

    def __init__(
        self,
        *,
        sample_rate: int | None = None,
        params: VADParams | None = None,
        gate: SpeechEnergyGate | None = None,
    ):
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._gate = gate
        model = SileroOnnxModel.__new__(SileroOnnxModel)
        model.session = _silero_session()
        model.sample_rates = [8000, 16000]
        model.reset_states()
        self._model = model
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._volume_window = bytearray()
        self._loud = False

    async def analyze_audio(self, buffer: bytes) -> VADState:
        return self._run_analyzer(buffer)

    def voice_confidence(self, buffer: bytes) -> float:
        if self._gate is None:
            return super().voice_confidence(buffer)
        # Speech by energy over the call's own floor, window by window: the stop countdown
        # starts where the caller's speech energy ends, not ~60 ms later where Silero's
        # confidence decays (see switchboard.speech_end).
        self._loud = self._gate.update(np.frombuffer(buffer, dtype=np.int16), self.sample_rate)
        if not self._loud and self._gate.silent_s > _SILERO_SETTLE_SECS:
            # A window the gate calls quiet is not speech whatever Silero says (the volume
            # check rejects it), so once the model has heard a little of the silence it is not
            # run: the caller is quiet most of a call, and Silero is the worker's largest
            # per-frame cost. Its recurrent state is left as the silence left it, so the next
            # onset is judged as quickly as on a model that ran throughout (a fresh state, or
            # one that last heard speech, is slower to call speech: barge-in suffers).
            return 0.0
        return super().voice_confidence(buffer)

    def _get_smoothed_volume(self, audio: bytes) -> float:
        if self._gate is not None:
            return 1.0 if self._loud else 0.0
        self._volume_window += audio
        keep = int(_VOLUME_WINDOW_SECS * self.sample_rate) * 2
        if len(self._volume_window) > keep:
            del self._volume_window[: len(self._volume_window) - keep]
        samples = np.frombuffer(self._volume_window, dtype=np.int16).astype(np.float32)
        rms = float(np.sqrt(np.mean(samples * samples))) / 32768.0 if len(samples) else 0.0
        # RMS dBFS stands in for LUFS on Pipecat's -110..-10 scale, so min_volume means the same.
        level = normalize_value(20 * np.log10(max(rms, 1e-9)), -110, -10)
        return exp_smoothing(level, self._prev_volume, self._smoothing_factor)


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """Smart-turn v3.2 with the process-wide ONNX session and one inference thread per process.

    Pipecat starts a thread per analyzer, so per call: a worker's thread count grew with its
    calls and twenty inferences ran at once at each burst of turn ends, starving the event
    loop. Inferences queue on one thread instead (each is ~50 ms of CPU at most).
    """

    def __init__(self, *, sample_rate: int | None = None, params: SmartTurnParams | None = None):
        BaseSmartTurn.__init__(self, sample_rate=sample_rate, params=params)
        self._log_data = False
        self._session = _smart_turn_session()

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        return _smart_turn_executor()

    async def cleanup(self):
        self._executor = None  # the shared thread outlives every call
        await super().cleanup()


@cache
def _smart_turn_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")


def warm_up() -> None:
    """Load both sessions now, so the first call does not pay for it."""
    _silero_session()
    _smart_turn_session()
