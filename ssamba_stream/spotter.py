"""Python API of the streaming engine: ``KeywordSpotter`` (events) and ``StreamClassifier`` (top-k).

Both take audio as it comes (any chunk size, integer or float PCM, mono or interleaved channels,
any sample rate: it is converted and resampled on the fly), run it through a ``StreamingSession``
and keep the stream's bookkeeping: audio seconds received, compute time, and stream times of the
results. The CLI's mic, file and stdin commands are thin loops around them, so the API and the
CLI cannot drift apart.

    from ssamba_stream import KeywordSpotter
    spotter = KeywordSpotter()                      # the bundled 12-class model
    for event in spotter.process_file("clip.wav"):
        print(event.time, event.label, event.score)
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from .activations import ActivationSaver, AudioHistory
from .audio import iter_audio_blocks
from .errors import UserError
from .kws import Detector, DetectorConfig, Event
from .pcm import PcmAdapter
from .runtime.session import StreamingSession
from .vad import SpeechGate

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "kws12" / "model.onnx"
Result = TypeVar("Result")


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The given model file, or the bundled default; a missing bundled model names the fix."""
    if model is not None:
        return Path(model)
    if not DEFAULT_MODEL.is_file():
        raise UserError(
            f"the bundled model {DEFAULT_MODEL} is missing: reinstall ssamba-stream, or pass --model MODEL.onnx"
        )
    return DEFAULT_MODEL


@dataclass(frozen=True)
class Ranking:
    """The top labels of one classification window, which ends at stream time ``time`` (seconds)."""

    time: float
    top: tuple[tuple[str, float], ...]

    def to_json(self) -> dict[str, object]:
        return {"time": round(self.time, 3), "top": [{"label": k, "score": round(v, 4)} for k, v in self.top]}


class _Engine(Generic[Result]):
    """A session plus the stream's input conversion and counters; subclasses turn posteriors into results."""

    task = "kws"

    def __init__(self, model: str | os.PathLike | None, backend: str, threads: int) -> None:
        self.model_path = resolve_model(model)
        self.session = StreamingSession(self.model_path, backend=backend, threads=threads)
        self.spec = self.session.spec
        if self.task == "kws" and self.spec.task != "kws":
            raise UserError(
                f"{self.model_path.name} is a {self.spec.task} model (labels {', '.join(self.spec.labels[:5])}...), "
                "not a keyword spotter: use --task classify (StreamClassifier)"
            )
        self._adapter: PcmAdapter | None = None
        self.compute_seconds = 0.0
        self.history: AudioHistory | None = None  # the recent audio, kept when events are saved
        self.gate: SpeechGate | None = None  # kws with a VAD: hears the same audio as the model

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def block_seconds(self) -> float:
        return self.spec.block_seconds

    @property
    def seconds(self) -> float:
        """Audio received since the last reset, in seconds of input."""
        return self._adapter.seconds if self._adapter is not None else 0.0

    @property
    def real_time_factor(self) -> float:
        """Compute time over audio time so far (< 1: faster than real time)."""
        return self.compute_seconds / self.seconds if self.seconds else 0.0

    def reset(self) -> None:
        """Start a new stream: clear the model state, the resampler and the counters."""
        self.session.reset()
        self._adapter = None
        self.compute_seconds = 0.0
        if self.history is not None:
            self.history.clear()
        if self.gate is not None:
            self.gate.reset()

    def _adapter_for(self, sample_rate: int | None) -> PcmAdapter:
        rate = self.spec.sample_rate if sample_rate is None else sample_rate
        if self._adapter is None:
            self._adapter = PcmAdapter(rate, self.spec.sample_rate)
        elif rate != self._adapter.input_rate:
            raise UserError(
                f"sample rate changed from {self._adapter.input_rate} to {rate} Hz within one stream: call reset() first"
            )
        return self._adapter

    def posteriors(self, pcm: np.ndarray, sample_rate: int | None = None, last: bool = False) -> np.ndarray:
        """Model posteriors (blocks, classes) for the blocks this chunk completes, timed and converted
        like ``process``; ``last`` also releases the resampler's tail at the end of the stream."""
        adapter = self._adapter_for(sample_rate)
        mono = adapter.convert(pcm)
        if last:
            mono = np.concatenate([mono, adapter.flush()])
        if self.history is not None:
            self.history.append(mono)
        if self.gate is not None:
            self.gate.listen(mono)
        started = time.perf_counter()
        posteriors = self.session.process(mono)
        self.compute_seconds += time.perf_counter() - started
        return posteriors

    def _results(self, posteriors: np.ndarray) -> list[Result]:
        raise NotImplementedError

    def process(self, pcm: np.ndarray, sample_rate: int | None = None) -> list[Result]:
        """Results completed by this chunk; ``pcm`` is (samples,) or (samples, channels) at ``sample_rate``
        (default: the model's), int8/16/32 or float in [-1, 1]."""
        return self._results(self.posteriors(pcm, sample_rate))

    def finish(self) -> list[Result]:
        """Results from the resampler's delayed tail at the end of a stream (call once, at the end)."""
        if self._adapter is None:
            return []
        return self._results(self.posteriors(np.zeros(0, np.float32), self._adapter.input_rate, last=True))

    def process_file(self, path: str | os.PathLike) -> list[Result]:
        """All results of a recording, streamed block by block from the file (a new stream)."""
        self.reset()
        results: list[Result] = []
        for block, rate in iter_audio_blocks(path):
            results += self.process(block, rate)
        return results + self.finish()


class KeywordSpotter(_Engine[Event]):
    """Streaming keyword spotting: feed audio, get ``Event``s (label, score, stream time).

    ``model`` defaults to the bundled 12-class model. ``threshold`` / ``thresholds`` (per label),
    ``smoothing_blocks`` and ``refractory_seconds`` override the model's detector defaults.
    ``save_activations`` (a folder) keeps each event's audio there as WAV with a JSON line; each
    ``reset`` starts a new stream number in those lines. ``vad`` (True, or a ``SpeechGate`` at the
    model's rate) drops events with no speech shortly before them (``ssamba_stream.vad``).
    """

    task = "kws"

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        backend: str = "onnxruntime",
        threads: int = 1,
        threshold: float | None = None,
        thresholds: Mapping[str, float] | None = None,
        smoothing_blocks: int | None = None,
        refractory_seconds: float | None = None,
        save_activations: str | os.PathLike | None = None,
        vad: SpeechGate | bool | None = None,
    ) -> None:
        super().__init__(model, backend, threads)
        config = DetectorConfig.from_sidecar(self.spec.detector).with_overrides(
            threshold, thresholds, smoothing_blocks, refractory_seconds
        )
        self.detector = Detector(self.labels, self.block_seconds, config)
        self.saver = None if save_activations is None else ActivationSaver(save_activations, self.model_path)
        if self.saver is not None:
            self.history = self.saver.history(self.spec.sample_rate)
        self.stream_number = 1  # which stream since construction (a reset after audio starts the next)
        self.gate = SpeechGate(self.spec.sample_rate) if vad is True else vad or None
        if self.gate is not None and self.gate.vad.sample_rate != self.spec.sample_rate:
            raise UserError(
                f"the VAD gate reads {self.gate.vad.sample_rate} Hz but {self.model_path.name} reads {self.spec.sample_rate} Hz"
            )

    def reset(self) -> None:
        self.stream_number += self.seconds > 0
        super().reset()
        self.detector.reset()

    def _results(self, posteriors: np.ndarray) -> list[Event]:
        events = self.detector.update(posteriors)
        if self.gate is not None:
            events = self.gate.keep(events)
        if self.saver is not None and self.history is not None:
            for event in events:
                self.saver.save(event, self.history, f"stream{self.stream_number}")
        return events


class StreamClassifier(_Engine[Ranking]):
    """Streaming classification: the top ``top_k`` labels every ``every_seconds`` (rounded to blocks).

    Each ranking reads the model's posteriors for the head's window of recent audio, so a model of
    sound events, speakers or emotions reports what it hears as the stream goes on.
    """

    task = "classify"

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        backend: str = "onnxruntime",
        threads: int = 1,
        top_k: int = 3,
        every_seconds: float = 1.0,
    ) -> None:
        super().__init__(model, backend, threads)
        if top_k < 1:
            raise UserError(f"top-k (--top-k) must be at least 1, got {top_k}")
        if every_seconds <= 0:
            raise UserError(f"the seconds between rankings (--every) must be positive, got {every_seconds}")
        self.top_k = min(top_k, len(self.labels))
        self.every_blocks = max(1, round(every_seconds / self.block_seconds))

    def _results(self, posteriors: np.ndarray) -> list[Ranking]:
        first = self.session.blocks - len(posteriors)
        rankings = []
        for offset, row in enumerate(posteriors):
            block = first + offset
            if (block + 1) % self.every_blocks:
                continue
            order = np.argsort(-row, kind="stable")[: self.top_k]
            top = tuple((self.labels[i], float(row[i])) for i in order)
            rankings.append(Ranking((block + 1) * self.block_seconds, top))
        return rankings
