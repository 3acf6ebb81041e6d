"""Live microphone capture through PortAudio (``sounddevice``), feeding a streaming engine.

PortAudio calls ``Microphone._callback`` on its own thread with each block of samples; the
callback only copies the block into a bounded queue, so it never waits on the model. The caller's
thread takes blocks from the queue and runs the spotter (``listen``). The stream opens at the
model's 16 kHz when the device accepts it, else at the device's own rate (the spotter resamples),
with one channel when possible (else all of them, downmixed by the spotter). Lost audio is counted,
never dropped silently: PortAudio's input overflows and blocks refused by a full queue.

sounddevice is imported only when a microphone is used, so the rest of the package runs without it
(and without PortAudio).
"""

from __future__ import annotations

import math
import queue
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    import sounddevice

LIST_HINT = "run `ssamba-stream devices` to list the input devices"
NO_DEVICE = "no input device found: connect a microphone (PortAudio sees none)"
BLOCK_SECONDS = 0.04  # PortAudio callback size: short enough for low latency, long enough to be cheap
DTYPE = "int16"  # what microphones deliver; half the memory of float32 in the queue
Result = TypeVar("Result")


def load_sounddevice() -> ModuleType:
    """The sounddevice module, or a one-line error naming what to install."""
    try:
        import sounddevice
    except ImportError:
        raise UserError("sounddevice is not installed: pip install 'ssamba-stream[mic]'") from None
    except OSError:  # sounddevice is there but cannot load the PortAudio shared library
        raise UserError(
            "the PortAudio library is missing: apt-get install libportaudio2 (macOS: brew install portaudio)"
        ) from None
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    """One PortAudio device that can record."""

    index: int
    name: str
    host_api: str
    channels: int
    default_rate: int
    is_default: bool

    def describe(self) -> str:
        return f"{self.name} ({self.host_api}), {self.channels} channels, {self.default_rate} Hz"


def _default_input(sd: ModuleType) -> int | None:
    try:
        return int(sd.query_devices(kind="input")["index"])
    except (sd.PortAudioError, ValueError):  # no default input device
        return None


def devices() -> list[InputDevice]:
    """The input devices PortAudio sees, with the default marked."""
    sd = load_sounddevice()
    default = _default_input(sd)
    host_apis = sd.query_hostapis()
    return [
        InputDevice(
            index,
            info["name"],
            host_apis[info["hostapi"]]["name"],
            info["max_input_channels"],
            int(info["default_samplerate"]),
            index == default,
        )
        for index, info in enumerate(sd.query_devices())
        if info["max_input_channels"] > 0
    ]


def select_device(available: Sequence[InputDevice], device: str | int | None) -> InputDevice:
    """The device named by index, by name (exact, else a unique case-insensitive part), or the default."""
    if not available:
        raise UserError(NO_DEVICE)
    if device is None:
        chosen = [d for d in available if d.is_default] or [available[0]]
    elif isinstance(device, int) or device.strip().isdigit():
        chosen = [d for d in available if d.index == int(device)]
    else:
        wanted = device.strip().lower()
        chosen = [d for d in available if d.name.lower() == wanted] or [
            d for d in available if wanted in d.name.lower()
        ]
    if len(chosen) > 1:
        names = ", ".join(f"{d.index}: {d.name}" for d in chosen)
        raise UserError(f"input device {device!r} is ambiguous ({names}): pass its index with --device")
    if not chosen:
        raise UserError(f"no input device {device!r}: {LIST_HINT}")
    return chosen[0]


@dataclass(frozen=True)
class CaptureSettings:
    """How the stream is opened; ``resampled`` when the device's rate is not the model's."""

    rate: int
    channels: int
    resampled: bool


def capture_settings(sd: ModuleType, device: InputDevice, model_rate: int) -> CaptureSettings:
    """The model's rate and mono when the device takes them, else its native rate and/or all channels."""
    rates = dict.fromkeys((model_rate, device.default_rate))
    channels = dict.fromkeys((1, device.channels))
    for rate in rates:
        for count in channels:
            try:
                sd.check_input_settings(device=device.index, samplerate=rate, channels=count, dtype=DTYPE)
            except sd.PortAudioError:
                continue
            return CaptureSettings(rate, count, rate != model_rate)
    raise UserError(
        f"input device {device.name} accepts neither {model_rate} Hz nor its own {device.default_rate} Hz: "
        f"choose another with --device ({LIST_HINT})"
    )


class Microphone:
    """An input stream whose callback queues copies of the blocks; use as a context manager.

    ``queue_seconds`` bounds the audio waiting for the model; beyond it blocks are counted as lost.
    """

    def __init__(
        self, device: str | int | None = None, model_rate: int = 16000, queue_seconds: float = 30.0
    ) -> None:
        sd = load_sounddevice()
        self.device = select_device(devices(), device)
        self.settings = capture_settings(sd, self.device, model_rate)
        self.model_rate = model_rate
        self.device_overflows = 0
        self.lost_blocks = 0
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=math.ceil(queue_seconds / BLOCK_SECONDS))
        try:
            self.stream = sd.InputStream(
                device=self.device.index,
                samplerate=self.settings.rate,
                channels=self.settings.channels,
                dtype=DTYPE,
                blocksize=round(self.settings.rate * BLOCK_SECONDS),
                callback=self._callback,
            )
        except sd.PortAudioError as exc:
            raise UserError(f"cannot open input device {self.device.name}: {exc} ({LIST_HINT})") from None
        self._sd = sd

    @property
    def rate(self) -> int:
        return self.settings.rate

    @property
    def overflows(self) -> int:
        """Times audio was lost: the device overran (PortAudio) or the model fell ``queue_seconds`` behind."""
        return self.device_overflows + self.lost_blocks

    def _callback(
        self, indata: np.ndarray, frames: int, time: Any, status: sounddevice.CallbackFlags
    ) -> None:
        if status.input_overflow:
            self.device_overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.lost_blocks += 1

    def __enter__(self) -> Microphone:
        try:
            self.stream.start()
        except self._sd.PortAudioError as exc:
            self.stream.close()
            raise UserError(f"cannot start input device {self.device.name}: {exc} ({LIST_HINT})") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stream.close()

    def read(self, timeout: float = 0.25) -> np.ndarray | None:
        """The next block, or None when none came within ``timeout`` (so the caller can check for Ctrl-C)."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            if not self.stream.active:
                raise UserError(
                    f"the input stream from {self.device.name} stopped: is the device still connected?"
                ) from None
            return None

    def stop(self) -> list[np.ndarray]:
        """Stop capturing; returns the blocks still queued, so no captured audio goes unprocessed."""
        self.stream.stop()
        pending = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        return pending


class Engine(Protocol[Result]):  # KeywordSpotter or StreamClassifier
    def process(self, pcm: np.ndarray, sample_rate: int | None = None) -> list[Result]: ...

    def finish(self) -> list[Result]: ...


@contextmanager
def _ctrl_c_sets(flag: threading.Event) -> Iterator[None]:
    """Ctrl-C sets ``flag`` instead of raising KeyboardInterrupt, so no block is left half processed."""
    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def listen(
    engine: Engine[Result],
    microphone: Microphone,
    emit: Callable[[list[Result]], None],
    seconds: float | None = None,
) -> None:
    """Run ``engine`` on the microphone, handing each block's results to ``emit`` as they come.

    Stops after ``seconds`` of audio, or at Ctrl-C after processing what was already captured.
    """
    limit = math.inf if seconds is None else round(seconds * microphone.rate)
    taken = 0
    interrupted = threading.Event()

    def feed(block: np.ndarray) -> None:
        nonlocal taken
        block = block[: min(len(block), limit - taken)]
        taken += len(block)
        emit(engine.process(block, microphone.rate))

    with _ctrl_c_sets(interrupted):
        while taken < limit and not interrupted.is_set():
            block = microphone.read()
            if block is not None:
                feed(block)
        if interrupted.is_set():
            for block in microphone.stop():
                feed(block)
    emit(engine.finish())
