"""Voice activity gate: keyword events stand only where speech was heard shortly before them.

A keyword spotter fires now and then on noise (a door, music, a fan's hum). A small voice activity
detector (Silero VAD, run from the ONNX file its ``silero-vad`` wheel ships, with onnxruntime; no
torch) tells speech from the rest per 32 ms window, and the gate drops an event when no window in
the last ``hold_seconds`` before it held speech. The look back is needed because an event fires at
or shortly after the word's end, when the speech itself may be over. Words that are not keywords
are speech too: the gate cannot remove false accepts fired on them, only those fired on non-speech.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import UserError
from .kws import Event

INSTALL = "pip install 'ssamba-stream[vad]' && pip install --no-deps silero-vad"
# An event looks this far back for speech: the bundled model fires up to about 1 s after a word's end
# (evaluate counts hits up to 1 s after it), and Silero's speech ends a little before the word does.
DEFAULT_HOLD_SECONDS = 1.5
DEFAULT_SPEECH_THRESHOLD = 0.5  # a window is speech from this probability on (Silero's own default)
WINDOWS_PER_SECOND = 31.25  # Silero VAD reads 512 samples at 16 kHz, 256 at 8 kHz
CONTEXT_PER_WINDOW = 8  # and the last window's final 1/8 (64 or 32 samples) before each


def silero_model_path() -> Path:
    """The ONNX model inside the installed ``silero-vad`` wheel, found without importing the package
    (its ``__init__`` imports torch); a one-line error naming the install when it is absent."""
    try:
        spec = importlib.util.find_spec("silero_vad")
    except ImportError:  # a broken install counts as none
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"--vad needs the silero-vad package (its bundled ONNX model): {INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise UserError(
            f"the silero-vad package has no {path.name} at {path.parent}: reinstall it, {INSTALL}"
        )
    return path


@lru_cache(maxsize=1)
def _session(path: Path):
    """One onnxruntime session per process: every stream's VAD shares it and keeps its own state."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(
            f"--vad runs Silero VAD with onnxruntime, which is not installed: {INSTALL}"
        ) from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # a 32 ms window is too small to split
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class SileroVad:
    """Streaming Silero VAD: feed mono float audio in any chunks, get the speech probability of each
    window the chunk completes. Its recurrent state and the context carried between windows are its own."""

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate not in (8000, 16000):
            raise UserError(f"--vad works at 8 or 16 kHz (Silero VAD), but this model reads {sample_rate} Hz")
        self.sample_rate = sample_rate
        self.window = int(sample_rate / WINDOWS_PER_SECOND)
        self.session = _session(silero_model_path())
        self.reset()

    @property
    def window_seconds(self) -> float:
        return self.window / self.sample_rate

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(self.window // CONTEXT_PER_WINDOW, np.float32)
        self._pending = np.zeros(0, np.float32)

    def process(self, mono: np.ndarray) -> np.ndarray:
        """Speech probabilities (windows,) for the whole windows this chunk completes."""
        audio = np.concatenate([self._pending, np.asarray(mono, np.float32).reshape(-1)])
        count = len(audio) // self.window
        self._pending = audio[count * self.window :]
        rate = np.array(self.sample_rate, np.int64)
        probabilities = np.empty(count, np.float32)
        for i in range(count):
            window = audio[i * self.window : (i + 1) * self.window]
            framed = np.concatenate([self._context, window])[None]
            out, self._state = self.session.run(None, {"input": framed, "state": self._state, "sr": rate})
            probabilities[i] = out[0, 0]
            self._context = window[-len(self._context) :]
        return probabilities


class SpeechGate:
    """Which keyword events stand: those with a speech window in the ``hold_seconds`` before them.

    ``listen`` takes the stream's audio as it comes (from its start, at ``sample_rate``); ``allows``
    and ``keep`` judge events by their stream time. Windows older than ``memory_seconds`` behind the
    newest are forgotten (None keeps them all, for an evaluation that replays the stream's events).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
        threshold: float = DEFAULT_SPEECH_THRESHOLD,
        memory_seconds: float | None = 60.0,
    ) -> None:
        if not hold_seconds > 0:
            raise UserError(f"the VAD hold must be a positive number of seconds, got {hold_seconds}")
        self.vad = SileroVad(sample_rate)
        self.hold_seconds = hold_seconds
        self.threshold = threshold
        self.memory_seconds = memory_seconds
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self.probabilities = np.zeros(0, np.float32)  # of the remembered windows
        self.first = 0  # stream index of probabilities[0]

    def listen(self, mono: np.ndarray) -> None:
        """The next audio of the stream (mono float at ``sample_rate``)."""
        self.probabilities = np.concatenate([self.probabilities, self.vad.process(mono)])
        if self.memory_seconds is not None:
            drop = max(0, len(self.probabilities) - int(self.memory_seconds / self.vad.window_seconds))
            self.probabilities, self.first = self.probabilities[drop:], self.first + drop

    def allows(self, time: float) -> bool:
        """Whether a window heard so far that overlaps (time - hold, time] held speech."""
        step = self.vad.window_seconds
        start = max(int(np.floor((time - self.hold_seconds) / step)), self.first)
        end = int(np.ceil(time / step))  # windows [start, end) overlap the span
        heard = self.probabilities[start - self.first : max(end - self.first, 0)]
        return bool((heard >= self.threshold).any())

    def keep(self, events: Sequence[Event]) -> list[Event]:
        """The events with speech before them."""
        return [event for event in events if self.allows(event.time)]
